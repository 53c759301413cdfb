#include "tls/openssl/x509.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <ctime>

#include "tls/common.h"
#include "tls/policy.h"

namespace sidecar::tls::ossl {
namespace {

struct BioFree {
    void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

bool isPem(const std::string& data) { return data.find("-----BEGIN ") != std::string::npos; }

BioPtr memoryBio(const std::string& data) {
    return BioPtr(BIO_new_mem_buf(data.data(), int(data.size())));
}

bool isCertificateBlock(const char* name) {
    return std::strcmp(name, PEM_STRING_X509) == 0 || std::strcmp(name, PEM_STRING_X509_OLD) == 0 ||
           std::strcmp(name, PEM_STRING_X509_TRUSTED) == 0;
}

// Every certificate block of a PEM text, parsed. *failed counts blocks that did not parse.
std::vector<X509Ptr> readCertificates(const std::string& data, int* failed) {
    std::vector<X509Ptr> out;
    *failed = 0;
    if (!isPem(data)) {
        const unsigned char* p = reinterpret_cast<const unsigned char*>(data.data());
        X509* x = d2i_X509(nullptr, &p, long(data.size()));
        if (x != nullptr)
            out.emplace_back(x);
        else
            ++*failed;
        return out;
    }
    BioPtr bio = memoryBio(data);
    if (!bio) return out;
    for (;;) {
        char* name = nullptr;
        char* header = nullptr;
        unsigned char* der = nullptr;
        long len = 0;
        if (PEM_read_bio(bio.get(), &name, &header, &der, &len) != 1) break;
        if (isCertificateBlock(name)) {
            const unsigned char* p = der;
            X509* x = d2i_X509(nullptr, &p, len);
            if (x != nullptr)
                out.emplace_back(x);
            else
                ++*failed;
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(der);
    }
    ERR_clear_error();  // the end of the text reads as "no start line"
    return out;
}

int noPassphrase(char*, int, int, void*) noexcept { return -1; }

int64_t unixSeconds(const ASN1_TIME* t) {
    struct tm tm;
    std::memset(&tm, 0, sizeof tm);
    if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
    return daysFromCivil(tm.tm_year + 1900, unsigned(tm.tm_mon + 1), unsigned(tm.tm_mday)) * 86400 +
           tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
}

// The serial number's DER content octets (with a leading zero when the top bit is set), as the
// certificate carries it.
std::string serialHex(X509* crt) {
    const ASN1_INTEGER* serial = X509_get0_serialNumber(crt);
    unsigned char* der = nullptr;
    int len = i2d_ASN1_INTEGER(serial, &der);
    if (len <= 2 || der == nullptr) {
        OPENSSL_free(der);
        return "";
    }
    size_t at = 2;
    if (der[1] & 0x80) at = 2 + size_t(der[1] & 0x7f);
    std::string out = at < size_t(len) ? hexLower(der + at, size_t(len) - at) : std::string();
    OPENSSL_free(der);
    return out;
}

std::string commonName(const X509_NAME* name) {
    std::string cn;
    int count = X509_NAME_entry_count(name);
    for (int i = 0; i < count; ++i) {
        const X509_NAME_ENTRY* e = X509_NAME_get_entry(name, i);
        if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)) != NID_commonName) continue;
        const ASN1_STRING* v = X509_NAME_ENTRY_get_data(e);
        cn.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                  size_t(ASN1_STRING_length(v)));  // last one wins
    }
    return cn;
}

template <typename F>
void forEachSan(X509* crt, F&& f) {
    auto* names =
        static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(crt, NID_subject_alt_name, nullptr, nullptr));
    if (names == nullptr) return;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
        const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
        if (n->type == GEN_DNS || n->type == GEN_URI) {
            const ASN1_IA5STRING* s =
                n->type == GEN_DNS ? n->d.dNSName : n->d.uniformResourceIdentifier;
            f(n->type, std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                   size_t(ASN1_STRING_length(s))));
        }
    }
    GENERAL_NAMES_free(names);
}

}  // namespace

std::string opensslErrorText() {
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0) return "unknown error";
    const char* reason = ERR_reason_error_string(e);
    if (reason != nullptr) return reason;
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

bool loadKeyPair(const KeyPairSource& source, KeyPair* out, std::string* error) {
    std::string certData, certName, keyData, keyName;
    if (!sourceData(source.certificate_pem, source.certificate_path, "certificate", &certData,
                    &certName, error))
        return false;
    if (!sourceData(source.private_key_pem, source.private_key_path, "private key", &keyData,
                    &keyName, error))
        return false;
    out->source = certName;

    ERR_clear_error();
    int failed = 0;
    std::vector<X509Ptr> certs = readCertificates(certData, &failed);
    if (failed > 0 && !certs.empty()) {
        *error = "cannot parse certificate " + certName + ": " + std::to_string(failed) +
                 " of its certificates are invalid";
        return false;
    }
    if (certs.empty()) {
        *error = "cannot parse certificate " + certName + ": " +
                 (failed > 0 ? opensslErrorText() : std::string("no certificate found"));
        return false;
    }
    out->leaf = std::move(certs[0]);
    out->chain.reset(sk_X509_new_null());
    if (!out->chain) {
        *error = "out of memory";
        return false;
    }
    for (size_t i = 1; i < certs.size(); ++i) {
        if (sk_X509_push(out->chain.get(), certs[i].get()) == 0) {
            *error = "out of memory";
            return false;
        }
        certs[i].release();
    }

    EVP_PKEY* key = nullptr;
    if (isPem(keyData)) {
        if (keyData.find("ENCRYPTED") != std::string::npos) {
            OPENSSL_cleanse(keyData.data(), keyData.size());
            *error = "cannot use private key " + keyName +
                     ": it is encrypted (a passphrase-free key is needed)";
            return false;
        }
        BioPtr bio = memoryBio(keyData);
        if (bio) key = PEM_read_bio_PrivateKey(bio.get(), nullptr, noPassphrase, nullptr);
    } else {
        const unsigned char* p = reinterpret_cast<const unsigned char*>(keyData.data());
        key = d2i_AutoPrivateKey(nullptr, &p, long(keyData.size()));
    }
    OPENSSL_cleanse(keyData.data(), keyData.size());
    if (key == nullptr) {
        *error = "cannot parse private key " + keyName + ": " + opensslErrorText();
        return false;
    }
    out->key.reset(key);
    int type = EVP_PKEY_get_base_id(key);
    if (type != EVP_PKEY_EC && type != EVP_PKEY_RSA) {
        *error = "cannot use private key " + keyName + ": only ECDSA and RSA keys are supported";
        return false;
    }
    if (X509_check_private_key(out->leaf.get(), key) != 1) {
        ERR_clear_error();
        *error = "private key does not match certificate (key " + keyName + ", certificate " +
                 certName + ")";
        return false;
    }
    return true;
}

bool loadCaBundle(const std::string& path, std::vector<X509Ptr>* out, std::string* error) {
    std::string data;
    if (!readFile(path, &data, error)) return false;
    ERR_clear_error();
    int failed = 0;
    *out = readCertificates(data, &failed);
    if (out->empty()) {
        *error = "cannot parse CA bundle " + path + ": " +
                 (failed > 0 ? opensslErrorText() : std::string("no certificate found"));
        return false;
    }
    return true;
}

bool loadCrl(const std::string& path, const std::vector<X509Ptr>& ca, std::vector<X509CrlPtr>* out,
             std::string* error) {
    std::string data;
    if (!readFile(path, &data, error)) return false;
    ERR_clear_error();
    out->clear();
    BioPtr bio = memoryBio(data);
    if (isPem(data)) {
        while (X509_CRL* crl = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr))
            out->emplace_back(crl);
    } else if (X509_CRL* crl = d2i_X509_CRL_bio(bio.get(), nullptr)) {
        out->emplace_back(crl);
    }
    ERR_clear_error();  // the end of the PEM input reads as an error
    if (out->empty()) {
        *error = crl_text::noCrl(path);
        return false;
    }
    const int64_t now = int64_t(std::time(nullptr));
    for (const X509CrlPtr& crl : *out) {
        const std::string issuer = oneLineName(X509_CRL_get_issuer(crl.get()));
        X509* signer = nullptr;
        for (const X509Ptr& c : ca) {
            if (X509_NAME_cmp(X509_get_subject_name(c.get()), X509_CRL_get_issuer(crl.get())) ==
                0) {
                signer = c.get();
                break;
            }
        }
        if (signer == nullptr) {
            *error = crl_text::notFromBundle(path, issuer);
            return false;
        }
        if (X509_CRL_verify(crl.get(), X509_get0_pubkey(signer)) != 1) {
            ERR_clear_error();
            *error = crl_text::badSignature(path, issuer);
            return false;
        }
        const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl.get());
        if (next != nullptr && unixSeconds(next) <= now) {
            *error = crl_text::expired(path, issuer, unixSeconds(next));
            return false;
        }
    }
    return true;
}

CertificateInfo certificateInfo(X509* crt, const std::string& source) {
    CertificateInfo info;
    info.source = source;
    info.subject = oneLineName(X509_get_subject_name(crt));
    info.serial_hex = serialHex(crt);
    info.not_before = unixSeconds(X509_get0_notBefore(crt));
    info.not_after = unixSeconds(X509_get0_notAfter(crt));
    return info;
}

void fillPeerIdentity(X509* crt, PeerIdentity* identity) {
    identity->presented = true;
    identity->subject = oneLineName(X509_get_subject_name(crt));
    identity->cn = commonName(X509_get_subject_name(crt));
    identity->san_uri.clear();
    identity->san_dns.clear();
    forEachSan(crt, [identity](int type, std::string value) {
        (type == GEN_DNS ? identity->san_dns : identity->san_uri).push_back(std::move(value));
    });
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (X509_digest(crt, EVP_sha256(), digest, &len) == 1)
        identity->sha256_hex = hexLower(digest, len);
    else
        identity->sha256_hex.clear();
}

std::string oneLineName(const X509_NAME* name) {
    // OpenSSL keeps the attributes in certificate (DER) order; RFC 4514 prints them reversed.
    std::string out;
    for (int i = X509_NAME_entry_count(name) - 1; i >= 0; --i) {
        const X509_NAME_ENTRY* e = X509_NAME_get_entry(name, i);
        const ASN1_OBJECT* obj = X509_NAME_ENTRY_get_object(e);
        int nid = OBJ_obj2nid(obj);
        const char* shortName = nid != NID_undef ? OBJ_nid2sn(nid) : nullptr;
        std::string attr;
        if (shortName != nullptr) {
            attr = shortName;
        } else {
            char buf[64];
            attr = OBJ_obj2txt(buf, sizeof buf, obj, 1) > 0 ? buf : "?";
        }
        const ASN1_STRING* v = X509_NAME_ENTRY_get_data(e);
        if (!out.empty()) out.push_back(',');
        out +=
            attr + "=" + escapeNameValue(ASN1_STRING_get0_data(v), size_t(ASN1_STRING_length(v)));
    }
    return out;
}

std::vector<std::string> certificateDnsNames(X509* crt) {
    std::vector<std::string> names;
    forEachSan(crt, [&names](int type, std::string value) {
        if (type == GEN_DNS) names.push_back(std::move(value));
    });
    if (names.empty()) {
        std::string cn = commonName(X509_get_subject_name(crt));
        if (!cn.empty()) names.push_back(cn);
    }
    return names;
}

}  // namespace sidecar::tls::ossl
