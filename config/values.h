#pragma once
// Parsers and checks for the scalar value formats of the config file: durations, socket
// addresses, IP addresses and CIDRs, DNS names, interface names. Each returns a reason on
// failure so that the loader can say what is wrong, not only that something is.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"

namespace sidecar::config::detail {

struct IpAddress {
    int family = 0;                   // 4 or 6
    std::array<uint8_t, 16> bytes{};  // IPv4 uses the first 4
    bool operator==(const IpAddress&) const = default;
};

// Strict dotted quad ("10.0.0.1"; no leading zeros, no short forms) or an IPv6 literal without
// brackets.
std::optional<IpAddress> parseIp(std::string_view text);

// A value in double quotes for a message, shortened when long.
std::string quote(std::string_view text);

// parseDuration / parseSocketAddress with the reason for a rejection.
std::optional<Duration> parseDuration(std::string_view text, std::string& reason);
std::optional<SocketAddress> parseSocketAddress(std::string_view text, std::string& reason,
                                                bool allowName = false);

// One or more decimal digits and nothing else.
bool allDigits(std::string_view text);

// "10.0.0.0/8", "fd00::/8". The address must have no bits set past the prefix.
bool checkCidr(std::string_view text, std::string& reason);

// A DNS host name ("api.example.com"); with allowWildcard also "*.example.com".
bool isDnsName(std::string_view text, bool allowWildcard);

// A Linux network interface name, optionally ending in the iptables wildcard '+'.
bool isInterfaceName(std::string_view text);

// Whether two listening sockets would compete for the same address: same port, and the same
// host, or one of them a wildcard that covers the other. "[::]" is taken to cover IPv4 too (the
// Linux default, net.ipv6.bindv6only=0) and "localhost" to mean 127.0.0.1 and ::1.
bool listenAddressesOverlap(const SocketAddress& a, const SocketAddress& b);

// True for 127.0.0.0/8, ::1 and "localhost": addresses that traffic redirected from another
// interface never reaches.
bool isLoopbackHost(const std::string& host);

}  // namespace sidecar::config::detail
