#include "tls/openssl/session.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>

#include "tls/common.h"
#include "tls/errors.h"

namespace sidecar::tls::ossl {
namespace {

// Input capacity kept across reads; a larger burst is released once consumed.

// Kinds of certificate verification findings, most specific first: a name or usage mismatch
// says more than "untrusted", which comes with almost anything else wrong in a chain. The
// order and the reasons are those of the other backend.
enum Finding { kName, kUsage, kWeak, kExpired, kNotYetValid, kRevoked, kUntrusted, kOther };
constexpr int kFindings = 8;

Finding classify(int err) {
    switch (err) {
        case X509_V_ERR_HOSTNAME_MISMATCH:
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
        case X509_V_ERR_EMAIL_MISMATCH:
            return kName;
        case X509_V_ERR_INVALID_PURPOSE:
        case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
        case X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE:
        case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
            return kUsage;
        case X509_V_ERR_CA_MD_TOO_WEAK:
        case X509_V_ERR_CA_KEY_TOO_SMALL:
        case X509_V_ERR_EE_KEY_TOO_SMALL:
        case X509_V_ERR_EC_KEY_EXPLICIT_PARAMS:
            return kWeak;
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return kExpired;
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return kNotYetValid;
        case X509_V_ERR_CERT_REVOKED:
            return kRevoked;
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_CERT_UNTRUSTED:
        case X509_V_ERR_INVALID_CA:
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        case X509_V_ERR_CERT_CHAIN_TOO_LONG:
        case X509_V_ERR_PATH_LENGTH_EXCEEDED:
            return kUntrusted;
        default:
            return kOther;
    }
}

const char* findingReason(Finding f) {
    switch (f) {
        case kName:
            return reason::kCertNameMismatch;
        case kUsage:
            return reason::kCertUsage;
        case kWeak:
            return reason::kCertWeak;
        case kExpired:
            return reason::kCertExpired;
        case kNotYetValid:
            return reason::kCertNotYetValid;
        case kRevoked:
            return reason::kCertRevoked;
        case kUntrusted:
            return reason::kCertUnknownCa;
        default:
            return reason::kCertVerifyFailed;
    }
}

// A reason for an OpenSSL library reason code (ERR_LIB_SSL) from the handshake or records.
const char* sslReasonText(int r, bool during_handshake) {
    switch (r) {
        case SSL_R_NO_APPLICATION_PROTOCOL:
            return reason::kNoAlpn;
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_VERSION_TOO_LOW:
        case SSL_R_VERSION_TOO_HIGH:
        case SSL_R_NO_PROTOCOLS_AVAILABLE:
        case SSL_R_WRONG_SSL_VERSION:
            return reason::kNoVersion;
        case SSL_R_NO_SHARED_CIPHER:
        case SSL_R_NO_CIPHERS_AVAILABLE:
        case SSL_R_NO_SHARED_GROUPS:
        case SSL_R_NO_SUITABLE_KEY_SHARE:
        case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
        case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
        case SSL_R_WRONG_CURVE:
            return reason::kNoCommonParameters;
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            return reason::kClientCertRequired;
        case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
        case SSL_R_DECRYPTION_FAILED:
            return reason::kBadMac;
        case SSL_R_UNEXPECTED_MESSAGE:
        case SSL_R_UNEXPECTED_RECORD:
        case SSL_R_CCS_RECEIVED_EARLY:
        case SSL_R_NO_RENEGOTIATION:
            return during_handshake ? reason::kUnexpectedHandshake : reason::kUnexpected;
        case SSL_R_UNEXPECTED_EOF_WHILE_READING:
            return reason::kClosedDuringHandshake;
        case SSL_R_WRONG_VERSION_NUMBER:
        case SSL_R_RECORD_LENGTH_MISMATCH:
        case SSL_R_PACKET_LENGTH_TOO_LONG:
        case SSL_R_ENCRYPTED_LENGTH_TOO_LONG:
        case SSL_R_DATA_LENGTH_TOO_LONG:
        case SSL_R_BAD_RECORD_TYPE:
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST:
            return reason::kInvalidRecord;
        case SSL_R_LENGTH_MISMATCH:
        case SSL_R_LENGTH_TOO_SHORT:
        case SSL_R_BAD_PACKET:
        case SSL_R_BAD_PACKET_LENGTH:
        case SSL_R_BAD_LENGTH:
        case SSL_R_BAD_EXTENSION:
        case SSL_R_BAD_KEY_SHARE:
        case SSL_R_EXTRA_DATA_IN_MESSAGE:
            return during_handshake ? reason::kMalformedHandshake : reason::kMalformed;
        default:
            return during_handshake ? reason::kHandshakeFailed : reason::kTlsError;
    }
}

bool isIpLiteral(const std::string& name) {
    unsigned char buf[16];
    return inet_pton(AF_INET, name.c_str(), buf) == 1 ||
           inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

}  // namespace

OsslSession::OsslSession(std::shared_ptr<OsslContext> ctx) : ctx_(std::move(ctx)) {
    ERR_clear_error();
    ssl_ = SSL_new(ctx_->sslContext());
    BIO* bio = ssl_ != nullptr ? BIO_new(ctx_->bioMethod()) : nullptr;
    if (bio == nullptr) {
        ERR_clear_error();
        fail(reason::kSessionFailed);
        return;
    }
    BIO_set_data(bio, this);
    SSL_set_bio(ssl_, bio, bio);
    SSL_set_app_data(ssl_, this);
    if (ctx_->isServer()) {
        SSL_set_accept_state(ssl_);
        return;
    }
    SSL_set_connect_state(ssl_);
    // The name is sent as SNI (never an IP address, RFC 6066) and the certificate must match it.
    const std::string& name = ctx_->serverName();
    bool ok;
    if (isIpLiteral(name)) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name.c_str()) == 1;
    } else {
        ok = SSL_set_tlsext_host_name(ssl_, name.c_str()) == 1 &&
             SSL_set1_host(ssl_, name.c_str()) == 1;
        SSL_set_hostflags(ssl_, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    if (!ok) {
        ERR_clear_error();
        fail(reason::kSessionFailed);
        return;
    }
    info_.sni = name;
    ctx_->restoreSession(ssl_);
}

OsslSession::~OsslSession() {
    if (ssl_ != nullptr) SSL_free(ssl_);
}

OsslSession* OsslSession::of(SSL* ssl) noexcept {
    return ssl != nullptr ? static_cast<OsslSession*>(SSL_get_app_data(ssl)) : nullptr;
}

// ---- ciphertext buffers ----

void OsslSession::feedCiphertext(const uint8_t* data, size_t len) { io_.feed(data, len); }

void OsslSession::takeCiphertext(std::vector<uint8_t>& out) { io_.take(out); }

BIO_METHOD* OsslSession::makeBioMethod() {
    int type = BIO_get_new_index();
    if (type == -1) return nullptr;
    BIO_METHOD* m = BIO_meth_new(type | BIO_TYPE_SOURCE_SINK, "sidecar session");
    if (m == nullptr) return nullptr;
    if (BIO_meth_set_write_ex(m, bioWrite) != 1 || BIO_meth_set_read_ex(m, bioRead) != 1 ||
        BIO_meth_set_ctrl(m, bioCtrl) != 1 || BIO_meth_set_create(m, bioCreate) != 1) {
        BIO_meth_free(m);
        return nullptr;
    }
    return m;
}

int OsslSession::bioCreate(BIO* bio) noexcept {
    BIO_set_init(bio, 1);
    return 1;
}

int OsslSession::bioWrite(BIO* bio, const char* data, size_t len, size_t* written) noexcept {
    auto* s = static_cast<OsslSession*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    if (!s->io_.write(reinterpret_cast<const uint8_t*>(data), len)) return 0;
    *written = len;
    return 1;
}

int OsslSession::bioRead(BIO* bio, char* data, size_t len, size_t* read) noexcept {
    auto* s = static_cast<OsslSession*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    size_t n = s->io_.read(reinterpret_cast<uint8_t*>(data), len);
    if (n == 0) {
        BIO_set_retry_read(bio);  // no EOF: more may be fed
        return 0;
    }
    *read = n;
    return 1;
}

long OsslSession::bioCtrl(BIO*, int cmd, long, void*) noexcept {
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

bool OsslSession::hasBufferedInput() const {
    return io_.hasInput() || (ssl_ != nullptr && SSL_has_pending(ssl_) == 1);
}

// ---- handshake ----

Result OsslSession::handshake() {
    if (failed_) return Result::Error;
    if (done_) return Result::Ok;
    ERR_clear_error();
    int ret = SSL_do_handshake(ssl_);
    if (ret == 1) return finishHandshake();
    int err = SSL_get_error(ssl_, ret);
    if (err == SSL_ERROR_WANT_READ) return Result::WantRead;
    if (err == SSL_ERROR_WANT_WRITE) return Result::WantWrite;
    if (!ctx_->isServer()) ctx_->forgetSession();  // do not retry a session that failed
    return failFromOpenssl(err, true);
}

Result OsslSession::finishHandshake() {
    done_ = true;
    info_.version = SSL_get_version(ssl_);
    const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_);
    const char* name = cipher != nullptr ? SSL_CIPHER_standard_name(cipher) : nullptr;
    info_.cipher = name != nullptr ? name : "";
    const unsigned char* alpn = nullptr;
    unsigned int alpnLen = 0;
    SSL_get0_alpn_selected(ssl_, &alpn, &alpnLen);
    info_.alpn.assign(reinterpret_cast<const char*>(alpn), alpn != nullptr ? alpnLen : 0);
    info_.resumed = SSL_session_reused(ssl_) == 1;
    // A resumed session brings the certificate and verification result it was made with.
    if (X509* peer = SSL_get0_peer_certificate(ssl_)) {
        fillPeerIdentity(peer, &info_.peer);
        info_.peer.verified = SSL_get_verify_result(ssl_) == X509_V_OK;
    }
    // TLS 1.3 clients store tickets as they arrive (newSessionCallback); OpenSSL reports no new
    // session for a resumed TLS 1.2 one, whose renewed ticket is taken here.
    if (!ctx_->isServer() && SSL_version(ssl_) != TLS1_3_VERSION) {
        if (SSL_SESSION* session = SSL_get1_session(ssl_)) ctx_->storeSession(session);
    }
    return Result::Ok;
}

// Replaces OpenSSL's chain verification for both sides: runs it with every finding recorded,
// then refuses with the most specific one (its alert comes from OpenSSL's table, e.g. unknown_ca,
// certificate_expired, bad_certificate for a name mismatch). A server then applies the allow list
// to an otherwise acceptable client certificate; a miss is refused as an application
// verification failure, which OpenSSL answers with a handshake_failure alert.
int OsslSession::verifyChainCallback(X509_STORE_CTX* store, void*) noexcept {
    auto* ssl =
        static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    OsslSession* s = of(ssl);
    if (s == nullptr) return 0;
    return s->verifyChain(store);
}

int OsslSession::collectFinding(int ok, X509_STORE_CTX* store) noexcept {
    if (ok == 1) return 1;
    auto* ssl =
        static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    OsslSession* s = of(ssl);
    if (s == nullptr) return 0;
    int err = X509_STORE_CTX_get_error(store);
    // A CRL is consulted when the certificate's CA has one; none is not a finding.
    if (err == X509_V_ERR_UNABLE_TO_GET_CRL) return 1;
    int& slot = s->findings_[classify(err)];
    if (slot == 0) slot = err;
    return 1;  // go on, to see everything that is wrong
}

int OsslSession::verifyChain(X509_STORE_CTX* store) noexcept {
    std::fill(std::begin(findings_), std::end(findings_), 0);
    X509_STORE_CTX_set_verify_cb(store, collectFinding);
    if (X509_verify_cert(store) < 0) {
        verify_reason_ = reason::kCertVerifyFailed;
        return 0;
    }
    for (int f = 0; f < kFindings; ++f) {
        if (findings_[f] == 0) continue;
        verify_reason_ = findingReason(Finding(f));
        X509_STORE_CTX_set_error(store, findings_[f]);
        return 0;
    }
    if (ctx_->isServer() && !ctx_->allow().empty()) {
        bool allowed = false;
        try {
            PeerIdentity identity;
            fillPeerIdentity(X509_STORE_CTX_get0_cert(store), &identity);
            allowed = allowListMatches(ctx_->allow(), identity);
            if (!allowed) info_.peer = std::move(identity);  // for the log line: whose it was
        } catch (...) {
        }
        if (!allowed) {
            verify_reason_ = reason::kClientNotAllowed;
            X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
            return 0;
        }
    }
    X509_STORE_CTX_set_error(store, X509_V_OK);
    return 1;
}

int OsslSession::serverNameCallback(SSL* ssl, int* alert, void*) noexcept {
    OsslSession* s = of(ssl);
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (s == nullptr || name == nullptr) return SSL_TLSEXT_ERR_OK;
    try {
        s->info_.sni.assign(name);
    } catch (...) {
        s->info_.sni.clear();
    }
    if (!s->ctx_->selectCertificate(ssl, name)) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

// The server's order decides: its first protocol the client also offers. A client offering
// only others is refused with no_application_protocol.
int OsslSession::alpnSelectCallback(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                                    const unsigned char* in, unsigned int inlen, void*) noexcept {
    OsslSession* s = of(ssl);
    if (s == nullptr) return SSL_TLSEXT_ERR_ALERT_FATAL;
    const std::vector<unsigned char>& wire = s->ctx_->alpnWire();
    for (size_t i = 0; i < wire.size(); i += 1 + size_t(wire[i])) {
        for (unsigned int j = 0; j < inlen; j += 1 + unsigned(in[j])) {
            if (j + 1 + in[j] > inlen) break;
            if (in[j] == wire[i] && std::memcmp(in + j + 1, &wire[i + 1], wire[i]) == 0) {
                *out = in + j + 1;
                *outlen = in[j];
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int OsslSession::ticketKeyCallback(SSL* ssl, unsigned char name[16], unsigned char* iv,
                                   EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int enc) noexcept {
    OsslSession* s = of(ssl);
    TicketKeys* keys = s != nullptr ? s->ctx_->tickets() : nullptr;
    if (keys == nullptr) return -1;
    return enc ? keys->seal(name, iv, cipher, mac) : keys->open(name, iv, cipher, mac);
}

// A ticket opened: honoured only while the client it was issued to would still be let in (its
// certificate not expired, still on the allow list). Otherwise the ticket is ignored and a full
// handshake judges the client again, failing the way a first connection with that certificate
// would. A resumed session always gets a fresh ticket: a TLS 1.3 client uses each one once.
SSL_TICKET_RETURN OsslSession::ticketOpenedCallback(SSL* ssl, SSL_SESSION* session,
                                                    const unsigned char*, size_t,
                                                    SSL_TICKET_STATUS status, void*) noexcept {
    switch (status) {
        case SSL_TICKET_SUCCESS:
        case SSL_TICKET_SUCCESS_RENEW: {
            OsslSession* s = of(ssl);
            if (s == nullptr || !s->ctx_->resumptionAllowed(session))
                return SSL_TICKET_RETURN_IGNORE_RENEW;
            return SSL_TICKET_RETURN_USE_RENEW;
        }
        case SSL_TICKET_EMPTY:
        case SSL_TICKET_NO_DECRYPT:
            return SSL_TICKET_RETURN_IGNORE_RENEW;
        default:
            return SSL_TICKET_RETURN_ABORT;
    }
}

int OsslSession::newSessionCallback(SSL* ssl, SSL_SESSION* session) noexcept {
    OsslSession* s = of(ssl);
    if (s == nullptr) return 0;
    s->ctx_->storeSession(session);
    return 1;  // the context holds the reference now
}

// ---- errors ----

Result OsslSession::fail(const char* reason) {
    failed_ = true;
    if (error_ == nullptr) error_ = reason;
    return Result::Error;
}

Result OsslSession::failFromOpenssl(int err, bool during_handshake) {
    // The oldest error of the SSL library names the cause; the rest is context.
    int sslReason = 0;
    bool outOfMemory = false;
    for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
        if (sslReason == 0 && ERR_GET_LIB(e) == ERR_LIB_SSL) sslReason = ERR_GET_REASON(e);
        if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE) outOfMemory = true;
    }
    if (during_handshake && !done_) {
        if (const char* notTls = notTlsText(io_.first(), io_.firstLength(), ctx_->isServer()))
            return fail(notTls);
    }
    if (err == SSL_ERROR_ZERO_RETURN) return fail(reason::kPeerClosedDuringHandshake);
    if (sslReason >= SSL_AD_REASON_OFFSET && sslReason < SSL_AD_REASON_OFFSET + 256)
        return fail(receivedAlertText(sslReason - SSL_AD_REASON_OFFSET));
    if (sslReason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        if (verify_reason_ != nullptr) return fail(verify_reason_);
        return fail(findingReason(classify(int(SSL_get_verify_result(ssl_)))));
    }
    if (outOfMemory) return fail(reason::kOutOfMemory);
    return fail(sslReasonText(sslReason, during_handshake));
}

// ---- application data ----

Result OsslSession::readPlain(uint8_t* out, size_t cap, size_t* n) {
    *n = 0;
    if (failed_) return Result::Error;
    if (eof_) return Result::Eof;
    if (!done_) {
        Result r = handshake();
        if (r != Result::Ok) return r;
    }
    if (cap == 0) return Result::WantRead;
    ERR_clear_error();
    size_t got = 0;
    int ret = SSL_read_ex(ssl_, out, cap, &got);
    if (ret == 1) {
        *n = got;
        return Result::Ok;
    }
    int err = SSL_get_error(ssl_, ret);
    if (err == SSL_ERROR_WANT_READ) {
        if (!SSL_has_pending(ssl_)) io_.releaseIdle();
        return Result::WantRead;
    }
    if (err == SSL_ERROR_WANT_WRITE) return Result::WantWrite;
    if (err == SSL_ERROR_ZERO_RETURN) {
        eof_ = true;
        return Result::Eof;
    }
    return failFromOpenssl(err, false);
}

Result OsslSession::writePlain(const uint8_t* data, size_t len, size_t* n) {
    *n = 0;
    if (failed_) return Result::Error;
    if (!done_) {
        Result r = handshake();
        if (r != Result::Ok) return r;
    }
    if (close_sent_) return fail(reason::kWriteAfterShutdown);
    if (len == 0) return Result::Ok;
    // Partial writes are not enabled: SSL_write_ex takes everything, record by record, into
    // the output buffer (the BIO never refuses a write).
    ERR_clear_error();
    size_t written = 0;
    int ret = SSL_write_ex(ssl_, data, len, &written);
    if (ret == 1) {
        *n = written;
        return Result::Ok;
    }
    int err = SSL_get_error(ssl_, ret);
    if (err == SSL_ERROR_WANT_READ) return Result::WantRead;
    if (err == SSL_ERROR_WANT_WRITE) return Result::WantWrite;
    return failFromOpenssl(err, false);
}

void OsslSession::shutdown() {
    if (close_sent_ || failed_) return;
    close_sent_ = true;
    // Before the handshake completes there is nothing to close politely; nothing is sent.
    if (!done_) return;
    ERR_clear_error();
    SSL_shutdown(ssl_);
    ERR_clear_error();
}

}  // namespace sidecar::tls::ossl
