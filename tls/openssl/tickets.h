#pragma once
// Session ticket keys for one server context (TLS 1.2 and 1.3), through OpenSSL's ticket key
// callback: AES-256-CBC with HMAC-SHA256, named keys rotated every `lifetime` seconds. The
// previous key still opens tickets (which are then renewed) until the next rotation; a ticket
// older than `lifetime` is refused by the session timeout whatever key sealed it. Every context
// has its own keys, so a ticket never resumes on another listener or on a context built later
// (after a certificate or CA reload).

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace sidecar::tls::ossl {

class TicketKeys {
public:
    // Lifetime is clamped to TLS 1.3's maximum of 7 days.
    static std::unique_ptr<TicketKeys> create(uint32_t lifetime_seconds, std::string* error);
    ~TicketKeys();
    TicketKeys(const TicketKeys&) = delete;
    TicketKeys& operator=(const TicketKeys&) = delete;

    uint32_t lifetimeSeconds() const { return lifetime_s_; }

    // The body of SSL_CTX_set_tlsext_ticket_key_evp_cb's callback: 1 = sealed or opened with
    // the current key, 2 = opened with the previous key (renew), 0 = unknown key, -1 = failure.
    int seal(unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
             EVP_MAC_CTX* mac) noexcept;
    int open(const unsigned char name[16], const unsigned char* iv, EVP_CIPHER_CTX* cipher,
             EVP_MAC_CTX* mac) noexcept;

private:
    struct Key {
        unsigned char name[16] = {};
        unsigned char aes[32] = {};
        unsigned char hmac[32] = {};
        int64_t created_ms = 0;
        bool set = false;
    };

    explicit TicketKeys(uint32_t lifetime_seconds) : lifetime_s_(lifetime_seconds) {}
    bool rotateLocked(int64_t now_ms) noexcept;
    static bool setMacKey(EVP_MAC_CTX* mac, const Key& key) noexcept;

    std::mutex mu_;
    Key keys_[2];
    int active_ = 0;
    uint32_t lifetime_s_;
};

}  // namespace sidecar::tls::ossl
