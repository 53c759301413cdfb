#include <catch2/catch_test_macros.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "http/fuzz.h"

using sidecar::http::fuzzCodec;

namespace {

// Appends a fuzz record [op][len][bytes].
void record(std::vector<uint8_t>& in, uint8_t op, const std::string& bytes) {
    for (size_t i = 0; i < bytes.size() || i == 0; i += 255) {
        const std::string part = bytes.substr(i, 255);
        in.push_back(op);
        in.push_back(uint8_t(part.size()));
        in.insert(in.end(), part.begin(), part.end());
        if (bytes.empty()) break;
    }
}

}  // namespace

// A few seconds of deterministic random and mutated-valid input: the codec must not crash,
// leak or trip the sanitizers. The libFuzzer target uses the same entry point.
TEST_CASE("the fuzz entry survives random and mutated input") {
    std::mt19937 rng(12345);
    const std::vector<std::string> seeds = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nxx",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nbody",
        "HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    };
    for (int iteration = 0; iteration < 20000; ++iteration) {
        std::vector<uint8_t> in;
        in.push_back(uint8_t(rng()));
        const int records = 1 + int(rng() % 8);
        for (int r = 0; r < records; ++r) {
            std::string bytes = seeds[rng() % seeds.size()];
            const int mutations = int(rng() % 4);
            for (int m = 0; m < mutations && !bytes.empty(); ++m) {
                const size_t at = rng() % bytes.size();
                switch (rng() % 3) {
                    case 0:
                        bytes[at] = char(rng());
                        break;
                    case 1:
                        bytes.erase(at, 1 + rng() % 4);
                        break;
                    default:
                        bytes.insert(at, 1, char(rng()));
                        break;
                }
            }
            if (rng() % 4 == 0) bytes.resize(rng() % (bytes.size() + 1));
            // Mostly feed requests as requests and responses as responses, to get past the
            // first message; sometimes any operation.
            uint8_t op = bytes.starts_with("HTTP/") ? 1 : 0;
            if (rng() % 5 == 0) op = uint8_t(rng());
            record(in, op, bytes);
        }
        fuzzCodec(in.data(), in.size());
    }
    // Pure noise too.
    for (int iteration = 0; iteration < 5000; ++iteration) {
        std::vector<uint8_t> in(rng() % 512);
        for (auto& b : in) b = uint8_t(rng());
        fuzzCodec(in.data(), in.size());
    }
    SUCCEED();
}
