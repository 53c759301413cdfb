#pragma once
// Session tickets for one server context (TLS 1.2 and 1.3).
//
// mbedTLS's serialised TLS 1.3 session does not include the peer certificate, so a resumed
// TLS 1.3 session would come back without the client's identity, and the allow list could not
// be checked again. Tickets are therefore sealed here rather than by mbedtls_ssl_ticket: the
// sealed plaintext is mbedTLS's session serialisation plus, for TLS 1.3, the client
// certificate (DER). Keys are AES-256-GCM (PSA), named, and rotated every `lifetime`
// seconds; the previous key still opens tickets until the next rotation, and a ticket older
// than `lifetime` is refused whatever key sealed it. Every context has its own keys, so a
// ticket never resumes on a context built later (after a certificate or CA reload).

#include <mbedtls/ssl.h>
#include <psa/crypto.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

namespace sidecar::tls::mbed {

// The session driving a handshake on this thread. Ticket callbacks get no connection handle
// from mbedTLS, so the session announces itself for the duration of each handshake call.
class TicketPeer {
public:
    virtual ~TicketPeer() = default;
    // The verified client certificate of the connection being ticketed (empty if none).
    virtual std::span<const unsigned char> ticketPeerCertificate() const noexcept = 0;
    // The client certificate carried by a ticket that was just opened (empty if none).
    virtual void rememberTicketPeerCertificate(std::span<const unsigned char> der) noexcept = 0;
};

class TicketPeerScope {
public:
    explicit TicketPeerScope(TicketPeer* peer) noexcept;
    ~TicketPeerScope();
    TicketPeerScope(const TicketPeerScope&) = delete;
    TicketPeerScope& operator=(const TicketPeerScope&) = delete;

private:
    TicketPeer* previous_;
};

class TicketKeys {
public:
    // Lifetime is clamped to TLS 1.3's maximum of 7 days.
    static std::unique_ptr<TicketKeys> create(uint32_t lifetime_seconds, std::string* error);
    ~TicketKeys();
    TicketKeys(const TicketKeys&) = delete;
    TicketKeys& operator=(const TicketKeys&) = delete;

    // Makes `conf` issue and accept tickets sealed with these keys. `this` must outlive it.
    void install(mbedtls_ssl_config* conf);

private:
    struct Key {
        psa_key_id_t id = 0;
        unsigned char name[4] = {};
        int64_t created_ms = 0;
    };

    explicit TicketKeys(uint32_t lifetime_seconds) : lifetime_s_(lifetime_seconds) {}
    static int writeCallback(void* p, const mbedtls_ssl_session* session, unsigned char* start,
                             const unsigned char* end, size_t* tlen, uint32_t* lifetime) noexcept;
    static int parseCallback(void* p, mbedtls_ssl_session* session, unsigned char* buf,
                             size_t len) noexcept;
    int write(const mbedtls_ssl_session* session, unsigned char* start, const unsigned char* end,
              size_t* tlen, uint32_t* lifetime) noexcept;
    int parse(mbedtls_ssl_session* session, unsigned char* buf, size_t len) noexcept;
    int rotateLocked(int64_t now_ms) noexcept;

    std::mutex mu_;
    Key keys_[2];
    int active_ = 0;
    uint32_t lifetime_s_;
};

}  // namespace sidecar::tls::mbed
