#pragma once
// Which TLS backends this build carries, and making one by its config name ("mbedtls",
// "openssl"). The only place outside tls/<library>/ that knows the backends exist.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tls/backend.h"

namespace sidecar::tls {

struct BackendInfo {
    std::string name;     // as the config's tls_backend names it
    std::string library;  // library and version, e.g. "mbedTLS 3.6.2"
};

// Compiled-in backends, the default first.
std::vector<BackendInfo> compiledBackends();

// The backend used when the config names none: mbedtls, or openssl in a build without mbedTLS.
std::string_view defaultBackendName();

// nullptr when `name` is not a backend compiled into this build. An empty name means the default.
std::unique_ptr<Backend> makeBackend(std::string_view name);

// The backends themselves, for tests that pair them; present when compiled in
// (SIDECAR_WITH_MBEDTLS, SIDECAR_WITH_OPENSSL).
std::unique_ptr<Backend> makeMbedtlsBackend();  // initialises PSA crypto once
std::unique_ptr<Backend> makeOpensslBackend();

}  // namespace sidecar::tls
