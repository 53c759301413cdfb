#include "http/codec.h"

#include <catch2/catch_test_macros.hpp>
#include <chrono>
#include <cstdio>
#include <string>

#include "test/unit/http/harness.h"

using namespace sidecar::http;
using namespace sidecar::http::test;

namespace {

const std::string kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

// One request of request_bytes, forwarded as `forwarded` and answered with a 200 `response`.
Outcome okExchange(const std::string& method, const std::string& target, size_t request_bytes,
                   std::string forwarded, const std::string& response = kOk) {
    Outcome o;
    o.upstream = std::move(forwarded);
    o.downstream = response;
    o.events = {"request " + method + " " + target, "response 200",
                complete(method, target, 200, request_bytes, response.size())};
    return o;
}

}  // namespace

// ---- streaming, keep-alive, framing -------------------------------------------------------

TEST_CASE("a GET is forwarded with forwarding headers and its response passes byte-exact") {
    const std::string request =
        "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n"
        "User-Agent: t\r\nAccept: */*\r\n\r\n";
    const Outcome expected = okExchange("GET", "/index.html?q=1", request.size(),
        "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n"
        "User-Agent: t\r\nAccept: */*\r\n" +
        xf("example.com") + "\r\n");
    checkAllSplits({req(request), resp(kOk)}, expected);
}

TEST_CASE("empty lines before a request are dropped") {
    const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const Outcome expected = okExchange("GET", "/", request.size(),
        "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n");
    checkAllSplits({req("\r\n\r\n" + request), resp(kOk)}, expected);
}

TEST_CASE("a Content-Length body is streamed as it arrives") {
    const std::string head = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    const Outcome expected = okExchange("POST", "/upload", head.size() + 11,
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n" + xf("a") + "\r\nhello world");
    checkAllSplits({req(head + "hello"), req(" world"), resp(kOk)}, expected);

    SECTION("the body reaches the app before the request is complete") {
        Recorder rec;
        Codec codec({}, defaultFacts(), rec);
        const std::string part = head + "hel";
        codec.feedRequest(reinterpret_cast<const uint8_t*>(part.data()), part.size());
        CHECK(rec.out.upstream.ends_with("\r\n\r\nhel"));
        CHECK(codec.awaitingResponse());
        CHECK_FALSE(codec.awaitingRequestHead());
    }
}

TEST_CASE("a chunked request with trailers is forwarded byte-exact") {
    const std::string head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    const std::string body = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    const Outcome expected = okExchange("POST", "/", head.size() + body.size(),
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n" + xf("a") + "\r\n" + body);
    checkAllSplits({req(head + body), resp(kOk)}, expected);
}

TEST_CASE("pipelined requests are forwarded in order and responses framed per method/status") {
    const std::string r1 = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string r2 = "HEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string r3 = "DELETE /3 HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string r4 = "GET /4 HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string r5 = "GET /5 HTTP/1.1\r\nHost: a\r\n\r\n";
    // HEAD: Content-Length without a body; 204; 304 with Content-Length; chunked.
    const std::string a1 = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none";
    const std::string a2 = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    const std::string a3 = "HTTP/1.1 204 No Content\r\n\r\n";
    const std::string a4 = "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\nETag: \"x\"\r\n\r\n";
    const std::string a5 =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "3\r\nabc\r\n0\r\nT: 1\r\n\r\n";
    Outcome expected;
    auto fwd = [](const std::string& r) { return r.substr(0, r.size() - 2) + xf("a") + "\r\n"; };
    expected.upstream = fwd(r1) + fwd(r2) + fwd(r3) + fwd(r4) + fwd(r5);
    expected.downstream = a1 + a2 + a3 + a4 + a5;
    expected.events = {"request GET /1",
                       "request HEAD /2",
                       "request DELETE /3",
                       "request GET /4",
                       "request GET /5",
                       "response 200",
                       complete("GET", "/1", 200, r1.size(), a1.size()),
                       "response 200",
                       complete("HEAD", "/2", 200, r2.size(), a2.size()),
                       "response 204",
                       complete("DELETE", "/3", 204, r3.size(), a3.size()),
                       "response 304",
                       complete("GET", "/4", 304, r4.size(), a4.size()),
                       "response 200",
                       complete("GET", "/5", 200, r5.size(), a5.size())};
    checkAllSplits({req(r1 + r2 + r3 + r4 + r5), resp(a1 + a2 + a3 + a4 + a5)}, expected);
}

TEST_CASE("keep-alive: requests and responses alternate on one connection") {
    const std::string r1 = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string r2 = "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    Outcome expected;
    expected.upstream = "GET /1 HTTP/1.1\r\nHost: a\r\n" + xf("a") +
                        "\r\nGET /2 HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    expected.downstream = kOk + kOk;
    expected.events = {
        "request GET /1", "response 200", complete("GET", "/1", 200, r1.size(), kOk.size()),
        "request GET /2", "response 200", complete("GET", "/2", 200, r2.size(), kOk.size())};
    checkAllSplits({req(r1), resp(kOk), req(r2), resp(kOk)}, expected);
}

TEST_CASE("1xx responses are forwarded and the final response follows") {
    const std::string head =
        "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        "Content-Length: 2\r\n\r\n";
    const std::string c100 = "HTTP/1.1 100 Continue\r\n\r\n";
    const std::string c103 = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n";
    Outcome expected;
    expected.upstream =
        "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        "Content-Length: 2\r\n" +
        xf("a") + "\r\nhi";
    expected.downstream = c100 + c103 + kOk;
    expected.events = {
        "request POST /", "response 200",
        complete("POST", "/", 200, head.size() + 2, c100.size() + c103.size() + kOk.size())};
    checkAllSplits({req(head), resp(c100), req("hi"), resp(c103 + kOk)}, expected);
}

TEST_CASE("1xx heads reach the client without Connection fields") {
    // A client may take "Connection: close" on a 1xx as the end of the connection.
    const std::string head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string c103 = "HTTP/1.1 103 Early Hints\r\nConnection: close\r\nLink: </s.css>\r\n"
                             "keep-alive: timeout=5\r\n\r\n";
    const std::string forwarded103 = "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n";
    Outcome expected;
    expected.upstream = "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    expected.downstream = forwarded103 + kOk + forwarded103 + kOk;
    expected.events = {"request GET /", "response 200",
                       complete("GET", "/", 200, head.size(), forwarded103.size() + kOk.size()),
                       "request GET /", "response 200",
                       complete("GET", "/", 200, head.size(), forwarded103.size() + kOk.size())};
    expected.upstream += expected.upstream;
    checkAllSplits({req(head), resp(c103 + kOk), req(head), resp(c103 + kOk)}, expected);
}

TEST_CASE("an HTTP/1.0 client gets no 1xx, nor does anyone get a 1xx in an HTTP/1.0 status line") {
    const std::string c100 = "HTTP/1.1 100 Continue\r\n\r\n";
    const std::string ok10 = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
    SECTION("HTTP/1.0 request") {
        const std::string head = "GET / HTTP/1.0\r\nHost: a\r\n\r\n";
        Outcome expected =
            okExchange("GET", "/", head.size(), "GET / HTTP/1.0\r\nHost: a\r\n" + xf("a") + "\r\n", ok10);
        expected.closed_at = 1;
        checkAllSplits({req(head), resp(c100 + ok10)}, expected);
    }
    SECTION("HTTP/1.0 interim response") {
        const std::string head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        const Outcome expected =
            okExchange("GET", "/", head.size(), "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n");
        checkAllSplits({req(head), resp("HTTP/1.0 100 Continue\r\n\r\n" + kOk)}, expected);
    }
}

TEST_CASE("an EOF-delimited response completes at the app's EOF and closes") {
    const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
    Outcome expected;
    expected.upstream = "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    // The client must not expect the connection to stay open.
    const std::string sent_head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n";
    expected.downstream = sent_head + "all of it";
    expected.events = {"request GET /", "response 200",
                       complete("GET", "/", 200, request.size(), sent_head.size() + 9)};
    expected.closed_at = 2;
    checkAllSplits({req(request), resp(response), respEof()}, expected);
}

TEST_CASE("an HTTP/1.0 response without length is read to EOF and left as is") {
    const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string response = "HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody";
    Outcome expected;
    expected.upstream = "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    expected.downstream = response;
    expected.events = {"request GET /", "response 200",
                       complete("GET", "/", 200, request.size(), response.size())};
    expected.closed_at = 2;
    checkAllSplits({req(request), resp(response), respEof()}, expected);
}

// ---- header edits -------------------------------------------------------------------------

TEST_CASE("client-supplied forwarding headers are replaced, matched case-insensitively") {
    const std::string request =
        "GET / HTTP/1.1\r\nx-forwarded-for: 6.6.6.6\r\nHost: example.com\r\n"
        "X-FORWARDED-PROTO: http\r\nAccept: */*\r\nX-Forwarded-Host: evil\r\n"
        "forwarded: for=1.2.3.4\r\nx-Forwarded-Client-Cert: By=spoofed\r\n"
        "X-Forwarded-Fort: kept\r\nCookie: a=b\r\n\r\n";
    const Outcome expected = okExchange("GET", "/", request.size(),
        "GET / HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n"
        "X-Forwarded-Fort: kept\r\nCookie: a=b\r\n" +
        xf("example.com") + "\r\n");
    checkAllSplits({req(request), resp(kOk)}, expected);
}

TEST_CASE("X-Forwarded-Client-Cert carries the verified client certificate") {
    ConnectionFacts facts = defaultFacts();
    facts.client_cert = "Hash=abcd;Subject=\"CN=client\"";
    const std::string request =
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Client-Cert: Hash=forged\r\n\r\n";
    const Outcome expected = okExchange("GET", "/", request.size(),
        "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") +
        "X-Forwarded-Client-Cert: Hash=abcd;Subject=\"CN=client\"\r\n\r\n");
    checkAllSplits({}, facts, {req(request), resp(kOk)}, expected);

    SECTION("control characters in injected values cannot break the head") {
        facts.client_cert = "Subject=\"CN=x\r\nX-Evil: 1\"";
        const Outcome o = run({}, facts, {req("GET / HTTP/1.1\r\nHost: a\r\n\r\n")});
        CHECK(o.upstream.find("X-Forwarded-Client-Cert: Subject=\"CN=xX-Evil: 1\"\r\n") !=
              std::string::npos);
        CHECK(o.upstream.find("\r\nX-Evil") == std::string::npos);
    }
}

TEST_CASE("Forwarded mode adds an RFC 7239 header") {
    CodecOptions options;
    options.forwarded = ForwardedMode::Forwarded;
    const std::string request =
        "GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 6.6.6.6"
        "\r\nForwarded: for=evil\r\n\r\n";
    Outcome expected;
    expected.downstream = kOk;
    expected.events = {"request GET /", "response 200",
                       complete("GET", "/", 200, request.size(), kOk.size())};

    SECTION("IPv4") {
        expected.upstream =
            "GET / HTTP/1.1\r\nHost: example.com\r\n"
            "Forwarded: for=192.0.2.7;proto=https;host=example.com\r\n\r\n";
        checkAllSplits(options, defaultFacts(), {req(request), resp(kOk)}, expected);
    }
    SECTION("IPv6 is quoted and bracketed") {
        ConnectionFacts facts = defaultFacts();
        facts.client_ip = "2001:db8::1";
        expected.upstream =
            "GET / HTTP/1.1\r\nHost: example.com\r\n"
            "Forwarded: for=\"[2001:db8::1]\";proto=https;host=example.com\r\n\r\n";
        checkAllSplits(options, facts, {req(request), resp(kOk)}, expected);
    }
    SECTION("a host with a port is quoted") {
        const std::string r = "GET / HTTP/1.1\r\nHost: example.com:8443\r\n\r\n";
        const Outcome o = run(options, defaultFacts(), {req(r)});
        CHECK(o.upstream ==
              "GET / HTTP/1.1\r\nHost: example.com:8443\r\nForwarded: "
              "for=192.0.2.7;proto=https;host=\"example.com:8443\"\r\n\r\n");
    }
}

TEST_CASE("mode None leaves forwarding headers alone but still owns X-Forwarded-Client-Cert") {
    CodecOptions options;
    options.forwarded = ForwardedMode::None;
    const std::string request =
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n"
        "Forwarded: for=10.0.0.1\r\nX-Forwarded-Client-Cert: x\r\n\r\n";
    const Outcome expected = okExchange("GET", "/", request.size(),
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n"
        "Forwarded: for=10.0.0.1\r\n\r\n");
    checkAllSplits(options, defaultFacts(), {req(request), resp(kOk)}, expected);
}

TEST_CASE("an HTTP/1.0 request without Host uses the local host for X-Forwarded-Host") {
    ConnectionFacts facts = defaultFacts();
    facts.local_host = "svc.local";
    const Outcome o = run({}, facts, {req("GET / HTTP/1.0\r\n\r\n")});
    CHECK(o.upstream == "GET / HTTP/1.0\r\n" + xf("svc.local") + "\r\n");
}

// ---- upgrade ------------------------------------------------------------------------------

TEST_CASE("a WebSocket upgrade becomes a raw tunnel after 101") {
    const std::string request =
        "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n";
    const std::string r101 =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n\r\n";
    Outcome expected;
    // Bytes after the upgrade request are held until the app agrees to switch.
    expected.upstream =
        "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: k\r\n" +
        xf("a") + "\r\n" + "\x81\x02hi" + "GET / HTTP/1.1\r\n\r\n" + "\x88";
    expected.downstream = r101 + "\x81\x03srv" + "HTTP/1.1 bogus\r\n";
    expected.events = {"request GET /chat", "response 101",
                       complete("GET", "/chat", 101, request.size(), r101.size()), "upgrade"};
    checkAllSplits({req(request + "\x81\x02hi"), req("GET / HTTP/1.1\r\n\r\n"),
                    resp(r101 + "\x81\x03srv"), resp("HTTP/1.1 bogus\r\n"), req("\x88")},
                   expected);

    SECTION("state") {
        Recorder rec;
        Codec codec({}, defaultFacts(), rec);
        codec.feedRequest(reinterpret_cast<const uint8_t*>(request.data()), request.size());
        CHECK_FALSE(codec.tunneling());
        CHECK(codec.awaitingResponse());
        codec.feedResponse(reinterpret_cast<const uint8_t*>(r101.data()), r101.size());
        CHECK(codec.tunneling());
        CHECK_FALSE(codec.awaitingResponse());
        CHECK_FALSE(codec.idleBetweenRequests());
    }
}

TEST_CASE("a declined upgrade continues as HTTP with the held requests") {
    const std::string request =
        "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n\r\n";
    const std::string next = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string r426 = "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope";
    Outcome expected;
    expected.upstream =
        "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n" +
        xf("a") + "\r\nGET /next HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    expected.downstream = r426 + kOk;
    expected.events = {"request GET /chat",
                       "response 426",
                       complete("GET", "/chat", 426, request.size(), r426.size()),
                       "request GET /next",
                       "response 200",
                       complete("GET", "/next", 200, next.size(), kOk.size())};
    checkAllSplits({req(request + next), resp(r426), resp(kOk)}, expected);
}

TEST_CASE("bytes held for an upgrade are bounded") {
    CodecOptions options;
    options.max_held_bytes = 8;
    const std::string request =
        "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n\r\n";
    Outcome expected;
    expected.upstream =
        "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n" +
        xf("a") + "\r\n";
    expected.events = {"request GET /chat"};
    expected.closed_at = 1;
    checkAllSplits(options, defaultFacts(), {req(request + "12345678"), req("9")}, expected);
}

TEST_CASE("a 101 to a request that did not ask for an upgrade is a bad gateway") {
    const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    Outcome expected;
    expected.upstream = "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    expected.downstream = localResponse(502);
    expected.events = {"request GET /",
                       complete("GET", "/", 502, request.size(), localResponse(502).size(), true)};
    expected.closed_at = 1;
    checkAllSplits({req(request), resp("HTTP/1.1 101 Switching Protocols\r\n\r\nraw")}, expected);
}

// ---- errors are answered in order ---------------------------------------------------------

TEST_CASE("a bad request after good ones is answered after their responses") {
    const std::string good = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string bad = "GET /b HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    const std::string after = "GET /c HTTP/1.1\r\nHost: a\r\n\r\n";
    Outcome expected;
    expected.upstream = "GET /a HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    expected.downstream = kOk + localResponse(400);
    expected.events = {"request GET /a", "response 200",
                       complete("GET", "/a", 200, good.size(), kOk.size()),
                       complete("GET", "/b", 400, bad.size(), localResponse(400).size(), true)};
    expected.closed_at = 1;
    checkAllSplits({req(good + bad + after), resp(kOk)}, expected);
}

TEST_CASE("an error in a request body closes after a 400 in place of its response") {
    const std::string head = "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    Outcome expected;
    // The head and the valid part of the body were already streamed; nothing after the error.
    expected.upstream = "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n" + xf("a") +
                        "\r\n2\r\nok\r\n";
    expected.downstream = localResponse(400);
    expected.events = {"request POST /p", complete("POST", "/p", 400, head.size() + 7,
                                                   localResponse(400).size(), true)};
    expected.closed_at = 0;
    checkAllSplits({req(head + "2\r\nok\r\nzz\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")}, expected);
}

TEST_CASE("CONNECT is refused locally") {
    const std::string request = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    Outcome expected;
    expected.downstream = localResponse(501);
    expected.events = {complete("CONNECT", "example.com:443", 501, request.size(),
                                localResponse(501).size(), true)};
    expected.closed_at = 0;
    checkAllSplits({req(request + "raw tunnel bytes")}, expected);
}

TEST_CASE("every request-target form RFC 9112 allows is forwarded as sent") {
    const std::vector<std::string> lines = {
        "OPTIONS * HTTP/1.1",
        "GET http://a.example:8080/p?q=1 HTTP/1.1",
        "GET https://a.example HTTP/1.1",
        "GET http://[::1]:80/ HTTP/1.1",
        "GET http://u:p@a/ HTTP/1.1",
        "GET /a;b=c,d!$&'()*+:@-._~/%2F%aF?x=/?y HTTP/1.1",
        "GET //a HTTP/1.1",
        "GET /?q=%C3%A9 HTTP/1.0",
        "QUERY /q HTTP/1.1",
        "M-SEARCH / HTTP/1.1",
    };
    for (const std::string& line : lines) {
        DYNAMIC_SECTION(line) {
            const std::string request = line + "\r\nHost: a\r\n\r\n";
            const size_t sp = line.find(' ');
            const std::string method = line.substr(0, sp);
            const std::string target = line.substr(sp + 1, line.rfind(' ') - sp - 1);
            Outcome expected = okExchange(method, target, request.size(),
                                          line + "\r\nHost: a\r\n" + xf("a") + "\r\n");
            if (line.ends_with("1.0")) {
                expected.downstream.replace(kOk.find("\r\n\r\n"), 0, "\r\nConnection: close");
                expected.events.back() =
                    complete(method, target, 200, request.size(), expected.downstream.size());
                expected.closed_at = 1;
            }
            checkAllSplits({req(request), resp(kOk)}, expected);
        }
    }
}

TEST_CASE("a request line is refused as soon as it ends, before any header") {
    // The exchange is logged with the method and target that were refused.
    const std::string line = "DESCRIBE rtsp://a/s RTSP/1.0";
    Outcome expected;
    expected.downstream = localResponse(400);
    expected.events = {
        complete("DESCRIBE", "rtsp://a/s", 400, line.size(), localResponse(400).size(), true)};
    expected.closed_at = 0;
    checkAllSplits({req(line)}, expected);

    const Outcome fragment = run({}, defaultFacts(), {req("GET /a#top HTTP/1.1\r\n")});
    CHECK(fragment.upstream.empty());
    CHECK(fragment.downstream == localResponse(400));
    CHECK(fragment.events == std::vector<std::string>{complete("GET", "/a#top", 400, 19,
                                                               localResponse(400).size(), true)});
    CHECK(fragment.closed_at == 0);
}

TEST_CASE("a refused request line behind pipelined requests waits for their responses") {
    const std::string good = "GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string second = "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
    const std::string bad = "GET /c?x#y HTTP/1.1\r\nHost: a\r\n\r\n";
    Outcome expected;
    expected.upstream = "GET /a HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n" +
                        "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n" + xf("a") + "\r\nhi";
    expected.downstream = kOk + kOk + localResponse(400);
    expected.events = {"request GET /a",
                       "request POST /b",
                       "response 200",
                       complete("GET", "/a", 200, good.size(), kOk.size()),
                       "response 200",
                       complete("POST", "/b", 200, second.size(), kOk.size()),
                       complete("GET", "/c?x#y", 400, 19, localResponse(400).size(), true)};
    expected.closed_at = 2;
    checkAllSplits({req(good + second + bad), resp(kOk), resp(kOk)}, expected);
}

// ---- limits -------------------------------------------------------------------------------

TEST_CASE("request heads are limited in bytes, counted through the blank line") {
    CodecOptions options;
    options.max_header_bytes = 64;
    const std::string prefix = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
    const std::string fits = prefix + std::string(64 - prefix.size() - 4, 'p') + "\r\n\r\n";
    REQUIRE(fits.size() == 64);

    SECTION("exactly the limit is accepted") {
        Outcome expected;
        expected.upstream = fits.substr(0, fits.size() - 2) + xf("a") + "\r\n";
        expected.downstream = kOk;
        expected.events = {"request GET /", "response 200",
                           complete("GET", "/", 200, 64, kOk.size())};
        checkAllSplits(options, defaultFacts(), {req(fits), resp(kOk)}, expected);
    }
    SECTION("one byte more is 431") {
        const std::string over = prefix + std::string(64 - prefix.size() - 3, 'p') + "\r\n\r\n";
        Outcome expected;
        expected.downstream = localResponse(431);
        expected.events = {complete("GET", "/", 431, 64, localResponse(431).size(), true)};
        expected.closed_at = 0;
        checkAllSplits(options, defaultFacts(), {req(over)}, expected);
    }
    SECTION("a request line longer than the limit is 431") {
        const std::string huge = "GET /" + std::string(100, 'x') + " HTTP/1.1\r\nHost: a\r\n\r\n";
        Outcome expected;
        expected.downstream = localResponse(431);
        expected.events = {complete("", "", 431, 64, localResponse(431).size(), true)};
        expected.closed_at = 0;
        checkAllSplits(options, defaultFacts(), {req(huge)}, expected);
    }
}

TEST_CASE("request headers are limited in number") {
    CodecOptions options;
    options.max_headers = 3;
    const std::string three = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    const std::string four = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    CHECK(run(options, defaultFacts(), {req(three)}).events ==
          std::vector<std::string>{"request GET /"});
    Outcome expected;
    expected.downstream = localResponse(431);
    expected.events = {complete("GET", "/", 431, four.size(), localResponse(431).size(), true)};
    expected.closed_at = 0;
    checkAllSplits(options, defaultFacts(), {req(four)}, expected);
}

TEST_CASE("response heads over the limits are a bad gateway") {
    CodecOptions options;
    options.max_header_bytes = 64;
    options.max_headers = 2;
    const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    Outcome expected;
    expected.upstream = "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    expected.downstream = localResponse(502);
    expected.events = {"request GET /",
                       complete("GET", "/", 502, request.size(), localResponse(502).size(), true)};
    expected.closed_at = 1;
    SECTION("bytes") {
        const std::string big = "HTTP/1.1 200 OK\r\nX: " + std::string(60, 'x') + "\r\n\r\n";
        checkAllSplits(options, defaultFacts(), {req(request), resp(big)}, expected);
    }
    SECTION("count") {
        const std::string many = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        checkAllSplits(options, defaultFacts(), {req(request), resp(many)}, expected);
    }
}

TEST_CASE("pipelining depth is bounded by holding further requests") {
    CodecOptions options;
    options.max_pipelined = 1;
    const std::string r1 = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string r2 = "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    Outcome expected;
    expected.upstream = "GET /1 HTTP/1.1\r\nHost: a\r\n" + xf("a") +
                        "\r\nGET /2 HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    expected.downstream = kOk + kOk;
    expected.events = {
        "request GET /1", "response 200", complete("GET", "/1", 200, r1.size(), kOk.size()),
        "request GET /2", "response 200", complete("GET", "/2", 200, r2.size(), kOk.size())};
    checkAllSplits(options, defaultFacts(), {req(r1 + r2), resp(kOk), resp(kOk)}, expected);

    const Outcome first = run(options, defaultFacts(), {req(r1 + r2)});
    CHECK(first.upstream == "GET /1 HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n");
}

// ---- malformed upstream responses ---------------------------------------------------------

TEST_CASE("malformed upstream responses") {
    const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string forwarded = "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    auto bad_gateway = [&](const std::string& response) {
        Outcome expected;
        expected.upstream = forwarded;
        expected.downstream = localResponse(502);
        expected.events = {"request GET /", complete("GET", "/", 502, request.size(),
                                                     localResponse(502).size(), true)};
        expected.closed_at = 1;
        checkAllSplits({req(request), resp(response)}, expected);
    };
    SECTION("bad status line") { bad_gateway("HTTP/1.1 20 OK\r\n\r\n"); }
    SECTION("not HTTP") { bad_gateway("SSH-2.0-OpenSSH\r\n"); }
    SECTION("HTTP/2.0 status line") { bad_gateway("HTTP/2.0 200 OK\r\n\r\n"); }
    SECTION("Content-Length with Transfer-Encoding") {
        bad_gateway("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    }
    SECTION("conflicting Content-Length") {
        bad_gateway("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc");
    }
    SECTION("obs-fold") { bad_gateway("HTTP/1.1 200 OK\r\nA: 1\r\n 2\r\n\r\n"); }
    SECTION("bare LF") { bad_gateway("HTTP/1.1 200 OK\nContent-Length: 0\n\n"); }
    // llhttp takes a bare CR as the end of the status line; other clients may not.
    SECTION("bare CR ending the status line") {
        bad_gateway("HTTP/1.1 200 OK\r\rContent-Length: 0\r\n\r\n");
    }
    SECTION("bare CR before the empty line") { bad_gateway("HTTP/1.1 200 OK\r\r\r\n"); }
    SECTION("bare CR in a 1xx") { bad_gateway("HTTP/1.1 100 Continue\r\rX: 1\r\n\r\n" + kOk); }
    SECTION("an error in the body after the head went out only closes") {
        const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        Outcome expected;
        expected.upstream = forwarded;
        expected.downstream = head + "3\r\nabc\r\n";
        expected.events = {"request GET /", "response 200"};
        expected.closed_at = 1;
        checkAllSplits({req(request), resp(head + "3\r\nabc\r\nxyz\r\n")}, expected);
    }
    SECTION("a response nobody asked for closes without answering") {
        Outcome expected;
        expected.closed_at = 0;
        checkAllSplits({resp(kOk)}, expected);
    }
}

TEST_CASE("the app closing its side") {
    const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string forwarded = "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    SECTION("mid-head: 502") {
        Outcome expected;
        expected.upstream = forwarded;
        expected.downstream = localResponse(502);
        expected.events = {"request GET /", complete("GET", "/", 502, request.size(),
                                                     localResponse(502).size(), true)};
        expected.closed_at = 2;
        checkAllSplits({req(request), resp("HTTP/1.1 200 OK\r\nConte"), respEof()}, expected);
    }
    SECTION("after a 100 Continue but before the final response: 502") {
        const std::string c100 = "HTTP/1.1 100 Continue\r\n\r\n";
        Outcome expected;
        expected.upstream = forwarded;
        expected.downstream = c100 + localResponse(502);
        expected.events = {"request GET /",
                           complete("GET", "/", 502, request.size(),
                                    c100.size() + localResponse(502).size(), true)};
        expected.closed_at = 2;
        checkAllSplits({req(request), resp(c100), respEof()}, expected);
    }
    SECTION("mid-body: the truncated response is not completed") {
        const std::string partial = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        Outcome expected;
        expected.upstream = forwarded;
        expected.downstream = partial;
        expected.events = {"request GET /", "response 200"};
        expected.closed_at = 2;
        checkAllSplits({req(request), resp(partial), respEof()}, expected);
    }
    SECTION("while idle: close quietly") {
        Outcome expected;
        expected.upstream = forwarded;
        expected.downstream = kOk;
        expected.events = {"request GET /", "response 200",
                           complete("GET", "/", 200, request.size(), kOk.size())};
        expected.closed_at = 2;
        checkAllSplits({req(request), resp(kOk), respEof()}, expected);
    }
}

// ---- connection end -----------------------------------------------------------------------

TEST_CASE("draining: the next response says Connection: close and the connection ends") {
    const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const std::string response =
        "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n"
        "Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok";
    const std::string sent = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    Outcome expected;
    expected.upstream = "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
    expected.downstream = sent;
    expected.events = {"request GET /", "response 200",
                       complete("GET", "/", 200, request.size(), sent.size())};
    expected.closed_at = 2;
    checkAllSplits({req(request), drain(), resp(response)}, expected);

    SECTION("requests pipelined behind the draining one are not forwarded") {
        const Outcome o =
            run({}, defaultFacts(),
                {req(request), drain(), req("GET /late HTTP/1.1\r\nHost: a\r\n\r\n"), resp(kOk)});
        CHECK(o.upstream == expected.upstream);
        CHECK(o.downstream ==
              "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        CHECK(o.closed_at == 3);
    }
    SECTION("idle when draining starts") {
        Recorder rec;
        Codec codec({}, defaultFacts(), rec);
        codec.setDraining();
        CHECK(codec.idleBetweenRequests());
    }
}

TEST_CASE("a request with Connection: close ends the connection after its response") {
    const std::string request = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    const std::string sent = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    Outcome expected;
    expected.upstream = "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + xf("a") + "\r\n";
    expected.downstream = sent;
    expected.events = {"request GET /", "response 200",
                       complete("GET", "/", 200, request.size(), sent.size())};
    expected.closed_at = 1;
    // What follows a closing request is never forwarded.
    checkAllSplits({req(request + "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"), resp(kOk)},
                   expected);

    SECTION("an app response that already says close is left byte-exact") {
        const std::string closing =
            "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok";
        const Outcome o = run({}, defaultFacts(), {req(request), resp(closing)});
        CHECK(o.downstream == closing);
        CHECK(o.closed_at == 1);
    }
}

TEST_CASE("HTTP/1.0 requests close unless they ask for keep-alive") {
    SECTION("without keep-alive") {
        const std::string request = "GET / HTTP/1.0\r\nHost: a\r\n\r\n";
        const std::string response = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        Outcome expected;
        expected.upstream = "GET / HTTP/1.0\r\nHost: a\r\n" + xf("a") + "\r\n";
        expected.downstream = response;
        expected.events = {"request GET /", "response 200",
                           complete("GET", "/", 200, request.size(), response.size())};
        expected.closed_at = 1;
        checkAllSplits({req(request), resp(response)}, expected);
    }
    SECTION("with keep-alive") {
        const std::string request = "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n";
        const std::string response =
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
        const Outcome o = run({}, defaultFacts(), {req(request), resp(response)});
        CHECK(o.downstream == response);
        CHECK(o.closed_at == -1);
    }
}

TEST_CASE("the client finishing its side") {
    const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    SECTION("with an answer owed: the answer is delivered, then close") {
        Outcome expected;
        expected.upstream = "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
        expected.downstream = kOk;
        expected.events = {"request GET /", "response 200",
                           complete("GET", "/", 200, request.size(), kOk.size())};
        expected.closed_at = 2;
        checkAllSplits({req(request), reqEof(), resp(kOk)}, expected);
    }
    SECTION("idle: close") {
        Outcome expected;
        expected.closed_at = 0;
        checkAllSplits({reqEof()}, expected);
    }
    SECTION("mid-body: close") {
        const Outcome o =
            run({}, defaultFacts(),
                {req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab"), reqEof()});
        CHECK(o.closed_at == 1);
    }
}

// ---- generated responses ------------------------------------------------------------------

TEST_CASE("core's timers answer with small generated responses") {
    SECTION("header timeout while a head is incomplete: 408") {
        CHECK(localResponse(408) ==
              "HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
              "Content-Length: 16\r\nConnection: close\r\n\r\nRequest Timeout\n");
        Outcome expected;
        expected.downstream = localResponse(408);
        expected.events = {complete("GET", "/slow", 408, 27, localResponse(408).size(), true)};
        expected.closed_at = 1;
        checkAllSplits({req("GET /slow HTTP/1.1\r\nHost: a"), localError(408)}, expected);
    }
    SECTION("upstream response timeout: 504 for the oldest request") {
        const std::string request = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        Outcome expected;
        expected.upstream = "GET / HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
        expected.downstream = localResponse(504);
        expected.events = {"request GET /", complete("GET", "/", 504, request.size(),
                                                     localResponse(504).size(), true)};
        expected.closed_at = 1;
        checkAllSplits({req(request), localError(504)}, expected);
    }
    SECTION("a HEAD request gets no body") {
        const Outcome o =
            run({}, defaultFacts(), {req("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"), localError(503)});
        CHECK(o.downstream == localResponse(503, true));
        CHECK(o.downstream.ends_with("Content-Length: 20\r\nConnection: close\r\n\r\n"));
    }
    SECTION("once a response has started nothing is added") {
        const std::string partial = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        const Outcome o =
            run({}, defaultFacts(),
                {req("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), resp(partial), localError(504)});
        CHECK(o.downstream == partial);
        CHECK(o.closed_at == 2);
    }
    SECTION("on an idle connection nothing is owed") {
        const Outcome o = run({}, defaultFacts(), {localError(502)});
        CHECK(o.downstream.empty());
        CHECK(o.closed_at == 0);
    }
}

TEST_CASE("state queries follow the exchange") {
    Recorder rec;
    Codec codec({}, defaultFacts(), rec);
    auto feed = [&](bool request, const std::string& s) {
        const auto* p = reinterpret_cast<const uint8_t*>(s.data());
        return request ? codec.feedRequest(p, s.size()) : codec.feedResponse(p, s.size());
    };
    CHECK(codec.idleBetweenRequests());
    CHECK_FALSE(codec.awaitingRequestHead());
    feed(true, "GET / HTTP/1.1\r\n");
    CHECK(codec.awaitingRequestHead());
    CHECK_FALSE(codec.idleBetweenRequests());
    feed(true, "Host: a\r\n\r\n");
    CHECK_FALSE(codec.awaitingRequestHead());
    CHECK(codec.awaitingResponse());
    feed(false, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no");
    CHECK(codec.awaitingResponse());
    CHECK(feed(false, "k") == Status::Continue);
    CHECK_FALSE(codec.awaitingResponse());
    CHECK(codec.idleBetweenRequests());
    CHECK_FALSE(codec.tunneling());
}

// Not a correctness test: prints CPU time per proxied request. Run with `unit_http [.bench]`.
TEST_CASE("codec cost per request", "[.bench]") {
    ByteCounter sink;
    Codec codec({}, defaultFacts(), sink);
    const std::string request =
        "GET /api/v1/items?id=42 HTTP/1.1\r\nHost: service.example.com\r\n"
        "User-Agent: bench/1.0\r\nAccept: application/json\r\nAccept-Encoding: gzip\r\n"
        "Cookie: session=0123456789abcdef\r\nX-Request-Id: 7f1c\r\n\r\n";
    const std::string response =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        "Content-Length: 26\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
        "\r\n{\"id\":42,\"name\":\"example\"}";
    constexpr int kIterations = 1000000;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kIterations; ++i) {
        codec.feedRequest(reinterpret_cast<const uint8_t*>(request.data()), request.size());
        codec.feedResponse(reinterpret_cast<const uint8_t*>(response.data()), response.size());
    }
    const auto elapsed = std::chrono::steady_clock::now() - start;
    const double ns = std::chrono::duration<double, std::nano>(elapsed).count() / kIterations;
    std::printf("codec: %.0f ns per request/response pair (%zu bytes moved)\n", ns, sink.bytes);
    CHECK(codec.idleBetweenRequests());
}
