#pragma once
// Certificates and keys for the OpenSSL backend: loading from files or PEM with the same
// messages as the other backend, and turning a certificate into the facts the seam reports.

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

#include "tls/backend.h"

namespace sidecar::tls::ossl {

struct X509Free {
    void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509StackFree {
    void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using X509StackPtr = std::unique_ptr<STACK_OF(X509), X509StackFree>;
struct X509CrlFree {
    void operator()(X509_CRL* c) const { X509_CRL_free(c); }
};
using X509CrlPtr = std::unique_ptr<X509_CRL, X509CrlFree>;

// A leaf certificate, the rest of its chain, and its private key.
struct KeyPair {
    X509Ptr leaf;
    X509StackPtr chain;  // intermediates, possibly empty
    PkeyPtr key;
    std::string source;  // certificate path, or "<memory>"
};

// The reason of the oldest error in OpenSSL's queue of this thread, which is then cleared.
std::string opensslErrorText();

// Loads and cross-checks a certificate chain and its key. Messages name the file at fault.
bool loadKeyPair(const KeyPairSource& source, KeyPair* out, std::string* error);

// Loads a CA bundle; at least one certificate must parse (unparseable extra entries in a
// system bundle are skipped).
bool loadCaBundle(const std::string& path, std::vector<X509Ptr>* out, std::string* error);

// Loads CRLs (PEM or DER) and checks that each is issued and signed by a CA of `ca` and is not
// out of date, with the same messages as the other backend.
bool loadCrl(const std::string& path, const std::vector<X509Ptr>& ca, std::vector<X509CrlPtr>* out,
             std::string* error);

CertificateInfo certificateInfo(X509* crt, const std::string& source);
void fillPeerIdentity(X509* crt, PeerIdentity* identity);

// RFC 4514 order (most specific first), e.g. "CN=web,O=acme,C=DE".
std::string oneLineName(const X509_NAME* name);

// DNS names a certificate is for: its SAN DNS entries, or its CN when it has none.
std::vector<std::string> certificateDnsNames(X509* crt);

}  // namespace sidecar::tls::ossl
