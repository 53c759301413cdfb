#pragma once

#include <string>

#include "tls/backend.h"

namespace sidecar::tls::ossl {

// See Backend::issueCertificate: the same profile as the other backend.
bool issueCertificate(const CertificateRequest& request, std::string* certificate_pem,
                      std::string* private_key_pem, std::string* error);

}  // namespace sidecar::tls::ossl
