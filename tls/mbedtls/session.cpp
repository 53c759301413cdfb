#include "tls/mbedtls/session.h"

#include <mbedtls/build_info.h>
#include <mbedtls/oid.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "tls/mbedtls/errors.h"
#include "tls/mbedtls/x509.h"

namespace sidecar::tls::mbed {

// Two facts have no accessor in mbedTLS 3.6: the handshake state (which tells a full handshake
// from a resumption, and marks the point where the client's certificate has been processed) and
// the description of a received fatal alert. Both are read through MBEDTLS_PRIVATE, as the
// mbedTLS documentation of mbedtls_ssl_handshake_step() describes; re-check them on upgrade.
static_assert(MBEDTLS_VERSION_MAJOR == 3 && MBEDTLS_VERSION_MINOR == 6,
              "handshake state and alert access checked against mbedTLS 3.6 only");

namespace {

// Input capacity kept across reads; a larger burst is released once consumed.

const char* ianaCipherName(int id) {
    switch (id) {
        case MBEDTLS_TLS1_3_AES_128_GCM_SHA256:
            return "TLS_AES_128_GCM_SHA256";
        case MBEDTLS_TLS1_3_AES_256_GCM_SHA384:
            return "TLS_AES_256_GCM_SHA384";
        case MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256:
            return "TLS_CHACHA20_POLY1305_SHA256";
        case MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:
            return "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256";
        case MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:
            return "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384";
        case MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256:
            return "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256";
        case MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:
            return "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256";
        case MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:
            return "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384";
        case MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
            return "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256";
        default:
            return nullptr;
    }
}

}  // namespace

MbedSession::MbedSession(std::shared_ptr<MbedContext> ctx) : ctx_(std::move(ctx)) {
    mbedtls_ssl_init(&ssl_);
    int ret = mbedtls_ssl_setup(&ssl_, ctx_->config());
    if (ret != 0) {
        fail(ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? reason::kOutOfMemory : reason::kSessionFailed);
        return;
    }
    mbedtls_ssl_set_bio(&ssl_, this, bioSend, bioRecv, nullptr);
    mbedtls_ssl_set_user_data_p(&ssl_, this);
    if (ctx_->keyLog() != nullptr)
        mbedtls_ssl_set_export_keys_cb(&ssl_, MbedContext::exportKeys, ctx_.get());
    if (ctx_->isServer()) {
        if (ctx_->clientAuth() != ClientAuth::None && !ctx_->allow().empty())
            mbedtls_ssl_set_verify(&ssl_, verifyClient, this);
    } else {
        // Sets both the SNI sent and the name the server certificate must match.
        if (mbedtls_ssl_set_hostname(&ssl_, ctx_->serverName().c_str()) != 0) {
            fail(reason::kSessionFailed);
            return;
        }
        info_.sni = ctx_->serverName();
        ctx_->restoreSession(&ssl_);
    }
}

MbedSession::~MbedSession() { mbedtls_ssl_free(&ssl_); }

// ---- ciphertext buffers ----

void MbedSession::feedCiphertext(const uint8_t* data, size_t len) { io_.feed(data, len); }

void MbedSession::takeCiphertext(std::vector<uint8_t>& out) { io_.take(out); }

int MbedSession::bioSend(void* p, const unsigned char* buf, size_t len) noexcept {
    auto* s = static_cast<MbedSession*>(p);
    return s->io_.write(buf, len) ? int(len) : MBEDTLS_ERR_SSL_ALLOC_FAILED;
}

int MbedSession::bioRecv(void* p, unsigned char* buf, size_t len) noexcept {
    auto* s = static_cast<MbedSession*>(p);
    size_t n = s->io_.read(buf, len);
    if (n == 0) return MBEDTLS_ERR_SSL_WANT_READ;
    if (!s->done_) s->watch_.observe(buf, n);
    return int(n);
}

void MbedSession::RecordWatch::observe(const uint8_t* p, size_t n) {
    while (n > 0) {
        if (header_len < sizeof header) {
            header[header_len++] = *p++;
            --n;
            if (header_len == sizeof header) {
                body_left = size_t(header[3]) << 8 | header[4];
                body_seen = 0;
                if (body_left == 0) complete();
            }
            continue;
        }
        size_t take = std::min(n, body_left);
        for (size_t i = 0; i < take && body_seen + i < sizeof body; ++i) body[body_seen + i] = p[i];
        body_seen += take;
        body_left -= take;
        p += take;
        n -= take;
        if (body_left == 0) complete();
    }
}

void MbedSession::RecordWatch::complete() {
    last_type = header[0];
    last_len = size_t(header[3]) << 8 | header[4];
    std::memcpy(last_body, body, sizeof body);
    header_len = 0;
}

bool MbedSession::hasBufferedInput() const {
    return io_.hasInput() || mbedtls_ssl_get_bytes_avail(&ssl_) > 0 ||
           mbedtls_ssl_check_pending(&ssl_) != 0;
}

// ---- handshake ----

int MbedSession::handshakeState() const { return ssl_.MBEDTLS_PRIVATE(state); }

int MbedSession::receivedAlert() const {
    if (ssl_.MBEDTLS_PRIVATE(in_msgtype) != MBEDTLS_SSL_MSG_ALERT ||
        ssl_.MBEDTLS_PRIVATE(in_msg) == nullptr || ssl_.MBEDTLS_PRIVATE(in_msglen) < 2)
        return -1;
    return ssl_.MBEDTLS_PRIVATE(in_msg)[1];
}

bool MbedSession::isTls13() const {
    return mbedtls_ssl_get_version_number(&ssl_) == MBEDTLS_SSL_VERSION_TLS1_3;
}

Result MbedSession::handshake(uint64_t budget_ns) {
    if (failed_) return Result::Error;
    if (done_) return Result::Ok;
    TicketPeerScope scope(this);
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
        // Not mbedtls_ssl_is_handshake_over(): a TLS 1.3 server counts as done while its
        // NewSessionTicket is still to be written, and would write it on the first read or
        // write. Stepping on sends it with the server's last flight, under the ticket scope.
        if (handshakeState() == MBEDTLS_SSL_HANDSHAKE_OVER) return finishHandshake();
        int before = handshakeState();
        uint64_t consumed = io_.readTotal();
        int ret = mbedtls_ssl_handshake_step(&ssl_);
        int after = handshakeState();
        // Both versions, both sides: a full handshake passes through the server Certificate
        // state; a resumption (TLS 1.2 ticket, TLS 1.3 PSK) goes from the hello/extensions
        // straight to Finished.
        if (after == MBEDTLS_SSL_SERVER_CERTIFICATE) full_handshake_ = true;
        if (ret == 0) {
            if (atClientCheckpoint(before, after) && !checkClient()) return Result::Error;
            // Out of budget: the caller sends what is written and comes back. mbedTLS keeps its
            // place; a state that needs input will say so then.
            if (budget_ns != UINT64_MAX && after != MBEDTLS_SSL_HANDSHAKE_OVER &&
                uint64_t(std::chrono::nanoseconds(std::chrono::steady_clock::now() - start).count()) >= budget_ns)
                return Result::WantWrite;
            continue;
        }
        if (ret == MBEDTLS_ERR_SSL_WANT_READ) {
            if (io_.readTotal() != consumed) continue;  // a record was consumed; there may be more
            return Result::WantRead;
        }
        if (ret == MBEDTLS_ERR_SSL_WANT_WRITE) return Result::WantWrite;
        if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) {
            ctx_->storeSession(&ssl_);
            continue;
        }
        if (!ctx_->isServer()) ctx_->forgetSession();  // do not retry a session that failed
        return failFromMbedtls(ret, true);
    }
}

// Where a server judges its client. TLS 1.2: as soon as the client's Certificate message has
// been processed (the alert goes out in the clear, as the client expects at that point).
// TLS 1.3: once the client's Finished is in and mbedTLS has switched to the application keys,
// so that the alert is encrypted the way the client, already finished, reads it; this is
// still before any session ticket is written. mbedTLS itself runs under authmode "optional",
// which records verification failures instead of acting on them.
bool MbedSession::atClientCheckpoint(int before, int after) const {
    if (!ctx_->isServer() || ctx_->clientAuth() == ClientAuth::None || after == before)
        return false;
    if (isTls13()) return before == MBEDTLS_SSL_HANDSHAKE_WRAPUP;
    return before == MBEDTLS_SSL_CLIENT_CERTIFICATE;
}

bool MbedSession::checkClient() {
    if (!full_handshake_) return checkResumedClient();
    uint32_t flags = mbedtls_ssl_get_verify_result(&ssl_);
    if (flags & MBEDTLS_X509_BADCERT_MISSING) {
        if (ctx_->clientAuth() == ClientAuth::Optional) return true;
        failWithAlert(reason::kClientCertRequired, missingCertificateAlert());
        return false;
    }
    if (flags == 0) return true;
    // The allow list only speaks about certificates that are otherwise acceptable.
    if (flags & ~uint32_t(MBEDTLS_X509_BADCERT_OTHER))
        flags &= ~uint32_t(MBEDTLS_X509_BADCERT_OTHER);
    failWithAlert(verifyFailureText(flags), alertForVerifyFlags(flags));
    return false;
}

// A resumption skips verification. Its ticket was only issued to a client that passed, so
// what is left to check is what time can change: expiry. The allow list is checked again too,
// as a guard, although a ticket cannot cross to a context with another list.
bool MbedSession::checkResumedClient() {
    Certificates fromTicket;
    const mbedtls_x509_crt* peer = resolvePeer(&fromTicket);
    if (peer == nullptr) {
        if (ctx_->clientAuth() == ClientAuth::Optional) return true;
        failWithAlert(reason::kClientCertRequired, missingCertificateAlert());
        return false;
    }
    describePeer(*peer);
    if (mbedtls_x509_time_is_past(&peer->valid_to)) {
        failWithAlert(reason::kCertExpired, MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED);
        return false;
    }
    if (!allowListMatches(ctx_->allow(), info_.peer)) {
        failWithAlert(reason::kClientNotAllowed, MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED);
        return false;
    }
    return true;
}

uint8_t MbedSession::missingCertificateAlert() const {
    return isTls13() ? MBEDTLS_SSL_ALERT_MSG_CERT_REQUIRED
                     : MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE;
}

// TLS 1.2 sessions carry the peer certificate through resumption; a TLS 1.3 ticket brings it
// separately (see tickets.h), parsed into `scratch`.
const mbedtls_x509_crt* MbedSession::resolvePeer(Certificates* scratch) const {
    if (const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&ssl_)) return peer;
    if (!ticket_peer_.empty() &&
        mbedtls_x509_crt_parse_der(scratch->get(), ticket_peer_.data(), ticket_peer_.size()) == 0)
        return scratch->get();
    return nullptr;
}

void MbedSession::describePeer(const mbedtls_x509_crt& peer) {
    fillPeerIdentity(peer, &info_.peer);
    info_.peer.verified = mbedtls_ssl_get_verify_result(&ssl_) == 0;
}

// Called for each certificate of the client's chain, from the trust anchor down to the leaf
// (depth 0). A valid leaf that matches no allow-list entry is marked BADCERT_OTHER, which
// becomes an access_denied alert.
int MbedSession::verifyClient(void* p, mbedtls_x509_crt* crt, int depth, uint32_t* flags) noexcept {
    auto* s = static_cast<MbedSession*>(p);
    s->chain_flags_ |= *flags;
    if (depth != 0 || s->chain_flags_ != 0) return 0;
    try {
        PeerIdentity identity;
        fillPeerIdentity(*crt, &identity);
        if (!allowListMatches(s->ctx_->allow(), identity)) {
            *flags |= MBEDTLS_X509_BADCERT_OTHER;
            s->info_.peer = std::move(identity);  // for the log line: whose certificate was refused
        }
    } catch (...) {
        *flags |= MBEDTLS_X509_BADCERT_OTHER;
    }
    return 0;
}

void MbedSession::noteServerName(std::string_view name) noexcept {
    try {
        info_.sni.assign(name);
    } catch (...) {
        info_.sni.clear();
    }
}

std::span<const unsigned char> MbedSession::ticketPeerCertificate() const noexcept {
    if (const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&ssl_))
        return {peer->raw.p, peer->raw.len};
    return {ticket_peer_.data(), ticket_peer_.size()};
}

void MbedSession::rememberTicketPeerCertificate(std::span<const unsigned char> der) noexcept {
    try {
        ticket_peer_.assign(der.begin(), der.end());
    } catch (...) {
        ticket_peer_.clear();  // a resumption without identity fails the client-auth checks
    }
}

Result MbedSession::finishHandshake() {
    done_ = true;
    info_.version = mbedtls_ssl_get_version(&ssl_);
    int suite = mbedtls_ssl_get_ciphersuite_id_from_ssl(&ssl_);
    const char* iana = ianaCipherName(suite);
    info_.cipher = iana != nullptr ? iana : mbedtls_ssl_get_ciphersuite_name(suite);
    if (const char* alpn = mbedtls_ssl_get_alpn_protocol(&ssl_)) info_.alpn = alpn;
    info_.resumed = !full_handshake_;

    // TLS 1.3 servers checked a resumed client at the wrap-up checkpoint; TLS 1.2 ones do here.
    bool checked = ctx_->isServer() && ctx_->clientAuth() != ClientAuth::None && info_.resumed;
    if (checked && !isTls13() && !checkResumedClient()) return Result::Error;
    if (!info_.peer.presented) {
        Certificates fromTicket;
        if (const mbedtls_x509_crt* peer = resolvePeer(&fromTicket)) describePeer(*peer);
    }
    std::vector<unsigned char>().swap(ticket_peer_);

    // TLS 1.3 clients store tickets as they arrive (RECEIVED_NEW_SESSION_TICKET).
    if (!ctx_->isServer() && !isTls13()) ctx_->storeSession(&ssl_);
    return Result::Ok;
}

// ---- errors ----

Result MbedSession::fail(const char* reason) {
    failed_ = true;
    if (error_ == nullptr) error_ = reason;
    return Result::Error;
}

Result MbedSession::failWithAlert(const char* reason, uint8_t alert) {
    mbedtls_ssl_send_alert_message(&ssl_, MBEDTLS_SSL_ALERT_LEVEL_FATAL, alert);
    return fail(reason);
}

Result MbedSession::failFromMbedtls(int ret, bool during_handshake) {
    if (during_handshake && !done_) {
        if (const char* notTls = notTlsText(io_.first(), io_.firstLength(), ctx_->isServer()))
            return fail(notTls);
    }
    if (ret == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) return fail(receivedAlertText(receivedAlert()));
    // An mbedTLS 3.6 client rejecting a TLS 1.3 server's certificate sends its alert before it
    // has switched to the handshake keys, i.e. in the clear, where encrypted records are due;
    // decryption fails on it. Name the alert rather than the failed decryption.
    if (during_handshake && ret == MBEDTLS_ERR_SSL_INVALID_MAC &&
        watch_.last_type == MBEDTLS_SSL_MSG_ALERT && watch_.last_len == 2)
        return fail(receivedAlertText(watch_.last_body[1]));
    if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED || ret == MBEDTLS_ERR_SSL_BAD_CERTIFICATE)
        return fail(verifyFailureText(mbedtls_ssl_get_verify_result(&ssl_)));
    return fail(errorText(ret, during_handshake));
}

// ---- application data ----

Result MbedSession::readPlain(uint8_t* out, size_t cap, size_t* n) {
    *n = 0;
    if (failed_) return Result::Error;
    if (eof_) return Result::Eof;
    if (!done_) {
        Result r = handshake();
        if (r != Result::Ok) return r;
    }
    if (cap == 0) return Result::WantRead;
    for (;;) {
        uint64_t consumed = io_.readTotal();
        int ret = mbedtls_ssl_read(&ssl_, out, cap);
        if (ret > 0) {
            *n = size_t(ret);
            return Result::Ok;
        }
        if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
            eof_ = true;
            return Result::Eof;
        }
        if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) {
            ctx_->storeSession(&ssl_);
            continue;
        }
        // 0: an empty record. WANT_READ: no complete record, or a record that carried no
        // application data (an ignored warning alert). Go on while input is being consumed.
        if (ret == 0 || ret == MBEDTLS_ERR_SSL_WANT_READ) {
            if (io_.readTotal() != consumed) continue;
            io_.releaseIdle();
            return Result::WantRead;
        }
        if (ret == MBEDTLS_ERR_SSL_WANT_WRITE) return Result::WantWrite;
        return failFromMbedtls(ret, false);
    }
}

Result MbedSession::writePlain(const uint8_t* data, size_t len, size_t* n) {
    *n = 0;
    if (failed_) return Result::Error;
    if (!done_) {
        Result r = handshake();
        if (r != Result::Ok) return r;
    }
    if (close_sent_) return fail(reason::kWriteAfterShutdown);
    // mbedtls_ssl_write() takes at most one record (16 KiB) per call.
    while (*n < len) {
        int ret = mbedtls_ssl_write(&ssl_, data + *n, len - *n);
        if (ret > 0) {
            *n += size_t(ret);
            continue;
        }
        if (ret == MBEDTLS_ERR_SSL_WANT_READ) return Result::WantRead;
        if (ret == MBEDTLS_ERR_SSL_WANT_WRITE) return Result::WantWrite;
        return failFromMbedtls(ret, false);
    }
    return Result::Ok;
}

void MbedSession::shutdown() {
    if (close_sent_ || failed_) return;
    close_sent_ = true;
    // Before the handshake completes there is nothing to close politely; mbedTLS sends nothing.
    mbedtls_ssl_close_notify(&ssl_);
}

}  // namespace sidecar::tls::mbed
