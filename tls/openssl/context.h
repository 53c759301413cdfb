#pragma once
// A server or client configuration: one SSL_CTX and what it points into (certificates, keys,
// CA store, ALPN list, ticket keys, the client's resumable session). Sessions keep their context
// alive through a shared_ptr, and the context keeps the backend state alive the same way, so
// sessions may outlive both the Context handle and the Backend that made it.

#include <openssl/ssl.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "tls/backend.h"
#include "tls/openssl/tickets.h"
#include "tls/openssl/x509.h"
#include "tls/policy.h"

namespace sidecar::tls::ossl {

// What every context of one Backend shares: the BIO method sessions read and write through.
struct BackendState {
    BackendState();
    ~BackendState();
    BackendState(const BackendState&) = delete;
    BackendState& operator=(const BackendState&) = delete;
    bool ok() const { return bio_method != nullptr; }
    BIO_METHOD* bio_method = nullptr;
};

class OsslSession;

class OsslContext final : public Context, public std::enable_shared_from_this<OsslContext> {
public:
    static std::shared_ptr<OsslContext> makeServer(std::shared_ptr<BackendState> backend,
                                                   const ServerOptions& options,
                                                   std::string* error);
    static std::shared_ptr<OsslContext> makeClient(std::shared_ptr<BackendState> backend,
                                                   const ClientOptions& options,
                                                   std::string* error);
    ~OsslContext() override;
    OsslContext(const OsslContext&) = delete;
    OsslContext& operator=(const OsslContext&) = delete;

    std::unique_ptr<Session> newSession() override;
    std::vector<CertificateInfo> certificates() const override;

    // For sessions.
    SSL_CTX* sslContext() const { return ctx_; }
    BIO_METHOD* bioMethod() const { return backend_->bio_method; }
    bool isServer() const { return server_; }
    ClientAuth clientAuth() const { return client_auth_; }
    const AllowList& allow() const { return allow_; }
    const std::string& serverName() const { return server_name_; }
    TicketKeys* tickets() const { return tickets_.get(); }
    const std::vector<unsigned char>& alpnWire() const { return alpn_wire_; }

    // Server side: puts the SNI entries serving `name` on `ssl` (none match: the default pair
    // stays). Allocates nothing.
    bool selectCertificate(SSL* ssl, std::string_view name) const noexcept;
    // Server side: whether a resumed session's client may still be let in without a full
    // handshake (certificate present if required, not expired, still on the allow list).
    bool resumptionAllowed(const SSL_SESSION* session) const noexcept;

    // Client side: the last session (TLS 1.2 session or TLS 1.3 ticket) for resumption.
    void restoreSession(SSL* ssl);
    void storeSession(SSL_SESSION* session) noexcept;  // takes the reference
    void forgetSession() noexcept;

private:
    struct SniEntry {
        std::vector<std::string> names;  // lower-case; "*.example.com" matches one label
        KeyPair* pair;
    };

    OsslContext(std::shared_ptr<BackendState> backend, bool server);
    bool setupCommon(const std::string& min_version, const std::string& max_version,
                     const std::vector<std::string>& alpn, const Policy& policy,
                     std::string* error);
    static void keyLogCallback(const SSL* ssl, const char* line) noexcept;
    bool loadTrust(const std::string& ca_path, std::string* error);
    bool loadCrls(const std::string& ca_path, const std::string& crl_path, std::string* error);

    std::shared_ptr<BackendState> backend_;
    bool server_;
    SSL_CTX* ctx_ = nullptr;
    std::vector<std::unique_ptr<KeyPair>> pairs_;  // server: default first, then SNI entries
    std::vector<SniEntry> sni_;
    std::vector<unsigned char> alpn_wire_;  // length-prefixed protocols, in preference order
    std::unique_ptr<TicketKeys> tickets_;
    ClientAuth client_auth_ = ClientAuth::None;
    AllowList allow_;
    std::string server_name_;
    std::shared_ptr<KeyLog> key_log_;

    std::mutex cache_mu_;
    SSL_SESSION* cached_ = nullptr;
};

}  // namespace sidecar::tls::ossl
