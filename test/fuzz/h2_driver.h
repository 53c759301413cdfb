#pragma once

// Drives one http::H2Session with arbitrary client bytes, answering every request it offers with
// a canned HTTP/1.1 response, and aborts if the session breaks its contract with core. Shared by
// the libFuzzer target (fuzz_h2) and the in-process smoke test.
//
// Input layout: byte 0 = flags (bit 0: prepend a valid client preface and SETTINGS; bit 1:
// small limits; bit 2: drain with goaway() halfway; bit 3: never flush until the end, like a
// client that does not read), byte 1 = size of the pieces the rest is fed in (0: all at once),
// then the client's bytes.

#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "http/h2.h"

namespace sidecar::http::fuzz {

class H2FuzzEvents final : public H2Events {
public:
    void sendDownstream(const uint8_t*, size_t n) override {
        if (n == 0) std::abort();
        sent += n;
    }
    void onStreamRequest(int32_t id, std::string_view head, bool end_stream) override {
        if (ever.count(id) || !head.ends_with("\r\n\r\n")) std::abort();
        if (head.find('\0') != std::string_view::npos) std::abort();
        ever.insert(id);
        open[id] = Stream{head.starts_with("HEAD "), false, 0};
        (void)end_stream;  // onStreamRequestEnd follows either way
        fresh.push_back(id);
    }
    void onStreamBody(int32_t id, const uint8_t*, size_t n) override {
        auto it = open.find(id);
        if (it == open.end() || it->second.ended || n == 0) std::abort();
        it->second.unconsumed += n;
    }
    void onStreamRequestEnd(int32_t id) override {
        auto it = open.find(id);
        if (it == open.end() || it->second.ended) std::abort();
        it->second.ended = true;
    }
    void onStreamClosed(int32_t id, uint32_t) override {
        if (open.erase(id) != 1) std::abort();  // once, and only for offered streams
    }
    void onLocalResponse(int32_t id, const Exchange& ex) override {
        if (ever.count(id) || (ex.status != 400 && ex.status != 431) || !ex.local) std::abort();
    }

    struct Stream {
        bool head = false;
        bool ended = false;
        size_t unconsumed = 0;
    };
    std::map<int32_t, Stream> open;
    std::set<int32_t> ever;
    std::vector<int32_t> fresh;
    size_t sent = 0;
};

inline void answer(H2Session& session, int32_t id, bool head) {
    static const std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    static const std::string_view kChunked =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: x\r\nX: 1\r\n\r\n"
        "3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\n";
    static const std::string_view kInterim =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
    static const std::string_view kEof = "HTTP/1.1 200 OK\r\n\r\nuntil the end";
    static const std::string_view kBroken = "HTTP/1.1 2x0 Nope\r\n\r\n";
    auto respond = [&](std::string_view bytes) {
        // In two pieces, cut where the id says.
        const size_t cut = size_t(id) % (bytes.size() + 1);
        session.respond(id, reinterpret_cast<const uint8_t*>(bytes.data()), cut, head);
        session.respond(id, reinterpret_cast<const uint8_t*>(bytes.data()) + cut,
                        bytes.size() - cut, head);
    };
    switch ((id / 2) % 7) {
        case 0:
            respond(kOk);
            break;
        case 1:
            respond(kChunked);
            break;
        case 2:
            respond(kInterim);
            break;
        case 3:
            respond(kEof);
            session.respondEof(id);
            break;
        case 4:
            respond(kBroken);
            break;
        case 5:
            respond(kOk.substr(0, 30));
            session.resetStream(id, 0x2);
            break;
        default:
            break;  // left unanswered
    }
}

inline void fuzzH2(const uint8_t* data, size_t size) noexcept {
    if (size < 2) return;
    const uint8_t flags = data[0];
    const size_t piece = data[1];
    data += 2;
    size -= 2;

    H2Options options;
    if (flags & 2) {
        options.max_concurrent_streams = 4;
        options.initial_window = 100;
        options.max_header_bytes = 256;
        options.max_headers = 8;
        options.max_resets = 4;
    }
    H2FuzzEvents events;
    H2Session session(options, events);
    session.start();
    const bool no_flush = flags & 8;
    bool closed = false;
    auto settle = [&] {
        for (int32_t id : events.fresh) {
            auto it = events.open.find(id);
            if (it != events.open.end()) answer(session, id, it->second.head);
        }
        events.fresh.clear();
        for (auto& [id, s] : events.open) {
            if (s.unconsumed != 0) {
                session.consumed(id, s.unconsumed);
                s.unconsumed = 0;
            }
        }
        if (!no_flush && session.flush() == Status::Close) closed = true;
        // Every offered stream not yet closed is open for the session too.
        if (session.openStreams() != events.open.size()) std::abort();
    };
    if (flags & 1) {
        static const uint8_t kPreface[] = {'P', 'R', 'I',  ' ',  '*',  ' ',  'H',  'T',  'T',
                                           'P', '/', '2',  '.',  '0',  '\r', '\n', '\r', '\n',
                                           'S', 'M', '\r', '\n', '\r', '\n', 0,    0,    0,
                                           4,   0,   0,    0,    0,    0};
        if (session.feed(kPreface, sizeof(kPreface)) == Status::Close) closed = true;
    }
    size_t offset = 0;
    bool drained = false;
    while (!closed && offset < size) {
        const size_t n = piece == 0 ? size - offset : std::min(piece, size - offset);
        if (session.feed(data + offset, n) == Status::Close) closed = true;
        offset += n;
        settle();
        if ((flags & 4) && !drained && offset * 2 >= size) {
            drained = true;
            session.goaway();
        }
    }
    if (!closed) settle();
    session.flush();
    if (session.openStreams() != events.open.size()) std::abort();
}

}  // namespace sidecar::http::fuzz
