// Self-signed certificates with OpenSSL: the same certificate profile as the other backend
// (see tls/mbedtls/selfsigned.h).

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <ctime>

#include "tls/openssl/x509.h"

namespace sidecar::tls::ossl {
namespace {

struct BioFree {
    void operator()(BIO* b) const { BIO_free(b); }
};

bool fail(const char* what, std::string* error) {
    *error = std::string("cannot make certificate: ") + what + ": " + opensslErrorText();
    return false;
}

std::string bioText(BIO* bio) {
    char* p = nullptr;
    long n = BIO_get_mem_data(bio, &p);
    return n > 0 ? std::string(p, size_t(n)) : std::string();
}

// Adds a v3 extension written in OpenSSL's configuration syntax (fixed strings only).
bool addExtension(X509* crt, int nid, const char* value, std::string* error) {
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, crt, crt, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
    if (ext == nullptr) return fail(value, error);
    int ok = X509_add_ext(crt, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 || fail(value, error);
}

// DNS names, and IP address entries for IP literals; built as values, so no name is parsed as
// configuration syntax.
bool addSubjectAltNames(X509* crt, const std::vector<std::string>& hosts, std::string* error) {
    GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
    if (names == nullptr) return fail("subjectAltName", error);
    bool ok = true;
    for (const std::string& host : hosts) {
        if (host.empty()) continue;
        unsigned char ip[16];
        int ipLen = 0;
        if (inet_pton(AF_INET, host.c_str(), ip) == 1)
            ipLen = 4;
        else if (inet_pton(AF_INET6, host.c_str(), ip) == 1)
            ipLen = 16;
        GENERAL_NAME* n = GENERAL_NAME_new();
        if (n == nullptr) {
            ok = false;
            break;
        }
        if (ipLen > 0) {
            ASN1_OCTET_STRING* v = ASN1_OCTET_STRING_new();
            if (v == nullptr || ASN1_OCTET_STRING_set(v, ip, ipLen) != 1) {
                ASN1_OCTET_STRING_free(v);
                GENERAL_NAME_free(n);
                ok = false;
                break;
            }
            GENERAL_NAME_set0_value(n, GEN_IPADD, v);
        } else {
            ASN1_IA5STRING* v = ASN1_IA5STRING_new();
            if (v == nullptr || ASN1_STRING_set(v, host.data(), int(host.size())) != 1) {
                ASN1_IA5STRING_free(v);
                GENERAL_NAME_free(n);
                ok = false;
                break;
            }
            GENERAL_NAME_set0_value(n, GEN_DNS, v);
        }
        if (sk_GENERAL_NAME_push(names, n) == 0) {
            GENERAL_NAME_free(n);
            ok = false;
            break;
        }
    }
    ok = ok && X509_add1_ext_i2d(crt, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1;
    GENERAL_NAMES_free(names);
    return ok || fail("subjectAltName", error);
}

}  // namespace

bool makeSelfSigned(const std::vector<std::string>& hosts, int days, std::string* certificate_pem,
                    std::string* private_key_pem, std::string* error) {
    if (hosts.empty() || hosts[0].empty()) {
        *error = "cannot make certificate: at least one host name is needed";
        return false;
    }
    if (days <= 0 || days > 36500) {
        *error = "cannot make certificate: days must be between 1 and 36500";
        return false;
    }
    ERR_clear_error();
    PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    if (!key) return fail("key generation", error);
    X509Ptr crt(X509_new());
    if (!crt) return fail("certificate", error);

    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof serial) != 1) return fail("serial", error);
    serial[0] = (serial[0] & 0x7f) | 0x40;  // positive, and exactly 16 bytes long
    BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
    bool serialOk = bn != nullptr && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(crt.get()));
    BN_free(bn);
    if (!serialOk) return fail("serial", error);

    time_t now = std::time(nullptr);
    if (X509_set_version(crt.get(), X509_VERSION_3) != 1 ||
        ASN1_TIME_set(X509_getm_notBefore(crt.get()), now - 3600) == nullptr ||
        ASN1_TIME_set(X509_getm_notAfter(crt.get()), now + time_t(days) * 86400) == nullptr)
        return fail("validity", error);
    X509_NAME* name = X509_get_subject_name(crt.get());
    if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(hosts[0].c_str()),
                                   int(hosts[0].size()), -1, 0) != 1 ||
        X509_set_issuer_name(crt.get(), name) != 1)
        return fail("subject", error);
    if (X509_set_pubkey(crt.get(), key.get()) != 1) return fail("public key", error);
    if (!addExtension(crt.get(), NID_basic_constraints, "CA:FALSE", error) ||
        !addExtension(crt.get(), NID_key_usage, "critical,digitalSignature", error) ||
        !addExtension(crt.get(), NID_ext_key_usage, "serverAuth", error) ||
        !addSubjectAltNames(crt.get(), hosts, error) ||
        !addExtension(crt.get(), NID_subject_key_identifier, "hash", error) ||
        !addExtension(crt.get(), NID_authority_key_identifier, "keyid:always", error))
        return false;
    if (X509_sign(crt.get(), key.get(), EVP_sha256()) <= 0) return fail("signature", error);

    std::unique_ptr<BIO, BioFree> certOut(BIO_new(BIO_s_mem()));
    std::unique_ptr<BIO, BioFree> keyOut(BIO_new(BIO_s_mem()));
    if (!certOut || !keyOut || PEM_write_bio_X509(certOut.get(), crt.get()) != 1)
        return fail("encoding", error);
    if (PEM_write_bio_PrivateKey(keyOut.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
        1)
        return fail("key encoding", error);
    *certificate_pem = bioText(certOut.get());
    *private_key_pem = bioText(keyOut.get());
    // The key's PEM copy inside the memory BIO is wiped before it is freed.
    char* p = nullptr;
    long n = BIO_get_mem_data(keyOut.get(), &p);
    if (n > 0) OPENSSL_cleanse(p, size_t(n));
    return true;
}

}  // namespace sidecar::tls::ossl
