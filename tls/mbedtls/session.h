#pragma once
// One TLS connection as a byte transformer over mbedTLS: ciphertext goes in through
// feedCiphertext() and out through takeCiphertext(); mbedTLS reaches both through BIO callbacks
// over these in-memory buffers and never sees a socket.
//
// Memory per session in this build (mbedTLS 3.6, MBEDTLS_SSL_IN/OUT_CONTENT_LEN = 16384, no
// variable-length record buffers), measured with mallinfo2 over 200 established sessions:
//   record input + output buffers   2 x 16 765 B (16 KiB payload + header, IV, MAC, padding)
//   mbedtls_ssl_context                    832 B (inside this object)
//   keys, session, AEAD contexts      ~2-3 KiB
//   peer certificate, when there is one ~2.7 KiB (kept parsed: identity, TLS 1.2 resumption)
//   ciphertext vectors                 what is not consumed / collected yet; none while idle
// Server session, established:  TLS 1.2 36.8 KiB (39.5 KiB with a client certificate),
//                               TLS 1.3 42.9 KiB (45.5 KiB with a client certificate).
// TLS 1.3 costs ~6 KiB more because mbedTLS 3.6 keeps its handshake structure (transcript
// state, handshake keys) for the whole connection in TLS 1.3, where post-handshake messages
// (NewSessionTicket) run through it; only mbedtls_ssl_free() releases it, and no public call
// does it earlier. In TLS 1.2 mbedTLS frees it when the handshake completes. Mid-handshake a
// session peaks at ~42 KiB. Of its own handshake-only state this class keeps nothing past the
// handshake: the certificate carried by a TLS 1.3 ticket and the record watch are dropped or
// idle once finishHandshake() has run.

#include <mbedtls/ssl.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "tls/backend.h"
#include "tls/common.h"
#include "tls/mbedtls/context.h"
#include "tls/mbedtls/tickets.h"

namespace sidecar::tls::mbed {

class MbedSession final : public Session, private TicketPeer {
public:
    explicit MbedSession(std::shared_ptr<MbedContext> ctx);
    ~MbedSession() override;
    MbedSession(const MbedSession&) = delete;
    MbedSession& operator=(const MbedSession&) = delete;

    void feedCiphertext(const uint8_t* data, size_t len) override;
    bool hasCiphertext() const override { return io_.hasOutput(); }
    void takeCiphertext(std::vector<uint8_t>& out) override;

    Result handshake() override { return handshake(UINT64_MAX); }
    Result handshake(uint64_t budget_ns) override;
    bool handshakeComplete() const override { return done_; }

    Result readPlain(uint8_t* out, size_t cap, size_t* n) override;
    Result writePlain(const uint8_t* data, size_t len, size_t* n) override;
    bool hasBufferedInput() const override;
    void shutdown() override;

    const SessionInfo& info() const override { return info_; }
    const char* error() const override { return error_ != nullptr ? error_ : ""; }

    // From the server-name callback: what the client asked for.
    void noteServerName(std::string_view name) noexcept;

private:
    static int bioSend(void* p, const unsigned char* buf, size_t len) noexcept;
    static int bioRecv(void* p, unsigned char* buf, size_t len) noexcept;
    static int verifyClient(void* p, mbedtls_x509_crt* crt, int depth, uint32_t* flags) noexcept;

    std::span<const unsigned char> ticketPeerCertificate() const noexcept override;
    void rememberTicketPeerCertificate(std::span<const unsigned char> der) noexcept override;

    int handshakeState() const;
    int receivedAlert() const;
    Result fail(const char* reason);
    Result failWithAlert(const char* reason, uint8_t alert);
    Result failFromMbedtls(int ret, bool during_handshake);
    bool atClientCheckpoint(int before, int after) const;
    bool checkClient();
    bool checkResumedClient();
    uint8_t missingCertificateAlert() const;
    const mbedtls_x509_crt* resolvePeer(Certificates* scratch) const;
    void describePeer(const mbedtls_x509_crt& peer);
    Result finishHandshake();
    bool isTls13() const;

    // Record framing of what the peer sent during the handshake: the last complete record's
    // type, length and first bytes, to name an alert mbedTLS could not decrypt.
    struct RecordWatch {
        void observe(const uint8_t* p, size_t n);
        void complete();
        uint8_t header[5] = {};
        size_t header_len = 0;
        size_t body_left = 0;
        size_t body_seen = 0;
        uint8_t body[2] = {};
        uint8_t last_type = 0;
        size_t last_len = 0;
        uint8_t last_body[2] = {};
    };

    std::shared_ptr<MbedContext> ctx_;
    mbedtls_ssl_context ssl_;
    CiphertextBuffers io_;
    SessionInfo info_;
    std::vector<unsigned char> ticket_peer_;  // client certificate from a TLS 1.3 ticket
    RecordWatch watch_;
    uint32_t chain_flags_ = 0;
    const char* error_ = nullptr;
    bool done_ = false;
    bool failed_ = false;
    bool eof_ = false;
    bool close_sent_ = false;
    bool full_handshake_ = false;  // the server's Certificate was sent/received
};

}  // namespace sidecar::tls::mbed
