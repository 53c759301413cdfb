#include "harness.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace sidecar::tls::test {
namespace {

struct TempDir {
    TempDir() {
        char pattern[] = "/tmp/sidecar-unit-tls-XXXXXX";
        if (mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
        path = pattern;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    std::string path;
};

const std::string& tempDir() {
    static TempDir dir;
    return dir.path;
}

Fixture makeFixture() {
    Fixture f;
    f.dir = tempDir();
    f.ca = makeCa("O=sidecar tests,CN=Sidecar Test CA");
    f.other_ca = makeCa("O=elsewhere,CN=Other CA");
    f.ca_path = writeTempFile("ca.pem", f.ca.cert_pem);
    f.other_ca_path = writeTempFile("other-ca.pem", f.other_ca.cert_pem);

    CertSpec server;
    server.subject = "O=sidecar tests,CN=localhost";
    server.dns = {"localhost", "www.example.com"};
    server.ips = {"127.0.0.1"};
    server.eku = {"serverAuth"};
    f.server = issue(server, f.ca);

    CertSpec a = server;
    a.subject = "CN=a.example.com";
    a.dns = {"a.example.com"};
    a.ips = {};
    f.server_a = issue(a, f.ca);

    CertSpec wild = a;
    wild.subject = "CN=*.wild.example.com";
    wild.dns = {"*.wild.example.com"};
    f.server_wild = issue(wild, f.ca);

    CertSpec rsa = a;
    rsa.subject = "CN=rsa.example.com";
    rsa.dns = {"rsa.example.com"};
    rsa.rsa = true;
    f.server_rsa = issue(rsa, f.ca);

    CertSpec client;
    client.subject = "O=acme,CN=client-good";
    client.uris = {"spiffe://example.org/ns/default/sa/web"};
    client.dns = {"client.example.com"};
    client.eku = {"clientAuth"};
    f.client = issue(client, f.ca);

    CertSpec cnOnly = client;
    cnOnly.subject = "CN=cn-only";
    cnOnly.uris = {};
    cnOnly.dns = {};
    f.client_cn_only = issue(cnOnly, f.ca);

    CertSpec noEku = cnOnly;
    noEku.subject = "CN=no-eku";
    noEku.eku = {};
    f.client_no_eku = issue(noEku, f.ca);

    CertSpec expired = client;
    expired.subject = "CN=expired";
    expired.not_before = -10 * 86400;
    expired.not_after = -86400;
    f.client_expired = issue(expired, f.ca);

    CertSpec future = client;
    future.subject = "CN=future";
    future.not_before = 86400;
    future.not_after = 10 * 86400;
    f.client_future = issue(future, f.ca);

    CertSpec serverEku = client;
    serverEku.subject = "CN=server-eku";
    serverEku.eku = {"serverAuth"};
    f.client_server_eku = issue(serverEku, f.ca);

    CertSpec otherCa = client;
    otherCa.subject = "CN=other-ca-client";
    f.client_other_ca = issue(otherCa, f.other_ca);
    return f;
}

bool final(Result r) { return r == Result::Ok || r == Result::Error; }

}  // namespace

const Fixture& fixture() {
    static const Fixture f = makeFixture();
    return f;
}

std::string writeTempFile(const std::string& name, const std::string& content) {
    std::string path = tempDir() + "/" + name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) throw std::runtime_error("cannot write " + path);
    return path;
}

KeyPairSource pemPair(const Issued& issued) {
    KeyPairSource p;
    p.certificate_pem = issued.cert_pem;
    p.private_key_pem = issued.key_pem;
    return p;
}

ServerOptions serverOptions(const std::string& min_version) {
    ServerOptions o;
    o.pair = pemPair(fixture().server);
    o.min_version = min_version;
    return o;
}

ClientOptions clientOptions(const std::string& server_name, const std::string& max_version) {
    ClientOptions o;
    o.ca_path = fixture().ca_path;
    o.server_name = server_name;
    o.max_version = max_version;
    return o;
}

size_t move(Session& from, Session& to, size_t chunk) {
    if (!from.hasCiphertext()) return 0;
    std::vector<uint8_t> bytes;
    from.takeCiphertext(bytes);
    for (size_t off = 0; off < bytes.size();) {
        size_t n = std::min(chunk, bytes.size() - off);
        to.feedCiphertext(bytes.data() + off, n);
        off += n;
    }
    return bytes.size();
}

HandshakeResult handshake(Session& client, Session& server) {
    Result rc = Result::WantRead;
    Result rs = Result::WantRead;
    for (int round = 0; round < 100; ++round) {
        if (!final(rc)) rc = client.handshake();
        size_t moved = move(client, server);
        if (!final(rs)) rs = server.handshake();
        moved += move(server, client);
        if (final(rc) && final(rs)) break;
        if (moved == 0 && round > 0) {
            // Nothing in flight: give each side one last look at what it received.
            if (!final(rc)) rc = client.handshake();
            if (!final(rs)) rs = server.handshake();
            break;
        }
    }
    return {rc, rs};
}

std::string readAvailable(Session& s, Result* last, size_t cap) {
    std::string out;
    std::vector<uint8_t> buf(cap);
    for (;;) {
        size_t n = 0;
        Result r = s.readPlain(buf.data(), buf.size(), &n);
        if (r == Result::Ok) {
            REQUIRE(n > 0);
            out.append(reinterpret_cast<const char*>(buf.data()), n);
            continue;
        }
        if (last != nullptr) *last = r;
        return out;
    }
}

std::string send(Session& from, Session& to, const std::string& data) {
    size_t n = 0;
    REQUIRE(from.writePlain(reinterpret_cast<const uint8_t*>(data.data()), data.size(), &n) ==
            Result::Ok);
    REQUIRE(n == data.size());
    move(from, to);
    Result last = Result::Ok;
    std::string got = readAvailable(to, &last);
    CHECK(last == Result::WantRead);
    return got;
}

const char* peerError(Session& s) {
    if (!s.handshakeComplete()) {
        s.handshake();
    } else {
        Result last = Result::Ok;
        readAvailable(s, &last);
    }
    return s.error();
}

}  // namespace sidecar::tls::test
