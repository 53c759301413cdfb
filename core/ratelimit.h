#pragma once
// Token buckets and a bounded table of per-client buckets. Pure logic: the time is a parameter
// (milliseconds on a monotonic clock), so the arithmetic is exact and testable without a loop.
//
// A bucket refills `count` tokens every `period_ms` up to `burst`. Tokens are kept as integers in
// units of 1/period_ms of a token, so refill never rounds: a bucket that admits 100/s admits
// exactly one more every 10 ms. A clock that goes backwards refills nothing; one that jumps far
// ahead fills the bucket.

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.h"

namespace sidecar::core {

// count tokens per period_ms, at most burst (>= 1) held; count 0 = no limit.
using Rate = config::RateLimit;

class TokenBucket {
public:
    TokenBucket() = default;
    // Starts full at `now_ms`.
    TokenBucket(const Rate& rate, uint64_t now_ms);

    // Takes one token if there is one.
    bool take(const Rate& rate, uint64_t now_ms);
    // Milliseconds until one token is available (0 when one is).
    uint64_t waitMs(const Rate& rate, uint64_t now_ms);
    // Whole tokens available now (for tests and metrics).
    uint64_t available(const Rate& rate, uint64_t now_ms);

private:
    void refill(const Rate& rate, uint64_t now_ms);

    uint64_t units_ = 0;  // tokens x period_ms
    uint64_t last_ms_ = 0;
};

// Seconds for a Retry-After header: a wait in milliseconds rounded up, at least 1.
uint32_t retryAfterSeconds(uint64_t wait_ms);

// Per-client state keyed by a string (an IP address, or a header's value), bounded in size: when
// full, a new key evicts the least recently used one. Each lookup is O(1) on average.
class ClientTable {
public:
    struct Entry {
        TokenBucket bucket;
        uint32_t active = 0;  // open connections of this client
    };

    explicit ClientTable(size_t max_entries) : max_entries_(max_entries ? max_entries : 1) {}
    ClientTable(const ClientTable&) = delete;
    ClientTable& operator=(const ClientTable&) = delete;

    // The entry for `key`, created (bucket full at `now_ms`) if absent; marks it most recent.
    Entry& touch(std::string_view key, const Rate& rate, uint64_t now_ms);
    // The entry for `key` if present, without changing its recency.
    Entry* find(std::string_view key);

    size_t size() const { return index_.size(); }
    size_t maxEntries() const { return max_entries_; }
    uint64_t evictions() const { return evictions_; }

private:
    struct Node {
        std::string key;
        Entry entry;
    };
    using Order = std::list<Node>;  // front = most recently used

    size_t max_entries_;
    Order order_;
    std::unordered_map<std::string_view, Order::iterator> index_;  // views into order_'s keys
    uint64_t evictions_ = 0;
};

// Slots of work in flight, with a bounded first-come-first-served queue of waiters. Waiters are
// opaque non-zero ids. The limits are passed in with each call (a reload changes them at once:
// a larger max grants waiters on the next release or grant() call).
class ConcurrencyGate {
public:
    enum class Result : uint8_t { Acquired, Queued, Refused };
    Result acquire(uint32_t max, uint32_t queue_max, uintptr_t id);
    // A holder is done with its slot.
    void release();
    // The oldest waiter, now holding a slot, if the limit allows one more; 0 when none.
    uintptr_t grant(uint32_t max);
    // A waiter gives up; false if it was not waiting.
    bool cancel(uintptr_t id);

    uint32_t inUse() const { return in_use_; }
    size_t waiting() const { return waiting_.size(); }

private:
    uint32_t in_use_ = 0;
    std::list<uintptr_t> waiting_;
};

// The limits of one listener checked at accept and per HTTP request, with their state. It
// outlives config reloads: the limits are passed in with each call, so a reload applies new rates
// at once and buckets keep their tokens (a table whose size changes starts empty).
class ListenerLimiter {
public:
    enum class Refusal : uint8_t { None, ConnectionRate, ClientConnections, ClientConnectionRate };
    static const char* reasonName(Refusal r);

    // A new connection from `client`. Admitted with *counted set when the client's open
    // connections are being counted: releaseConnection must then follow once.
    Refusal admitConnection(const config::Limits& limits, std::string_view client, uint64_t now_ms,
                            bool* counted);
    void releaseConnection(std::string_view client);
    // A request under rule `index` of limits.request_rate, keyed by `key` (ignored for a
    // per-listener rule): 0 if admitted, otherwise the milliseconds until it would be. Each rule
    // has its own buckets, kept across reloads by position.
    uint64_t admitRequest(const config::RequestRate& limit, size_t index, std::string_view key,
                          uint64_t now_ms);
    // Requests in flight to the app (limits.upstream_concurrency). The limits in force are the
    // listener's current ones: set when a configuration is applied, read by every connection.
    ConcurrencyGate& upstream() { return upstream_; }
    const config::UpstreamConcurrency& upstreamCap() const { return upstream_cap_; }
    void setUpstreamCap(const config::UpstreamConcurrency& cap) { upstream_cap_ = cap; }

private:
    static ClientTable& table(std::unique_ptr<ClientTable>& t, uint32_t size);

    bool connection_bucket_set_ = false;
    TokenBucket connection_bucket_;
    struct RuleState {
        bool bucket_set = false;
        TokenBucket bucket;  // key: listener
        std::unique_ptr<ClientTable> keys;
    };
    std::unique_ptr<ClientTable> clients_;
    std::vector<RuleState> request_rules_;
    ConcurrencyGate upstream_;
    config::UpstreamConcurrency upstream_cap_;
};

}  // namespace sidecar::core
