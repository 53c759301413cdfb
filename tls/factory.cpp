#include "tls/factory.h"

#ifdef SIDECAR_WITH_MBEDTLS
#include <mbedtls/build_info.h>
#endif
#ifdef SIDECAR_WITH_OPENSSL
#include <openssl/crypto.h>
#endif

#if !defined(SIDECAR_WITH_MBEDTLS) && !defined(SIDECAR_WITH_OPENSSL)
#error "at least one TLS backend is needed: SIDECAR_WITH_MBEDTLS or SIDECAR_WITH_OPENSSL"
#endif

namespace sidecar::tls {

std::vector<BackendInfo> compiledBackends() {
    std::vector<BackendInfo> out;
#ifdef SIDECAR_WITH_MBEDTLS
    out.push_back({"mbedtls", std::string("mbedTLS ") + MBEDTLS_VERSION_STRING});
#endif
#ifdef SIDECAR_WITH_OPENSSL
    out.push_back({"openssl", std::string("OpenSSL ") + OpenSSL_version(OPENSSL_VERSION_STRING)});
#endif
    return out;
}

std::string_view defaultBackendName() {
#ifdef SIDECAR_WITH_MBEDTLS
    return "mbedtls";
#else
    return "openssl";
#endif
}

std::unique_ptr<Backend> makeBackend(std::string_view name) {
    if (name.empty()) name = defaultBackendName();
#ifdef SIDECAR_WITH_MBEDTLS
    if (name == "mbedtls") return makeMbedtlsBackend();
#endif
#ifdef SIDECAR_WITH_OPENSSL
    if (name == "openssl") return makeOpensslBackend();
#endif
    return nullptr;
}

}  // namespace sidecar::tls
