#pragma once
// A server or client configuration: one mbedtls_ssl_config and everything it points into
// (certificates, keys, CA bundle, ALPN list, ticket keys). Sessions keep their context alive
// through a shared_ptr, and the context keeps the backend state alive the same way, so sessions
// may outlive both the Context handle and the Backend that made it.

#include <mbedtls/ssl.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "tls/backend.h"
#include "tls/mbedtls/tickets.h"
#include "tls/mbedtls/x509.h"
#include "tls/policy.h"

namespace sidecar::tls::mbed {

// Process-wide crypto initialisation. Randomness comes from the PSA RNG (mbedtls_psa_get_random),
// which TLS 1.3 and PSA key generation draw from anyway; a second DRBG would only add state.
struct BackendState {
    BackendState();
    bool ok() const { return status == PSA_SUCCESS; }
    psa_status_t status;
};

class MbedContext final : public Context, public std::enable_shared_from_this<MbedContext> {
public:
    static std::shared_ptr<MbedContext> makeServer(std::shared_ptr<BackendState> backend,
                                                   const ServerOptions& options,
                                                   std::string* error);
    static std::shared_ptr<MbedContext> makeClient(std::shared_ptr<BackendState> backend,
                                                   const ClientOptions& options,
                                                   std::string* error);
    ~MbedContext() override;
    MbedContext(const MbedContext&) = delete;
    MbedContext& operator=(const MbedContext&) = delete;

    std::unique_ptr<Session> newSession() override;
    std::vector<CertificateInfo> certificates() const override;

    // For sessions.
    const mbedtls_ssl_config* config() const { return &conf_; }
    bool isServer() const { return server_; }
    ClientAuth clientAuth() const { return client_auth_; }
    const AllowList& allow() const { return allow_; }
    const std::string& serverName() const { return server_name_; }
    KeyLog* keyLog() const { return key_log_.get(); }
    // mbedtls_ssl_export_keys_t for sessions when a key log is set; `p` is the context.
    static void exportKeys(void* p, mbedtls_ssl_key_export_type type, const unsigned char* secret,
                           size_t secret_len, const unsigned char client_random[32],
                           const unsigned char server_random[32],
                           mbedtls_tls_prf_types prf) noexcept;

    // Client side: the last session (TLS 1.2 session or TLS 1.3 ticket) for resumption.
    bool restoreSession(mbedtls_ssl_context* ssl);
    void storeSession(const mbedtls_ssl_context* ssl) noexcept;
    void forgetSession() noexcept;

private:
    struct SniEntry {
        std::vector<std::string> names;  // lower-case; "*.example.com" matches one label
        KeyPair* pair;
    };

    MbedContext(std::shared_ptr<BackendState> backend, bool server);
    bool addOwnPair(const KeyPairSource& source, std::string* error);
    bool setupCommon(int endpoint, const std::string& min_version, const std::string& max_version,
                     const std::vector<std::string>& alpn, const Policy& policy,
                     std::string* error);
    static int sniCallback(void* p, mbedtls_ssl_context* ssl, const unsigned char* name,
                           size_t len) noexcept;
    int selectCertificate(mbedtls_ssl_context* ssl, std::string_view name) const noexcept;

    std::shared_ptr<BackendState> backend_;
    bool server_;
    mbedtls_ssl_config conf_;
    std::vector<std::unique_ptr<KeyPair>> pairs_;  // server: default first, then SNI entries
    std::vector<SniEntry> sni_;
    Certificates ca_;
    Crls crl_;
    bool has_crl_ = false;
    std::vector<int> ciphersuites_;  // zero-terminated, TLS 1.3 suites first
    std::vector<uint16_t> groups_;   // MBEDTLS_SSL_IANA_TLS_GROUP_NONE-terminated
    std::shared_ptr<KeyLog> key_log_;
    std::vector<std::string> alpn_;
    std::vector<const char*> alpn_ptrs_;  // NULL-terminated view of alpn_ for mbedTLS
    std::unique_ptr<TicketKeys> tickets_;
    ClientAuth client_auth_ = ClientAuth::None;
    AllowList allow_;
    std::string server_name_;

    std::mutex cache_mu_;
    mbedtls_ssl_session cached_;
    bool has_cached_ = false;
};

}  // namespace sidecar::tls::mbed
