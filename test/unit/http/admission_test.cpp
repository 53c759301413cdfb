// Core's admission decision on each request (CodecEvents::admitRequest): a refused request is
// answered locally and never forwarded, a deferred one waits, with everything after its head,
// until Codec::admit decides it; the connection stays usable either way.

#include <catch2/catch_test_macros.hpp>

#include <deque>
#include <string>

#include "harness.h"

namespace sidecar::http::test {
namespace {

// Records like Recorder, and answers admitRequest from a script of decisions.
class Gatekeeper final : public CodecEvents {
public:
    std::deque<Admission> decisions;  // one per request head; empty: forward
    std::vector<std::string> keys;
    Outcome out;
    void sendUpstream(const uint8_t* p, size_t n) override {
        out.upstream.append(reinterpret_cast<const char*>(p), n);
    }
    void sendDownstream(const uint8_t* p, size_t n) override {
        out.downstream.append(reinterpret_cast<const char*>(p), n);
    }
    Admission admitRequest(const Exchange& e, std::string_view key) override {
        keys.emplace_back(key);
        out.events.push_back("admit? " + e.method + " " + e.target);
        if (decisions.empty()) return {};
        Admission a = decisions.front();
        decisions.pop_front();
        return a;
    }
    void onRequestHead(const Exchange& e) override { out.events.push_back("request " + e.target); }
    void onExchangeComplete(const Exchange& e) override {
        out.events.push_back("complete " + e.target + " " + std::to_string(e.status) +
                             (e.local ? " local" : ""));
    }
};

Status feed(Codec& c, const std::string& s) {
    return c.feedRequest(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}
Status answer(Codec& c, const std::string& s) {
    return c.feedResponse(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

const std::string kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

}  // namespace

TEST_CASE("a refused request is answered with its status and Retry-After, never forwarded",
          "[admission]") {
    Gatekeeper g;
    g.decisions.push_back({429, 3});
    Codec codec({}, defaultFacts(), g);
    REQUIRE(feed(codec, "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody") ==
            Status::Continue);
    CHECK(g.out.upstream.empty());
    CHECK(g.out.downstream.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
    CHECK(g.out.downstream.find("Retry-After: 3\r\n") != std::string::npos);
    CHECK(g.out.downstream.find("Connection: close") == std::string::npos);
    // The connection stays usable: the next request goes through.
    g.out.downstream.clear();
    REQUIRE(feed(codec, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n") == Status::Continue);
    CHECK(g.out.upstream == "GET /b HTTP/1.1\r\nHost: h\r\n" + xf("h") + "\r\n");
    REQUIRE(answer(codec, kOk) == Status::Continue);
    CHECK(g.out.downstream == kOk);
    CHECK(codec.idleBetweenRequests());
}

TEST_CASE("a refusal that closes ends the connection after its answer", "[admission]") {
    Gatekeeper g;
    g.decisions.push_back({.status = 429, .retry_after = 1, .close = true});
    Codec codec({}, defaultFacts(), g);
    CHECK(feed(codec, "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n") ==
          Status::Close);
    CHECK(g.out.downstream.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
    CHECK(g.out.downstream.find("Connection: close\r\n") != std::string::npos);
    CHECK(g.out.upstream.empty());
    CHECK(g.out.events == std::vector<std::string>{"admit? GET /a", "complete /a 429 local"});
}

TEST_CASE("the admission header's value is passed as the key", "[admission]") {
    Gatekeeper g;
    CodecOptions o;
    o.admission_header = "x-api-key";
    Codec codec(o, defaultFacts(), g);
    feed(codec, "GET / HTTP/1.1\r\nHost: h\r\nX-API-Key: k1\r\n\r\n");
    answer(codec, kOk);
    feed(codec, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(g.keys == std::vector<std::string>{"k1", ""});
}

TEST_CASE("a deferred request waits with its body until admit forwards it", "[admission]") {
    Gatekeeper g;
    g.decisions.push_back({.defer = true});
    Codec codec({}, defaultFacts(), g);
    REQUIRE(feed(codec, "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbo") ==
            Status::Continue);
    CHECK(codec.phase() == Codec::Phase::Admission);
    CHECK_FALSE(codec.idleBetweenRequests());
    CHECK(g.out.upstream.empty());
    // More of the body, and a pipelined request, arrive while it waits: held, not parsed.
    REQUIRE(feed(codec, "dyGET /b HTTP/1.1\r\nHost: h\r\n\r\n") == Status::Continue);
    CHECK(g.out.upstream.empty());
    CHECK(g.out.events == std::vector<std::string>{"admit? POST /a"});
    REQUIRE(codec.admit({}) == Status::Continue);
    const std::string head_a = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n" + xf("h") + "\r\n";
    const std::string head_b = "GET /b HTTP/1.1\r\nHost: h\r\n" + xf("h") + "\r\n";
    CHECK(g.out.upstream == head_a + "body" + head_b);
    CHECK(codec.phase() == Codec::Phase::AwaitingResponse);
    answer(codec, kOk);
    answer(codec, kOk);
    CHECK(g.out.downstream == kOk + kOk);
    CHECK(g.out.events == std::vector<std::string>{"admit? POST /a", "request /a", "admit? GET /b",
                                                   "request /b", "complete /a 200",
                                                   "complete /b 200"});
    CHECK(codec.idleBetweenRequests());
}

TEST_CASE("a deferred request answered 503 by admit keeps the connection", "[admission]") {
    Gatekeeper g;
    g.decisions.push_back({.defer = true});
    Codec codec({}, defaultFacts(), g);
    feed(codec, "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody");
    REQUIRE(codec.admit({503, 5}) == Status::Continue);
    CHECK(g.out.upstream.empty());
    CHECK(g.out.downstream.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
    CHECK(g.out.downstream.find("Retry-After: 5\r\n") != std::string::npos);
    CHECK(codec.idleBetweenRequests());
    // A second admit has nothing to decide.
    CHECK(codec.admit({}) == Status::Continue);
    CHECK(g.out.upstream.empty());
    g.out.downstream.clear();
    feed(codec, "GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(g.out.upstream == "GET /b HTTP/1.1\r\nHost: h\r\n" + xf("h") + "\r\n");
}

TEST_CASE("a client that finished while its request waited gets its answer, then the end",
          "[admission]") {
    Gatekeeper g;
    g.decisions.push_back({.defer = true});
    Codec codec({}, defaultFacts(), g);
    feed(codec, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    REQUIRE(codec.requestEof() == Status::Continue);  // the answer is still owed
    REQUIRE(codec.admit({}) == Status::Continue);
    CHECK(g.out.upstream == "GET /a HTTP/1.1\r\nHost: h\r\n" + xf("h") + "\r\n");
    CHECK(answer(codec, kOk) == Status::Close);
    CHECK(g.out.downstream == kOk);
}

TEST_CASE("a client that stops mid-body while its request waits ends the connection",
          "[admission]") {
    Gatekeeper g;
    g.decisions.push_back({.defer = true});
    Codec codec({}, defaultFacts(), g);
    feed(codec, "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    REQUIRE(codec.requestEof() == Status::Continue);
    CHECK(codec.admit({}) == Status::Close);
}

}  // namespace sidecar::http::test
