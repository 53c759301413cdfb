#include "tls/mbedtls/context.h"

#include <mbedtls/ssl_ciphersuites.h>

#include "tls/mbedtls/psa_rng.h"
#include "tls/mbedtls/session.h"

namespace sidecar::tls::mbed {
namespace {

// The suites and groups (and, in TLS 1.2, the curves accepted in ECDSA certificates) come from the
// shared policy tables in tls/policy.h: mbedTLS takes their IANA code points as they are.
static_assert(MBEDTLS_TLS1_3_AES_128_GCM_SHA256 == 0x1301 &&
              MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 == 0xC02B &&
              MBEDTLS_SSL_IANA_TLS_GROUP_X25519 == 0x001D);

bool suiteCompiledIn(uint16_t iana) { return mbedtls_ssl_ciphersuite_from_id(iana) != nullptr; }

// The NSS key log labels of the secrets mbedTLS exports.
const char* keyLogLabel(mbedtls_ssl_key_export_type type) {
    switch (type) {
        case MBEDTLS_SSL_KEY_EXPORT_TLS12_MASTER_SECRET:
            return "CLIENT_RANDOM";
        case MBEDTLS_SSL_KEY_EXPORT_TLS1_3_CLIENT_EARLY_SECRET:
            return "CLIENT_EARLY_TRAFFIC_SECRET";
        case MBEDTLS_SSL_KEY_EXPORT_TLS1_3_EARLY_EXPORTER_SECRET:
            return "EARLY_EXPORTER_SECRET";
        case MBEDTLS_SSL_KEY_EXPORT_TLS1_3_CLIENT_HANDSHAKE_TRAFFIC_SECRET:
            return "CLIENT_HANDSHAKE_TRAFFIC_SECRET";
        case MBEDTLS_SSL_KEY_EXPORT_TLS1_3_SERVER_HANDSHAKE_TRAFFIC_SECRET:
            return "SERVER_HANDSHAKE_TRAFFIC_SECRET";
        case MBEDTLS_SSL_KEY_EXPORT_TLS1_3_CLIENT_APPLICATION_TRAFFIC_SECRET:
            return "CLIENT_TRAFFIC_SECRET_0";
        case MBEDTLS_SSL_KEY_EXPORT_TLS1_3_SERVER_APPLICATION_TRAFFIC_SECRET:
            return "SERVER_TRAFFIC_SECRET_0";
    }
    return nullptr;
}

bool parseVersion(const std::string& text, const char* what, mbedtls_ssl_protocol_version* out,
                  std::string* error) {
    if (text == "1.2") {
        *out = MBEDTLS_SSL_VERSION_TLS1_2;
        return true;
    }
    if (text == "1.3") {
        *out = MBEDTLS_SSL_VERSION_TLS1_3;
        return true;
    }
    *error = std::string(what) + " \"" + text + "\" is not supported (use \"1.2\" or \"1.3\")";
    return false;
}

}  // namespace

BackendState::BackendState() : status(psa_crypto_init()) {}

MbedContext::MbedContext(std::shared_ptr<BackendState> backend, bool server)
    : backend_(std::move(backend)), server_(server) {
    mbedtls_ssl_config_init(&conf_);
    mbedtls_ssl_session_init(&cached_);
}

MbedContext::~MbedContext() {
    mbedtls_ssl_session_free(&cached_);
    mbedtls_ssl_config_free(&conf_);
}

// Empty versions mean the defaults: TLS 1.2 to 1.3.
bool MbedContext::setupCommon(int endpoint, const std::string& min_version,
                              const std::string& max_version, const std::vector<std::string>& alpn,
                              const Policy& policy, std::string* error) {
    if (!backend_->ok()) {
        *error = "PSA crypto initialisation failed";
        return false;
    }
    mbedtls_ssl_protocol_version min = MBEDTLS_SSL_VERSION_TLS1_2;
    mbedtls_ssl_protocol_version max = MBEDTLS_SSL_VERSION_TLS1_3;
    if (!min_version.empty() && !parseVersion(min_version, "min_version", &min, error))
        return false;
    if (!max_version.empty() && !parseVersion(max_version, "max_version", &max, error))
        return false;
    if (min > max) {
        *error = "min_version " + min_version + " is above max_version " + max_version;
        return false;
    }
    ResolvedPolicy resolved;
    if (!resolvePolicy(policy, suiteCompiledIn, &resolved, error)) return false;
    for (uint16_t id : resolved.tls13_suites) ciphersuites_.push_back(id);
    for (uint16_t id : resolved.tls12_suites) ciphersuites_.push_back(id);
    ciphersuites_.push_back(0);
    groups_ = resolved.groups;
    groups_.push_back(MBEDTLS_SSL_IANA_TLS_GROUP_NONE);
    if (!policy.key_log_path.empty()) {
        key_log_ = KeyLog::open(policy.key_log_path, error);
        if (!key_log_) return false;
    }
    int ret = mbedtls_ssl_config_defaults(&conf_, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM,
                                          MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        *error = "cannot set up TLS configuration: " + mbedtlsErrorText(ret);
        return false;
    }
    mbedtls_ssl_conf_min_tls_version(&conf_, min);
    mbedtls_ssl_conf_max_tls_version(&conf_, max);
    mbedtls_ssl_conf_ciphersuites(&conf_, ciphersuites_.data());
    mbedtls_ssl_conf_groups(&conf_, groups_.data());
    mbedtls_ssl_conf_rng(&conf_, mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE);
    // Compiled in, never wanted: a peer's renegotiation request is refused.
    mbedtls_ssl_conf_renegotiation(&conf_, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    mbedtls_ssl_conf_legacy_renegotiation(&conf_, MBEDTLS_SSL_LEGACY_NO_RENEGOTIATION);
    // TLS 1.3 resumption keeps forward secrecy: PSK with (EC)DHE, never PSK alone.
    mbedtls_ssl_conf_tls13_key_exchange_modes(&conf_,
                                              MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ALL);

    if (!alpn.empty()) {
        for (const std::string& p : alpn) {
            if (p.empty() || p.size() > 255) {
                *error = "ALPN protocol \"" + p + "\" must be 1 to 255 bytes long";
                return false;
            }
        }
        alpn_ = alpn;
        for (const std::string& p : alpn_) alpn_ptrs_.push_back(p.c_str());
        alpn_ptrs_.push_back(nullptr);
        ret = mbedtls_ssl_conf_alpn_protocols(&conf_, alpn_ptrs_.data());
        if (ret != 0) {
            *error = "cannot set ALPN protocols: " + mbedtlsErrorText(ret);
            return false;
        }
    }
    return true;
}

// Loads a certificate and key and offers them as this side's own.
bool MbedContext::addOwnPair(const KeyPairSource& source, std::string* error) {
    auto pair = std::make_unique<KeyPair>();
    if (!loadKeyPair(source, pair.get(), error)) return false;
    int ret = mbedtls_ssl_conf_own_cert(&conf_, pair->chain.get(), pair->key.get());
    if (ret != 0) {
        *error = "cannot use certificate " + pair->source + ": " + mbedtlsErrorText(ret);
        return false;
    }
    pairs_.push_back(std::move(pair));
    return true;
}

std::shared_ptr<MbedContext> MbedContext::makeServer(std::shared_ptr<BackendState> backend,
                                                     const ServerOptions& options,
                                                     std::string* error) {
    std::shared_ptr<MbedContext> ctx(new MbedContext(std::move(backend), true));
    if (!ctx->setupCommon(MBEDTLS_SSL_IS_SERVER, options.min_version, options.max_version,
                          options.alpn, options.policy, error))
        return nullptr;
    mbedtls_ssl_config* conf = &ctx->conf_;
    if (!ctx->addOwnPair(options.pair, error)) return nullptr;

    for (const SniCertificate& entry : options.sni) {
        auto sniPair = std::make_unique<KeyPair>();
        if (!loadKeyPair(entry.pair, sniPair.get(), error)) return nullptr;
        SniEntry e{{}, sniPair.get()};
        // Without explicit names, an entry serves the names its certificate is for.
        std::vector<std::string> names = entry.server_names.empty()
                                             ? certificateDnsNames(*sniPair->chain.get())
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
    mbedtls_ssl_conf_sni(conf, sniCallback, ctx.get());

    ctx->client_auth_ = options.client_auth;
    if (options.client_auth != ClientAuth::None) {
        if (options.client_ca_path.empty()) {
            *error = "client_auth needs a client_ca bundle";
            return nullptr;
        }
        if (!loadCaBundle(options.client_ca_path, &ctx->ca_, error)) return nullptr;
        if (!options.client_crl_path.empty()) {
            if (!loadCrl(options.client_crl_path, ctx->ca_, &ctx->crl_, error)) return nullptr;
            ctx->has_crl_ = true;
        }
        mbedtls_ssl_conf_ca_chain(conf, ctx->ca_.get(),
                                  ctx->has_crl_ ? ctx->crl_.get() : nullptr);
        // mbedTLS verifies and reports; the session enforces the policy after the client's
        // Certificate message (so that "required" and "optional" share one path and the
        // alert fits the failure), see MbedSession::checkClientCertificate.
        mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_OPTIONAL);
        ctx->allow_ = options.allow;
    } else {
        mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_NONE);
    }

    if (options.session_tickets && options.ticket_lifetime_seconds > 0) {
        ctx->tickets_ = TicketKeys::create(options.ticket_lifetime_seconds, error);
        if (!ctx->tickets_) return nullptr;
        ctx->tickets_->install(conf);
        mbedtls_ssl_conf_new_session_tickets(conf, 1);
    } else {
        mbedtls_ssl_conf_new_session_tickets(conf, 0);
    }
    return ctx;
}

std::shared_ptr<MbedContext> MbedContext::makeClient(std::shared_ptr<BackendState> backend,
                                                     const ClientOptions& options,
                                                     std::string* error) {
    std::shared_ptr<MbedContext> ctx(new MbedContext(std::move(backend), false));
    if (options.server_name.empty()) {
        *error = "server_name is required to verify the server certificate";
        return nullptr;
    }
    if (!ctx->setupCommon(MBEDTLS_SSL_IS_CLIENT, options.min_version, options.max_version,
                          options.alpn, options.policy, error))
        return nullptr;
    mbedtls_ssl_config* conf = &ctx->conf_;
    ctx->server_name_ = options.server_name;

    const std::string& caPath = options.ca_path.empty() ? kSystemCaBundle : options.ca_path;
    if (!loadCaBundle(caPath, &ctx->ca_, error)) return nullptr;
    mbedtls_ssl_conf_ca_chain(conf, ctx->ca_.get(), nullptr);
    mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_REQUIRED);

    const KeyPairSource& p = options.pair;
    if (!p.certificate_path.empty() || !p.certificate_pem.empty() || !p.private_key_path.empty() ||
        !p.private_key_pem.empty()) {
        if (!ctx->addOwnPair(p, error)) return nullptr;
    }

    mbedtls_ssl_conf_session_tickets(conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
    mbedtls_ssl_conf_tls13_enable_signal_new_session_tickets(
        conf, MBEDTLS_SSL_TLS1_3_SIGNAL_NEW_SESSION_TICKETS_ENABLED);
    return ctx;
}

void MbedContext::exportKeys(void* p, mbedtls_ssl_key_export_type type,
                             const unsigned char* secret, size_t secret_len,
                             const unsigned char client_random[32], const unsigned char*,
                             mbedtls_tls_prf_types) noexcept {
    const char* label = keyLogLabel(type);
    KeyLog* log = static_cast<const MbedContext*>(p)->keyLog();
    if (label != nullptr && log != nullptr) log->write(label, client_random, secret, secret_len);
}

std::unique_ptr<Session> MbedContext::newSession() {
    return std::make_unique<MbedSession>(shared_from_this());
}

std::vector<CertificateInfo> MbedContext::certificates() const {
    std::vector<CertificateInfo> out;
    for (const auto& pair : pairs_)
        out.push_back(certificateInfo(*pair->chain.get(), pair->source));
    return out;
}

int MbedContext::sniCallback(void* p, mbedtls_ssl_context* ssl, const unsigned char* name,
                             size_t len) noexcept {
    std::string_view requested(reinterpret_cast<const char*>(name), len);
    if (auto* session = static_cast<MbedSession*>(mbedtls_ssl_get_user_data_p(ssl)))
        session->noteServerName(requested);
    return static_cast<const MbedContext*>(p)->selectCertificate(ssl, requested);
}

// No match leaves the default pair in place.
int MbedContext::selectCertificate(mbedtls_ssl_context* ssl,
                                   std::string_view requested) const noexcept {
    int ret = 0;
    selectServerNameEntries(sni_, requested, [&](const SniEntry& e) {
        // mbedTLS picks, among the pairs given, the one the client can verify.
        if (ret == 0)
            ret = mbedtls_ssl_set_hs_own_cert(ssl, e.pair->chain.get(), e.pair->key.get());
    });
    return ret;
}

bool MbedContext::restoreSession(mbedtls_ssl_context* ssl) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    return has_cached_ && mbedtls_ssl_set_session(ssl, &cached_) == 0;
}

void MbedContext::storeSession(const mbedtls_ssl_context* ssl) noexcept {
    mbedtls_ssl_session fresh;
    mbedtls_ssl_session_init(&fresh);
    if (mbedtls_ssl_get_session(ssl, &fresh) != 0) {
        mbedtls_ssl_session_free(&fresh);
        return;
    }
    std::lock_guard<std::mutex> lock(cache_mu_);
    mbedtls_ssl_session_free(&cached_);
    cached_ = fresh;  // takes over what `fresh` owns
    has_cached_ = true;
}

void MbedContext::forgetSession() noexcept {
    std::lock_guard<std::mutex> lock(cache_mu_);
    mbedtls_ssl_session_free(&cached_);
    has_cached_ = false;
}

}  // namespace sidecar::tls::mbed
