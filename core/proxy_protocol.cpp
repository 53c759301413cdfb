#include "core/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace sidecar::core {

namespace {

constexpr uint8_t kSignature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr uint8_t kTypeAlpn = 0x01;
constexpr uint8_t kTypeAuthority = 0x02;
constexpr uint8_t kTypeSsl = 0x20;
constexpr uint8_t kSubtypeSslVersion = 0x21;
constexpr uint8_t kSubtypeSslCn = 0x22;
constexpr uint8_t kSubtypeSslCipher = 0x23;
constexpr uint8_t kClientSsl = 0x01;
constexpr uint8_t kClientCertConn = 0x02;
constexpr uint8_t kClientCertSess = 0x04;

// An address reduced to what the header carries: IPv4-mapped IPv6 becomes IPv4.
struct Endpoint {
    int family = 0;  // AF_INET, AF_INET6 or 0
    uint8_t addr[16] = {0};
    uint16_t port = 0;  // network order
};

Endpoint endpoint(const sockaddr_storage& ss) {
    Endpoint e;
    if (ss.ss_family == AF_INET) {
        const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
        e.family = AF_INET;
        std::memcpy(e.addr, &a->sin_addr, 4);
        e.port = a->sin_port;
    } else if (ss.ss_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
        e.port = a->sin6_port;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
            e.family = AF_INET;
            std::memcpy(e.addr, reinterpret_cast<const uint8_t*>(&a->sin6_addr) + 12, 4);
        } else {
            e.family = AF_INET6;
            std::memcpy(e.addr, &a->sin6_addr, 16);
        }
    }
    return e;
}

void put16(std::string& out, size_t v) {
    out += char((v >> 8) & 0xff);
    out += char(v & 0xff);
}

void tlv(std::string& out, uint8_t type, const std::string& value) {
    out += char(type);
    put16(out, value.size());
    out += value;
}

}  // namespace

std::string buildProxyHeader(int version, const ProxyHeaderFacts& facts) {
    Endpoint src = endpoint(facts.source);
    Endpoint dst = endpoint(facts.destination);
    bool known = src.family != 0 && src.family == dst.family;
    if (version == 1) {
        if (!known) return "PROXY UNKNOWN\r\n";
        char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
        inet_ntop(src.family, src.addr, s, sizeof s);
        inet_ntop(dst.family, dst.addr, d, sizeof d);
        return std::string("PROXY ") + (src.family == AF_INET ? "TCP4 " : "TCP6 ") + s + " " + d + " " +
               std::to_string(ntohs(src.port)) + " " + std::to_string(ntohs(dst.port)) + "\r\n";
    }
    std::string body;
    if (known) {
        size_t n = src.family == AF_INET ? 4 : 16;
        body.append(reinterpret_cast<const char*>(src.addr), n);
        body.append(reinterpret_cast<const char*>(dst.addr), n);
        body.append(reinterpret_cast<const char*>(&src.port), 2);
        body.append(reinterpret_cast<const char*>(&dst.port), 2);
    }
    if (facts.tls) {
        const tls::SessionInfo& t = *facts.tls;
        if (!t.alpn.empty()) tlv(body, kTypeAlpn, t.alpn);
        if (!t.sni.empty()) tlv(body, kTypeAuthority, t.sni);
        std::string ssl;
        // CERT_SESS: the TLS session has a client certificate; CERT_CONN: it was sent on this
        // connection, i.e. not carried over by a resumption (as haproxy sets them).
        uint8_t client = kClientSsl;
        if (t.peer.presented) client |= kClientCertSess | (t.resumed ? 0 : kClientCertConn);
        ssl += char(client);
        // The spec: "zero if the client presented a certificate and it was successfully
        // verified, and non-zero otherwise"; no certificate is not a verified one.
        uint32_t verify = (t.peer.presented && t.peer.verified) ? 0 : 1;
        uint32_t be = htonl(verify);
        ssl.append(reinterpret_cast<const char*>(&be), 4);
        tlv(ssl, kSubtypeSslVersion, t.version);
        if (!t.cipher.empty()) tlv(ssl, kSubtypeSslCipher, t.cipher);
        if (!t.peer.cn.empty()) tlv(ssl, kSubtypeSslCn, t.peer.cn);
        tlv(body, kTypeSsl, ssl);
    }
    std::string out(reinterpret_cast<const char*>(kSignature), sizeof kSignature);
    out += char(known ? 0x21 : 0x20);  // version 2; PROXY or LOCAL
    out += char(!known ? 0x00 : src.family == AF_INET ? 0x11 : 0x21);
    put16(out, body.size());
    out += body;
    return out;
}

}  // namespace sidecar::core
