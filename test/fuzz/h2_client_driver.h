#pragma once

// Drives one http::H2Upstream with arbitrary bytes from the app, after core asked it for two
// exchanges (a GET, and a chunked POST with trailers), and aborts if it breaks its contract with
// core: no event for an exchange core cancelled or that request() refused, no response bytes
// after that exchange ended or failed, at most one end or failure per exchange, and
// activeExchanges() counting exactly the exchanges still owed an end or a failure. Shared by the
// libFuzzer target (fuzz_h2_client) and the in-process smoke test.
//
// Input layout: byte 0 = flags (bit 0: prepend a valid server SETTINGS frame; bit 1: small
// limits; bit 2: halfway, cancel the GET and start a third exchange if canStart(); bit 3: the
// app's connection ends (eof) after the last byte), byte 1 = size of the pieces the rest is fed
// in (0: all at once), then the app's bytes.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string_view>

#include "http/h2_client.h"

namespace sidecar::http::fuzz {

class H2ClientFuzzEvents final : public H2UpstreamEvents {
public:
    enum class State : uint8_t { Open, Ended, Failed, Forgotten };

    void sendUpstream(const uint8_t*, size_t n) override {
        if (n == 0) std::abort();
        sent += n;
    }
    void onResponse(uint64_t ex, const uint8_t*, size_t n) override {
        Exchange& e = open(ex);
        if (n == 0) std::abort();
        e.unconsumed += n;
    }
    void onResponseEnd(uint64_t ex) override { open(ex).state = State::Ended; }
    void onExchangeFailed(uint64_t ex, uint32_t) override { open(ex).state = State::Failed; }

    struct Exchange {
        State state = State::Open;
        size_t unconsumed = 0;  // response bytes not yet reported consumed
    };
    // The exchange an event names must be one core started and still waits on.
    Exchange& open(uint64_t ex) {
        auto it = exchanges.find(ex);
        if (it == exchanges.end() || it->second.state != State::Open) std::abort();
        return it->second;
    }
    size_t stillOpen() const {
        size_t n = 0;
        for (const auto& [id, e] : exchanges) n += e.state == State::Open;
        return n;
    }

    std::map<uint64_t, Exchange> exchanges;
    size_t sent = 0;
};

inline void fuzzH2Client(const uint8_t* data, size_t size) noexcept {
    if (size < 2) return;
    const uint8_t flags = data[0];
    const size_t piece = data[1];
    data += 2;
    size -= 2;

    H2UpstreamOptions options;
    if (flags & 2) {
        options.initial_window = 100;
        options.max_header_bytes = 256;
    }
    H2ClientFuzzEvents events;
    H2Upstream upstream(options, events);
    upstream.start();
    bool closed = false;
    // Core's side of one exchange: request bytes in pieces; a refusal forgets the exchange.
    auto request = [&](uint64_t ex, std::string_view bytes, size_t cut) {
        events.exchanges[ex];
        for (std::string_view part : {bytes.substr(0, cut), bytes.substr(cut)}) {
            const auto* p = reinterpret_cast<const uint8_t*>(part.data());
            if (events.exchanges[ex].state == H2ClientFuzzEvents::State::Forgotten) break;
            if (!upstream.request(ex, p, part.size())) {
                events.exchanges[ex].state = H2ClientFuzzEvents::State::Forgotten;
            }
        }
    };
    auto settle = [&] {
        for (auto& [ex, e] : events.exchanges) {
            if (e.unconsumed == 0 || e.state == H2ClientFuzzEvents::State::Forgotten) continue;
            upstream.consumed(ex, e.unconsumed);
            e.unconsumed = 0;
        }
        if (!closed && upstream.flush() == Status::Close) closed = true;
        if (upstream.activeExchanges() != events.stillOpen()) std::abort();
    };
    request(1, "GET /a HTTP/1.1\r\nHost: app\r\n\r\n", 9);
    request(2,
            "POST /u HTTP/1.1\r\nHost: app\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n",
            70);
    settle();
    if (flags & 1) {
        static const uint8_t kSettings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
        if (upstream.feed(kSettings, sizeof(kSettings)) == Status::Close) closed = true;
        settle();
    }
    size_t offset = 0;
    bool halfway = false;
    while (!closed && offset < size) {
        const size_t n = piece == 0 ? size - offset : std::min(piece, size - offset);
        if (upstream.feed(data + offset, n) == Status::Close) closed = true;
        offset += n;
        settle();
        if ((flags & 4) && !halfway && offset * 2 >= size) {
            halfway = true;
            upstream.cancel(1);
            events.exchanges[1].state = H2ClientFuzzEvents::State::Forgotten;
            if (upstream.canStart()) request(3, "GET /b HTTP/1.1\r\nHost: app\r\n\r\n", 0);
            settle();
        }
    }
    if (flags & 8) {
        upstream.eof();
        if (upstream.activeExchanges() != 0 || events.stillOpen() != 0) std::abort();
    }
    upstream.flush();
    if (upstream.activeExchanges() != events.stillOpen()) std::abort();
}

}  // namespace sidecar::http::fuzz
