// Certificates with OpenSSL: the same profiles as the other backend (see CertificateProfile in
// tls/backend.h).

#include "tls/openssl/selfsigned.h"

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
bool addExtension(X509* issuer, X509* crt, int nid, const char* value, std::string* error) {
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, crt, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
    if (ext == nullptr) return fail(value, error);
    int ok = X509_add_ext(crt, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 || fail(value, error);
}

// DNS names, IP address entries for IP literals and URIs for names with a ':'; built as values, so
// no name is parsed as configuration syntax.
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
            GENERAL_NAME_set0_value(n, host.find(':') != std::string::npos ? GEN_URI : GEN_DNS, v);
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
    ERR_clear_error();

    // The issuing CA, when there is one: its key must match, and it must be a CA.
    KeyPair issuer;
    const bool selfSigned = request.issuer_certificate_pem.empty();
    if (!selfSigned) {
        KeyPairSource source;
        source.certificate_pem = request.issuer_certificate_pem;
        source.private_key_pem = request.issuer_private_key_pem;
        std::string why;
        if (!loadKeyPair(source, &issuer, &why)) {
            *error = "cannot make certificate: issuer: " + why;
            return false;
        }
        if (X509_check_ca(issuer.leaf.get()) != 1) {
            *error = "cannot make certificate: the issuer is not a CA certificate";
            return false;
        }
    }

    PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    if (!key) return fail("key generation", error);
    X509Ptr crt(X509_new());
    if (!crt) return fail("certificate", error);
    X509* issuerCrt = selfSigned ? crt.get() : issuer.leaf.get();
    EVP_PKEY* issuerKey = selfSigned ? key.get() : issuer.key.get();

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
        ASN1_TIME_set(X509_getm_notAfter(crt.get()), now + time_t(request.days) * 86400) == nullptr)
        return fail("validity", error);
    X509_NAME* name = X509_get_subject_name(crt.get());
    if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(cn.c_str()),
                                   int(cn.size()), -1, 0) != 1 ||
        X509_set_issuer_name(crt.get(), X509_get_subject_name(issuerCrt)) != 1)
        return fail("subject", error);
    if (X509_set_pubkey(crt.get(), key.get()) != 1) return fail("public key", error);
    if (authority) {
        if (!addExtension(issuerCrt, crt.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0",
                          error) ||
            !addExtension(issuerCrt, crt.get(), NID_key_usage, "critical,keyCertSign,cRLSign",
                          error))
            return false;
    } else {
        const char* purpose =
            request.profile == CertificateProfile::Client ? "clientAuth" : "serverAuth";
        if (!addExtension(issuerCrt, crt.get(), NID_basic_constraints, "CA:FALSE", error) ||
            !addExtension(issuerCrt, crt.get(), NID_key_usage, "critical,digitalSignature",
                          error) ||
            !addExtension(issuerCrt, crt.get(), NID_ext_key_usage, purpose, error) ||
            !addSubjectAltNames(crt.get(), request.names, error))
            return false;
    }
    if (!addExtension(issuerCrt, crt.get(), NID_subject_key_identifier, "hash", error) ||
        !addExtension(issuerCrt, crt.get(), NID_authority_key_identifier, "keyid:always", error))
        return false;
    if (X509_sign(crt.get(), issuerKey, EVP_sha256()) <= 0) return fail("signature", error);

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
