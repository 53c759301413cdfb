#include "tls/openssl/context.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "tls/common.h"
#include "tls/openssl/session.h"

namespace sidecar::tls::ossl {
namespace {

// The suites and groups (and, in TLS 1.2, the curves accepted in ECDSA certificates) come from the
// shared policy tables in tls/policy.h, whose suite names are OpenSSL's own; groups are renamed.
const char* opensslGroupName(uint16_t iana) {
    switch (iana) {
        case 0x001D:
            return "X25519";
        case 0x0017:
            return "P-256";
        case 0x0018:
            return "P-384";
        case 0x0019:
            return "P-521";
        default:
            return nullptr;
    }
}

// "A:B:C" of the table names of `ids`.
std::string suiteList(const std::vector<uint16_t>& ids, const std::vector<PolicyName>& table) {
    std::string out;
    for (uint16_t id : ids)
        for (const PolicyName& n : table)
            if (n.iana == id) out += (out.empty() ? "" : ":") + std::string(n.name);
    return out;
}
// Tickets only, no server-side session cache; the id context lets them carry a client identity.
const unsigned char kSessionIdContext[] = "sidecar";

bool parseVersion(const std::string& text, const char* what, int* out, std::string* error) {
    if (text == "1.2") {
        *out = TLS1_2_VERSION;
        return true;
    }
    if (text == "1.3") {
        *out = TLS1_3_VERSION;
        return true;
    }
    *error = std::string(what) + " \"" + text + "\" is not supported (use \"1.2\" or \"1.3\")";
    return false;
}

bool check(int ok, const char* what, std::string* error) {
    if (ok == 1) return true;
    *error = std::string(what) + ": " + opensslErrorText();
    return false;
}

bool hasPair(const KeyPairSource& p) {
    return !p.certificate_path.empty() || !p.certificate_pem.empty() ||
           !p.private_key_path.empty() || !p.private_key_pem.empty();
}

}  // namespace

BackendState::BackendState() {
    // The library's configuration file is not read: settings come from the sidecar config only.
    if (OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CONFIG, nullptr) != 1) return;
    bio_method = OsslSession::makeBioMethod();
}

BackendState::~BackendState() {
    if (bio_method != nullptr) BIO_meth_free(bio_method);
}

OsslContext::OsslContext(std::shared_ptr<BackendState> backend, bool server)
    : backend_(std::move(backend)), server_(server) {}

OsslContext::~OsslContext() {
    if (cached_ != nullptr) SSL_SESSION_free(cached_);
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

// Empty versions mean the defaults: TLS 1.2 to 1.3.
bool OsslContext::setupCommon(const std::string& min_version, const std::string& max_version,
                              const std::vector<std::string>& alpn, const Policy& policy,
                              std::string* error) {
    if (!backend_->ok()) {
        *error = "OpenSSL initialisation failed";
        return false;
    }
    int min = TLS1_2_VERSION, max = TLS1_3_VERSION;
    if (!min_version.empty() && !parseVersion(min_version, "min_version", &min, error))
        return false;
    if (!max_version.empty() && !parseVersion(max_version, "max_version", &max, error))
        return false;
    if (min > max) {
        *error = "min_version " + min_version + " is above max_version " + max_version;
        return false;
    }
    ResolvedPolicy resolved;
    if (!resolvePolicy(policy, [](uint16_t) { return true; }, &resolved, error)) return false;
    std::string groups;
    for (uint16_t id : resolved.groups)
        if (const char* name = opensslGroupName(id))
            groups += (groups.empty() ? "" : ":") + std::string(name);
    if (!policy.key_log_path.empty()) {
        key_log_ = KeyLog::open(policy.key_log_path, error);
        if (!key_log_) return false;
    }
    ERR_clear_error();
    ctx_ = SSL_CTX_new(server_ ? TLS_server_method() : TLS_client_method());
    if (ctx_ == nullptr) return check(0, "cannot set up TLS configuration", error);
    SSL_CTX_set_app_data(ctx_, this);
    // Security level 2: RSA and DH of 2048 bits and more, ECC of 224 and more, no SHA-1.
    SSL_CTX_set_security_level(ctx_, 2);
    if (!check(SSL_CTX_set_min_proto_version(ctx_, min), "min_version", error) ||
        !check(SSL_CTX_set_max_proto_version(ctx_, max), "max_version", error) ||
        !check(SSL_CTX_set_ciphersuites(
                   ctx_, suiteList(resolved.tls13_suites, tls13CipherSuites()).c_str()),
               "tls13_cipher_suites", error) ||
        !check(SSL_CTX_set_cipher_list(
                   ctx_, suiteList(resolved.tls12_suites, tls12CipherSuites()).c_str()),
               "cipher_suites", error) ||
        !check(SSL_CTX_set1_groups_list(ctx_, groups.c_str()), "groups", error))
        return false;
    if (key_log_) SSL_CTX_set_keylog_callback(ctx_, keyLogCallback);
    // Never wanted: renegotiation (refused either way) and compression. In TLS 1.3 a
    // resumption keeps forward secrecy: PSK with (EC)DHE only, OpenSSL's default.
    SSL_CTX_set_options(ctx_, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                  (server_ ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
    // Idle sessions hand their record buffers back; callers may move their write buffer.
    SSL_CTX_set_mode(ctx_, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_cert_verify_callback(ctx_, OsslSession::verifyChainCallback, nullptr);

    for (const std::string& p : alpn) {
        if (p.empty() || p.size() > 255) {
            *error = "ALPN protocol \"" + p + "\" must be 1 to 255 bytes long";
            return false;
        }
        alpn_wire_.push_back(static_cast<unsigned char>(p.size()));
        alpn_wire_.insert(alpn_wire_.end(), p.begin(), p.end());
    }
    if (!alpn_wire_.empty()) {
        if (server_) {
            SSL_CTX_set_alpn_select_cb(ctx_, OsslSession::alpnSelectCallback, nullptr);
        } else if (SSL_CTX_set_alpn_protos(ctx_, alpn_wire_.data(), unsigned(alpn_wire_.size())) !=
                   0) {  // 0 is success here
            return check(0, "cannot set ALPN protocols", error);
        }
    }
    return true;
}

bool OsslContext::loadTrust(const std::string& ca_path, std::string* error) {
    std::vector<X509Ptr> cas;
    if (!loadCaBundle(ca_path, &cas, error)) return false;
    X509_STORE* store = SSL_CTX_get_cert_store(ctx_);
    STACK_OF(X509_NAME)* names = server_ ? sk_X509_NAME_new_null() : nullptr;
    for (const X509Ptr& ca : cas) {
        if (X509_STORE_add_cert(store, ca.get()) != 1) ERR_clear_error();  // a duplicate
        if (names != nullptr) {
            X509_NAME* n = X509_NAME_dup(X509_get_subject_name(ca.get()));
            if (n != nullptr && sk_X509_NAME_push(names, n) == 0) X509_NAME_free(n);
        }
    }
    // A server names the CAs it accepts in its CertificateRequest, as the other backend does.
    if (names != nullptr) SSL_CTX_set_client_CA_list(ctx_, names);
    return true;
}

std::shared_ptr<OsslContext> OsslContext::makeServer(std::shared_ptr<BackendState> backend,
                                                     const ServerOptions& options,
                                                     std::string* error) {
    std::shared_ptr<OsslContext> ctx(new OsslContext(std::move(backend), true));
    if (!ctx->setupCommon(options.min_version, options.max_version, options.alpn, options.policy,
                          error))
        return nullptr;
    SSL_CTX* c = ctx->ctx_;

    auto pair = std::make_unique<KeyPair>();
    if (!loadKeyPair(options.pair, pair.get(), error)) return nullptr;
    if (SSL_CTX_use_cert_and_key(c, pair->leaf.get(), pair->key.get(), pair->chain.get(), 1) != 1) {
        *error = "cannot use certificate " + pair->source + ": " + opensslErrorText();
        return nullptr;
    }
    ctx->pairs_.push_back(std::move(pair));

    for (const SniCertificate& entry : options.sni) {
        auto sniPair = std::make_unique<KeyPair>();
        if (!loadKeyPair(entry.pair, sniPair.get(), error)) return nullptr;
        SniEntry e{{}, sniPair.get()};
        // Without explicit names, an entry serves the names its certificate is for.
        std::vector<std::string> names = entry.server_names.empty()
                                             ? certificateDnsNames(sniPair->leaf.get())
                                             : entry.server_names;
        for (const std::string& n : names) {
            std::string norm = normalizeServerName(n);
            if (!validServerNamePattern(norm)) {
                *error = "server name \"" + n +
                         "\" is not supported: use an exact name or a wildcard first label "
                         "(\"*.example.com\")";
                return nullptr;
            }
            e.names.push_back(std::move(norm));
        }
        if (e.names.empty()) {
            *error = "certificate " + sniPair->source + " names no host to select it by";
            return nullptr;
        }
        ctx->sni_.push_back(std::move(e));
        ctx->pairs_.push_back(std::move(sniPair));
    }
    // Installed even without SNI entries: it records the name the client asked for.
    SSL_CTX_set_tlsext_servername_callback(c, OsslSession::serverNameCallback);

    SSL_CTX_set_session_id_context(c, kSessionIdContext, sizeof kSessionIdContext - 1);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);

    ctx->client_auth_ = options.client_auth;
    if (options.client_auth != ClientAuth::None) {
        if (options.client_ca_path.empty()) {
            *error = "client_auth needs a client_ca bundle";
            return nullptr;
        }
        if (!ctx->loadTrust(options.client_ca_path, error)) return nullptr;
        if (!options.client_crl_path.empty() &&
            !ctx->loadCrls(options.client_ca_path, options.client_crl_path, error))
            return nullptr;
        int mode = SSL_VERIFY_PEER;
        if (options.client_auth == ClientAuth::Required) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(c, mode, nullptr);
        ctx->allow_ = options.allow;
    } else {
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
    }

    if (options.session_tickets && options.ticket_lifetime_seconds > 0) {
        ctx->tickets_ = TicketKeys::create(options.ticket_lifetime_seconds, error);
        if (!ctx->tickets_) return nullptr;
        SSL_CTX_set_tlsext_ticket_key_evp_cb(c, OsslSession::ticketKeyCallback);
        SSL_CTX_set_session_ticket_cb(c, nullptr, OsslSession::ticketOpenedCallback, nullptr);
        SSL_CTX_set_timeout(c, long(ctx->tickets_->lifetimeSeconds()));
        SSL_CTX_set_num_tickets(c, 1);
    } else {
        SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(c, 0);
    }
    return ctx;
}

std::shared_ptr<OsslContext> OsslContext::makeClient(std::shared_ptr<BackendState> backend,
                                                     const ClientOptions& options,
                                                     std::string* error) {
    std::shared_ptr<OsslContext> ctx(new OsslContext(std::move(backend), false));
    if (options.server_name.empty()) {
        *error = "server_name is required to verify the server certificate";
        return nullptr;
    }
    if (!ctx->setupCommon(options.min_version, options.max_version, options.alpn, options.policy,
                          error))
        return nullptr;
    SSL_CTX* c = ctx->ctx_;
    ctx->server_name_ = options.server_name;

    if (!ctx->loadTrust(options.ca_path.empty() ? kSystemCaBundle : options.ca_path, error))
        return nullptr;
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);

    if (hasPair(options.pair)) {
        auto pair = std::make_unique<KeyPair>();
        if (!loadKeyPair(options.pair, pair.get(), error)) return nullptr;
        if (SSL_CTX_use_cert_and_key(c, pair->leaf.get(), pair->key.get(), pair->chain.get(), 1) !=
            1) {
            *error = "cannot use certificate " + pair->source + ": " + opensslErrorText();
            return nullptr;
        }
        ctx->pairs_.push_back(std::move(pair));
    }

    // The client keeps its last session itself (see storeSession), not in OpenSSL's cache.
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c, OsslSession::newSessionCallback);
    return ctx;
}

void OsslContext::keyLogCallback(const SSL* ssl, const char* line) noexcept {
    const auto* ctx = static_cast<const OsslContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
    if (ctx != nullptr && ctx->key_log_) ctx->key_log_->writeLine(line);
}

// A certificate is checked against a CRL when its issuer has one in the file, as the other
// backend does; a CA without one is not an error (OpenSSL's "unable to get CRL" is ignored by the
// session's verification).
bool OsslContext::loadCrls(const std::string& ca_path, const std::string& crl_path,
                           std::string* error) {
    std::vector<X509Ptr> cas;
    std::vector<X509CrlPtr> crls;
    if (!loadCaBundle(ca_path, &cas, error) || !loadCrl(crl_path, cas, &crls, error))
        return false;
    X509_STORE* store = SSL_CTX_get_cert_store(ctx_);
    for (const X509CrlPtr& crl : crls) {
        if (X509_STORE_add_crl(store, crl.get()) != 1) ERR_clear_error();  // a duplicate
    }
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    return true;
}

std::unique_ptr<Session> OsslContext::newSession() {
    return std::make_unique<OsslSession>(shared_from_this());
}

std::vector<CertificateInfo> OsslContext::certificates() const {
    std::vector<CertificateInfo> out;
    for (const auto& pair : pairs_) out.push_back(certificateInfo(pair->leaf.get(), pair->source));
    return out;
}

bool OsslContext::selectCertificate(SSL* ssl, std::string_view name) const noexcept {
    bool cleared = false, ok = true;
    selectServerNameEntries(sni_, name, [&](const SniEntry& e) {
        // The default pair goes; every matching entry is offered (one per key type), and
        // OpenSSL picks the one the client can verify.
        if (!cleared) {
            SSL_certs_clear(ssl);
            cleared = true;
        }
        if (SSL_use_cert_and_key(ssl, e.pair->leaf.get(), e.pair->key.get(), e.pair->chain.get(),
                                 1) != 1)
            ok = false;
    });
    return ok;
}

bool OsslContext::resumptionAllowed(const SSL_SESSION* session) const noexcept {
    if (client_auth_ == ClientAuth::None) return true;
    X509* peer = SSL_SESSION_get0_peer(const_cast<SSL_SESSION*>(session));
    if (peer == nullptr) return client_auth_ == ClientAuth::Optional;
    if (X509_cmp_current_time(X509_get0_notAfter(peer)) <= 0) return false;
    if (allow_.empty()) return true;
    try {
        PeerIdentity identity;
        fillPeerIdentity(peer, &identity);
        return allowListMatches(allow_, identity);
    } catch (...) {
        return false;
    }
}

// The cached session is never attached to a connection itself, only copies of it: OpenSSL
// marks a connection's session unusable when the connection ends without close_notify, which
// should cost that connection's copy, not the next connection's resumption.
void OsslContext::restoreSession(SSL* ssl) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cached_ == nullptr || !SSL_SESSION_is_resumable(cached_)) return;
    if (SSL_SESSION* copy = SSL_SESSION_dup(cached_)) {
        SSL_set_session(ssl, copy);
        SSL_SESSION_free(copy);  // the connection holds its own reference
    }
}

void OsslContext::storeSession(SSL_SESSION* session) noexcept {
    SSL_SESSION* copy = SSL_SESSION_dup(session);
    SSL_SESSION_free(session);
    if (copy == nullptr) return;
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cached_ != nullptr) SSL_SESSION_free(cached_);
    cached_ = copy;
}

void OsslContext::forgetSession() noexcept {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cached_ != nullptr) SSL_SESSION_free(cached_);
    cached_ = nullptr;
}

}  // namespace sidecar::tls::ossl
