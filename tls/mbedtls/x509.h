#pragma once
// Certificates and keys for the mbedTLS backend: loading from files or PEM with messages an
// operator can act on, and turning a parsed certificate into the facts the seam reports.

#include <mbedtls/pk.h>
#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tls/backend.h"
#include "tls/common.h"

namespace sidecar::tls::mbed {

// An owned certificate chain (or CA bundle).
class Certificates {
public:
    Certificates() { mbedtls_x509_crt_init(&crt_); }
    ~Certificates() { mbedtls_x509_crt_free(&crt_); }
    Certificates(const Certificates&) = delete;
    Certificates& operator=(const Certificates&) = delete;

    mbedtls_x509_crt* get() { return &crt_; }
    const mbedtls_x509_crt* get() const { return &crt_; }
    bool empty() const { return crt_.raw.p == nullptr; }

private:
    mbedtls_x509_crt crt_;
};

// Owned certificate revocation lists.
class Crls {
public:
    Crls() { mbedtls_x509_crl_init(&crl_); }
    ~Crls() { mbedtls_x509_crl_free(&crl_); }
    Crls(const Crls&) = delete;
    Crls& operator=(const Crls&) = delete;

    mbedtls_x509_crl* get() { return &crl_; }

private:
    mbedtls_x509_crl crl_;
};

class PrivateKey {
public:
    PrivateKey() { mbedtls_pk_init(&pk_); }
    ~PrivateKey() { mbedtls_pk_free(&pk_); }
    PrivateKey(const PrivateKey&) = delete;
    PrivateKey& operator=(const PrivateKey&) = delete;

    mbedtls_pk_context* get() { return &pk_; }

private:
    mbedtls_pk_context pk_;
};

// A certificate chain (leaf first) and its private key. mbedTLS configs keep pointers into it,
// so it lives behind a unique_ptr and never moves.
struct KeyPair {
    Certificates chain;
    PrivateKey key;
    std::string source;  // certificate path, or "<memory>"
};

// mbedTLS's description of an error code, for config-time messages.
std::string mbedtlsErrorText(int ret);

// Loads and cross-checks a certificate chain and its key. Messages name the file at fault.
bool loadKeyPair(const KeyPairSource& source, KeyPair* out, std::string* error);

// Loads a CA bundle; at least one certificate must parse (unparseable extra entries in a
// system bundle are skipped).
bool loadCaBundle(const std::string& path, Certificates* out, std::string* error);

// Loads CRLs (PEM or DER) and checks that each is issued and signed by a CA of `ca` and is not
// out of date, so that a bad file is refused when loaded rather than failing every client later.
bool loadCrl(const std::string& path, const Certificates& ca, Crls* out, std::string* error);

CertificateInfo certificateInfo(const mbedtls_x509_crt& crt, const std::string& source);
void fillPeerIdentity(const mbedtls_x509_crt& crt, PeerIdentity* identity);

// RFC 4514 order (most specific first), e.g. "CN=web,O=acme,C=DE".
std::string oneLineName(const mbedtls_x509_name& name);
int64_t unixSeconds(const mbedtls_x509_time& t);

// DNS names a certificate is for: its SAN DNS entries, or its CN when it has none.
std::vector<std::string> certificateDnsNames(const mbedtls_x509_crt& crt);

}  // namespace sidecar::tls::mbed
