#pragma once
// The pure half of upstream name resolution: resolv.conf and hosts-file parsing, TTL clamping,
// and the address list of one upstream name with its per-address failure back-off. No libuv, no
// c-ares, no clock: time is a parameter (milliseconds on any monotonic clock), so all of it is
// tested in memory. core/resolver.h drives it from the loop.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sidecar::core::dns {

// An IPv4 or IPv6 address (no port).
struct Address {
    int family = 0;                   // 4 or 6
    std::array<uint8_t, 16> bytes{};  // IPv4 uses the first 4
    bool operator==(const Address&) const = default;
    std::string toString() const;  // "10.0.0.1", "fd00::1"
};

// Strict IPv4 dotted quad or IPv6 literal (no brackets, no zone).
std::optional<Address> parseAddress(std::string_view text);

// What resolv.conf says, read the way the C library reads it (resolv.conf(5)): up to three
// nameservers, the last search or domain line wins, options ndots:N timeout:N attempts:N rotate.
// Values are capped like the C library caps them. Kubernetes writes exactly these lines.
struct ResolvConf {
    std::vector<Address> nameservers;  // none in the file: 127.0.0.1, as the C library assumes
    std::vector<std::string> search;
    int ndots = 1;      // 0..15
    int timeout_s = 5;  // per try, 1..30
    int attempts = 2;   // 1..5
    bool rotate = false;
};
ResolvConf parseResolvConf(std::string_view text);

// The addresses that hosts-file text gives `name` (case-insensitive; a trailing dot ignored), in
// file order, without duplicates. Empty when the name is not listed.
std::vector<Address> lookupHosts(std::string_view text, std::string_view name);

// How long records are kept and failed addresses are passed over, in milliseconds.
struct Policy {
    uint64_t min_ttl_ms = 5000;
    uint64_t max_ttl_ms = 300000;
    uint64_t failure_backoff_ms = 5000;
};

// A record TTL (seconds, as DNS gives it) in milliseconds, clamped to [min_ttl, max_ttl].
uint64_t clampTtl(int64_t ttl_s, const Policy& policy);
// When to try again after `failures` resolutions in a row have failed (1 = the first): min_ttl,
// doubling, at most max_ttl and at most kMaxRetryMs, so a name that starts to resolve is picked
// up soon and a DNS server that is down is not hammered.
constexpr uint64_t kMaxRetryMs = 30000;
uint64_t retryDelay(uint32_t failures, const Policy& policy);

// One upstream name: the addresses of its last good resolution (kept while later resolutions
// fail: stale-while-error), when to resolve it next, and which addresses failed to connect lately.
class NameState {
public:
    enum class Health : uint8_t { Pending, Resolved, Failing };

    // A resolution answered: `addresses` in answer order, `ttl_s` the smallest record TTL.
    // Returns whether the set of addresses changed (a new order alone is taken, not a change).
    bool resolved(std::vector<Address> addresses, int64_t ttl_s, uint64_t now,
                  const Policy& policy);
    // A resolution failed with `error`; the addresses are kept. Returns whether the health
    // changed (Pending or Resolved to Failing), the one time a failure is worth a log line.
    bool failed(std::string error, uint64_t now, const Policy& policy);

    // The addresses to try for one connection, in order: those not failed within the back-off
    // first, in answer order, then those in back-off, the longest-ago failure first.
    std::vector<Address> candidates(uint64_t now, const Policy& policy) const;
    void connectFailed(const Address& address, uint64_t now);
    void connectSucceeded(const Address& address);

    Health health() const { return health_; }
    // Health before the latest resolution, so a caller can tell Failing -> Resolved.
    Health previousHealth() const { return previous_; }
    const std::vector<Address>& addresses() const { return addresses_; }
    const std::string& lastError() const { return error_; }
    uint64_t refreshAt() const { return refresh_at_; }
    uint32_t consecutiveFailures() const { return failures_; }

private:
    std::vector<Address> addresses_;
    std::vector<std::optional<uint64_t>>
        failed_at_;  // parallel to addresses_: last connect failure
    std::string error_;
    uint64_t refresh_at_ = 0;
    uint32_t failures_ = 0;
    Health health_ = Health::Pending;
    Health previous_ = Health::Pending;
};

const char* healthName(NameState::Health health);

}  // namespace sidecar::core::dns
