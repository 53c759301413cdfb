#include "tls/mbedtls/x509.h"

#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "tls/common.h"
#include "tls/mbedtls/psa_rng.h"
#include "tls/policy.h"

namespace sidecar::tls::mbed {
namespace {

bool isPem(const std::string& data) { return data.find("-----BEGIN ") != std::string::npos; }

// PEM input must be handed to mbedTLS with its terminating NUL counted.
size_t parseLength(const std::string& data) { return isPem(data) ? data.size() + 1 : data.size(); }

template <typename F>
void forEachSan(const mbedtls_x509_crt& crt, F&& f) {
    for (const mbedtls_x509_sequence* cur = &crt.subject_alt_names; cur != nullptr;
         cur = cur->next) {
        if (cur->buf.p == nullptr) continue;
        mbedtls_x509_subject_alternative_name san;
        std::memset(&san, 0, sizeof san);
        // Types mbedTLS does not parse (e.g. otherName variants) come back as errors: skip them.
        if (mbedtls_x509_parse_subject_alt_name(&cur->buf, &san) != 0) continue;
        f(san);
        mbedtls_x509_free_subject_alt_name(&san);
    }
}

std::string commonName(const mbedtls_x509_name& name) {
    std::string cn;
    for (const mbedtls_x509_name* n = &name; n != nullptr; n = n->next) {
        if (n->oid.p != nullptr && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0)
            cn.assign(reinterpret_cast<const char*>(n->val.p), n->val.len);  // last one wins
    }
    return cn;
}

}  // namespace

std::string mbedtlsErrorText(int ret) {
    char buf[256];
    mbedtls_strerror(ret, buf, sizeof buf);
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

    int ret = mbedtls_x509_crt_parse(out->chain.get(),
                                     reinterpret_cast<const unsigned char*>(certData.c_str()),
                                     parseLength(certData));
    if (ret < 0) {
        *error = "cannot parse certificate " + certName + ": " + mbedtlsErrorText(ret);
        return false;
    }
    if (ret > 0) {
        *error = "cannot parse certificate " + certName + ": " + std::to_string(ret) +
                 " of its certificates are invalid";
        return false;
    }

    ret = mbedtls_pk_parse_key(
        out->key.get(), reinterpret_cast<const unsigned char*>(keyData.c_str()),
        parseLength(keyData), nullptr, 0, mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE);
    mbedtls_platform_zeroize(keyData.data(), keyData.size());
    if (ret == MBEDTLS_ERR_PK_PASSWORD_REQUIRED) {
        *error = "cannot use private key " + keyName +
                 ": it is encrypted (a passphrase-free key is needed)";
        return false;
    }
    if (ret != 0) {
        *error = "cannot parse private key " + keyName + ": " + mbedtlsErrorText(ret);
        return false;
    }
    mbedtls_pk_type_t type = mbedtls_pk_get_type(out->key.get());
    if (type != MBEDTLS_PK_ECKEY && type != MBEDTLS_PK_RSA) {
        *error = "cannot use private key " + keyName + ": only ECDSA and RSA keys are supported";
        return false;
    }
    if (mbedtls_pk_check_pair(&out->chain.get()->pk, out->key.get(), mbedtls_psa_get_random,
                              MBEDTLS_PSA_RANDOM_STATE) != 0) {
        *error = "private key does not match certificate (key " + keyName + ", certificate " +
                 certName + ")";
        return false;
    }
    return true;
}

bool loadCaBundle(const std::string& path, Certificates* out, std::string* error) {
    std::string data;
    if (!readFile(path, &data, error)) return false;
    int ret = mbedtls_x509_crt_parse(
        out->get(), reinterpret_cast<const unsigned char*>(data.c_str()), parseLength(data));
    if (out->empty()) {
        *error = "cannot parse CA bundle " + path + ": " +
                 (ret < 0 ? mbedtlsErrorText(ret) : std::string("no certificate found"));
        return false;
    }
    return true;
}

bool loadCrl(const std::string& path, const Certificates& ca, Crls* out, std::string* error) {
    std::string data;
    if (!readFile(path, &data, error)) return false;
    int ret = mbedtls_x509_crl_parse(
        out->get(), reinterpret_cast<const unsigned char*>(data.c_str()), parseLength(data));
    if (ret != 0 || out->get()->raw.p == nullptr) {
        *error = crl_text::noCrl(path);
        return false;
    }
    const int64_t now = int64_t(std::time(nullptr));
    for (const mbedtls_x509_crl* crl = out->get(); crl != nullptr && crl->raw.p != nullptr;
         crl = crl->next) {
        const std::string issuer = oneLineName(crl->issuer);
        const mbedtls_x509_crt* signer = nullptr;
        for (const mbedtls_x509_crt* c = ca.get(); c != nullptr && c->raw.p != nullptr;
             c = c->next) {
            if (c->subject_raw.len == crl->issuer_raw.len &&
                std::memcmp(c->subject_raw.p, crl->issuer_raw.p, c->subject_raw.len) == 0) {
                signer = c;
                break;
            }
        }
        if (signer == nullptr) {
            *error = crl_text::notFromBundle(path, issuer);
            return false;
        }
        // mbedTLS has no public call to verify a CRL on its own; this is what its chain
        // verification does with each CRL.
        const mbedtls_md_type_t md = crl->MBEDTLS_PRIVATE(sig_md);
        const mbedtls_md_info_t* info = mbedtls_md_info_from_type(md);
        unsigned char hash[MBEDTLS_MD_MAX_SIZE];
        const mbedtls_x509_buf& sig = crl->MBEDTLS_PRIVATE(sig);
        if (info == nullptr || mbedtls_md(info, crl->tbs.p, crl->tbs.len, hash) != 0 ||
            mbedtls_pk_verify_ext(crl->MBEDTLS_PRIVATE(sig_pk), crl->MBEDTLS_PRIVATE(sig_opts),
                                  const_cast<mbedtls_pk_context*>(&signer->pk), md, hash,
                                  mbedtls_md_get_size(info), sig.p, sig.len) != 0) {
            *error = crl_text::badSignature(path, issuer);
            return false;
        }
        if (crl->next_update.year != 0 && unixSeconds(crl->next_update) <= now) {
            *error = crl_text::expired(path, issuer, unixSeconds(crl->next_update));
            return false;
        }
    }
    return true;
}

CertificateInfo certificateInfo(const mbedtls_x509_crt& crt, const std::string& source) {
    CertificateInfo info;
    info.source = source;
    info.subject = oneLineName(crt.subject);
    info.serial_hex = hexLower(crt.serial.p, crt.serial.len);
    info.not_before = unixSeconds(crt.valid_from);
    info.not_after = unixSeconds(crt.valid_to);
    return info;
}

void fillPeerIdentity(const mbedtls_x509_crt& crt, PeerIdentity* identity) {
    identity->presented = true;
    identity->subject = oneLineName(crt.subject);
    identity->cn = commonName(crt.subject);
    identity->san_uri.clear();
    identity->san_dns.clear();
    forEachSan(crt, [identity](const mbedtls_x509_subject_alternative_name& san) {
        const mbedtls_x509_buf& v = san.san.unstructured_name;
        if (san.type == MBEDTLS_X509_SAN_DNS_NAME)
            identity->san_dns.emplace_back(reinterpret_cast<const char*>(v.p), v.len);
        else if (san.type == MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER)
            identity->san_uri.emplace_back(reinterpret_cast<const char*>(v.p), v.len);
    });
    unsigned char digest[32];
    mbedtls_sha256(crt.raw.p, crt.raw.len, digest, 0);
    identity->sha256_hex = hexLower(digest, sizeof digest);
}

std::string oneLineName(const mbedtls_x509_name& name) {
    // mbedTLS keeps the attributes in certificate (DER) order; RFC 4514 prints them reversed.
    std::vector<std::string> parts;
    for (const mbedtls_x509_name* n = &name; n != nullptr; n = n->next) {
        if (n->oid.p == nullptr) continue;
        const char* shortName = nullptr;
        std::string attr;
        if (mbedtls_oid_get_attr_short_name(&n->oid, &shortName) == 0) {
            attr = shortName;
        } else {
            char buf[64];
            attr = mbedtls_oid_get_numeric_string(buf, sizeof buf, &n->oid) > 0 ? buf : "?";
        }
        parts.push_back(attr + "=" + escapeNameValue(n->val.p, n->val.len));
    }
    std::string out;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (!out.empty()) out.push_back(',');
        out += *it;
    }
    return out;
}

int64_t unixSeconds(const mbedtls_x509_time& t) {
    return daysFromCivil(t.year, unsigned(t.mon), unsigned(t.day)) * 86400 + t.hour * 3600 +
           t.min * 60 + t.sec;
}

std::vector<std::string> certificateDnsNames(const mbedtls_x509_crt& crt) {
    std::vector<std::string> names;
    forEachSan(crt, [&names](const mbedtls_x509_subject_alternative_name& san) {
        if (san.type == MBEDTLS_X509_SAN_DNS_NAME)
            names.emplace_back(reinterpret_cast<const char*>(san.san.unstructured_name.p),
                               san.san.unstructured_name.len);
    });
    if (names.empty()) {
        std::string cn = commonName(crt.subject);
        if (!cn.empty()) names.push_back(cn);
    }
    return names;
}

}  // namespace sidecar::tls::mbed
