#pragma once

#include <string>
#include <vector>

namespace sidecar::tls::mbed {

// See Backend::selfSigned: ECDSA P-256, X.509 v3, CN = hosts[0], SAN DNS names (IP address
// SANs for IP literals), CA:false, keyUsage digitalSignature, extKeyUsage serverAuth, random
// serial, valid from an hour ago (clock skew) until `days` from now.
bool makeSelfSigned(const std::vector<std::string>& hosts, int days, std::string* certificate_pem,
                    std::string* private_key_pem, std::string* error);

}  // namespace sidecar::tls::mbed
