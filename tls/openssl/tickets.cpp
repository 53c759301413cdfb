#include "tls/openssl/tickets.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace sidecar::tls::ossl {
namespace {

constexpr uint32_t kMaxLifetime = 7 * 24 * 3600;  // RFC 8446 section 4.6.1
constexpr int kIvBytes = 16;                      // AES-CBC

int64_t nowMs() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

}  // namespace

std::unique_ptr<TicketKeys> TicketKeys::create(uint32_t lifetime_seconds, std::string* error) {
    std::unique_ptr<TicketKeys> keys(
        new TicketKeys(std::clamp<uint32_t>(lifetime_seconds, 1, kMaxLifetime)));
    std::lock_guard<std::mutex> lock(keys->mu_);
    if (!keys->rotateLocked(nowMs())) {
        *error = "cannot create session ticket keys";
        return nullptr;
    }
    return keys;
}

TicketKeys::~TicketKeys() { OPENSSL_cleanse(keys_, sizeof keys_); }

bool TicketKeys::rotateLocked(int64_t now_ms) noexcept {
    Key& current = keys_[active_];
    if (current.set && now_ms - current.created_ms < int64_t(lifetime_s_) * 1000) return true;
    int next = current.set ? 1 - active_ : active_;
    Key& k = keys_[next];
    do {
        if (RAND_bytes(k.name, sizeof k.name) != 1) return false;
    } while (next != active_ && std::memcmp(k.name, current.name, sizeof k.name) == 0);
    if (RAND_priv_bytes(k.aes, sizeof k.aes) != 1 || RAND_priv_bytes(k.hmac, sizeof k.hmac) != 1) {
        k.set = false;
        return false;
    }
    k.created_ms = now_ms;
    k.set = true;
    active_ = next;
    return true;
}

bool TicketKeys::setMacKey(EVP_MAC_CTX* mac, const Key& key) noexcept {
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key.hmac),
                                          sizeof key.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(mac, params) == 1;
}

int TicketKeys::seal(unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
                     EVP_MAC_CTX* mac) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (!rotateLocked(nowMs())) return -1;
    const Key& key = keys_[active_];
    std::memcpy(name, key.name, sizeof key.name);
    if (RAND_bytes(iv, kIvBytes) != 1) return -1;
    if (EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes, iv) != 1) return -1;
    return setMacKey(mac, key) ? 1 : -1;
}

int TicketKeys::open(const unsigned char name[16], const unsigned char* iv, EVP_CIPHER_CTX* cipher,
                     EVP_MAC_CTX* mac) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (!rotateLocked(nowMs())) return -1;
    for (int i = 0; i < 2; ++i) {
        const Key& key = keys_[i];
        if (!key.set || std::memcmp(key.name, name, sizeof key.name) != 0) continue;
        if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes, iv) != 1 ||
            !setMacKey(mac, key))
            return -1;
        return i == active_ ? 1 : 2;
    }
    // Unknown name: sealed by another context, or by a key rotated out since.
    return 0;
}

}  // namespace sidecar::tls::ossl
