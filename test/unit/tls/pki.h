#pragma once
// A small test PKI made with mbedTLS's X.509 writer: CAs, server and client certificates with
// chosen names, usages and validity. Output is PEM, so every backend can consume it.

#include <cstdint>
#include <string>
#include <vector>

namespace sidecar::tls::test {

struct Issued {
    std::string subject;  // as given, mbedTLS order (certificate order): "O=acme,CN=web"
    std::string cert_pem;
    std::string key_pem;
};

struct CertSpec {
    std::string subject = "CN=test";  // certificate (DER) order, e.g. "O=acme,CN=web"
    std::vector<std::string> dns;
    std::vector<std::string> uris;
    std::vector<std::string> ips;
    int64_t not_before = -3600;      // seconds relative to now
    int64_t not_after = 30 * 86400;  // seconds relative to now
    bool ca = false;
    std::vector<std::string> eku;  // "serverAuth", "clientAuth"; empty = no extension
    bool rsa = false;              // RSA 2048 instead of ECDSA P-256
};

// Self-signed CA (keyCertSign, cRLSign, CA:true).
Issued makeCa(const std::string& subject);
// A leaf signed by `issuer` (digitalSignature; EKU and SANs from the spec).
Issued issue(const CertSpec& spec, const Issued& issuer);

// A CRL (PEM) signed by `ca`, listing the serial numbers of `revoked` (PEM certificates), valid
// from an hour ago until `next_update` seconds from now (negative: already out of date).
std::string makeCrl(const Issued& ca, const std::vector<std::string>& revoked,
                    int64_t next_update = 86400);

// DER of the first certificate in a PEM string, and its SHA-256 as lower-case hex.
std::vector<unsigned char> pemToDer(const std::string& pem);
std::string sha256Hex(const std::vector<unsigned char>& der);

}  // namespace sidecar::tls::test
