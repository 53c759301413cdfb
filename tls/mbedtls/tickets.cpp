#include "tls/mbedtls/tickets.h"

#include <mbedtls/platform_util.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace sidecar::tls::mbed {
namespace {

// Sealed ticket: name[4] nonce[12] | AES-256-GCM( plaintext ) | tag[16], with name and nonce as
// additional data. Plaintext: format[1] created_ms[8] session_len[4] session der_len[4] der.
constexpr size_t kNameBytes = 4;
constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;
constexpr size_t kHeadBytes = kNameBytes + kNonceBytes;
constexpr size_t kPlainFixed = 1 + 8 + 4 + 4;
constexpr unsigned char kFormat = 1;
constexpr uint32_t kMaxLifetime = 7 * 24 * 3600;  // RFC 8446 section 4.6.1

thread_local TicketPeer* t_peer = nullptr;

int64_t nowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

void put32(unsigned char* p, uint32_t v) {
    for (int i = 3; i >= 0; --i, v >>= 8) p[i] = static_cast<unsigned char>(v);
}
void put64(unsigned char* p, uint64_t v) {
    for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<unsigned char>(v);
}
uint32_t get32(const unsigned char* p) {
    return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
uint64_t get64(const unsigned char* p) { return uint64_t(get32(p)) << 32 | get32(p + 4); }

bool isTls13(const mbedtls_ssl_session* session) {
    return (mbedtls_ssl_session_get_ciphersuite_id(session) >> 8) == 0x13;
}

}  // namespace

TicketPeerScope::TicketPeerScope(TicketPeer* peer) noexcept : previous_(t_peer) { t_peer = peer; }
TicketPeerScope::~TicketPeerScope() { t_peer = previous_; }

std::unique_ptr<TicketKeys> TicketKeys::create(uint32_t lifetime_seconds, std::string* error) {
    std::unique_ptr<TicketKeys> keys(
        new TicketKeys(std::clamp<uint32_t>(lifetime_seconds, 1, kMaxLifetime)));
    std::lock_guard<std::mutex> lock(keys->mu_);
    if (keys->rotateLocked(nowMs()) != 0) {
        *error = "cannot create session ticket keys";
        return nullptr;
    }
    return keys;
}

TicketKeys::~TicketKeys() {
    for (Key& k : keys_)
        if (k.id != 0) psa_destroy_key(k.id);
}

void TicketKeys::install(mbedtls_ssl_config* conf) {
    mbedtls_ssl_conf_session_tickets_cb(conf, writeCallback, parseCallback, this);
}

int TicketKeys::rotateLocked(int64_t now_ms) noexcept {
    Key& current = keys_[active_];
    if (current.id != 0 && now_ms - current.created_ms < int64_t(lifetime_s_) * 1000) return 0;
    int next = current.id == 0 ? active_ : 1 - active_;
    Key& k = keys_[next];
    if (k.id != 0) {
        psa_destroy_key(k.id);
        k.id = 0;
    }
    do {
        if (psa_generate_random(k.name, sizeof k.name) != PSA_SUCCESS) return -1;
    } while (next != active_ && std::memcmp(k.name, current.name, sizeof k.name) == 0);
    psa_key_attributes_t attr = PSA_KEY_ATTRIBUTES_INIT;
    psa_set_key_usage_flags(&attr, PSA_KEY_USAGE_ENCRYPT | PSA_KEY_USAGE_DECRYPT);
    psa_set_key_algorithm(&attr, PSA_ALG_GCM);
    psa_set_key_type(&attr, PSA_KEY_TYPE_AES);
    psa_set_key_bits(&attr, 256);
    psa_status_t status = psa_generate_key(&attr, &k.id);
    psa_reset_key_attributes(&attr);
    if (status != PSA_SUCCESS) {
        k.id = 0;
        return -1;
    }
    k.created_ms = now_ms;
    active_ = next;
    return 0;
}

int TicketKeys::writeCallback(void* p, const mbedtls_ssl_session* session, unsigned char* start,
                              const unsigned char* end, size_t* tlen, uint32_t* lifetime) noexcept {
    return static_cast<TicketKeys*>(p)->write(session, start, end, tlen, lifetime);
}

int TicketKeys::parseCallback(void* p, mbedtls_ssl_session* session, unsigned char* buf,
                              size_t len) noexcept {
    return static_cast<TicketKeys*>(p)->parse(session, buf, len);
}

int TicketKeys::write(const mbedtls_ssl_session* session, unsigned char* start,
                      const unsigned char* end, size_t* tlen, uint32_t* lifetime) noexcept {
    *tlen = 0;
    size_t room = size_t(end - start);
    if (room < kHeadBytes + kPlainFixed + kTagBytes) return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;

    // The TLS 1.2 serialisation already holds the peer certificate; TLS 1.3's does not.
    std::span<const unsigned char> der;
    if (isTls13(session) && t_peer != nullptr) der = t_peer->ticketPeerCertificate();

    unsigned char* plain = start + kHeadBytes;
    unsigned char* sessionBytes = plain + 1 + 8 + 4;
    size_t sessionRoom = room - kHeadBytes - kPlainFixed - kTagBytes;
    if (der.size() > sessionRoom) return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
    size_t sessionLen = 0;
    int ret =
        mbedtls_ssl_session_save(session, sessionBytes, sessionRoom - der.size(), &sessionLen);
    if (ret != 0) return ret;

    std::lock_guard<std::mutex> lock(mu_);
    int64_t now = nowMs();
    if (rotateLocked(now) != 0) return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    const Key& key = keys_[active_];

    plain[0] = kFormat;
    put64(plain + 1, uint64_t(now));
    put32(plain + 9, uint32_t(sessionLen));
    put32(sessionBytes + sessionLen, uint32_t(der.size()));
    if (!der.empty()) std::memcpy(sessionBytes + sessionLen + 4, der.data(), der.size());
    size_t plainLen = kPlainFixed + sessionLen + der.size();

    std::memcpy(start, key.name, kNameBytes);
    if (psa_generate_random(start + kNameBytes, kNonceBytes) != PSA_SUCCESS) {
        mbedtls_platform_zeroize(plain, plainLen);
        return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    }
    size_t sealedLen = 0;
    psa_status_t status =
        psa_aead_encrypt(key.id, PSA_ALG_GCM, start + kNameBytes, kNonceBytes, start, kHeadBytes,
                         plain, plainLen, plain, room - kHeadBytes, &sealedLen);
    if (status != PSA_SUCCESS || sealedLen != plainLen + kTagBytes) {
        mbedtls_platform_zeroize(plain, plainLen);
        return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    }
    *tlen = kHeadBytes + sealedLen;
    *lifetime = lifetime_s_;
    return 0;
}

int TicketKeys::parse(mbedtls_ssl_session* session, unsigned char* buf, size_t len) noexcept {
    if (t_peer != nullptr) t_peer->rememberTicketPeerCertificate({});
    if (len < kHeadBytes + kPlainFixed + kTagBytes) return MBEDTLS_ERR_SSL_BAD_INPUT_DATA;

    unsigned char* plain = buf + kHeadBytes;
    size_t plainLen = 0;
    int64_t now = nowMs();
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (rotateLocked(now) != 0) return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
        const Key* key = nullptr;
        for (const Key& k : keys_)
            if (k.id != 0 && std::memcmp(k.name, buf, kNameBytes) == 0) key = &k;
        // Unknown name: sealed by another context, or by a key rotated out since.
        if (key == nullptr) return MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
        psa_status_t status =
            psa_aead_decrypt(key->id, PSA_ALG_GCM, buf + kNameBytes, kNonceBytes, buf, kHeadBytes,
                             plain, len - kHeadBytes, plain, len - kHeadBytes, &plainLen);
        if (status != PSA_SUCCESS) return MBEDTLS_ERR_SSL_INVALID_MAC;
    }

    int ret = 0;
    const unsigned char* p = plain;
    const unsigned char* endp = plain + plainLen;
    int64_t created = plainLen >= kPlainFixed ? int64_t(get64(p + 1)) : 0;
    uint32_t sessionLen = plainLen >= kPlainFixed ? get32(p + 9) : 0;
    if (plainLen < kPlainFixed || p[0] != kFormat || sessionLen > plainLen - kPlainFixed) {
        ret = MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
    } else if (now - created < 0 || now - created > int64_t(lifetime_s_) * 1000) {
        ret = MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
    } else {
        const unsigned char* sessionBytes = p + 13;
        const unsigned char* derLenAt = sessionBytes + sessionLen;
        uint32_t derLen = get32(derLenAt);
        if (derLen != size_t(endp - derLenAt - 4)) {
            ret = MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
        } else {
            ret = mbedtls_ssl_session_load(session, sessionBytes, sessionLen);
            if (ret == 0 && derLen > 0 && t_peer != nullptr)
                t_peer->rememberTicketPeerCertificate({derLenAt + 4, derLen});
        }
    }
    mbedtls_platform_zeroize(plain, plainLen);
    return ret;
}

}  // namespace sidecar::tls::mbed
