// A few seconds of deterministic random and mutated-valid input through the HTTP/2 fuzz entries
// (server side: client bytes; client side: app bytes): neither side may crash, leak, break its
// contract with core or trip the sanitizers. The libFuzzer targets (fuzz_h2, fuzz_h2_client) use
// the same entry points.

#include <nghttp2/nghttp2.h>

#include <catch2/catch_test_macros.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "test/fuzz/h2_client_driver.h"
#include "test/fuzz/h2_driver.h"
#include "test/unit/http/h2_peer.h"

using sidecar::http::fuzz::fuzzH2;
using sidecar::http::fuzz::fuzzH2Client;
using sidecar::http::test::Client;

namespace {

// What a real client sends for a few requests: preface, SETTINGS, HEADERS, DATA, trailers,
// RST_STREAM, PING, WINDOW_UPDATE.
std::string clientBytes(int variant) {
    Client client;
    const std::string big(3000, 'b');
    switch (variant) {
        case 0:
            client.get("/", {{"cookie", "a=1"}, {"cookie", "b=2"}});
            client.request(
                {{":method", "HEAD"}, {":scheme", "https"}, {":path", "/h"}, {":authority", "a"}});
            break;
        case 1:
            client.request({{":method", "POST"},
                            {":scheme", "https"},
                            {":path", "/u"},
                            {":authority", "a"},
                            {"content-length", "5"}},
                           "hello");
            client.request({{":method", "POST"},
                            {":scheme", "https"},
                            {":path", "/c"},
                            {":authority", "a"},
                            {"te", "trailers"}},
                           big, false, {{"x-sum", "1"}});
            break;
        default: {
            const int32_t id = client.get("/r");
            nghttp2_submit_rst_stream(client.session, NGHTTP2_FLAG_NONE, id, 8);
            nghttp2_submit_ping(client.session, NGHTTP2_FLAG_NONE, nullptr);
            client.request({{":method", "CONNECT"}, {":authority", "a:443"}});
            client.get("/x", {{"x-long", big}});
            break;
        }
    }
    std::string out;
    for (;;) {
        const uint8_t* data;
        const ssize_t n = nghttp2_session_mem_send(client.session, &data);
        if (n <= 0) break;
        out.append(reinterpret_cast<const char*>(data), size_t(n));
    }
    return out;
}

// An HTTP/2 frame, hand-encoded (RFC 9113 section 4.1).
std::string frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload = "") {
    std::string f;
    for (int shift : {16, 8, 0}) f.push_back(char((payload.size() >> shift) & 0xff));
    f.push_back(char(type));
    f.push_back(char(flags));
    for (int shift : {24, 16, 8, 0}) f.push_back(char((stream >> shift) & 0xff));
    return f + payload;
}

// A literal field without indexing, literal name, no Huffman (RFC 7541 section 6.2.2).
std::string literal(const std::string& name, const std::string& value) {
    return std::string(1, '\0') + char(name.size()) + name + char(value.size()) + value;
}

// What an app sends back for the driver's GET (stream 1) and chunked POST (stream 3).
std::string appBytes(int variant) {
    constexpr uint8_t kData = 0, kHeaders = 1, kRst = 3, kSettings = 4, kPing = 6, kGoaway = 7;
    constexpr uint8_t kEndStream = 0x1, kEndHeaders = 0x4;
    // :status 200 and 204 from the static table; 100 as a literal value with an indexed name.
    const std::string status200 = "\x88", status204 = "\x89";
    const std::string status100 = std::string("\x08\x03", 2) + "100";
    std::string out = frame(kSettings, 0, 0) + frame(kSettings, 0x1, 0);
    switch (variant) {
        case 0:
            out += frame(kHeaders, kEndHeaders, 1, status200 + literal("content-length", "2"));
            out += frame(kData, kEndStream, 1, "ok");
            out += frame(kHeaders, kEndHeaders, 3, status100);
            out += frame(kHeaders, kEndStream | kEndHeaders, 3, status204);
            break;
        case 1:
            out += frame(kHeaders, kEndHeaders, 1, status200 + literal("content-type", "text/x"));
            out += frame(kData, 0, 1, "abc");
            out += frame(kHeaders, kEndStream | kEndHeaders, 1, literal("grpc-status", "0"));
            out += frame(kHeaders, kEndHeaders, 3, status200);
            out += frame(kData, kEndStream, 3, std::string(3000, 'd'));
            break;
        default:
            out += frame(kRst, 0, 3, std::string("\0\0\0\x07", 4));
            out += frame(kPing, 0, 0, "12345678");
            out += frame(kHeaders, kEndHeaders, 1, status200);
            out += frame(kGoaway, 0, 0, std::string("\0\0\0\x01\0\0\0\0", 8));
            out += frame(kData, kEndStream, 1, "bye");
            break;
    }
    return out;
}

// Mutated seeds, then noise, through a fuzz entry whose input is [flags][piece size][bytes].
// The seeds carry their own start (preface or SETTINGS), so flag bit 0 stays clear for them;
// the noise sets it half of the time.
void survives(void (*entry)(const uint8_t*, size_t) noexcept, const std::vector<std::string>& seeds,
              uint32_t rng_seed) {
    std::mt19937 rng(rng_seed);
    for (int iteration = 0; iteration < 20000; ++iteration) {
        std::string bytes = seeds[rng() % seeds.size()];
        const int mutations = int(rng() % 6);
        for (int m = 0; m < mutations && !bytes.empty(); ++m) {
            const size_t at = rng() % bytes.size();
            switch (rng() % 3) {
                case 0:
                    bytes[at] = char(rng());
                    break;
                case 1:
                    bytes.erase(at, 1 + rng() % 8);
                    break;
                default:
                    bytes.insert(at, 1, char(rng()));
                    break;
            }
        }
        if (rng() % 4 == 0) bytes.resize(rng() % (bytes.size() + 1));
        std::string in;
        in.push_back(char(rng() & 0xe));
        in.push_back(char(rng() % 3 == 0 ? 0 : rng()));
        in += bytes;
        entry(reinterpret_cast<const uint8_t*>(in.data()), in.size());
    }
    for (int iteration = 0; iteration < 5000; ++iteration) {
        std::vector<uint8_t> in(2 + rng() % 512);
        for (auto& b : in) b = uint8_t(rng());
        entry(in.data(), in.size());
    }
}

}  // namespace

TEST_CASE("h2: the fuzz entry survives random and mutated input") {
    std::vector<std::string> seeds;
    for (int v = 0; v < 3; ++v) seeds.push_back(clientBytes(v));
    survives(&fuzzH2, seeds, 4242);
    SUCCEED();
}

TEST_CASE("h2 client: the fuzz entry survives random and mutated input") {
    std::vector<std::string> seeds;
    for (int v = 0; v < 3; ++v) seeds.push_back(appBytes(v));
    survives(&fuzzH2Client, seeds, 2424);
    SUCCEED();
}
