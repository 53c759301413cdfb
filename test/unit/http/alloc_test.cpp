// Counts heap allocations made by the codec on the hot path: once its buffers have grown to fit
// a connection's traffic, further exchanges must not allocate.

#include <atomic>
#include <catch2/catch_test_macros.hpp>
#include <cstdlib>
#include <new>
#include <string>

#include "http/codec.h"
#include "test/unit/http/harness.h"

namespace {
std::atomic<size_t> g_allocations{0};
}  // namespace

void* operator new(size_t n) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

using namespace sidecar::http;

TEST_CASE("steady-state exchanges do not allocate") {
    test::ByteCounter sink;
    ConnectionFacts facts;
    facts.client_ip = "192.0.2.7";
    facts.client_cert = "Hash=abcd;Subject=\"CN=client\"";
    CodecOptions options;
    Codec codec(options, facts, sink);
    const std::string pipelined =
        "GET /a/rather/long/path/to/some/resource?with=query HTTP/1.1\r\nHost: example.com\r\n"
        "X-Forwarded-For: 6.6.6.6\r\nAccept: */*\r\n\r\n"
        "POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n0\r\n\r\n"
        "HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    const std::string responses =
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        "HTTP/1.1 100 Continue\r\n\r\n"
        "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
    auto exchange = [&] {
        codec.feedRequest(reinterpret_cast<const uint8_t*>(pipelined.data()), pipelined.size());
        codec.feedResponse(reinterpret_cast<const uint8_t*>(responses.data()), responses.size());
    };
    for (int i = 0; i < 4; ++i) exchange();  // buffers grow to fit
    const size_t before = g_allocations.load();
    for (int i = 0; i < 1000; ++i) exchange();
    CHECK(g_allocations.load() - before == 0);
    CHECK(codec.idleBetweenRequests());
}
