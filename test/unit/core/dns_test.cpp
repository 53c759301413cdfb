// resolv.conf and hosts parsing, TTL clamping, retry delays and the address order of one
// upstream name (pure: the clock is a parameter).

#include "core/dns.h"

#include <catch2/catch_test_macros.hpp>

using namespace sidecar::core::dns;

namespace {

Address ip(const char* text) { return *parseAddress(text); }

std::vector<std::string> names(const std::vector<Address>& addresses) {
    std::vector<std::string> out;
    for (const Address& a : addresses) out.push_back(a.toString());
    return out;
}

using Strings = std::vector<std::string>;

}  // namespace

TEST_CASE("resolv.conf as Kubernetes writes it") {
    const ResolvConf conf = parseResolvConf(
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n");
    CHECK(names(conf.nameservers) == Strings{"10.96.0.10"});
    CHECK(conf.search ==
          Strings{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"});
    CHECK(conf.ndots == 5);
    CHECK(conf.timeout_s == 5);
    CHECK(conf.attempts == 2);
}

TEST_CASE("resolv.conf options, comments, limits and the last search line") {
    const ResolvConf conf = parseResolvConf(
        "# generated\n"
        "domain example.org\n"
        "nameserver 10.0.0.1 ; first\n"
        "nameserver fd00::53\n"
        "nameserver 10.0.0.1\n"   // a duplicate is dropped
        "nameserver not-an-ip\n"  // ignored
        "nameserver 10.0.0.3\n"
        "nameserver 10.0.0.4\n"  // past the third
        "search a.example. b.example\n"
        "options timeout:99 attempts:0 ndots:40 rotate edns0\n");
    CHECK(names(conf.nameservers) == Strings{"10.0.0.1", "fd00::53", "10.0.0.3"});
    CHECK(conf.search == Strings{"a.example", "b.example"});
    CHECK(conf.timeout_s == 30);
    CHECK(conf.attempts == 1);
    CHECK(conf.ndots == 15);
    CHECK(conf.rotate);
}

TEST_CASE("resolv.conf: a later domain line replaces search; nothing means the defaults") {
    CHECK(parseResolvConf("search a b\ndomain c d\n").search == Strings{"c"});
    const ResolvConf empty = parseResolvConf("");
    CHECK(names(empty.nameservers) == Strings{"127.0.0.1"});
    CHECK(empty.search.empty());
    CHECK(empty.ndots == 1);
    CHECK(parseResolvConf("nameserver fe80::1%eth0\n").nameservers == std::vector{ip("127.0.0.1")});
}

TEST_CASE("hosts file lookups") {
    const char* hosts =
        "127.0.0.1 localhost\n"
        "# 10.0.0.9 db.internal\n"
        "10.0.0.1\tdb.internal db\n"
        "fd00::1 db.internal\n"
        "10.0.0.1 DB.Internal\n"  // same address again
        "10.0.0.2 other db.internal.extra\n";
    CHECK(names(lookupHosts(hosts, "db.internal")) == Strings{"10.0.0.1", "fd00::1"});
    CHECK(names(lookupHosts(hosts, "DB.INTERNAL.")) == Strings{"10.0.0.1", "fd00::1"});
    CHECK(names(lookupHosts(hosts, "db")) == Strings{"10.0.0.1"});
    CHECK(lookupHosts(hosts, "missing").empty());
    CHECK(lookupHosts(hosts, "db.internal.ex").empty());
}

TEST_CASE("TTLs are clamped; retries back off up to a bound") {
    Policy p;
    p.min_ttl_ms = 5000;
    p.max_ttl_ms = 300000;
    CHECK(clampTtl(0, p) == 5000);
    CHECK(clampTtl(-1, p) == 5000);
    CHECK(clampTtl(30, p) == 30000);
    CHECK(clampTtl(86400, p) == 300000);
    CHECK(retryDelay(1, p) == 5000);
    CHECK(retryDelay(2, p) == 10000);
    CHECK(retryDelay(3, p) == 20000);
    CHECK(retryDelay(4, p) == kMaxRetryMs);
    CHECK(retryDelay(100, p) == kMaxRetryMs);
    p.max_ttl_ms = 8000;
    CHECK(retryDelay(5, p) == 8000);
}

TEST_CASE("a name: pending, resolved, then stale while resolution fails") {
    Policy p;
    p.min_ttl_ms = 1000;
    p.max_ttl_ms = 60000;
    NameState name;
    CHECK(name.health() == NameState::Health::Pending);
    CHECK(name.candidates(0, p).empty());

    CHECK(name.failed("not found", 0, p));  // Pending -> Failing: log once
    CHECK(name.refreshAt() == 1000);
    CHECK_FALSE(name.failed("not found", 1000, p));  // no change: no new log line
    CHECK(name.refreshAt() == 3000);
    CHECK(name.addresses().empty());

    CHECK(name.resolved({ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.1")}, 30, 5000, p));
    CHECK(name.previousHealth() == NameState::Health::Failing);
    CHECK(names(name.addresses()) == Strings{"10.0.0.1", "10.0.0.2"});
    CHECK(name.refreshAt() == 35000);
    CHECK(name.consecutiveFailures() == 0);

    CHECK(name.failed("timeout", 35000, p));
    CHECK(name.health() == NameState::Health::Failing);
    CHECK(names(name.addresses()) == Strings{"10.0.0.1", "10.0.0.2"});  // stale-while-error
    CHECK(names(name.candidates(35000, p)) == Strings{"10.0.0.1", "10.0.0.2"});
    CHECK(name.lastError() == "timeout");
}

TEST_CASE("a new order of the same addresses is taken but is no change") {
    Policy p;
    NameState name;
    CHECK(name.resolved({ip("10.0.0.1"), ip("10.0.0.2")}, 30, 0, p));
    CHECK_FALSE(name.resolved({ip("10.0.0.2"), ip("10.0.0.1")}, 30, 1, p));
    CHECK(names(name.addresses()) == Strings{"10.0.0.2", "10.0.0.1"});
    CHECK(name.resolved({ip("10.0.0.2"), ip("10.0.0.3")}, 30, 2, p));
}

TEST_CASE("an address that failed is tried last for the back-off, then in order again") {
    Policy p;
    p.failure_backoff_ms = 5000;
    NameState name;
    name.resolved({ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")}, 30, 0, p);
    name.connectFailed(ip("10.0.0.1"), 100);
    CHECK(names(name.candidates(200, p)) == Strings{"10.0.0.2", "10.0.0.3", "10.0.0.1"});
    name.connectFailed(ip("10.0.0.2"), 300);
    // Both backing off: the one that failed longest ago first.
    CHECK(names(name.candidates(400, p)) == Strings{"10.0.0.3", "10.0.0.1", "10.0.0.2"});
    CHECK(names(name.candidates(5100, p)) == Strings{"10.0.0.1", "10.0.0.3", "10.0.0.2"});
    CHECK(names(name.candidates(5300, p)) == Strings{"10.0.0.1", "10.0.0.2", "10.0.0.3"});

    // A failure mark survives a re-resolution that keeps the address; a success clears it.
    name.connectFailed(ip("10.0.0.3"), 6000);
    name.resolved({ip("10.0.0.3"), ip("10.0.0.4")}, 30, 6100, p);
    CHECK(names(name.candidates(6200, p)) == Strings{"10.0.0.4", "10.0.0.3"});
    name.connectSucceeded(ip("10.0.0.3"));
    CHECK(names(name.candidates(6200, p)) == Strings{"10.0.0.3", "10.0.0.4"});
    name.connectFailed(ip("192.0.2.1"), 6300);  // not one of its addresses: nothing to mark
    CHECK(names(name.candidates(6300, p)) == Strings{"10.0.0.3", "10.0.0.4"});
}
