// Every class of ambiguous or malformed request framing, with the exact answer expected. For
// each row the app must receive nothing of the request nor of anything pipelined after it; an
// earlier pipelined request still gets its response first.

#include <catch2/catch_test_macros.hpp>
#include <string>
#include <vector>

#include "test/unit/http/harness.h"

using namespace sidecar::http;
using namespace sidecar::http::test;

namespace {

struct Row {
    const char* what;
    std::string request;
    int status;
};

const std::vector<Row>& headRows() {
    static const std::vector<Row> rows = {
        // Content-Length / Transfer-Encoding conflicts
        {"CL then TE",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400},
        {"TE then CL",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
         "Content-Length: 4\r\n\r\n0\r\n\r\n",
         400},
        {"duplicate CL, different",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
         "Content-Length: 5\r\n\r\nabcde",
         400},
        {"duplicate CL, same",
         "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
         "Content-Length: 4\r\n\r\nabcd",
         400},
        {"CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\nabcd", 400},
        {"CL with sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd", 400},
        {"CL negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
        {"CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\nabcd", 400},
        {"CL trailing junk", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4a\r\n\r\nabcd", 400},
        {"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400},
        {"CL overflow",
         "POST / HTTP/1.1\r\nHost: a\r\n"
         "Content-Length: 99999999999999999999\r\n\r\n",
         400},
        {"TE not chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nab", 400},
        {"TE chunked not last",
         "POST / HTTP/1.1\r\nHost: a\r\n"
         "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
         400},
        {"TE chunked then another header",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
         "chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
         400},
        {"TE chunked twice",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400},
        {"TE look-alike",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n"
         "0\r\n\r\n",
         400},
        {"TE in HTTP/1.0",
         "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
         "0\r\n\r\n",
         400},
        {"TE with space before colon",
         "POST / HTTP/1.1\r\nHost: a\r\n"
         "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
         400},
        {"TE other coding before chunked",
         "POST / HTTP/1.1\r\nHost: a\r\n"
         "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
         501},
        {"TE split over two headers",
         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         501},
        // line endings and folding
        {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 400},
        {"obs-fold with tab", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\t2\r\n\r\n", 400},
        {"bare LF after request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
        {"bare LF after header", "GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", 400},
        {"bare LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400},
        {"all bare LF", "GET / HTTP/1.1\nHost: a\n\n", 400},
        {"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r2\r\n\r\n", 400},
        {"bare CR ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\rX", 400},
        // control bytes
        {"NUL in value", std::string("GET / HTTP/1.1\r\nHost: a\r\nX: 1") + '\0' + "2\r\n\r\n",
         400},
        {"NUL in name", std::string("GET / HTTP/1.1\r\nHost: a\r\nX") + '\0' + "Y: 1\r\n\r\n", 400},
        {"control byte in value",
         "GET / HTTP/1.1\r\nHost: a\r\nX: 1\x01"
         "2\r\n\r\n",
         400},
        {"DEL in value",
         "GET / HTTP/1.1\r\nHost: a\r\nX: 1\x7f"
         "2\r\n\r\n",
         400},
        {"space in name", "GET / HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n", 400},
        {"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n", 400},
        {"control byte in target", "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        // request line and versions
        {"HTTP/0.9 request", "GET /\r\n\r\n", 400},
        {"HTTP/0.9 version", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505},
        {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
        {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        {"HTTP/3.0", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505},
        {"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
        {"HTTP/9.9", "GET / HTTP/9.9\r\nHost: a\r\n\r\n", 505},
        {"version with extra digit", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400},
        {"version without minor", "GET / HTTP/1\r\nHost: a\r\n\r\n", 400},
        {"version with leading zero", "GET / HTTP/01.1\r\nHost: a\r\n\r\n", 400},
        {"version with three parts", "GET / HTTP/1.1.1\r\nHost: a\r\n\r\n", 400},
        {"version lower case", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
        {"space after version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
        {"double space in request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"unknown method", "FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"lower-case method", "get / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"binary garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400},
        // other protocols llhttp also parses: RTSP and ICE (Icecast)
        {"RTSP request", "DESCRIBE /a RTSP/1.0\r\nCSeq: 1\r\n\r\n", 400},
        {"RTSP version with an HTTP method", "GET / RTSP/1.0\r\nHost: a\r\n\r\n", 400},
        {"RTSP OPTIONS *", "OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", 400},
        {"RTSP SETUP", "SETUP /a RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP\r\n\r\n", 400},
        {"RTSP method with HTTP/1.1", "DESCRIBE / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"RTSP method with HTTP/1.0", "PLAY / HTTP/1.0\r\n\r\n", 400},
        {"ICE request", "SOURCE /mount ICE/1.0\r\nContent-Type: audio/mpeg\r\n\r\n", 400},
        {"ICE method with HTTP/1.0", "SOURCE /mount HTTP/1.0\r\n\r\n", 400},
        {"ICE method with HTTP/1.1", "SOURCE /mount HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"ICE version with GET", "GET / ICE/1.0\r\nHost: a\r\n\r\n", 400},
        {"PRI with HTTP/1.1", "PRI * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        // request-targets outside RFC 9112 section 3.2
        {"fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"empty fragment", "GET /a# HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"fragment after query", "GET /?q=1#b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"fragment in absolute-form", "GET http://a/#b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"backslash", "GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"double quote", "GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"less-than", "GET /a<b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"greater-than", "GET /a>b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"caret", "GET /a^b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"backquote", "GET /a`b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"braces", "GET /a{b} HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"vertical bar in query", "GET /?a|b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"brackets in path", "GET /a[0] HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"percent without digits", "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"percent with one digit", "GET /a%4 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"percent at the end of the query", "GET /?a=% HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"byte 0x80 in path", "GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"UTF-8 in query", "GET /?q=\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"tab in target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"query alone", "GET ?a HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"asterisk-form with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"asterisk-form with M-SEARCH", "M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"authority-form with GET", "GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"absolute-form without host", "GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"absolute-form with bad port", "GET http://a:8x/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"absolute-form with open IP literal", "GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"absolute-form with a space in the host", "GET http://a b/ HTTP/1.1\r\nHost: a\r\n\r\n",
         400},
        {"CONNECT with origin-form", "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"CONNECT without port", "CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"CONNECT with userinfo", "CONNECT u@a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 400},
        {"CONNECT with asterisk", "CONNECT * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"OPTIONS * in HTTP/2.0", "OPTIONS * HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        {"bad target in HTTP/2.0", "GET /# HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        // Host
        {"missing Host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400},
        {"duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"duplicate Host, same value", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400},
        {"duplicate Host in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        // tunnels
        {"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501},
        {"CONNECT to an IP literal", "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", 501},
    };
    return rows;
}

const std::string kGood = "GET /ok HTTP/1.1\r\nHost: a\r\n\r\n";
const std::string kGoodForwarded = "GET /ok HTTP/1.1\r\nHost: a\r\n" + xf("a") + "\r\n";
const std::string kAfter = "GET /after HTTP/1.1\r\nHost: a\r\n\r\n";
const std::string kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

// The events of a rejected request do not depend on which row it is, except for the request
// line and byte count: compare only the parts the table cares about.
Outcome withoutEvents(Outcome o) {
    o.events.clear();
    return o;
}

}  // namespace

TEST_CASE("smuggling table: rejected alone, nothing reaches the app") {
    for (const Row& row : headRows()) {
        DYNAMIC_SECTION(row.what) {
            const std::vector<Step> steps = {req(row.request + kAfter)};
            Outcome expected;
            expected.downstream = localResponse(row.status);
            expected.closed_at = 0;
            const Outcome whole = run({}, defaultFacts(), steps);
            REQUIRE(whole.events.size() == 1);
            CHECK(whole.events[0].find(" " + std::to_string(row.status) + " local") !=
                  std::string::npos);
            expected.events = whole.events;
            checkAllSplits(steps, expected);
        }
    }
}

TEST_CASE("smuggling table: rejected behind a good request, answered after its response") {
    for (const Row& row : headRows()) {
        DYNAMIC_SECTION(row.what) {
            const std::vector<Step> steps = {req(kGood + row.request + kAfter), resp(kOk)};
            Outcome expected;
            expected.upstream = kGoodForwarded;
            expected.downstream = kOk + localResponse(row.status);
            expected.closed_at = 1;
            const Outcome whole = run({}, defaultFacts(), steps);
            REQUIRE(whole.events.size() == 4);
            CHECK(whole.events[2] == complete("GET", "/ok", 200, kGood.size(), kOk.size()));
            expected.events = whole.events;
            checkAllSplits(steps, expected);

            // Before the good response arrives, the client has been sent nothing.
            const Outcome early = run({}, defaultFacts(), {steps[0]});
            CHECK(withoutEvents(early) == withoutEvents(Outcome{kGoodForwarded, "", {}, -1}));
        }
    }
}

TEST_CASE("smuggling table: invalid chunked bodies stop at the error") {
    // The head was valid and has been streamed with the body up to the error; nothing after it
    // reaches the app, and the client gets a 400 in place of the response.
    const std::string head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    const std::string forwarded_head =
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n" + xf("a") + "\r\n";
    struct BodyRow {
        const char* what;
        std::string body;
        std::string reaches_app;
    };
    const std::vector<BodyRow> rows = {
        {"non-hex chunk size", "zz\r\nhello\r\n0\r\n\r\n", ""},
        {"chunk size with junk", "5x\r\nhello\r\n0\r\n\r\n", ""},
        {"space after chunk size", "5 \r\nhello\r\n0\r\n\r\n", ""},
        {"negative chunk size", "-5\r\nhello\r\n0\r\n\r\n", ""},
        {"chunk size overflow", "10000000000000000\r\n", ""},
        {"chunk extension with bare LF", "5;a=b\nhello\r\n0\r\n\r\n", ""},
        {"chunk longer than its size", "5\r\nhello!\r\n0\r\n\r\n", "5\r\nhello"},
        {"bare LF after chunk size", "5\nhello\r\n0\r\n\r\n", ""},
        {"bare LF after chunk data", "5\r\nhello\n0\r\n\r\n", "5\r\nhello"},
        {"bare CR after chunk data", "5\r\nhello\r0\r\n\r\n", "5\r\nhello"},
        {"bare LF ending the last chunk", "0\r\n\n", "0\r\n"},
        {"obs-fold in trailer", "0\r\nT: 1\r\n 2\r\n\r\n", "0\r\n"},
        {"NUL in trailer", std::string("0\r\nT: 1") + '\0' + "\r\n\r\n", "0\r\n"},
        {"second chunk bad", "2\r\nok\r\n3\r\nabc\r\nq\r\n", "2\r\nok\r\n3\r\nabc\r\n"},
    };
    for (const BodyRow& row : rows) {
        DYNAMIC_SECTION(row.what) {
            const std::vector<Step> steps = {req(head + row.body + kAfter)};
            Outcome expected;
            expected.upstream = forwarded_head + row.reaches_app;
            expected.downstream = localResponse(400);
            expected.closed_at = 0;
            // Bytes received up to the error depend on where llhttp stops; the rest is exact.
            const Outcome whole = run({}, defaultFacts(), steps);
            REQUIRE(whole.events.size() == 2);
            CHECK(whole.events[0] == "request POST /");
            CHECK(whole.events[1].starts_with("complete POST / 400 local req="));
            expected.events = whole.events;
            checkAllSplits(steps, expected);
        }
    }
}

TEST_CASE("the exact 400 response") {
    CHECK(localResponse(400) ==
          "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
          "Connection: close\r\n\r\nBad Request\n");
    const Outcome o = run({}, defaultFacts(), {req("GET / HTTP/1.1\r\n\r\n")});
    CHECK(o.downstream ==
          "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
          "Connection: close\r\n\r\nBad Request\n");
    CHECK(o.upstream.empty());
}
