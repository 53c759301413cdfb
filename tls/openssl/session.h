#pragma once
// One TLS connection as a byte transformer over OpenSSL: ciphertext goes in through
// feedCiphertext() and out through takeCiphertext(); OpenSSL reaches both through a BIO whose
// read and write work on these in-memory buffers, and never sees a socket. The BIO itself holds
// nothing, and SSL_MODE_RELEASE_BUFFERS hands OpenSSL's record buffers back whenever a session
// has no partial record, so an idle session keeps only its keys and state.

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "tls/backend.h"
#include "tls/common.h"
#include "tls/openssl/context.h"

namespace sidecar::tls::ossl {

class OsslSession final : public Session {
public:
    explicit OsslSession(std::shared_ptr<OsslContext> ctx);
    ~OsslSession() override;
    OsslSession(const OsslSession&) = delete;
    OsslSession& operator=(const OsslSession&) = delete;

    void feedCiphertext(const uint8_t* data, size_t len) override;
    bool hasCiphertext() const override { return io_.hasOutput(); }
    void takeCiphertext(std::vector<uint8_t>& out) override;

    using Session::handshake;
    Result handshake() override;
    bool handshakeComplete() const override { return done_; }

    Result readPlain(uint8_t* out, size_t cap, size_t* n) override;
    Result writePlain(const uint8_t* data, size_t len, size_t* n) override;
    bool hasBufferedInput() const override;
    void shutdown() override;

    const SessionInfo& info() const override { return info_; }
    const char* error() const override { return error_ != nullptr ? error_ : ""; }

    // OpenSSL callbacks, installed by OsslContext.
    static BIO_METHOD* makeBioMethod();
    static int verifyChainCallback(X509_STORE_CTX* store, void* arg) noexcept;
    static int serverNameCallback(SSL* ssl, int* alert, void* arg) noexcept;
    static int alpnSelectCallback(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                                  const unsigned char* in, unsigned int inlen, void* arg) noexcept;
    static int ticketKeyCallback(SSL* ssl, unsigned char name[16], unsigned char* iv,
                                 EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int enc) noexcept;
    static SSL_TICKET_RETURN ticketOpenedCallback(SSL* ssl, SSL_SESSION* session,
                                                  const unsigned char* name, size_t name_len,
                                                  SSL_TICKET_STATUS status, void* arg) noexcept;
    static int newSessionCallback(SSL* ssl, SSL_SESSION* session) noexcept;

private:
    static int bioWrite(BIO* bio, const char* data, size_t len, size_t* written) noexcept;
    static int bioRead(BIO* bio, char* data, size_t len, size_t* read) noexcept;
    static long bioCtrl(BIO* bio, int cmd, long num, void* ptr) noexcept;
    static int bioCreate(BIO* bio) noexcept;
    static int collectFinding(int ok, X509_STORE_CTX* store) noexcept;
    static OsslSession* of(SSL* ssl) noexcept;

    int verifyChain(X509_STORE_CTX* store) noexcept;
    Result fail(const char* reason);
    Result failFromOpenssl(int ret, bool during_handshake);
    Result finishHandshake();

    std::shared_ptr<OsslContext> ctx_;
    SSL* ssl_ = nullptr;
    CiphertextBuffers io_;
    SessionInfo info_;
    const char* error_ = nullptr;
    const char* verify_reason_ = nullptr;  // why this side refused the peer's certificate
    int findings_[8] = {};                 // first verification error of each kind, by priority
    bool done_ = false;
    bool failed_ = false;
    bool eof_ = false;
    bool close_sent_ = false;
};

}  // namespace sidecar::tls::ossl
