#pragma once

// An in-memory HTTP/2 conversation between a real nghttp2 client session and an H2Session: the
// client's frames are fed to the server, the server's frames (what it hands to sendDownstream)
// to the client, until neither has anything more to say. The server's events are recorded per
// stream, and so is what the client received.

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <catch2/catch_test_macros.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "http/h2.h"

namespace sidecar::http::test {

using Fields = std::vector<std::pair<std::string, std::string>>;

// What the server side (core) saw.
class ServerEvents final : public H2Events {
public:
    struct Request {
        std::string head;
        bool end_stream = false;
        std::string body;
        bool ended = false;
        bool closed = false;
        uint32_t close_code = 0;
    };
    std::string out;  // frames for the client not yet delivered
    std::map<int32_t, Request> requests;
    std::vector<std::pair<int32_t, Exchange>> locals;

    void sendDownstream(const uint8_t* p, size_t n) override {
        CHECK(n > 0);
        out.append(reinterpret_cast<const char*>(p), n);
    }
    void onStreamRequest(int32_t id, std::string_view head, bool end_stream) override {
        CHECK(requests.count(id) == 0);
        Request& r = requests[id];
        r.head = head;
        r.end_stream = end_stream;
    }
    void onStreamBody(int32_t id, const uint8_t* p, size_t n) override {
        REQUIRE(requests.count(id) == 1);
        Request& r = requests[id];
        CHECK(n > 0);
        CHECK_FALSE(r.ended);
        CHECK_FALSE(r.closed);
        r.body.append(reinterpret_cast<const char*>(p), n);
    }
    void onStreamRequestEnd(int32_t id) override {
        REQUIRE(requests.count(id) == 1);
        CHECK_FALSE(requests[id].ended);
        requests[id].ended = true;
    }
    void onStreamClosed(int32_t id, uint32_t code) override {
        REQUIRE(requests.count(id) == 1);  // only streams that got onStreamRequest
        Request& r = requests[id];
        CHECK_FALSE(r.closed);  // once
        r.closed = true;
        r.close_code = code;
    }
    void onLocalResponse(int32_t id, const Exchange& ex) override { locals.emplace_back(id, ex); }
};

struct ClientOptions {
    uint32_t initial_window = 65535;
    bool manual_window = false;  // the test calls consume() itself
};

// The client: a real nghttp2 client session.
class Client {
public:
    struct Stream {
        std::vector<Fields> blocks;  // every header block received, in order
        std::string body;
        bool closed = false;
        uint32_t close_code = 0;
        std::optional<uint32_t> rst;  // RST_STREAM received
        // Request body: sent as it is appended; `upload_done` ends the stream.
        std::string upload;
        size_t upload_offset = 0;
        bool upload_done = true;
        bool deferred = false;
        Fields trailers;  // request trailers, sent after the body
    };

    explicit Client(ClientOptions o = ClientOptions()) : options_(o) {
        nghttp2_session_callbacks* cbs;
        REQUIRE(nghttp2_session_callbacks_new(&cbs) == 0);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &onBeginHeaders);
        nghttp2_session_callbacks_set_on_header_callback(cbs, &onHeader);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &onData);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &onFrame);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &onClose);
        nghttp2_option* opt;
        REQUIRE(nghttp2_option_new(&opt) == 0);
        if (o.manual_window) nghttp2_option_set_no_auto_window_update(opt, 1);
        REQUIRE(nghttp2_session_client_new2(&session, cbs, this, opt) == 0);
        nghttp2_option_del(opt);
        nghttp2_session_callbacks_del(cbs);
        const nghttp2_settings_entry iv[] = {
            {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o.initial_window},
        };
        REQUIRE(nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, iv, 1) == 0);
    }
    ~Client() { nghttp2_session_del(session); }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Submits a request; `fields` are sent as given (pseudo-headers included). With a body the
    // stream stays open until the body (and `trailers`) are sent; `open_body` keeps it open
    // for more body until finishUpload().
    int32_t request(const Fields& fields, std::optional<std::string> body = std::nullopt,
                    bool open_body = false, Fields trailers = {}) {
        std::vector<nghttp2_nv> nva;
        for (const auto& [n, v] : fields) {
            nva.push_back(
                {(uint8_t*)n.data(), (uint8_t*)v.data(), n.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
        }
        nghttp2_data_provider provider;
        provider.read_callback = &readUpload;
        const bool has_body = body.has_value() || open_body;
        const int32_t id = nghttp2_submit_request(session, nullptr, nva.data(), nva.size(),
                                                  has_body ? &provider : nullptr, nullptr);
        REQUIRE(id > 0);
        Stream& s = streams[id];
        if (has_body) {
            s.upload = body.value_or("");
            s.upload_done = !open_body;
            s.trailers = std::move(trailers);
        }
        return id;
    }
    int32_t get(const std::string& path, Fields extra = {}) {
        Fields f = {{":method", "GET"},
                    {":scheme", "https"},
                    {":path", path},
                    {":authority", "example.com"}};
        f.insert(f.end(), extra.begin(), extra.end());
        return request(f);
    }
    void upload(int32_t id, const std::string& more, bool done) {
        Stream& s = streams[id];
        s.upload += more;
        s.upload_done = done;
        if (s.deferred) {
            s.deferred = false;
            nghttp2_session_resume_data(session, id);
        }
    }

    // The status of the final response, or 0.
    int status(int32_t id) {
        for (const Fields& b : streams[id].blocks) {
            for (const auto& [n, v] : b) {
                if (n == ":status" && v[0] != '1') return std::stoi(v);
            }
        }
        return 0;
    }
    // The blocks with a :status, interim ones included.
    std::vector<int> statuses(int32_t id) {
        std::vector<int> out;
        for (const Fields& b : streams[id].blocks) {
            for (const auto& [n, v] : b) {
                if (n == ":status") out.push_back(std::stoi(v));
            }
        }
        return out;
    }
    // The final response's fields.
    Fields head(int32_t id) {
        for (const Fields& b : streams[id].blocks) {
            for (const auto& [n, v] : b) {
                if (n == ":status" && v[0] != '1') return b;
            }
        }
        return {};
    }
    Fields trailers(int32_t id) {
        const auto& blocks = streams[id].blocks;
        if (blocks.empty()) return {};
        for (const auto& [n, v] : blocks.back()) {
            if (n == ":status") return {};
        }
        return blocks.back();
    }

    nghttp2_session* session = nullptr;
    std::map<int32_t, Stream> streams;
    std::optional<uint32_t> goaway_code;
    int32_t goaway_last_stream = -1;

private:
    static Client& self(void* user) { return *static_cast<Client*>(user); }
    static int onBeginHeaders(nghttp2_session*, const nghttp2_frame* f, void* user) {
        self(user).streams[f->hd.stream_id].blocks.emplace_back();
        return 0;
    }
    static int onHeader(nghttp2_session*, const nghttp2_frame* f, const uint8_t* n, size_t nl,
                        const uint8_t* v, size_t vl, uint8_t, void* user) {
        self(user).streams[f->hd.stream_id].blocks.back().emplace_back(
            std::string((const char*)n, nl), std::string((const char*)v, vl));
        return 0;
    }
    static int onData(nghttp2_session*, uint8_t, int32_t id, const uint8_t* p, size_t n,
                      void* user) {
        self(user).streams[id].body.append((const char*)p, n);
        return 0;
    }
    static int onFrame(nghttp2_session*, const nghttp2_frame* f, void* user) {
        Client& c = self(user);
        if (f->hd.type == NGHTTP2_RST_STREAM)
            c.streams[f->hd.stream_id].rst = f->rst_stream.error_code;
        if (f->hd.type == NGHTTP2_GOAWAY) {
            c.goaway_code = f->goaway.error_code;
            c.goaway_last_stream = f->goaway.last_stream_id;
        }
        return 0;
    }
    static int onClose(nghttp2_session*, int32_t id, uint32_t code, void* user) {
        Stream& s = self(user).streams[id];
        s.closed = true;
        s.close_code = code;
        return 0;
    }
    static ssize_t readUpload(nghttp2_session* session, int32_t id, uint8_t* buf, size_t len,
                              uint32_t* flags, nghttp2_data_source*, void* user) {
        Stream& s = self(user).streams[id];
        const size_t n = std::min(len, s.upload.size() - s.upload_offset);
        std::copy_n(s.upload.data() + s.upload_offset, n, buf);
        s.upload_offset += n;
        if (s.upload_offset == s.upload.size() && s.upload_done) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (!s.trailers.empty()) {
                std::vector<nghttp2_nv> nva;
                for (const auto& [tn, tv] : s.trailers) {
                    nva.push_back({(uint8_t*)tn.data(), (uint8_t*)tv.data(), tn.size(), tv.size(),
                                   NGHTTP2_NV_FLAG_NONE});
                }
                REQUIRE(nghttp2_submit_trailer(session, id, nva.data(), nva.size()) == 0);
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            }
            return ssize_t(n);
        }
        if (n == 0) {
            s.deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
        return ssize_t(n);
    }

    ClientOptions options_;
};

// The server and the client, and the pump between them.
struct Conversation {
    explicit Conversation(H2Options o = H2Options(), ClientOptions co = ClientOptions())
        : options(o), server(options, events), client(co) {
        server.start();
    }

    // Moves bytes both ways until both sides are quiet.
    void pump() {
        for (int round = 0; round < 100000; ++round) {
            bool moved = false;
            for (;;) {
                const uint8_t* data;
                const ssize_t n = nghttp2_session_mem_send(client.session, &data);
                REQUIRE(n >= 0);
                if (n == 0) break;
                moved = true;
                feedServer(data, size_t(n));
            }
            if (server.flush() == Status::Close) flush_closed = true;
            if (!events.out.empty()) {
                moved = true;
                const std::string bytes = std::move(events.out);
                events.out.clear();
                const ssize_t r = nghttp2_session_mem_recv(
                    client.session, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
                REQUIRE(r == ssize_t(bytes.size()));
            }
            if (!moved) return;
        }
        FAIL("the conversation did not settle");
    }
    void feedServer(const void* p, size_t n) {
        if (server.feed(static_cast<const uint8_t*>(p), n) == Status::Close) feed_closed = true;
    }
    void respond(int32_t id, const std::string& bytes, bool head_request = false) {
        server.respond(id, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                       head_request);
        pump();
    }

    H2Options options;
    ServerEvents events;
    H2Session server;
    Client client;
    bool feed_closed = false;
    bool flush_closed = false;
};

// For what an nghttp2 client will not send: frames written by hand, and the server's frames
// read back with their header blocks decoded.
struct RawFrame {
    uint8_t type = 0, flags = 0;
    uint32_t stream = 0;
    std::string payload;
    Fields fields;  // HEADERS: the decoded block
};

inline std::string frameBytes(uint8_t type, uint8_t flags, uint32_t stream,
                              const std::string& payload) {
    std::string f;
    const size_t n = payload.size();
    for (int shift : {16, 8, 0}) f.push_back(char(n >> shift));
    f.push_back(char(type));
    f.push_back(char(flags));
    for (int shift : {24, 16, 8, 0}) f.push_back(char(stream >> shift));
    return f + payload;
}

class RawConversation {
public:
    explicit RawConversation(H2Options o = H2Options()) : options(o), server(options, events) {
        REQUIRE(nghttp2_hd_inflate_new(&inflater_) == 0);
        server.start();
        send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frameBytes(0x4, 0, 0, ""));
    }
    ~RawConversation() { nghttp2_hd_inflate_del(inflater_); }
    RawConversation(const RawConversation&) = delete;
    RawConversation& operator=(const RawConversation&) = delete;

    void send(const std::string& bytes) {
        if (server.feed(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()) ==
            Status::Close) {
            feed_closed = true;
        }
    }
    // Flushes the server and returns the frames it wrote since the last call.
    std::vector<RawFrame> frames() {
        if (server.flush() == Status::Close) flush_closed = true;
        buffer_ += events.out;
        events.out.clear();
        std::vector<RawFrame> out;
        while (buffer_.size() >= 9) {
            const auto* b = reinterpret_cast<const uint8_t*>(buffer_.data());
            const size_t len = size_t(b[0]) << 16 | size_t(b[1]) << 8 | b[2];
            if (buffer_.size() < 9 + len) break;
            RawFrame f;
            f.type = b[3];
            f.flags = b[4];
            f.stream = (uint32_t(b[5]) << 24 | uint32_t(b[6]) << 16 | uint32_t(b[7]) << 8 | b[8]) &
                       0x7fffffff;
            f.payload = buffer_.substr(9, len);
            buffer_.erase(0, 9 + len);
            if (f.type == 0x1) decode(f);  // the server sends no padding, priority or CONTINUATION
            out.push_back(std::move(f));
        }
        return out;
    }

    H2Options options;
    ServerEvents events;
    H2Session server;
    bool feed_closed = false;
    bool flush_closed = false;

private:
    void decode(RawFrame& f) {
        const auto* in = reinterpret_cast<const uint8_t*>(f.payload.data());
        size_t left = f.payload.size();
        for (;;) {
            nghttp2_nv nv;
            int flags = 0;
            const ssize_t n = nghttp2_hd_inflate_hd2(inflater_, &nv, &flags, in, left, 1);
            REQUIRE(n >= 0);
            in += n;
            left -= size_t(n);
            if (flags & NGHTTP2_HD_INFLATE_EMIT) {
                f.fields.emplace_back(std::string((const char*)nv.name, nv.namelen),
                                      std::string((const char*)nv.value, nv.valuelen));
            }
            if (flags & NGHTTP2_HD_INFLATE_FINAL) {
                nghttp2_hd_inflate_end_headers(inflater_);
                break;
            }
            if ((flags & NGHTTP2_HD_INFLATE_EMIT) == 0 && left == 0) break;
        }
    }

    nghttp2_hd_inflater* inflater_ = nullptr;
    std::string buffer_;
};

}  // namespace sidecar::http::test
