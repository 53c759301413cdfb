// Value formats on their own: durations, socket addresses, error and address printing.

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include "config/config.h"

using namespace std::chrono_literals;
using sidecar::config::Duration;
using sidecar::config::Error;
using sidecar::config::parseDuration;
using sidecar::config::parseSocketAddress;
using sidecar::config::SocketAddress;

TEST_CASE("durations in every accepted form", "[values]") {
    auto [text, expected] = GENERATE(table<const char*, Duration>({
        {"0", 0ms},
        {"0s", 0ms},
        {"0ms", 0ms},
        {"250ms", 250ms},
        {"10s", 10s},
        {"1m", 1min},
        {"2h", 2h},
        {"1.5s", 1500ms},
        {"0.25s", 250ms},
        {"1.5m", 90s},
        {"0.5h", 30min},
        {"1.000s", 1s},
        {"1h30m", 90min},
        {"1m30s", 90s},
        {"2s500ms", 2500ms},
        {"86400s", 24h},
    }));
    CAPTURE(text);
    auto parsed = parseDuration(text);
    REQUIRE(parsed.has_value());
    CHECK(*parsed == expected);
}

TEST_CASE("durations that are rejected", "[values]") {
    auto text =
        GENERATE(as<std::string>{}, "", "-1s", "-0s", "+1s", "10", "1.5", "s", "ms", "abc", "10x",
                 "10 s", " 10s", "10s ", "10S", "1e3s", ".5s", "5.s", "1.5.5s", "1ss", "1s5",
                 "10sec", "1d", "1us", "0.0001s", "1.0005s", "9223372036854775808ms",
                 "99999999999999999999h", "2562047789000h", "9223372036854775807ms1ms", "00");
    CAPTURE(text);
    CHECK_FALSE(parseDuration(text).has_value());
}

TEST_CASE("the largest duration that fits is accepted", "[values]") {
    CHECK(parseDuration("9223372036854775807ms") == Duration(INT64_MAX));
}

TEST_CASE("socket addresses that are accepted", "[values]") {
    auto [text, host, port] = GENERATE(table<const char*, const char*, uint16_t>({
        {"0.0.0.0:8080", "0.0.0.0", 8080},
        {"127.0.0.1:80", "127.0.0.1", 80},
        {"255.255.255.255:65535", "255.255.255.255", 65535},
        {"10.1.2.3:1", "10.1.2.3", 1},
        {"localhost:9901", "localhost", 9901},
        {"[::]:8080", "::", 8080},
        {"[::1]:443", "::1", 443},
        {"[fd00::12:3]:15001", "fd00::12:3", 15001},
        {"[::ffff:10.0.0.1]:80", "::ffff:10.0.0.1", 80},
    }));
    CAPTURE(text);
    auto parsed = parseSocketAddress(text);
    REQUIRE(parsed.has_value());
    CHECK(parsed->host == host);
    CHECK(parsed->port == port);
}

TEST_CASE("socket addresses that are rejected", "[values]") {
    auto text =
        GENERATE(as<std::string>{}, "", ":80", "0.0.0.0", "0.0.0.0:", "0.0.0.0:0", "0.0.0.0:65536",
                 "0.0.0.0:99999999999", "0.0.0.0:http", "0.0.0.0:-1", "0.0.0.0:+80", "0.0.0.0:080",
                 "0.0.0.0: 80", "example.com:80", "LOCALHOST:80", "1.2.3:80", "1.2.3.4.5:80",
                 "1.2.3.256:80", "01.2.3.4:80", "1.2.3.4 :80", "::1:80", "[::1:80", "[::1]80",
                 "[::1]", "[]:80", "[1.2.3.4]:80", "[fe80::1%eth0]:80", "[::g]:80");
    CAPTURE(text);
    CHECK_FALSE(parseSocketAddress(text).has_value());
}

TEST_CASE("socket addresses print as they are written", "[values]") {
    CHECK(SocketAddress{"0.0.0.0", 8080}.toString() == "0.0.0.0:8080");
    CHECK(SocketAddress{"localhost", 1}.toString() == "localhost:1");
    CHECK(SocketAddress{"::1", 443}.toString() == "[::1]:443");
    CHECK(SocketAddress{"::", 8080}.ipv6());
    CHECK_FALSE(SocketAddress{"10.0.0.1", 80}.ipv6());
    CHECK(parseSocketAddress("[fd00::1]:53")->toString() == "[fd00::1]:53");
}

TEST_CASE("errors print as file:line:col: message", "[values]") {
    CHECK(Error{"sidecar.yaml", {3, 13}, "bad"}.toString() == "sidecar.yaml:3:13: bad");
    CHECK(Error{"sidecar.yaml", {}, "cannot open"}.toString() == "sidecar.yaml: cannot open");
    CHECK(Error{"", {2, 1}, "bad"}.toString() == "2:1: bad");
    CHECK(Error{"", {}, "bad"}.toString() == "bad");
}
