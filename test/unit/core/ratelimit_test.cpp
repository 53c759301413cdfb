// Token buckets and the per-client table with an injected clock: exact refill arithmetic,
// bursts, clock jumps, Retry-After rounding, LRU eviction and the table's bound.

#include "core/ratelimit.h"

#include <catch2/catch_test_macros.hpp>

#include <string>

using sidecar::core::ClientTable;
using sidecar::core::Rate;
using sidecar::core::retryAfterSeconds;
using sidecar::core::TokenBucket;

namespace {
Rate perSecond(uint32_t count, uint32_t burst) { return Rate{count, 1000, burst}; }
}  // namespace

TEST_CASE("a full bucket admits exactly its burst, then refuses", "[ratelimit]") {
    const Rate r = perSecond(10, 5);
    TokenBucket b(r, 1000);
    for (int i = 0; i < 5; ++i) CHECK(b.take(r, 1000));
    CHECK_FALSE(b.take(r, 1000));
    CHECK(b.available(r, 1000) == 0);
}

TEST_CASE("refill is exact: 10/s gives one token every 100 ms", "[ratelimit]") {
    const Rate r = perSecond(10, 1);
    TokenBucket b(r, 0);
    REQUIRE(b.take(r, 0));
    CHECK(b.waitMs(r, 0) == 100);
    CHECK_FALSE(b.take(r, 99));
    CHECK(b.waitMs(r, 99) == 1);
    CHECK(b.take(r, 100));
    CHECK_FALSE(b.take(r, 100));
    // Fractions accumulate across calls: 40 + 40 + 20 ms make one token.
    CHECK_FALSE(b.take(r, 140));
    CHECK_FALSE(b.take(r, 180));
    CHECK(b.take(r, 200));
    CHECK(b.waitMs(r, 200) == 100);

    const Rate two = perSecond(10, 2);
    TokenBucket c(two, 0);
    REQUIRE(c.take(two, 0));
    REQUIRE(c.take(two, 0));
    CHECK_FALSE(c.take(two, 60));
    CHECK(c.take(two, 160));  // 160 ms: one token and 60 ms toward the next
    CHECK(c.waitMs(two, 160) == 40);
}

TEST_CASE("rates per minute and below one per period refill in whole milliseconds",
          "[ratelimit]") {
    const Rate r{3, 60000, 1};  // 3/m: one every 20 s
    TokenBucket b(r, 0);
    REQUIRE(b.take(r, 0));
    CHECK(b.waitMs(r, 0) == 20000);
    CHECK_FALSE(b.take(r, 19999));
    CHECK(b.take(r, 20000));

    const Rate odd{3, 1000, 1};  // 333.33 ms per token: waits round up
    TokenBucket c(odd, 0);
    REQUIRE(c.take(odd, 0));
    CHECK(c.waitMs(odd, 0) == 334);
    CHECK_FALSE(c.take(odd, 333));
    CHECK(c.take(odd, 334));
}

TEST_CASE("refill never exceeds the burst", "[ratelimit]") {
    const Rate r = perSecond(100, 3);
    TokenBucket b(r, 0);
    for (int i = 0; i < 3; ++i) REQUIRE(b.take(r, 0));
    CHECK(b.available(r, 10'000) == 3);
    for (int i = 0; i < 3; ++i) CHECK(b.take(r, 10'000));
    CHECK_FALSE(b.take(r, 10'000));
}

TEST_CASE("clock jumps: backwards refills nothing, far forwards fills without overflow",
          "[ratelimit]") {
    const Rate r{4'000'000'000u, 3'600'000, 1'000'000};
    TokenBucket b(r, 5000);
    for (int i = 0; i < 1000; ++i) REQUIRE(b.take(r, 5000));
    CHECK(b.available(r, 1000) == 999'000);  // earlier time: nothing added
    CHECK(b.available(r, 5000) == 999'000);  // and the bucket's clock did not move back
    CHECK(b.available(r, ~uint64_t(0)) == 1'000'000);

    const Rate slow = perSecond(1, 2);
    TokenBucket s(slow, 1000);
    REQUIRE(s.take(slow, 1000));
    REQUIRE(s.take(slow, 1000));
    CHECK_FALSE(s.take(slow, 500));
    CHECK_FALSE(s.take(slow, 1999));  // the jump back did not restart the refill
    CHECK(s.take(slow, 2000));
}

TEST_CASE("Retry-After is the wait rounded up to whole seconds, at least one",
          "[ratelimit]") {
    CHECK(retryAfterSeconds(0) == 1);
    CHECK(retryAfterSeconds(1) == 1);
    CHECK(retryAfterSeconds(1000) == 1);
    CHECK(retryAfterSeconds(1001) == 2);
    CHECK(retryAfterSeconds(20000) == 20);
}

TEST_CASE("client table: one bucket per key, kept apart", "[ratelimit][table]") {
    const Rate r = perSecond(1, 1);
    ClientTable t(10);
    CHECK(t.touch("127.0.0.1", r, 0).bucket.take(r, 0));
    CHECK_FALSE(t.touch("127.0.0.1", r, 0).bucket.take(r, 0));
    CHECK(t.touch("127.0.0.2", r, 0).bucket.take(r, 0));
    CHECK(t.size() == 2);
    t.touch("127.0.0.1", r, 0).active += 2;
    REQUIRE(t.find("127.0.0.1") != nullptr);
    CHECK(t.find("127.0.0.1")->active == 2);
    CHECK(t.find("10.0.0.1") == nullptr);
}

TEST_CASE("client table: bounded, evicts the least recently used", "[ratelimit][table]") {
    const Rate r = perSecond(1, 1);
    ClientTable t(3);
    t.touch("a", r, 0).active = 1;
    t.touch("b", r, 0).active = 2;
    t.touch("c", r, 0).active = 3;
    t.touch("a", r, 0);  // a is now the most recent; b the least
    t.touch("d", r, 0);
    CHECK(t.size() == 3);
    CHECK(t.evictions() == 1);
    CHECK(t.find("b") == nullptr);
    REQUIRE(t.find("a") != nullptr);
    CHECK(t.find("a")->active == 1);
    CHECK(t.find("c")->active == 3);
    CHECK(t.find("d")->active == 0);  // a new entry starts clean

    // find() does not refresh: c stays least recent and goes next.
    t.find("c");
    t.touch("e", r, 0);
    CHECK(t.find("c") == nullptr);
    CHECK(t.find("a") != nullptr);
}

TEST_CASE("client table: many distinct keys never grow it past its bound", "[ratelimit][table]") {
    const Rate r = perSecond(1, 1);
    ClientTable t(100);
    for (int i = 0; i < 100'000; ++i) {
        auto& e = t.touch("10." + std::to_string(i >> 16) + "." + std::to_string((i >> 8) & 255) +
                              "." + std::to_string(i & 255),
                          r, uint64_t(i));
        REQUIRE(e.bucket.take(r, uint64_t(i)));  // a fresh key starts with a full bucket
        REQUIRE(t.size() <= 100);
    }
    CHECK(t.size() == 100);
    CHECK(t.evictions() == 100'000 - 100);
    // The last 100 keys survive, with their drained buckets.
    auto* last = t.find("10.1.134.159");  // 99'999
    REQUIRE(last != nullptr);
    CHECK_FALSE(last->bucket.take(r, 99'999));
}

TEST_CASE("client table: an evicted key comes back with a full bucket", "[ratelimit][table]") {
    const Rate r = perSecond(1, 2);
    ClientTable t(1);
    auto& a = t.touch("a", r, 0);
    REQUIRE(a.bucket.take(r, 0));
    REQUIRE(a.bucket.take(r, 0));
    CHECK_FALSE(t.touch("a", r, 0).bucket.take(r, 0));
    t.touch("b", r, 0);
    CHECK(t.touch("a", r, 0).bucket.available(r, 0) == 2);
}

TEST_CASE("the concurrency gate admits max holders, queues in order, refuses past the queue",
          "[ratelimit][gate]") {
    using sidecar::core::ConcurrencyGate;
    ConcurrencyGate g;
    CHECK(g.acquire(2, 2, 1) == ConcurrencyGate::Result::Acquired);
    CHECK(g.acquire(2, 2, 2) == ConcurrencyGate::Result::Acquired);
    CHECK(g.acquire(2, 2, 3) == ConcurrencyGate::Result::Queued);
    CHECK(g.acquire(2, 2, 4) == ConcurrencyGate::Result::Queued);
    CHECK(g.acquire(2, 2, 5) == ConcurrencyGate::Result::Refused);
    CHECK(g.inUse() == 2);
    CHECK(g.waiting() == 2);
    // No slot free: nobody is granted.
    CHECK(g.grant(2) == 0);
    g.release();
    // The oldest waiter gets the slot; the next one waits for another release.
    CHECK(g.grant(2) == 3);
    CHECK(g.grant(2) == 0);
    CHECK(g.inUse() == 2);
    // A waiter that gives up leaves the queue; a second cancel finds nothing.
    CHECK(g.cancel(4));
    CHECK_FALSE(g.cancel(4));
    CHECK(g.waiting() == 0);
    g.release();
    CHECK(g.grant(2) == 0);
    CHECK(g.inUse() == 1);
}

TEST_CASE("the concurrency gate lets nobody overtake a waiter, and follows a new max",
          "[ratelimit][gate]") {
    using sidecar::core::ConcurrencyGate;
    ConcurrencyGate g;
    REQUIRE(g.acquire(1, 10, 1) == ConcurrencyGate::Result::Acquired);
    REQUIRE(g.acquire(1, 10, 2) == ConcurrencyGate::Result::Queued);
    REQUIRE(g.acquire(1, 10, 3) == ConcurrencyGate::Result::Queued);
    g.release();
    // A slot is free but a waiter is older than a newcomer: the newcomer queues behind it.
    CHECK(g.acquire(1, 10, 4) == ConcurrencyGate::Result::Queued);
    CHECK(g.grant(1) == 2);
    // A reload raises max to 3: the next two waiters go in at once.
    CHECK(g.grant(3) == 3);
    CHECK(g.grant(3) == 4);
    CHECK(g.grant(3) == 0);
    CHECK(g.inUse() == 3);
    // With no queue at all, a full gate refuses.
    ConcurrencyGate none;
    REQUIRE(none.acquire(1, 0, 1) == ConcurrencyGate::Result::Acquired);
    CHECK(none.acquire(1, 0, 2) == ConcurrencyGate::Result::Refused);
}
