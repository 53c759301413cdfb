#include "http/fuzz.h"

#include <cstdlib>

#include "http/codec.h"

namespace sidecar::http {
namespace {

// Checks the contract core relies on: nothing is emitted once Close was returned, and the
// codec never asks to send an empty range.
class CheckingEvents final : public CodecEvents {
public:
    bool closed = false;

    void sendUpstream(const uint8_t*, size_t n) override { check(n > 0); }
    void sendDownstream(const uint8_t*, size_t n) override { check(n > 0); }
    void onRequestHead(const Exchange&) override { check(true); }
    void onResponseHead(const Exchange&) override { check(true); }
    void onExchangeComplete(const Exchange&) override { check(true); }
    void onUpgrade() override { check(true); }

private:
    void check(bool ok) const {
        if (!ok || closed) std::abort();
    }
};

}  // namespace

void fuzzCodec(const uint8_t* data, size_t size) noexcept {
    if (size == 0) return;
    CodecOptions options;
    const uint8_t config = data[0];
    options.forwarded = static_cast<ForwardedMode>(config % 3);
    if (config & 4) {
        options.max_header_bytes = 256;
        options.max_headers = 4;
        options.max_pipelined = 2;
        options.max_held_bytes = 64;
    }
    ConnectionFacts facts;
    facts.client_ip = (config & 8) ? "2001:db8::1" : "192.0.2.7";
    facts.client_port = 40000;
    if (config & 16) facts.client_cert = "Hash=ab;Subject=\"CN=client\"";
    CheckingEvents events;
    Codec codec(options, facts, events);

    size_t i = 1;
    // Input continues after Close on purpose: every later call must return Close and emit
    // nothing.
    while (i + 1 < size) {
        const uint8_t op = data[i] % 6;
        size_t len = data[i + 1];
        i += 2;
        if (len > size - i) len = size - i;
        Status s = Status::Continue;
        switch (op) {
            case 0:
                s = codec.feedRequest(data + i, len);
                break;
            case 1:
                s = codec.feedResponse(data + i, len);
                break;
            case 2:
                s = codec.requestEof();
                break;
            case 3:
                s = codec.responseEof();
                break;
            case 4:
                s = codec.localError(len % 2 ? 504 : 408);
                break;
            default:
                codec.setDraining();
                break;
        }
        (void)codec.awaitingRequestHead();
        (void)codec.awaitingResponse();
        (void)codec.idleBetweenRequests();
        (void)codec.tunneling();
        i += len;
        if (events.closed && s != Status::Close && op != 5) std::abort();
        if (s == Status::Close) events.closed = true;
    }
}

}  // namespace sidecar::http
