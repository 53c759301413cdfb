#include "config/values.h"

#include <arpa/inet.h>

#include <algorithm>
#include <vector>

namespace sidecar::config {

std::string Error::toString() const {
    std::string out = file;
    if (mark.line > 0) {
        if (!out.empty()) out += ':';
        out += std::to_string(mark.line) + ':' + std::to_string(mark.column);
    }
    if (out.empty()) return message;
    return out + ": " + message;
}

std::string SocketAddress::toString() const {
    if (ipv6()) return '[' + host + "]:" + std::to_string(port);
    return host + ':' + std::to_string(port);
}

std::optional<Duration> parseDuration(const std::string& text) {
    std::string reason;
    return detail::parseDuration(text, reason);
}

std::optional<SocketAddress> parseSocketAddress(const std::string& text, bool allowName) {
    std::string reason;
    return detail::parseSocketAddress(text, reason, allowName);
}

bool SocketAddress::isName() const { return host != "localhost" && !detail::parseIp(host); }

namespace detail {
namespace {

bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isAlnum(char c) { return isDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

}  // namespace

bool allDigits(std::string_view text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), isDigit);
}

namespace {

// Decimal digits without a superfluous leading zero, at most maxDigits of them.
std::optional<uint64_t> parseDecimal(std::string_view text, size_t maxDigits) {
    if (!allDigits(text) || text.size() > maxDigits) return std::nullopt;
    if (text.size() > 1 && text[0] == '0') return std::nullopt;
    uint64_t value = 0;
    for (char c : text) value = value * 10 + static_cast<uint64_t>(c - '0');
    return value;
}

std::optional<IpAddress> parseIpv4(std::string_view text) {
    IpAddress ip;
    ip.family = 4;
    for (int i = 0; i < 4; ++i) {
        size_t dot = text.find('.');
        if ((i < 3) != (dot != std::string_view::npos)) return std::nullopt;
        auto octet = parseDecimal(text.substr(0, dot), 3);
        if (!octet || *octet > 255) return std::nullopt;
        ip.bytes[i] = static_cast<uint8_t>(*octet);
        text = dot == std::string_view::npos ? std::string_view{} : text.substr(dot + 1);
    }
    return ip;
}

std::optional<IpAddress> parseIpv6(std::string_view text) {
    // inet_pton accepts exactly the RFC 4291 text forms and needs a terminated string.
    if (text.empty() || text.size() > 45) return std::nullopt;
    std::string copy(text);
    IpAddress ip;
    ip.family = 6;
    if (inet_pton(AF_INET6, copy.c_str(), ip.bytes.data()) != 1) return std::nullopt;
    return ip;
}

std::string formatIp(const IpAddress& ip) {
    char buffer[INET6_ADDRSTRLEN] = {};
    inet_ntop(ip.family == 4 ? AF_INET : AF_INET6, ip.bytes.data(), buffer, sizeof buffer);
    return buffer;
}

// A DNS name to resolve, optionally fully qualified ("db.example.com."). Dotted digits are a
// mistyped IPv4 address, not a name.
bool isHostName(std::string_view host) {
    if (host.ends_with('.')) host.remove_suffix(1);
    if (!isDnsName(host, false)) return false;
    return !std::all_of(host.begin(), host.end(), [](char c) { return isDigit(c) || c == '.'; });
}

std::optional<uint16_t> parsePort(std::string_view text, std::string& reason) {
    if (text.empty()) {
        reason = "the port is missing";
        return std::nullopt;
    }
    if (!allDigits(text)) {
        reason = "the port " + quote(std::string(text)) + " is not a number";
        return std::nullopt;
    }
    auto value = parseDecimal(text, 5);
    if (!value || *value < 1 || *value > 65535) {
        reason = "the port must be a number from 1 to 65535";
        return std::nullopt;
    }
    return static_cast<uint16_t>(*value);
}

bool mul(int64_t a, int64_t b, int64_t& out) { return !__builtin_mul_overflow(a, b, &out); }
bool add(int64_t a, int64_t b, int64_t& out) { return !__builtin_add_overflow(a, b, &out); }

// Addresses a listening socket on `host` receives connections for.
struct Coverage {
    bool allIpv4 = false;
    bool allIpv6 = false;
    std::vector<IpAddress> addresses;
    bool hasFamily(int family) const {
        return std::any_of(addresses.begin(), addresses.end(),
                           [family](const IpAddress& ip) { return ip.family == family; });
    }
};

Coverage coverageOf(const std::string& host) {
    Coverage coverage;
    if (host == "localhost") {
        coverage.addresses = {*parseIpv4("127.0.0.1"), *parseIpv6("::1")};
        return coverage;
    }
    auto ip = parseIp(host);
    if (!ip) return coverage;
    const IpAddress zero4{4, {}};
    const IpAddress zero6{6, {}};
    if (*ip == zero4) {
        coverage.allIpv4 = true;
    } else if (*ip == zero6) {
        coverage.allIpv4 = true;
        coverage.allIpv6 = true;
    } else {
        coverage.addresses.push_back(*ip);
        // ::ffff:a.b.c.d is the IPv4 address a.b.c.d seen through an IPv6 socket.
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (ip->family == 6 && std::equal(mapped, mapped + 12, ip->bytes.begin())) {
            IpAddress v4{4, {}};
            std::copy(ip->bytes.begin() + 12, ip->bytes.end(), v4.bytes.begin());
            coverage.addresses.push_back(v4);
        }
    }
    return coverage;
}

bool covers(const Coverage& wide, const Coverage& other) {
    bool other4 = other.allIpv4 || other.hasFamily(4);
    bool other6 = other.allIpv6 || other.hasFamily(6);
    return (wide.allIpv4 && other4) || (wide.allIpv6 && other6);
}

}  // namespace

std::string quote(std::string_view text) {
    constexpr size_t kMax = 80;
    if (text.size() <= kMax) return '"' + std::string(text) + '"';
    return '"' + std::string(text.substr(0, kMax - 3)) + "...\"";
}

std::optional<IpAddress> parseIp(std::string_view text) {
    if (text.find(':') != std::string_view::npos) return parseIpv6(text);
    return parseIpv4(text);
}

std::optional<Duration> parseDuration(std::string_view text, std::string& reason) {
    static const std::string kExpected =
        "expected a number and a unit (ms, s, m or h), such as \"10s\", \"250ms\" or \"1.5m\"";
    reason.clear();
    if (text == "0") return Duration::zero();
    if (!text.empty() && text[0] == '-') {
        reason = "a duration cannot be negative";
        return std::nullopt;
    }
    if (text.empty() || !isDigit(text[0])) {
        reason = kExpected;
        return std::nullopt;
    }
    // One or more <number><unit> parts, as in "1h30m"; the sum must be whole milliseconds.
    int64_t total = 0;
    size_t i = 0;
    while (i < text.size()) {
        size_t start = i;
        while (i < text.size() && isDigit(text[i])) ++i;
        std::string_view whole = text.substr(start, i - start);
        std::string_view fraction;
        if (i < text.size() && text[i] == '.') {
            size_t fractionStart = ++i;
            while (i < text.size() && isDigit(text[i])) ++i;
            fraction = text.substr(fractionStart, i - fractionStart);
            if (fraction.empty()) {
                reason = kExpected;
                return std::nullopt;
            }
        }
        if (whole.empty()) {
            reason = kExpected;
            return std::nullopt;
        }
        int64_t unit = 0;
        std::string_view rest = text.substr(i);
        if (rest.starts_with("ms")) {
            unit = 1;
            i += 2;
        } else if (rest.starts_with("s")) {
            unit = 1000;
            i += 1;
        } else if (rest.starts_with("m")) {
            unit = 60 * 1000;
            i += 1;
        } else if (rest.starts_with("h")) {
            unit = 60 * 60 * 1000;
            i += 1;
        } else {
            reason = rest.empty() ? "the unit is missing (ms, s, m or h), as in " +
                                        quote(std::string(text) + "s")
                                  : kExpected;
            return std::nullopt;
        }
        int64_t value = 0;
        for (char c : whole) {
            if (!mul(value, 10, value) || !add(value, c - '0', value)) {
                reason = "the duration is too large";
                return std::nullopt;
            }
        }
        int64_t part = 0;
        if (!mul(value, unit, part)) {
            reason = "the duration is too large";
            return std::nullopt;
        }
        while (!fraction.empty() && fraction.back() == '0') fraction.remove_suffix(1);
        if (!fraction.empty()) {
            // unit <= 3.6e6 and the numerator < 1e12, so the product fits in 63 bits.
            if (fraction.size() > 12) {
                reason = "durations are counted in whole milliseconds";
                return std::nullopt;
            }
            int64_t numerator = 0;
            int64_t denominator = 1;
            for (char c : fraction) {
                numerator = numerator * 10 + (c - '0');
                denominator *= 10;
            }
            numerator *= unit;
            if (numerator % denominator != 0) {
                reason = "durations are counted in whole milliseconds";
                return std::nullopt;
            }
            if (!add(part, numerator / denominator, part)) {
                reason = "the duration is too large";
                return std::nullopt;
            }
        }
        if (!add(total, part, total)) {
            reason = "the duration is too large";
            return std::nullopt;
        }
        if (i < text.size() && !isDigit(text[i])) {
            reason = kExpected;
            return std::nullopt;
        }
    }
    return Duration(total);
}

std::optional<SocketAddress> parseSocketAddress(std::string_view text, std::string& reason,
                                                bool allowName) {
    reason.clear();
    if (text.empty()) {
        reason = "the address is empty";
        return std::nullopt;
    }
    SocketAddress address;
    std::string_view port;
    if (text[0] == '[') {
        size_t close = text.find(']');
        if (close == std::string_view::npos) {
            reason = "the closing ']' is missing";
            return std::nullopt;
        }
        std::string_view host = text.substr(1, close - 1);
        std::string_view rest = text.substr(close + 1);
        if (rest.empty() || rest[0] != ':') {
            reason = "expected :port after the ']'";
            return std::nullopt;
        }
        auto ip = parseIpv6(host);
        if (!ip) {
            reason = quote(std::string(host)) + " is not an IPv6 address";
            return std::nullopt;
        }
        address.host = std::string(host);
        port = rest.substr(1);
    } else {
        size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) {
            reason = "expected host:port, such as 0.0.0.0:8080 or [::]:8080";
            return std::nullopt;
        }
        std::string_view host = text.substr(0, colon);
        if (host.find(':') != std::string_view::npos) {
            reason = "an IPv6 address needs brackets, as in [::1]:8080";
            return std::nullopt;
        }
        if (host.empty()) {
            reason = "the host is missing (0.0.0.0 means every IPv4 address)";
            return std::nullopt;
        }
        if (host != "localhost" && !parseIpv4(host) && !(allowName && isHostName(host))) {
            reason = "the host " + quote(host) +
                     (allowName ? " is not an IP address, localhost or a DNS name"
                                : " is not an IP address or localhost (host names are not "
                                  "resolved)");
            return std::nullopt;
        }
        address.host = std::string(host);
        port = text.substr(colon + 1);
    }
    auto value = parsePort(port, reason);
    if (!value) return std::nullopt;
    address.port = *value;
    return address;
}

bool checkCidr(std::string_view text, std::string& reason) {
    size_t slash = text.find('/');
    if (slash == std::string_view::npos) {
        reason = "expected address/prefix-length, such as 10.0.0.0/8 or fd00::/8";
        return false;
    }
    auto ip = parseIp(text.substr(0, slash));
    if (!ip) {
        reason = quote(std::string(text.substr(0, slash))) + " is not an IP address";
        return false;
    }
    int maxPrefix = ip->family == 4 ? 32 : 128;
    auto prefix = parseDecimal(text.substr(slash + 1), 3);
    if (!prefix || *prefix > static_cast<uint64_t>(maxPrefix)) {
        reason = "the prefix length must be a number from 0 to " + std::to_string(maxPrefix);
        return false;
    }
    IpAddress network = *ip;
    for (int bit = static_cast<int>(*prefix); bit < maxPrefix; ++bit) {
        network.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
    }
    if (!(network == *ip)) {
        reason = "bits are set past the /" + std::to_string(*prefix) + " prefix (did you mean " +
                 formatIp(network) + "/" + std::to_string(*prefix) + "?)";
        return false;
    }
    return true;
}

bool isDnsName(std::string_view text, bool allowWildcard) {
    if (allowWildcard && text.starts_with("*.")) text.remove_prefix(2);
    if (text.empty() || text.size() > 253) return false;
    size_t start = 0;
    while (start <= text.size()) {
        size_t dot = text.find('.', start);
        if (dot == std::string_view::npos) dot = text.size();
        std::string_view label = text.substr(start, dot - start);
        if (label.empty() || label.size() > 63) return false;
        if (label.front() == '-' || label.back() == '-') return false;
        for (char c : label) {
            if (!isAlnum(c) && c != '-' && c != '_') return false;
        }
        start = dot + 1;
    }
    return true;
}

bool isInterfaceName(std::string_view text) {
    if (text.ends_with('+')) text.remove_suffix(1);
    // IFNAMSIZ is 16 including the terminator.
    if (text.empty() || text.size() > 15 || text == "." || text == "..") return false;
    return std::all_of(text.begin(), text.end(),
                       [](char c) { return isAlnum(c) || c == '-' || c == '_' || c == '.'; });
}

bool listenAddressesOverlap(const SocketAddress& a, const SocketAddress& b) {
    if (a.port != b.port) return false;
    if (a.host == b.host) return true;
    Coverage ca = coverageOf(a.host);
    Coverage cb = coverageOf(b.host);
    if (covers(ca, cb) || covers(cb, ca)) return true;
    for (const auto& x : ca.addresses) {
        for (const auto& y : cb.addresses) {
            if (x == y) return true;
        }
    }
    return false;
}

bool isLoopbackHost(const std::string& host) {
    if (host == "localhost") return true;
    for (const auto& ip : coverageOf(host).addresses) {
        if (ip.family == 4 && ip.bytes[0] == 127) return true;
        if (ip.family == 6 && ip == *parseIpv6("::1")) return true;
    }
    return false;
}

}  // namespace detail
}  // namespace sidecar::config
