#pragma once

#include <string>

#include "tls/backend.h"

namespace sidecar::tls::mbed {

// See Backend::issueCertificate and CertificateProfile for the certificate profile.
bool issueCertificate(const CertificateRequest& request, std::string* certificate_pem,
                      std::string* private_key_pem, std::string* error);

}  // namespace sidecar::tls::mbed
