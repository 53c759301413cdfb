// The HTTP/2 client converter against a real nghttp2 server session (the app), in memory.

#include "http/h2_client.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <catch2/catch_test_macros.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "test/unit/http/h2_peer.h"

using namespace sidecar::http;
using sidecar::http::test::Fields;

namespace {

constexpr uint32_t kNoError = 0x0, kProtocolError = 0x1, kInternalError = 0x2, kRefusedStream = 0x7,
                   kCancel = 0x8;

bool has(const Fields& fields, const std::string& name, const std::string& value) {
    for (const auto& [n, v] : fields) {
        if (n == name && v == value) return true;
    }
    return false;
}

// What core saw, per exchange.
class CoreEvents final : public H2UpstreamEvents {
public:
    struct Response {
        std::string bytes;
        bool ended = false;
        std::optional<uint32_t> failed;
    };
    std::string out;  // frames for the app not yet delivered
    std::map<uint64_t, Response> responses;

    void sendUpstream(const uint8_t* p, size_t n) override {
        CHECK(n > 0);
        out.append(reinterpret_cast<const char*>(p), n);
    }
    void onResponse(uint64_t ex, const uint8_t* p, size_t n) override {
        Response& r = responses[ex];
        CHECK(n > 0);
        CHECK_FALSE(r.ended);
        CHECK_FALSE(r.failed);
        r.bytes.append(reinterpret_cast<const char*>(p), n);
    }
    void onResponseEnd(uint64_t ex) override {
        Response& r = responses[ex];
        CHECK_FALSE(r.ended);
        CHECK_FALSE(r.failed);
        r.ended = true;
    }
    void onExchangeFailed(uint64_t ex, uint32_t code) override {
        Response& r = responses[ex];
        CHECK_FALSE(r.ended);
        CHECK_FALSE(r.failed);  // at most once
        r.failed = code;
    }
};

struct AppOptions {
    uint32_t max_concurrent_streams = 100;
    uint32_t initial_window = 65535;
    bool manual_window = false;  // the test calls consume() itself
};

// The app: a real nghttp2 server session.
class App {
public:
    struct Stream {
        std::vector<Fields> blocks;  // every header block received, in order
        std::string body;
        bool ended = false;  // END_STREAM received
        std::optional<uint32_t> rst;
        bool closed = false;
        // Response body: sent as it is appended; `done` ends it (with `trailers`, if any).
        std::string reply;
        size_t reply_offset = 0;
        bool done = true;
        bool deferred = false;
        Fields trailers;
    };

    explicit App(AppOptions o = AppOptions()) {
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
        REQUIRE(nghttp2_session_server_new2(&session, cbs, this, opt) == 0);
        nghttp2_option_del(opt);
        nghttp2_session_callbacks_del(cbs);
        const nghttp2_settings_entry iv[] = {
            {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o.max_concurrent_streams},
            {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o.initial_window},
        };
        REQUIRE(nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, iv, 2) == 0);
    }
    ~App() { nghttp2_session_del(session); }
    App(const App&) = delete;
    App& operator=(const App&) = delete;

    // A response head (":status" first); with `body`, DATA follow (and `trailers`); `open`
    // keeps the body open for more (reply()).
    void respond(int32_t id, const Fields& head, std::optional<std::string> body = std::nullopt,
                 Fields trailers = {}, bool open = false) {
        const std::vector<nghttp2_nv> nva = nvs(head);
        Stream& s = streams[id];
        nghttp2_data_provider provider;
        provider.read_callback = &readReply;
        const bool has_body = body.has_value() || open || !trailers.empty();
        s.reply = body.value_or("");
        s.done = !open;
        s.trailers = std::move(trailers);
        REQUIRE(nghttp2_submit_response(session, id, nva.data(), nva.size(),
                                        has_body ? &provider : nullptr) == 0);
    }
    void interim(int32_t id, const Fields& head) {
        const std::vector<nghttp2_nv> nva = nvs(head);
        REQUIRE(nghttp2_submit_headers(session, NGHTTP2_FLAG_NONE, id, nullptr, nva.data(),
                                       nva.size(), nullptr) == 0);
    }
    void reply(int32_t id, const std::string& more, bool done) {
        Stream& s = streams[id];
        s.reply += more;
        s.done = done;
        if (s.deferred) {
            s.deferred = false;
            REQUIRE(nghttp2_session_resume_data(session, id) == 0);
        }
    }
    // The request streams in the order they arrived.
    std::vector<int32_t> ids() const {
        std::vector<int32_t> out;
        for (const auto& [id, s] : streams) out.push_back(id);
        return out;
    }

    nghttp2_session* session = nullptr;
    std::map<int32_t, Stream> streams;

private:
    static std::vector<nghttp2_nv> nvs(const Fields& fields) {
        std::vector<nghttp2_nv> nva;
        for (const auto& [n, v] : fields) {
            nva.push_back(
                {(uint8_t*)n.data(), (uint8_t*)v.data(), n.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
        }
        return nva;
    }
    static App& self(void* user) { return *static_cast<App*>(user); }
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
        App& a = self(user);
        if (f->hd.stream_id == 0) return 0;
        Stream& s = a.streams[f->hd.stream_id];
        if (f->hd.type == NGHTTP2_RST_STREAM) s.rst = f->rst_stream.error_code;
        if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
            (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            s.ended = true;
        }
        return 0;
    }
    static int onClose(nghttp2_session*, int32_t id, uint32_t, void* user) {
        self(user).streams[id].closed = true;
        return 0;
    }
    static ssize_t readReply(nghttp2_session* session, int32_t id, uint8_t* buf, size_t len,
                             uint32_t* flags, nghttp2_data_source*, void* user) {
        Stream& s = self(user).streams[id];
        const size_t n = std::min(len, s.reply.size() - s.reply_offset);
        std::copy_n(s.reply.data() + s.reply_offset, n, buf);
        s.reply_offset += n;
        if (s.reply_offset == s.reply.size() && s.done) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (!s.trailers.empty()) {
                const std::vector<nghttp2_nv> nva = nvs(s.trailers);
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
};

// The converter and the app, and the pump between them.
struct Link {
    explicit Link(H2UpstreamOptions o = H2UpstreamOptions(), AppOptions ao = AppOptions())
        : options(o), upstream(options, core), app(ao) {
        upstream.start();
        pump();
    }

    void pump() {
        for (int round = 0; round < 100000; ++round) {
            bool moved = false;
            if (upstream.flush() == Status::Close) flush_closed = true;
            if (!core.out.empty()) {
                moved = true;
                const std::string bytes = std::move(core.out);
                core.out.clear();
                const ssize_t r = nghttp2_session_mem_recv(
                    app.session, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
                REQUIRE(r == ssize_t(bytes.size()));
            }
            for (;;) {
                const uint8_t* data;
                const ssize_t n = nghttp2_session_mem_send(app.session, &data);
                REQUIRE(n >= 0);
                if (n == 0) break;
                moved = true;
                if (upstream.feed(data, size_t(n)) == Status::Close) feed_closed = true;
            }
            if (!moved) return;
        }
        FAIL("the conversation did not settle");
    }
    bool send(uint64_t ex, const std::string& bytes) {
        const bool ok =
            upstream.request(ex, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
        pump();
        return ok;
    }
    // The app's stream for the n-th request it received (from 0).
    int32_t stream(size_t n) {
        const std::vector<int32_t> ids = app.ids();
        REQUIRE(ids.size() > n);
        return ids[n];
    }
    const std::string& bytes(uint64_t ex) { return core.responses[ex].bytes; }
    bool ended(uint64_t ex) { return core.responses[ex].ended; }
    std::optional<uint32_t> failed(uint64_t ex) { return core.responses[ex].failed; }

    H2UpstreamOptions options;
    CoreEvents core;
    H2Upstream upstream;
    App app;
    bool feed_closed = false;
    bool flush_closed = false;
};

}  // namespace

TEST_CASE("h2 client: GET becomes HEADERS with pseudo-headers and end-to-end fields only") {
    Link link;
    REQUIRE(link.send(1,
                      "GET /a/b?c=1 HTTP/1.1\r\n"
                      "Host: app.local:8080\r\n"
                      "User-Agent: curl/8\r\n"
                      "Connection: keep-alive, X-Hop\r\n"
                      "X-Hop: 1\r\n"
                      "Keep-Alive: timeout=5\r\n"
                      "Proxy-Connection: keep-alive\r\n"
                      "Upgrade-Insecure-Requests: 1\r\n"
                      "TE: trailers\r\n"
                      "Accept: */*  \r\n"
                      "X-Forwarded-For: 10.0.0.1\r\n"
                      "\r\n"));
    const int32_t id = link.stream(0);
    const App::Stream& s = link.app.streams[id];
    REQUIRE(s.blocks.size() == 1);
    const Fields expected = {
        {":method", "GET"},    {":scheme", "http"},      {":authority", "app.local:8080"},
        {":path", "/a/b?c=1"}, {"user-agent", "curl/8"}, {"upgrade-insecure-requests", "1"},
        {"te", "trailers"},    {"accept", "*/*"},        {"x-forwarded-for", "10.0.0.1"}};
    CHECK(s.blocks[0] == expected);
    CHECK(s.ended);  // END_STREAM on the HEADERS: no body
    CHECK(link.upstream.activeExchanges() == 1);

    link.app.respond(
        id, {{":status", "200"}, {"content-length", "5"}, {"content-type", "text/plain"}}, "hello");
    link.pump();
    CHECK(link.bytes(1) ==
          "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n\r\nhello");
    CHECK(link.ended(1));
    CHECK_FALSE(link.failed(1));
    CHECK(link.upstream.activeExchanges() == 0);
}

TEST_CASE("h2 client: te other than trailers is dropped, absolute form sets :authority") {
    Link link;
    REQUIRE(link.send(1,
                      "OPTIONS http://origin.example/x?y HTTP/1.1\r\nHost: other\r\n"
                      "TE: gzip\r\n\r\n"));
    const Fields expected = {{":method", "OPTIONS"},
                             {":scheme", "http"},
                             {":authority", "origin.example"},
                             {":path", "/x?y"}};
    CHECK(link.app.streams[link.stream(0)].blocks.at(0) == expected);
}

TEST_CASE("h2 client: POST with Content-Length becomes HEADERS + DATA") {
    Link link;
    REQUIRE(link.send(7,
                      "POST /submit HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n"
                      "Content-Type: text/plain\r\n\r\nhello"));
    REQUIRE(link.send(7, " world"));
    const App::Stream& s = link.app.streams[link.stream(0)];
    const Fields expected = {{":method", "POST"},      {":scheme", "http"},
                             {":authority", "h"},      {":path", "/submit"},
                             {"content-length", "11"}, {"content-type", "text/plain"}};
    CHECK(s.blocks.at(0) == expected);
    CHECK(s.body == "hello world");
    CHECK(s.ended);
    CHECK(link.upstream.buffered(7) == 0);
}

TEST_CASE("h2 client: chunked POST with trailers becomes DATA and a trailing HEADERS") {
    Link link;
    const std::string request =
        "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
        "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\nConnection: close\r\n\r\n";
    // Byte by byte: any split of the framing works.
    for (size_t i = 0; i < request.size(); ++i) {
        INFO("byte " << i);
        REQUIRE(link.upstream.request(3, reinterpret_cast<const uint8_t*>(request.data() + i), 1));
    }
    link.pump();
    const App::Stream& s = link.app.streams[link.stream(0)];
    REQUIRE(s.blocks.size() == 2);
    const Fields head = {{":method", "POST"},
                         {":scheme", "http"},
                         {":authority", "h"},
                         {":path", "/up"},
                         {"trailer", "x-checksum"}};
    CHECK(s.blocks[0] == head);
    CHECK(s.body == "hello world");
    CHECK(s.blocks[1] == Fields{{"x-checksum", "abc"}});
    CHECK(s.ended);
}

TEST_CASE("h2 client: chunked POST without trailers ends with an empty DATA") {
    Link link;
    REQUIRE(link.send(3,
                      "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3\r\nabc\r\n0\r\n\r\n"));
    const App::Stream& s = link.app.streams[link.stream(0)];
    CHECK(s.blocks.size() == 1);
    CHECK(s.body == "abc");
    CHECK(s.ended);
}

TEST_CASE("h2 client: gRPC response (no content-length, DATA, trailers) becomes chunked") {
    Link link;
    REQUIRE(link.send(1,
                      "POST /pkg.Svc/Call HTTP/1.1\r\nHost: h\r\nContent-Type: application/grpc\r\n"
                      "TE: trailers\r\nContent-Length: 3\r\n\r\nabc"));
    const int32_t id = link.stream(0);
    CHECK(has(link.app.streams[id].blocks.at(0), "te", "trailers"));
    link.app.respond(id, {{":status", "200"}, {"content-type", "application/grpc"}}, "hello",
                     {{"grpc-status", "0"}, {"grpc-message", "ok"}});
    link.pump();
    CHECK(link.bytes(1) ==
          "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n"
          "5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n");
    CHECK(link.ended(1));
}

TEST_CASE("h2 client: a trailers-only response becomes a head with content-length: 0") {
    Link link;
    REQUIRE(link.send(1, "POST /pkg.Svc/Call HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"));
    const int32_t id = link.stream(0);
    CHECK(link.app.streams[id].ended);
    link.app.respond(id, {{":status", "200"},
                          {"content-type", "application/grpc"},
                          {"grpc-status", "12"},
                          {"grpc-message", "unimplemented"}});
    link.pump();
    CHECK(link.bytes(1) ==
          "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ngrpc-status: 12\r\n"
          "grpc-message: unimplemented\r\ncontent-length: 0\r\n\r\n");
    CHECK(link.ended(1));
}

TEST_CASE("h2 client: a response body without content-length and without trailers is chunked") {
    Link link;
    REQUIRE(link.send(1, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    const int32_t id = link.stream(0);
    link.app.respond(id, {{":status", "404"}}, "ab", {}, true);
    link.pump();
    link.app.reply(id, "cde", true);
    link.pump();
    CHECK(link.bytes(1) ==
          "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n"
          "2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n");
    CHECK(link.ended(1));
}

TEST_CASE("h2 client: HEAD and 204 responses carry no body framing") {
    Link link;
    REQUIRE(link.send(1, "HEAD /file HTTP/1.1\r\nHost: h\r\n\r\n"));
    REQUIRE(link.send(2, "DELETE /file HTTP/1.1\r\nHost: h\r\n\r\n"));
    REQUIRE(link.send(3, "GET /file HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"x\"\r\n\r\n"));
    CHECK(link.app.streams[link.stream(0)].blocks.at(0).at(0) ==
          std::pair<std::string, std::string>(":method", "HEAD"));
    link.app.respond(link.stream(0), {{":status", "200"}, {"content-length", "100"}});
    link.app.respond(link.stream(1), {{":status", "204"}});
    link.app.respond(link.stream(2), {{":status", "304"}, {"etag", "\"x\""}});
    link.pump();
    CHECK(link.bytes(1) == "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n");
    CHECK(link.bytes(2) == "HTTP/1.1 204 No Content\r\n\r\n");
    CHECK(link.bytes(3) == "HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n");
    CHECK(link.ended(1));
    CHECK(link.ended(2));
    CHECK(link.ended(3));
}

TEST_CASE("h2 client: 100-continue becomes an interim HTTP/1.1 head") {
    Link link;
    REQUIRE(link.send(1,
                      "PUT /obj HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                      "Content-Length: 4\r\n\r\n"));
    const int32_t id = link.stream(0);
    CHECK(has(link.app.streams[id].blocks.at(0), "expect", "100-continue"));
    CHECK_FALSE(link.app.streams[id].ended);
    link.app.interim(id, {{":status", "100"}});
    link.pump();
    CHECK(link.bytes(1) == "HTTP/1.1 100 Continue\r\n\r\n");
    CHECK_FALSE(link.ended(1));
    REQUIRE(link.send(1, "data"));
    CHECK(link.app.streams[id].body == "data");
    CHECK(link.app.streams[id].ended);
    link.app.respond(id, {{":status", "201"}});
    link.pump();
    CHECK(link.bytes(1) ==
          "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n");
    CHECK(link.ended(1));
}

TEST_CASE("h2 client: several exchanges share the connection with interleaved responses") {
    Link link;
    for (uint64_t ex = 10; ex < 13; ++ex) {
        REQUIRE(link.send(ex, "GET /" + std::to_string(ex) + " HTTP/1.1\r\nHost: h\r\n\r\n"));
    }
    REQUIRE(link.app.streams.size() == 3);
    CHECK(link.upstream.activeExchanges() == 3);
    const int32_t a = link.stream(0), b = link.stream(1), c = link.stream(2);
    CHECK(has(link.app.streams[a].blocks.at(0), ":path", "/10"));
    CHECK(has(link.app.streams[c].blocks.at(0), ":path", "/12"));
    link.app.respond(c, {{":status", "200"}}, "c1", {}, true);
    link.app.respond(a, {{":status", "200"}, {"content-length", "4"}}, "a1", {}, true);
    link.pump();
    link.app.respond(b, {{":status", "500"}, {"content-length", "1"}}, "b");
    link.app.reply(a, "a2", true);
    link.pump();
    link.app.reply(c, "c2", true);
    link.pump();
    CHECK(link.bytes(10) == "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\na1a2");
    CHECK(link.bytes(11) == "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 1\r\n\r\nb");
    CHECK(link.bytes(12) ==
          "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nc1\r\n2\r\nc2\r\n0\r\n\r\n");
    CHECK(link.ended(10));
    CHECK(link.ended(11));
    CHECK(link.ended(12));
    CHECK(link.upstream.activeExchanges() == 0);
}

TEST_CASE("h2 client: the app resetting a stream fails that exchange only") {
    Link link;
    REQUIRE(link.send(1, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    REQUIRE(link.send(2, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"));
    REQUIRE(nghttp2_submit_rst_stream(link.app.session, NGHTTP2_FLAG_NONE, link.stream(0),
                                      kInternalError) == 0);
    link.pump();
    CHECK(link.failed(1) == kInternalError);
    CHECK(link.bytes(1).empty());
    CHECK_FALSE(link.failed(2));
    CHECK(link.upstream.activeExchanges() == 1);
    link.app.respond(link.stream(1), {{":status", "200"}, {"content-length", "0"}});
    link.pump();
    CHECK(link.ended(2));
}

TEST_CASE("h2 client: a reset after the head fails the exchange mid-response") {
    Link link;
    REQUIRE(link.send(1, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    link.app.respond(link.stream(0), {{":status", "200"}}, "part", {}, true);
    link.pump();
    REQUIRE(nghttp2_submit_rst_stream(link.app.session, NGHTTP2_FLAG_NONE, link.stream(0),
                                      kCancel) == 0);
    link.pump();
    CHECK(link.bytes(1) == "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\npart\r\n");
    CHECK(link.failed(1) == kCancel);
    CHECK_FALSE(link.ended(1));
}

TEST_CASE("h2 client: cancel resets the stream with CANCEL and reports nothing more") {
    Link link;
    REQUIRE(link.send(1, "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc"));
    const int32_t id = link.stream(0);
    link.upstream.cancel(1);
    CHECK(link.upstream.activeExchanges() == 0);
    // The app answers before it sees the reset: nothing of it reaches core.
    link.app.respond(id, {{":status", "200"}}, std::string(1000, 'r'));
    for (;;) {
        const uint8_t* data;
        const ssize_t n = nghttp2_session_mem_send(link.app.session, &data);
        REQUIRE(n >= 0);
        if (n == 0) break;
        REQUIRE(link.upstream.feed(data, size_t(n)) == Status::Continue);
    }
    link.pump();
    CHECK(link.app.streams[id].rst == kCancel);
    CHECK(link.core.responses.count(1) == 0);
    CHECK(link.upstream.buffered(1) == 0);
    CHECK(link.upstream.canStart());
}

TEST_CASE("h2 client: GOAWAY stops new exchanges, in-flight ones complete") {
    Link link;
    REQUIRE(link.send(1, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    REQUIRE(link.send(2, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"));
    const int32_t first = link.stream(0);
    CHECK(link.upstream.canStart());
    // The app processed only the first stream.
    REQUIRE(nghttp2_submit_goaway(link.app.session, NGHTTP2_FLAG_NONE, first, kNoError, nullptr,
                                  0) == 0);
    link.pump();
    CHECK_FALSE(link.upstream.canStart());
    CHECK(link.failed(2) == kRefusedStream);  // never processed: core may retry it elsewhere
    CHECK_FALSE(
        link.upstream.request(3, reinterpret_cast<const uint8_t*>("GET / HTTP/1.1\r\n"), 16));
    CHECK_FALSE(link.feed_closed);
    link.app.respond(first, {{":status", "200"}, {"content-length", "2"}}, "ok");
    link.pump();
    CHECK(link.bytes(1) == "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    CHECK(link.ended(1));
    CHECK(link.upstream.activeExchanges() == 0);
    CHECK((link.feed_closed || link.flush_closed));
    CHECK(link.upstream.flush() == Status::Close);
}

TEST_CASE("h2 client: eof fails every open exchange once") {
    Link link;
    REQUIRE(link.send(1, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    REQUIRE(link.send(2, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"));
    REQUIRE(link.send(3, "GET /c HTTP/1.1\r\nHost: h\r\n\r\n"));
    link.app.respond(link.stream(0), {{":status", "200"}, {"content-length", "0"}});
    link.app.respond(link.stream(1), {{":status", "200"}}, "x", {}, true);
    link.pump();
    CHECK(link.ended(1));
    link.upstream.eof();
    CHECK_FALSE(link.failed(1));
    CHECK(link.failed(2).has_value());
    CHECK(link.failed(3).has_value());
    CHECK(link.upstream.activeExchanges() == 0);
    CHECK_FALSE(link.upstream.canStart());
    CHECK_FALSE(link.upstream.request(4, reinterpret_cast<const uint8_t*>("GET"), 3));
    CHECK(link.upstream.flush() == Status::Close);
    link.upstream.eof();  // once only
}

TEST_CASE("h2 client: a large response stops at the window until consumed") {
    H2UpstreamOptions options;
    options.initial_window = 16384;
    Link link(options);
    REQUIRE(link.send(1, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n"));
    const std::string body(100000, 'x');
    link.app.respond(link.stream(0), {{":status", "200"}, {"content-length", "100000"}}, body);
    link.pump();
    const std::string head = "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n";
    CHECK(link.bytes(1).size() == head.size() + 16384);
    CHECK_FALSE(link.ended(1));
    // Nothing more moves without consumed().
    link.pump();
    CHECK(link.bytes(1).size() == head.size() + 16384);
    // Part of the head only: no DATA byte reopens.
    link.upstream.consumed(1, 10);
    link.pump();
    CHECK(link.bytes(1).size() == head.size() + 16384);
    size_t given = 10;
    for (int i = 0; i < 100 && !link.ended(1); ++i) {
        const size_t now = link.bytes(1).size();
        link.upstream.consumed(1, now - given);
        given = now;
        link.pump();
    }
    CHECK(link.ended(1));
    CHECK(link.bytes(1) == head + body);
}

TEST_CASE("h2 client: a chunked response reopens the window through its framing") {
    H2UpstreamOptions options;
    options.initial_window = 1000;
    Link link(options);
    REQUIRE(link.send(1, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n"));
    const std::string body(5000, 'y');
    link.app.respond(link.stream(0), {{":status", "200"}}, body, {{"grpc-status", "0"}});
    link.pump();
    CHECK_FALSE(link.ended(1));
    size_t given = 0;
    for (int i = 0; i < 100 && !link.ended(1); ++i) {
        const size_t now = link.bytes(1).size();
        CHECK(now > given);
        link.upstream.consumed(1, now - given);
        given = now;
        link.pump();
    }
    REQUIRE(link.ended(1));
    // De-chunk what came out: the body and the trailer are whole.
    std::string out = link.bytes(1);
    const size_t head_end = out.find("\r\n\r\n");
    REQUIRE(head_end != std::string::npos);
    std::string rest = out.substr(head_end + 4), decoded;
    for (;;) {
        const size_t eol = rest.find("\r\n");
        REQUIRE(eol != std::string::npos);
        const size_t n = std::stoul(rest.substr(0, eol), nullptr, 16);
        if (n == 0) {
            CHECK(rest.substr(eol + 2) == "grpc-status: 0\r\n\r\n");
            break;
        }
        decoded += rest.substr(eol + 2, n);
        rest.erase(0, eol + 2 + n + 2);
    }
    CHECK(decoded == body);
}

TEST_CASE("h2 client: malformed HTTP/1.1 request bytes are refused") {
    Link link;
    SECTION("a field name with a space") {
        CHECK_FALSE(link.send(1, "GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n"));
    }
    SECTION("a bad chunk size after the head went out") {
        REQUIRE(link.send(1, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"));
        const int32_t id = link.stream(0);
        CHECK_FALSE(link.send(1, "zz\r\n"));
        CHECK(link.app.streams[id].rst == kCancel);
    }
    SECTION("Content-Length and Transfer-Encoding together") {
        CHECK_FALSE(link.send(1,
                              "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"));
    }
    SECTION("bytes after the request") {
        CHECK_FALSE(link.send(1, "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
    }
    SECTION("CONNECT") {
        CHECK_FALSE(link.send(1, "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"));
    }
    SECTION("two Host fields") {
        CHECK_FALSE(link.send(1, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"));
    }
    CHECK(link.upstream.activeExchanges() == 0);
    CHECK(link.core.responses.empty());
    // The connection itself is fine.
    REQUIRE(link.send(2, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    CHECK(link.upstream.activeExchanges() == 1);
}

TEST_CASE("h2 client: a request body larger than the app's window waits in buffered()") {
    AppOptions app;
    app.initial_window = 1000;
    app.manual_window = true;
    Link link(H2UpstreamOptions(), app);
    const std::string body(5000, 'z');
    REQUIRE(link.send(1, "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n" + body));
    const int32_t id = link.stream(0);
    CHECK(link.app.streams[id].body.size() == 1000);
    CHECK(link.upstream.buffered(1) == 4000);
    CHECK_FALSE(link.app.streams[id].ended);
    for (int i = 0; i < 20 && !link.app.streams[id].ended; ++i) {
        const size_t got = link.app.streams[id].body.size();
        REQUIRE(nghttp2_session_consume(link.app.session, id, 1000) == 0);
        link.pump();
        CHECK(link.app.streams[id].body.size() > got);
        CHECK(link.upstream.buffered(1) == 5000 - link.app.streams[id].body.size());
    }
    CHECK(link.app.streams[id].body == body);
    CHECK(link.app.streams[id].ended);
}

TEST_CASE("h2 client: a response header list over the limit fails the exchange") {
    H2UpstreamOptions options;
    options.max_header_bytes = 200;
    Link link(options);
    REQUIRE(link.send(1, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    const int32_t id = link.stream(0);
    link.app.respond(id, {{":status", "200"}, {"x-big", std::string(300, 'a')}});
    link.pump();
    CHECK(link.failed(1).has_value());
    CHECK(link.bytes(1).empty());
    CHECK(link.app.streams[id].closed);
    CHECK(link.upstream.activeExchanges() == 0);
}

TEST_CASE("h2 client: an early response keeps taking the rest of the request") {
    Link link;
    REQUIRE(link.send(1, "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nabc"));
    const int32_t id = link.stream(0);
    link.app.respond(id, {{":status", "413"}, {"content-length", "0"}});
    link.pump();
    CHECK(link.ended(1));
    CHECK(link.send(1, "def"));  // the rest of this exchange, not a new request
    CHECK(link.upstream.activeExchanges() == 0);
    CHECK_FALSE(link.failed(1));
    REQUIRE(link.send(2, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    CHECK(link.upstream.activeExchanges() == 1);
}

TEST_CASE("h2 client: SETTINGS_MAX_CONCURRENT_STREAMS bounds canStart") {
    AppOptions app;
    app.max_concurrent_streams = 2;
    Link link(H2UpstreamOptions(), app);
    CHECK(link.upstream.canStart());
    REQUIRE(link.send(1, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    CHECK(link.upstream.canStart());
    REQUIRE(link.send(2, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"));
    CHECK_FALSE(link.upstream.canStart());
    link.app.respond(link.stream(0), {{":status", "200"}, {"content-length", "0"}});
    link.pump();
    CHECK(link.upstream.canStart());
}

TEST_CASE("h2 client: a connection error from the app fails open exchanges and closes") {
    Link link;
    REQUIRE(link.send(1, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    // A DATA frame on stream 0 is a connection error.
    const std::string bad = sidecar::http::test::frameBytes(0x0, 0, 0, "x");
    link.upstream.feed(reinterpret_cast<const uint8_t*>(bad.data()), bad.size());
    // The GOAWAY goes out, then the session is over.
    CHECK(link.upstream.flush() == Status::Close);
    CHECK(link.failed(1) == kProtocolError);
    CHECK(link.upstream.feed(reinterpret_cast<const uint8_t*>(bad.data()), bad.size()) ==
          Status::Close);
    CHECK_FALSE(link.upstream.canStart());
}

TEST_CASE("h2 client: a PING flood the app does not read the answers to ends the connection") {
    Link link;
    REQUIRE(link.send(1, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    const std::string ping = sidecar::http::test::frameBytes(0x6, 0, 0, std::string(8, '\0'));
    Status st = Status::Continue;
    for (int i = 0; i < 5000 && st == Status::Continue; ++i) {
        st = link.upstream.feed(reinterpret_cast<const uint8_t*>(ping.data()), ping.size());
    }
    CHECK(st == Status::Close);
    CHECK(link.failed(1).has_value());
    CHECK_FALSE(link.upstream.canStart());
}
