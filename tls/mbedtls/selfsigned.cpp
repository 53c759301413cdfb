#include "tls/mbedtls/selfsigned.h"

#include <mbedtls/asn1.h>
#include <mbedtls/ecp.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>

#include <array>
#include <cstring>
#include <ctime>
#include <deque>

#include "tls/mbedtls/psa_rng.h"
#include "tls/mbedtls/x509.h"

namespace sidecar::tls::mbed {
namespace {

class CertificateWriter {
public:
    CertificateWriter() { mbedtls_x509write_crt_init(&w_); }
    ~CertificateWriter() { mbedtls_x509write_crt_free(&w_); }
    CertificateWriter(const CertificateWriter&) = delete;
    CertificateWriter& operator=(const CertificateWriter&) = delete;
    mbedtls_x509write_cert* get() { return &w_; }

private:
    mbedtls_x509write_cert w_;
};

bool x509Time(time_t t, char out[16]) {
    struct tm tm;
    if (gmtime_r(&t, &tm) == nullptr) return false;
    return std::strftime(out, 16, "%Y%m%d%H%M%S", &tm) == 14;
}

// mbedTLS parses "CN=value" with backslash escapes for the RFC 4514 specials.
std::string escapeForName(const std::string& value) {
    std::string out;
    for (char c : value) {
        if (std::strchr(",=+<>#;\\\"", c) != nullptr) out.push_back('\\');
        out.push_back(c);
    }
    return out;
}

bool check(int ret, const char* what, std::string* error) {
    if (ret == 0) return true;
    *error = std::string("cannot make certificate: ") + what + ": " + mbedtlsErrorText(ret);
    return false;
}

}  // namespace

bool issueCertificate(const CertificateRequest& request, std::string* certificate_pem,
                      std::string* private_key_pem, std::string* error) {
    const bool authority = request.profile == CertificateProfile::Authority;
    const std::string& cn = !request.common_name.empty() ? request.common_name
                            : request.names.empty()      ? request.common_name
                                                         : request.names[0];
    if (cn.empty()) {
        *error = authority ? "cannot make certificate: a CA needs a name"
                           : "cannot make certificate: at least one host name is needed";
        return false;
    }
    if (request.days <= 0 || request.days > 36500) {
        *error = "cannot make certificate: days must be between 1 and 36500";
        return false;
    }
    if (request.issuer_certificate_pem.empty() != request.issuer_private_key_pem.empty()) {
        *error = "cannot make certificate: the issuer needs both its certificate and its key";
        return false;
    }

    // The issuing CA, when there is one: its key must match, and it must be a CA.
    KeyPair issuer;
    const bool selfSigned = request.issuer_certificate_pem.empty();
    std::string issuerName;
    if (!selfSigned) {
        KeyPairSource source;
        source.certificate_pem = request.issuer_certificate_pem;
        source.private_key_pem = request.issuer_private_key_pem;
        std::string why;
        if (!loadKeyPair(source, &issuer, &why)) {
            *error = "cannot make certificate: issuer: " + why;
            return false;
        }
        if (issuer.chain.get()->MBEDTLS_PRIVATE(ca_istrue) == 0) {
            *error = "cannot make certificate: the issuer is not a CA certificate";
            return false;
        }
        char dn[1024];
        if (mbedtls_x509_dn_gets(dn, sizeof dn, &issuer.chain.get()->subject) < 0) {
            *error = "cannot make certificate: the issuer's name is too long";
            return false;
        }
        issuerName = dn;
    }

    PrivateKey key;
    if (!check(mbedtls_pk_setup(key.get(), mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)),
               "key setup", error) ||
        !check(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key.get()),
                                   mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE),
               "key generation", error))
        return false;

    // Subject alternative names: the list nodes and IP bytes must stay put until written.
    std::deque<mbedtls_x509_san_list> sans;
    std::deque<std::array<unsigned char, 16>> ips;
    for (const std::string& host : request.names) {
        if (authority || host.empty()) continue;
        mbedtls_x509_san_list node;
        std::memset(&node, 0, sizeof node);
        std::array<unsigned char, 16> ip{};
        size_t ipLen = mbedtls_x509_crt_parse_cn_inet_pton(host.c_str(), ip.data());
        if (ipLen != 0) {
            ips.push_back(ip);
            node.node.type = MBEDTLS_X509_SAN_IP_ADDRESS;
            node.node.san.unstructured_name.p = ips.back().data();
            node.node.san.unstructured_name.len = ipLen;
        } else {
            node.node.type = host.find(':') != std::string::npos
                                 ? MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER
                                 : MBEDTLS_X509_SAN_DNS_NAME;
            node.node.san.unstructured_name.p =
                reinterpret_cast<unsigned char*>(const_cast<char*>(host.data()));
            node.node.san.unstructured_name.len = host.size();
        }
        sans.push_back(node);
    }
    for (size_t i = 0; i + 1 < sans.size(); ++i) sans[i].next = &sans[i + 1];

    const bool client = request.profile == CertificateProfile::Client;
    const char* purpose = client ? MBEDTLS_OID_CLIENT_AUTH : MBEDTLS_OID_SERVER_AUTH;
    mbedtls_asn1_sequence extendedUsage;
    std::memset(&extendedUsage, 0, sizeof extendedUsage);
    extendedUsage.buf.tag = MBEDTLS_ASN1_OID;
    extendedUsage.buf.p = reinterpret_cast<unsigned char*>(const_cast<char*>(purpose));
    extendedUsage.buf.len = client ? MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)
                                   : MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH);

    unsigned char serial[16];
    if (!check(mbedtls_psa_get_random(MBEDTLS_PSA_RANDOM_STATE, serial, sizeof serial), "serial",
               error))
        return false;
    serial[0] = (serial[0] & 0x7f) | 0x40;  // positive, and exactly 16 bytes long

    time_t now = std::time(nullptr);
    char notBefore[16], notAfter[16];
    if (!x509Time(now - 3600, notBefore) ||
        !x509Time(now + time_t(request.days) * 86400, notAfter)) {
        *error = "cannot make certificate: clock out of range";
        return false;
    }
    std::string name = "CN=" + escapeForName(cn);
    if (selfSigned) issuerName = name;

    CertificateWriter w;
    mbedtls_x509write_crt_set_version(w.get(), MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(w.get(), MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(w.get(), key.get());
    mbedtls_x509write_crt_set_issuer_key(w.get(), selfSigned ? key.get() : issuer.key.get());
    if (!check(mbedtls_x509write_crt_set_subject_name(w.get(), name.c_str()), "subject", error) ||
        !check(mbedtls_x509write_crt_set_issuer_name(w.get(), issuerName.c_str()), "issuer",
               error) ||
        !check(mbedtls_x509write_crt_set_serial_raw(w.get(), serial, sizeof serial), "serial",
               error) ||
        !check(mbedtls_x509write_crt_set_validity(w.get(), notBefore, notAfter), "validity",
               error) ||
        !check(mbedtls_x509write_crt_set_basic_constraints(w.get(), authority ? 1 : 0,
                                                           authority ? 0 : -1),
               "basicConstraints", error) ||
        !check(mbedtls_x509write_crt_set_key_usage(
                   w.get(), authority ? MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN
                                      : MBEDTLS_X509_KU_DIGITAL_SIGNATURE),
               "keyUsage", error) ||
        (!authority && !check(mbedtls_x509write_crt_set_ext_key_usage(w.get(), &extendedUsage),
                              "extKeyUsage", error)) ||
        (!sans.empty() &&
         !check(mbedtls_x509write_crt_set_subject_alternative_name(w.get(), &sans.front()),
                "subjectAltName", error)) ||
        !check(mbedtls_x509write_crt_set_subject_key_identifier(w.get()), "subjectKeyIdentifier",
               error) ||
        !check(mbedtls_x509write_crt_set_authority_key_identifier(w.get()),
               "authorityKeyIdentifier", error))
        return false;

    unsigned char buf[4096];
    if (!check(mbedtls_x509write_crt_pem(w.get(), buf, sizeof buf, mbedtls_psa_get_random,
                                         MBEDTLS_PSA_RANDOM_STATE),
               "encoding", error))
        return false;
    std::string cert(reinterpret_cast<const char*>(buf));
    if (!check(mbedtls_pk_write_key_pem(key.get(), buf, sizeof buf), "key encoding", error))
        return false;
    std::string pem(reinterpret_cast<const char*>(buf));
    mbedtls_platform_zeroize(buf, sizeof buf);
    *certificate_pem = std::move(cert);
    *private_key_pem = std::move(pem);
    return true;
}

}  // namespace sidecar::tls::mbed
