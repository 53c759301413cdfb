// A few seconds of deterministic random and mutated-valid input through the HTTP/2 fuzz entry:
// the session must not crash, leak, break its contract with core or trip the sanitizers. The
// libFuzzer target (fuzz_h2) uses the same entry point.

#include <nghttp2/nghttp2.h>

#include <catch2/catch_test_macros.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "test/fuzz/h2_driver.h"
#include "test/unit/http/h2_peer.h"

using sidecar::http::fuzz::fuzzH2;
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

}  // namespace

TEST_CASE("h2: the fuzz entry survives random and mutated input") {
    std::mt19937 rng(4242);
    std::vector<std::string> seeds;
    for (int v = 0; v < 3; ++v) seeds.push_back(clientBytes(v));
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
        in.push_back(char(rng() & 0xe));  // the seeds carry their own preface
        in.push_back(char(rng() % 3 == 0 ? 0 : rng()));
        in += bytes;
        fuzzH2(reinterpret_cast<const uint8_t*>(in.data()), in.size());
    }
    // Noise after a valid preface, and pure noise.
    for (int iteration = 0; iteration < 5000; ++iteration) {
        std::vector<uint8_t> in(2 + rng() % 512);
        for (auto& b : in) b = uint8_t(rng());
        fuzzH2(in.data(), in.size());
    }
    SUCCEED();
}
