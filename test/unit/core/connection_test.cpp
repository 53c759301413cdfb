// The connection state machine against a real loop: a real Server, a real app socket behind it
// and real client sockets on loopback. Each test asserts what a client, the app or the metrics
// see when a state is entered, left, or its deadline passes.

#include "core/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <string>

#include "test/unit/core/proxy_harness.h"

using namespace sidecar;
using namespace sidecar::core;
using namespace sidecar::core::test;
using Catch::Matchers::ContainsSubstring;
using Catch::Matchers::StartsWith;

namespace {

const std::string kGet = "GET / HTTP/1.1\r\nHost: app\r\n\r\n";
const std::string kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

std::string get(const std::string& path) {
    return "GET " + path + " HTTP/1.1\r\nHost: app\r\n\r\n";
}

bool hasHead(const std::string& s) { return s.find("\r\n\r\n") != std::string::npos; }

size_t count(const std::string& s, const std::string& what) {
    size_t n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
    return n;
}

// Sends kGet, waits for the app to receive it, answers kOk and waits for the client to have it.
// The app's connection is app.peer(index).
void exchange(Harness& h, App& app, Peer& client, size_t index = 0) {
    const size_t before = client.in.size();
    client.write(kGet);
    REQUIRE(h.runUntil([&] { return app.accepted() > index && hasHead(app.peer(index).in); }));
    app.peer(index).in.clear();
    app.peer(index).write(kOk);
    REQUIRE(h.runUntil([&] { return client.in.size() >= before + kOk.size(); }));
    REQUIRE(client.in.substr(before) == kOk);
}

uint64_t handshakesOk(const ListenerStats& s) { return s.handshakes_ok[0] + s.handshakes_ok[1]; }

std::shared_ptr<tls::Context> clientContext(Harness& h) {
    tls::ClientOptions o;
    o.ca_path = testCertificate().cert_path;
    o.server_name = "localhost";
    o.alpn = {"http/1.1"};
    std::string error;
    std::shared_ptr<tls::Context> ctx = h.backend().clientContext(o, &error);
    INFO(error);
    REQUIRE(ctx);
    return ctx;
}

}  // namespace

// ---- FirstByte and Handshake (TLS listener) ------------------------------------------------

TEST_CASE("TLS listener: a first byte that starts neither TLS nor HTTP closes at once") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .handshake = "5s", .tls = true});
    Peer& c = h.connect();
    Stopwatch clock;
    c.write(std::string("\x01\x02garbage", 9));
    REQUIRE(h.runUntil([&] { return c.closed(); }));
    CHECK(clock.ms() < 2000);  // not the handshake deadline
    CHECK(c.in.empty());       // no TLS session: not even an alert
    CHECK(h.stats().handshakesFailed() == 1);
    CHECK(h.stats().handshakeTimeouts() == 0);
    CHECK(h.stats().active == 0);
    CHECK(app.accepted() == 0);
}

TEST_CASE("TLS listener: a plain HTTP request gets a 400 and the connection ends") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .handshake = "5s", .tls = true});
    Peer& c = h.connect();
    c.write(kGet);
    REQUIRE(h.runUntil([&] { return c.eof; }));
    CHECK_THAT(c.in, StartsWith("HTTP/1.1 400 Bad Request\r\n"));
    CHECK_THAT(c.in, ContainsSubstring("Connection: close\r\n"));
    CHECK_THAT(c.in, ContainsSubstring("plain HTTP request to an HTTPS port"));
    CHECK(h.stats().handshakesFailed() == 1);
    CHECK(h.stats().handshakeTimeouts() == 0);
    CHECK(app.accepted() == 0);
}

TEST_CASE("TLS listener: a client that sends nothing is closed at the handshake deadline") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .handshake = "300ms", .tls = true});
    Stopwatch clock;
    Peer& c = h.connect();
    REQUIRE(h.runUntil([&] { return c.closed(); }));
    CHECK(clock.ms() >= 250);
    CHECK(c.in.empty());
    CHECK(h.stats().handshakeTimeouts() == 1);
    CHECK(h.stats().handshakesFailed() == 0);
    CHECK_THAT(h.metrics().render(),
               ContainsSubstring("sidecar_tls_handshakes_total{listener=\"web\",version=\"\","
                                 "result=\"timeout\"} 1\n"));
}

TEST_CASE("TLS listener: a handshake that stalls after the ClientHello is closed at its deadline") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .handshake = "300ms", .idle = "5s", .tls = true});
    std::shared_ptr<tls::Context> ctx = clientContext(h);
    Stopwatch clock;
    Peer& c = h.connect();
    TlsClient tls(c, *ctx);
    tls.start(/*follow=*/false);
    REQUIRE(h.runUntil([&] { return c.received > 0; }));  // the server's first flight
    REQUIRE(h.runUntil([&] { return c.closed(); }));
    CHECK(clock.ms() >= 250);
    CHECK(clock.ms() < 3000);
    CHECK(h.stats().handshakeTimeouts() == 1);
    CHECK(handshakesOk(h.stats()) == 0);
    CHECK(app.accepted() == 0);
}

TEST_CASE("TLS listener: after the handshake the first request opens the app's connection") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .tls = true});
    std::shared_ptr<tls::Context> ctx = clientContext(h);
    Peer& c = h.connect();
    TlsClient tls(c, *ctx);
    tls.start();
    REQUIRE(h.runUntil([&] { return tls.handshakeDone() || tls.failed() || c.closed(); }));
    REQUIRE(tls.handshakeDone());
    REQUIRE(h.runUntil([&] { return handshakesOk(h.stats()) == 1; }));
    CHECK(app.accepted() == 0);

    tls.write(kGet);
    REQUIRE(h.runUntil([&] { return app.accepted() == 1 && hasHead(app.peer(0).in); }));
    CHECK_THAT(app.peer(0).in, StartsWith("GET / HTTP/1.1\r\n"));
    CHECK_THAT(app.peer(0).in, ContainsSubstring("X-Forwarded-Proto: https\r\n"));
    app.peer(0).write(kOk);
    REQUIRE(h.runUntil([&] { return tls.plain.size() >= kOk.size(); }));
    CHECK(tls.plain == kOk);
    CHECK(requestsOfClass(h.stats(), 2) == 1);
}

// ---- HTTP: opening the app's connection ----------------------------------------------------

TEST_CASE("HTTP: the app's connection is opened by the first complete request head") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port()});
    Peer& c = h.connect();
    const std::string part = "GET /first HTTP/1.1\r\nHost: app\r\n";
    c.write(part);
    REQUIRE(h.runUntil([&] { return h.stats().bytes_in == part.size(); }));
    h.runUntil([&] { return app.accepted() > 0; }, 100);
    CHECK(app.accepted() == 0);
    CHECK(h.stats().active == 1);

    c.write("\r\n");
    REQUIRE(h.runUntil([&] { return app.accepted() == 1 && hasHead(app.peer(0).in); }));
    CHECK_THAT(app.peer(0).in, StartsWith("GET /first HTTP/1.1\r\nHost: app\r\n"));
    CHECK_THAT(app.peer(0).in, ContainsSubstring("X-Forwarded-For: 127.0.0.1\r\n"));
    app.peer(0).write(kOk);
    REQUIRE(h.runUntil([&] { return c.in.size() >= kOk.size(); }));
    CHECK(c.in == kOk);
    CHECK_FALSE(c.closed());
    CHECK(requestsOfClass(h.stats(), 2) == 1);
}

TEST_CASE("HTTP: an app that refuses the connection gets the client a 502") {
    Harness h;
    App& refusing = h.app(/*backlog=*/-1);  // bound, not listening
    h.start({.upstream_port = refusing.port()});
    Peer& c = h.connect();
    c.write(kGet);
    REQUIRE(h.runUntil([&] { return c.eof; }));
    CHECK_THAT(c.in, StartsWith("HTTP/1.1 502 "));
    CHECK_THAT(c.in, ContainsSubstring("Connection: close\r\n"));
    CHECK(h.stats().upstream_connect_failures == 1);
    CHECK(h.stats().http_local_responses == 1);
}

TEST_CASE("HTTP: an app that cannot be reached within connect_timeout gets the client a 504") {
    Harness h;
    // A listener whose accept queue is full: the kernel drops further SYNs, so connecting hangs.
    App& full = h.app(/*backlog=*/0, /*accepting=*/false);
    std::vector<std::unique_ptr<Peer>> fillers;
    for (int i = 0; i < 2; ++i) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(full.port());
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
        fillers.push_back(std::make_unique<Peer>(h.loop(), fd));
    }
    h.start({.upstream_port = full.port(), .connect_timeout = "300ms"});
    Peer& c = h.connect();
    Stopwatch clock;
    c.write(kGet);
    REQUIRE(h.runUntil([&] { return c.eof; }));
    CHECK(clock.ms() >= 250);
    CHECK_THAT(c.in, StartsWith("HTTP/1.1 504 "));
    CHECK_THAT(c.in, ContainsSubstring("Connection: close\r\n"));
    CHECK(h.stats().upstream_connect_timeouts == 1);
}

// ---- HTTP: Idle between requests -----------------------------------------------------------

TEST_CASE("HTTP: idle between requests closes at the idle deadline, without a 504") {
    Harness h;
    App& app = h.app();
    ListenerSpec spec{.upstream_port = app.port(), .idle = "400ms"};
    // Waiting for a next request is not waiting for the app, whichever deadline is shorter.
    SECTION("upstream_response longer than idle") { spec.upstream_response = "3s"; }
    SECTION("upstream_response shorter than idle") { spec.upstream_response = "150ms"; }
    h.start(spec);
    Peer& c = h.connect();
    exchange(h, app, c);
    Stopwatch clock;
    REQUIRE(h.runUntil([&] { return c.closed(); }));
    CHECK(clock.ms() >= 350);
    CHECK(clock.ms() < 2000);
    CHECK(c.in == kOk);  // nothing after the response: no 504, no 408
    CHECK(h.stats().idle_timeouts == 1);
    CHECK(requestsOfClass(h.stats(), 5) == 0);
    CHECK(h.stats().http_local_responses == 0);
    REQUIRE(h.runUntil([&] { return app.peer(0).closed(); }));
    CHECK_THAT(h.metrics().render(),
               ContainsSubstring("sidecar_idle_timeouts_total{listener=\"web\"} 1\n"));
}

TEST_CASE("HTTP: a next request after longer than upstream_response (but within idle) is served") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .idle = "3s", .upstream_response = "200ms"});
    Peer& c = h.connect();
    exchange(h, app, c);
    h.runFor(500);  // idle between requests, past upstream_response
    CHECK(c.in == kOk);
    CHECK_FALSE(c.closed());
    exchange(h, app, c);
    CHECK(c.in == kOk + kOk);
    CHECK(app.accepted() == 1);  // the same app connection, kept alive
    CHECK(requestsOfClass(h.stats(), 2) == 2);
    CHECK(requestsOfClass(h.stats(), 5) == 0);
    CHECK(h.stats().idle_timeouts == 0);
}

// ---- HTTP: RequestHead ---------------------------------------------------------------------

TEST_CASE("HTTP: a request head that never completes is answered 408 at the header deadline") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .idle = "3s", .header = "300ms"});
    Peer& c = h.connect();
    size_t before = 0;
    size_t app_connections = 0;  // the head never completes: no connection is opened for it

    SECTION("the first request") {}
    SECTION("a request after one exchange") {
        exchange(h, app, c);
        before = c.in.size();
        app_connections = 1;
    }

    Stopwatch clock;
    c.write("GET /slow HTTP/1.1\r\nHost: app\r\n");
    REQUIRE(h.runUntil([&] { return c.eof; }));
    CHECK(clock.ms() >= 250);
    CHECK(clock.ms() < 2500);  // not idle
    CHECK_THAT(c.in.substr(before), StartsWith("HTTP/1.1 408 "));
    CHECK_THAT(c.in.substr(before), ContainsSubstring("Connection: close\r\n"));
    CHECK(h.stats().http_local_responses == 1);
    CHECK(requestsOfClass(h.stats(), 4) == 1);
    CHECK(h.stats().idle_timeouts == 0);
    CHECK(app.accepted() == app_connections);
    if (app_connections > 0) CHECK(count(app.peer(0).in, "/slow") == 0);
}

TEST_CASE("HTTP: a head trickled byte by byte still gets 408 at the header deadline") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .idle = "3s", .header = "400ms"});
    Peer& c = h.connect();
    const std::string head = "GET /trickle HTTP/1.1\r\nHost: app\r\nX-Long: ";
    Stopwatch clock;
    // Each byte is activity, but the head as a whole is due within the header timeout.
    for (size_t i = 0; !c.closed() && clock.ms() < 3000; ++i) {
        c.write(std::string(1, i < head.size() ? head[i] : 'a'));
        h.runFor(50);
    }
    REQUIRE(c.eof);
    CHECK(clock.ms() >= 350);
    CHECK(clock.ms() < 1500);
    CHECK_THAT(c.in, StartsWith("HTTP/1.1 408 "));
    CHECK(app.accepted() == 0);
}

// ---- HTTP: AwaitingResponse ----------------------------------------------------------------

TEST_CASE("HTTP: a silent app gets the client a 504 after upstream_response") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .idle = "3s", .upstream_response = "300ms"});
    Peer& c = h.connect();
    size_t before = 0;

    SECTION("the first request") {}
    SECTION("a later request on the same connection") {
        exchange(h, app, c);
        h.runFor(200);  // the deadline counts from the request, not from the connection
        before = c.in.size();
    }

    Stopwatch clock;
    c.write(get("/never"));
    REQUIRE(h.runUntil([&] { return app.accepted() == 1 && hasHead(app.peer(0).in); }));
    REQUIRE(h.runUntil([&] { return c.eof; }));
    CHECK(clock.ms() >= 250);
    CHECK(clock.ms() < 2500);
    CHECK_THAT(c.in.substr(before), StartsWith("HTTP/1.1 504 "));
    CHECK_THAT(c.in.substr(before), ContainsSubstring("Connection: close\r\n"));
    CHECK(requestsOfClass(h.stats(), 5) == 1);
    CHECK(h.stats().idle_timeouts == 0);
    // The client closes after the answer, as told; the app's connection goes with it.
    c.closeNow();
    REQUIRE(h.runUntil([&] { return app.peer(0).closed(); }));
}

TEST_CASE("HTTP: a pipelined head that stalls does not take the response of the request before it") {
    Harness h;
    App& app = h.app();
    h.start(
        {.upstream_port = app.port(), .idle = "3s", .header = "300ms", .upstream_response = "3s"});
    Peer& c = h.connect();
    c.write(get("/first") + "GET /second HTTP/1.1\r\nHost: app\r\n");
    REQUIRE(h.runUntil([&] { return app.accepted() == 1 && hasHead(app.peer(0).in); }));
    h.runFor(500);  // past the header deadline of /second; the app has not answered /first yet
    app.peer(0).write(kOk);
    REQUIRE(h.runUntil([&] { return c.eof; }));
    // /first was complete and forwarded: its response is the app's, not a 408.
    CHECK_THAT(c.in, StartsWith(kOk));
    CHECK_THAT(c.in.substr(kOk.size()), StartsWith("HTTP/1.1 408 "));
}

// ---- HTTP: Transfer ------------------------------------------------------------------------

TEST_CASE("HTTP: a response body is governed by the idle deadline") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .idle = "600ms", .upstream_response = "200ms"});
    Peer& c = h.connect();
    c.write(kGet);
    REQUIRE(h.runUntil([&] { return app.accepted() == 1 && hasHead(app.peer(0).in); }));
    Peer& a = app.peer(0);
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n";
    a.write(head + "ab");

    SECTION("a body that keeps moving outlives idle and upstream_response") {
        Stopwatch clock;
        for (char ch : std::string("cdefghijkl")) {
            h.runFor(100);
            a.write(std::string(1, ch));
        }
        REQUIRE(h.runUntil([&] { return c.in.size() >= head.size() + 12; }));
        CHECK(clock.ms() >= 900);  // longer than idle + upstream_response
        CHECK(c.in == head + "abcdefghijkl");
        CHECK_FALSE(c.closed());
        CHECK(requestsOfClass(h.stats(), 2) == 1);
        CHECK(h.stats().idle_timeouts == 0);
    }
    SECTION("a body that stalls is closed at the idle deadline") {
        REQUIRE(h.runUntil([&] { return c.in.size() == head.size() + 2; }));
        Stopwatch clock;
        REQUIRE(h.runUntil([&] { return c.closed(); }));
        CHECK(clock.ms() >= 550);
        CHECK(clock.ms() < 2500);
        CHECK(c.in == head + "ab");  // no 504 spliced into a response already under way
        CHECK(h.stats().idle_timeouts == 1);
        CHECK(requestsOfClass(h.stats(), 5) == 0);
    }
}

// ---- Flushing ------------------------------------------------------------------------------

TEST_CASE(
    "HTTP: a client that neither reads nor closes after a local answer is closed at the "
    "flush deadline") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .idle = "10s", .header = "100ms"});
    Peer& c = h.connect();
    c.pauseReading();
    c.write("GET / HTTP/1.1\r\n");
    REQUIRE(h.runUntil([&] { return h.stats().http_local_responses == 1; }));  // the 408
    Stopwatch clock;
    REQUIRE(h.runUntil([&] { return h.stats().active == 0; }, 8000));
    CHECK(clock.ms() >= int64_t(Connection::kFlushTimeoutMs) - 100);
    // The answer was not destroyed by the close: it is all there, then the end.
    c.resumeReading();
    REQUIRE(h.runUntil([&] { return c.closed(); }));
    CHECK(c.eof);
    CHECK_THAT(c.in, StartsWith("HTTP/1.1 408 "));
}

// ---- drain ---------------------------------------------------------------------------------

TEST_CASE("drain: an idle keep-alive connection is closed after the grace") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .idle = "10s", .drain_timeout = "5s"});
    Peer& c = h.connect();
    exchange(h, app, c);
    Stopwatch clock;
    h.server().beginDrain("test");
    CHECK(Peer::connectTo(h.loop(), h.port()) == nullptr);  // no longer accepting
    REQUIRE(h.runUntil([&] { return c.closed(); }, 4000));
    CHECK(clock.ms() >= int64_t(Connection::kDrainIdleGraceMs) - 100);
    CHECK(clock.ms() < 4000);
    CHECK(c.eof);
    CHECK(c.in == kOk);
    CHECK(h.stats().idle_timeouts == 0);
}

TEST_CASE("drain: a request that arrives during the grace is served with Connection: close") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .idle = "10s", .drain_timeout = "5s"});
    Peer& c = h.connect();
    exchange(h, app, c);
    h.server().beginDrain("test");
    h.runFor(300);
    c.write(get("/during-drain"));
    REQUIRE(h.runUntil([&] { return hasHead(app.peer(0).in); }));
    CHECK_THAT(app.peer(0).in, StartsWith("GET /during-drain "));
    app.peer(0).write(kOk);
    REQUIRE(h.runUntil([&] { return c.eof; }));
    const std::string second = c.in.substr(kOk.size());
    CHECK_THAT(second, StartsWith("HTTP/1.1 200 OK\r\n"));
    CHECK_THAT(second, ContainsSubstring("Connection: close\r\n"));
    CHECK(second.substr(second.size() - 2) == "ok");
    CHECK(requestsOfClass(h.stats(), 2) == 2);
}

TEST_CASE("drain: a request in flight completes, with Connection: close") {
    Harness h;
    App& app = h.app();
    h.start({.upstream_port = app.port(), .idle = "10s", .drain_timeout = "5s"});
    Peer& c = h.connect();
    c.write(kGet);
    REQUIRE(h.runUntil([&] { return app.accepted() == 1 && hasHead(app.peer(0).in); }));
    h.server().beginDrain("test");
    h.runFor(Connection::kDrainIdleGraceMs + 200);  // waiting for the app is not idle
    CHECK_FALSE(c.closed());
    app.peer(0).write(kOk);
    REQUIRE(h.runUntil([&] { return c.eof; }));
    CHECK_THAT(c.in, StartsWith("HTTP/1.1 200 OK\r\n"));
    CHECK_THAT(c.in, ContainsSubstring("Connection: close\r\n"));
    CHECK(c.in.substr(c.in.size() - 2) == "ok");
    CHECK(requestsOfClass(h.stats(), 2) == 1);
}

// ---- TCP mode ------------------------------------------------------------------------------

TEST_CASE("TCP: the app is connected at once, bytes relay both ways, idle closes both") {
    Harness h;
    App& app = h.app();
    h.start({.protocol = "tcp", .upstream_port = app.port(), .idle = "300ms"});
    Peer& c = h.connect();
    REQUIRE(h.runUntil([&] { return app.accepted() == 1; }));  // before the client sent a byte
    c.write("ping");
    REQUIRE(h.runUntil([&] { return app.peer(0).in == "ping"; }));
    app.peer(0).write("pong");
    REQUIRE(h.runUntil([&] { return c.in == "pong"; }));
    Stopwatch clock;
    REQUIRE(h.runUntil([&] { return c.closed() && app.peer(0).closed(); }));
    CHECK(clock.ms() >= 250);
    CHECK(clock.ms() < 2000);
    CHECK(h.stats().idle_timeouts == 1);
    CHECK(h.stats().bytes_in == 4);
    CHECK(h.stats().bytes_out == 4);
}

// ---- backpressure --------------------------------------------------------------------------

TEST_CASE("backpressure: a client that does not read stops the proxy reading the app") {
    Harness h;
    App& app = h.app();
    app.sndbuf = 64 * 1024;
    h.start({.upstream_port = app.port(), .idle = "10s"});
    Peer& c = h.connect(/*rcvbuf=*/64 * 1024);
    c.discardInput();
    c.write(kGet);
    REQUIRE(h.runUntil([&] { return app.accepted() == 1 && hasHead(app.peer(0).in); }));
    c.pauseReading();

    const size_t body = size_t(64) << 20;
    const std::string head =
        "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body) + "\r\n\r\n";
    Peer& a = app.peer(0);
    a.write(head);
    a.writeFiller(body);
    // The app sends until the proxy stops taking its bytes, then stays stuck.
    REQUIRE_FALSE(h.runUntil([&] { return a.unsent() == 0; }, 500));
    // The queues on the way may still be filling on a slow machine: wait until the app's count
    // stops moving for 200 ms (at most 5 s), then it must stay put.
    size_t stalled = a.sent;
    for (int i = 0; i < 25; ++i) {
        h.runFor(200);
        if (a.sent == stalled) break;
        stalled = a.sent;
    }
    h.runFor(200);
    CHECK(a.sent == stalled);

    // Everything the app sent is in a kernel queue on the way, or held by the proxy; what the
    // proxy holds is bounded by its watermark.
    const size_t in_kernel = kernelQueues(a.fd()) + h.proxyKernelQueues() + kernelQueues(c.fd());
    REQUIRE(stalled >= in_kernel);
    const size_t held = stalled - in_kernel;
    INFO("app sent " << stalled << " bytes, " << in_kernel << " in kernel queues");
    CHECK(held <= Connection::kHighWatermark + Connection::kReadSlack + Connection::kMinRead);
    CHECK(stalled < body / 4);

    c.resumeReading();
    REQUIRE(h.runUntil([&] { return c.received == head.size() + body; }, 20000));
    CHECK(a.unsent() == 0);
    CHECK_FALSE(c.closed());
    CHECK(requestsOfClass(h.stats(), 2) == 1);
}
