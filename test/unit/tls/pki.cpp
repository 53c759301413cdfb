#include "pki.h"

#include <mbedtls/asn1.h>
#include <mbedtls/ecp.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/rsa.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>
#include <psa/crypto.h>

extern "C" {  // mbedTLS 3.6 ships this header without a C++ guard
#include <mbedtls/psa_util.h>
}

#include <array>
#include <cstring>
#include <ctime>
#include <deque>
#include <stdexcept>

namespace sidecar::tls::test {
namespace {

void must(int ret, const char* what) {
    if (ret != 0)
        throw std::runtime_error(std::string("test PKI: ") + what +
                                 " failed: " + std::to_string(ret));
}

struct Key {
    Key() { mbedtls_pk_init(&pk); }
    ~Key() { mbedtls_pk_free(&pk); }
    mbedtls_pk_context pk;
};

struct Writer {
    Writer() { mbedtls_x509write_crt_init(&w); }
    ~Writer() { mbedtls_x509write_crt_free(&w); }
    mbedtls_x509write_cert w;
};

void generateKey(Key& key, bool rsa) {
    if (psa_crypto_init() != PSA_SUCCESS) throw std::runtime_error("psa_crypto_init");
    if (rsa) {
        must(mbedtls_pk_setup(&key.pk, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA)), "pk_setup");
        must(mbedtls_rsa_gen_key(mbedtls_pk_rsa(key.pk), mbedtls_psa_get_random,
                                 MBEDTLS_PSA_RANDOM_STATE, 2048, 65537),
             "rsa_gen_key");
    } else {
        must(mbedtls_pk_setup(&key.pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), "pk_setup");
        must(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key.pk),
                                 mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE),
             "ecp_gen_key");
    }
}

void parseKey(Key& key, const std::string& pem) {
    must(mbedtls_pk_parse_key(&key.pk, reinterpret_cast<const unsigned char*>(pem.c_str()),
                              pem.size() + 1, nullptr, 0, mbedtls_psa_get_random,
                              MBEDTLS_PSA_RANDOM_STATE),
         "pk_parse_key");
}

std::string timeString(int64_t offset) {
    time_t t = time(nullptr) + time_t(offset);
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[16];
    strftime(buf, sizeof buf, "%Y%m%d%H%M%S", &tm);
    return buf;
}

Issued write(const CertSpec& spec, Key& subjectKey, Key& issuerKey, const std::string& issuerName) {
    Writer w;
    mbedtls_x509write_crt_set_version(&w.w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w.w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w.w, &subjectKey.pk);
    mbedtls_x509write_crt_set_issuer_key(&w.w, &issuerKey.pk);
    must(mbedtls_x509write_crt_set_subject_name(&w.w, spec.subject.c_str()), "subject");
    must(mbedtls_x509write_crt_set_issuer_name(&w.w, issuerName.c_str()), "issuer");
    unsigned char serial[12];
    must(mbedtls_psa_get_random(nullptr, serial, sizeof serial), "serial");
    serial[0] = (serial[0] & 0x7f) | 0x01;
    must(mbedtls_x509write_crt_set_serial_raw(&w.w, serial, sizeof serial), "serial");
    std::string from = timeString(spec.not_before), to = timeString(spec.not_after);
    must(mbedtls_x509write_crt_set_validity(&w.w, from.c_str(), to.c_str()), "validity");
    must(mbedtls_x509write_crt_set_basic_constraints(&w.w, spec.ca ? 1 : 0, -1), "basic");
    must(mbedtls_x509write_crt_set_key_usage(
             &w.w, spec.ca ? MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN
                           : MBEDTLS_X509_KU_DIGITAL_SIGNATURE |
                                 (spec.rsa ? MBEDTLS_X509_KU_KEY_ENCIPHERMENT : 0)),
         "key usage");
    must(mbedtls_x509write_crt_set_subject_key_identifier(&w.w), "skid");
    must(mbedtls_x509write_crt_set_authority_key_identifier(&w.w), "akid");

    std::deque<mbedtls_asn1_sequence> ekus;
    for (const std::string& e : spec.eku) {
        mbedtls_asn1_sequence s;
        std::memset(&s, 0, sizeof s);
        s.buf.tag = MBEDTLS_ASN1_OID;
        const char* oid = e == "serverAuth" ? MBEDTLS_OID_SERVER_AUTH : MBEDTLS_OID_CLIENT_AUTH;
        s.buf.p = reinterpret_cast<unsigned char*>(const_cast<char*>(oid));
        s.buf.len = MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH);
        ekus.push_back(s);
    }
    for (size_t i = 0; i + 1 < ekus.size(); ++i) ekus[i].next = &ekus[i + 1];
    if (!ekus.empty()) must(mbedtls_x509write_crt_set_ext_key_usage(&w.w, &ekus.front()), "eku");

    std::deque<mbedtls_x509_san_list> sans;
    std::deque<std::array<unsigned char, 16>> ipBytes;
    auto add = [&sans](int type, const unsigned char* p, size_t n) {
        mbedtls_x509_san_list node;
        std::memset(&node, 0, sizeof node);
        node.node.type = type;
        node.node.san.unstructured_name.p = const_cast<unsigned char*>(p);
        node.node.san.unstructured_name.len = n;
        sans.push_back(node);
    };
    for (const std::string& d : spec.dns)
        add(MBEDTLS_X509_SAN_DNS_NAME, reinterpret_cast<const unsigned char*>(d.data()), d.size());
    for (const std::string& u : spec.uris)
        add(MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER,
            reinterpret_cast<const unsigned char*>(u.data()), u.size());
    for (const std::string& ip : spec.ips) {
        ipBytes.emplace_back();
        size_t n = mbedtls_x509_crt_parse_cn_inet_pton(ip.c_str(), ipBytes.back().data());
        if (n == 0) throw std::runtime_error("test PKI: bad IP " + ip);
        add(MBEDTLS_X509_SAN_IP_ADDRESS, ipBytes.back().data(), n);
    }
    for (size_t i = 0; i + 1 < sans.size(); ++i) sans[i].next = &sans[i + 1];
    if (!sans.empty())
        must(mbedtls_x509write_crt_set_subject_alternative_name(&w.w, &sans.front()), "san");

    unsigned char buf[8192];
    must(mbedtls_x509write_crt_pem(&w.w, buf, sizeof buf, mbedtls_psa_get_random,
                                   MBEDTLS_PSA_RANDOM_STATE),
         "crt_pem");
    Issued out;
    out.subject = spec.subject;
    out.cert_pem = reinterpret_cast<const char*>(buf);
    must(mbedtls_pk_write_key_pem(&subjectKey.pk, buf, sizeof buf), "key_pem");
    out.key_pem = reinterpret_cast<const char*>(buf);
    return out;
}

}  // namespace

Issued makeCa(const std::string& subject) {
    Key key;
    generateKey(key, false);
    CertSpec spec;
    spec.subject = subject;
    spec.ca = true;
    spec.not_after = 365 * 86400;
    return write(spec, key, key, subject);
}

Issued issue(const CertSpec& spec, const Issued& issuer) {
    Key key, issuerKey;
    generateKey(key, spec.rsa);
    parseKey(issuerKey, issuer.key_pem);
    return write(spec, key, issuerKey, issuer.subject);
}

namespace {

// DER tag-length-value.
std::string tlv(unsigned char tag, const std::string& content) {
    std::string out(1, char(tag));
    size_t n = content.size();
    if (n < 0x80) {
        out.push_back(char(n));
    } else if (n < 0x100) {
        out += {char(0x81), char(n)};
    } else {
        out += {char(0x82), char(n >> 8), char(n & 0xff)};
    }
    return out + content;
}

std::string utcTime(int64_t offset) {
    time_t t = time(nullptr) + time_t(offset);
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[16];
    strftime(buf, sizeof buf, "%y%m%d%H%M%SZ", &tm);
    return tlv(0x17, buf);
}

struct Crt {
    Crt(const std::string& pem) {
        mbedtls_x509_crt_init(&crt);
        must(mbedtls_x509_crt_parse(&crt, reinterpret_cast<const unsigned char*>(pem.c_str()),
                                    pem.size() + 1),
             "crt_parse");
    }
    ~Crt() { mbedtls_x509_crt_free(&crt); }
    mbedtls_x509_crt crt;
};

}  // namespace

std::string makeCrl(const Issued& ca, const std::vector<std::string>& revoked,
                    int64_t next_update) {
    Crt caCrt(ca.cert_pem);
    Key key;
    parseKey(key, ca.key_pem);
    // ecdsa-with-SHA256 (1.2.840.10045.4.3.2), the test CAs' key type.
    const std::string oid("\x2a\x86\x48\xce\x3d\x04\x03\x02", 8);
    const std::string algorithm = tlv(0x30, tlv(0x06, oid));
    std::string entries;
    for (const std::string& pem : revoked) {
        Crt c(pem);
        std::string serial(reinterpret_cast<const char*>(c.crt.serial.p), c.crt.serial.len);
        entries += tlv(0x30, tlv(0x02, serial) + utcTime(-60));
    }
    std::string tbs = tlv(0x02, std::string(1, '\x01')) + algorithm +
                      std::string(reinterpret_cast<const char*>(caCrt.crt.subject_raw.p),
                                  caCrt.crt.subject_raw.len) +
                      utcTime(-3600) + utcTime(next_update);
    if (!entries.empty()) tbs += tlv(0x30, entries);
    tbs = tlv(0x30, tbs);
    unsigned char hash[32];
    must(mbedtls_sha256(reinterpret_cast<const unsigned char*>(tbs.data()), tbs.size(), hash, 0),
         "sha256");
    unsigned char sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t sigLen = 0;
    must(mbedtls_pk_sign(&key.pk, MBEDTLS_MD_SHA256, hash, sizeof hash, sig, sizeof sig, &sigLen,
                         mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE),
         "pk_sign");
    const std::string signature(reinterpret_cast<char*>(sig), sigLen);
    std::string der = tlv(0x30, tbs + algorithm + tlv(0x03, std::string(1, '\0') + signature));
    unsigned char pem[8192];
    size_t pemLen = 0;
    must(mbedtls_pem_write_buffer("-----BEGIN X509 CRL-----\n", "-----END X509 CRL-----\n",
                                  reinterpret_cast<const unsigned char*>(der.data()), der.size(),
                                  pem, sizeof pem, &pemLen),
         "pem_write");
    return std::string(reinterpret_cast<char*>(pem));
}

std::vector<unsigned char> pemToDer(const std::string& pem) {
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    must(mbedtls_x509_crt_parse(&crt, reinterpret_cast<const unsigned char*>(pem.c_str()),
                                pem.size() + 1),
         "crt_parse");
    std::vector<unsigned char> der(crt.raw.p, crt.raw.p + crt.raw.len);
    mbedtls_x509_crt_free(&crt);
    return der;
}

std::string sha256Hex(const std::vector<unsigned char>& der) {
    unsigned char digest[32];
    mbedtls_sha256(der.data(), der.size(), digest, 0);
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char b : digest) {
        out.push_back(hex[b >> 4]);
        out.push_back(hex[b & 15]);
    }
    return out;
}

}  // namespace sidecar::tls::test
