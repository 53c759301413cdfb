// Arbitrary bytes as a client's TLS records fed to a server session, in pieces.
#include <cstdlib>
#include <memory>
#include <string>

#include "tls/backend.h"
#include "tls/factory.h"

namespace {

struct Server {
    // SIDECAR_TLS_BACKEND picks the backend under test; the default one otherwise.
    std::unique_ptr<sidecar::tls::Backend> backend = sidecar::tls::makeBackend(
        std::getenv("SIDECAR_TLS_BACKEND") != nullptr ? std::getenv("SIDECAR_TLS_BACKEND") : "");
    std::shared_ptr<sidecar::tls::Context> context;
    Server() {
        if (!backend) abort();
        sidecar::tls::ServerOptions o;
        std::string error;
        if (!backend->selfSigned({"localhost"}, 1, &o.pair.certificate_pem, &o.pair.private_key_pem, &error))
            abort();
        o.alpn = {"h2", "http/1.1"};
        context = backend->serverContext(o, &error);
        if (!context) abort();
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Server server;
    std::unique_ptr<sidecar::tls::Session> s = server.context->newSession();
    std::vector<uint8_t> out;
    uint8_t plain[4096];
    size_t off = 0;
    while (off < size) {
        size_t n = std::min<size_t>(size - off, 1 + data[off] % 97);
        s->feedCiphertext(data + off, n);
        off += n;
        sidecar::tls::Result r = s->handshakeComplete() ? sidecar::tls::Result::Ok : s->handshake();
        if (s->hasCiphertext()) s->takeCiphertext(out), out.clear();
        if (r == sidecar::tls::Result::Error || r == sidecar::tls::Result::Eof) break;
        if (s->handshakeComplete()) {
            size_t got = 0;
            if (s->readPlain(plain, sizeof plain, &got) == sidecar::tls::Result::Error) break;
        }
    }
    return 0;
}
