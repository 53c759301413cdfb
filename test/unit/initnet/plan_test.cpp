#include "initnet/plan.h"

#include <catch2/catch_test_macros.hpp>

#include "test_configs.h"

namespace sidecar::initnet {
namespace {

using test::makeInbound;
using test::makeListener;
using test::walkthroughConfig;

bool anyContains(const std::vector<std::string>& lines, const std::string& needle) {
    for (const std::string& line : lines) {
        if (line.find(needle) != std::string::npos) return true;
    }
    return false;
}

TEST_CASE("the redirect target is the listener's own port", "[initnet][plan]") {
    config::Config cfg = walkthroughConfig();
    cfg.listeners[0].listen.port = 9443;
    const PlanResult result = buildPlan(cfg);
    REQUIRE(result.plan);
    REQUIRE(result.plan->redirects.size() == 1);
    const PortRedirect& redirect = result.plan->redirects[0];
    CHECK(redirect.port == 80);
    CHECK(redirect.to_port == 9443);
    CHECK(redirect.listener == "web");
    CHECK(redirect.listener_address == "0.0.0.0:9443");
    CHECK_FALSE(redirect.listener_accepts_ipv6);
    CHECK(result.plan->warnings.empty());
}

TEST_CASE("a listener on [::] accepts IPv6", "[initnet][plan]") {
    config::Config cfg = walkthroughConfig();
    cfg.listeners[0].listen = {"::", 8080};
    const PlanResult result = buildPlan(cfg);
    REQUIRE(result.plan);
    CHECK(result.plan->redirects[0].listener_accepts_ipv6);
    CHECK(result.plan->redirects[0].listener_address == "[::]:8080");
}

TEST_CASE("the admin port is always excluded while admin is enabled", "[initnet][plan]") {
    config::Config cfg = walkthroughConfig();
    cfg.redirect.exclude_ports = {22, 9901, 22};
    PlanResult result = buildPlan(cfg);
    REQUIRE(result.plan);
    const auto& excluded = result.plan->excluded_ports;
    REQUIRE(excluded.size() == 2);  // no repeats, admin first
    CHECK(excluded[0].port == 9901);
    CHECK(excluded[0].reason == ExclusionReason::AdminPort);
    CHECK(excluded[1].port == 22);
    CHECK(excluded[1].reason == ExclusionReason::Configured);

    cfg.admin.enabled = false;
    result = buildPlan(cfg);
    REQUIRE(result.plan);
    REQUIRE(result.plan->excluded_ports.size() == 2);
    CHECK(result.plan->excluded_ports[0].port == 22);
    CHECK(result.plan->excluded_ports[1].port == 9901);
    CHECK(result.plan->excluded_ports[1].reason == ExclusionReason::Configured);
}

TEST_CASE("excluded CIDRs are split by family", "[initnet][plan]") {
    config::Config cfg = walkthroughConfig();
    cfg.redirect.exclude_cidrs = {"10.0.0.0/8", "fd00::/8", "192.168.1.7", "::1"};
    const PlanResult result = buildPlan(cfg);
    REQUIRE(result.plan);
    CHECK(result.plan->excluded_sources_v4 ==
          std::vector<std::string>{"10.0.0.0/8", "192.168.1.7"});
    CHECK(result.plan->excluded_sources_v6 == std::vector<std::string>{"fd00::/8", "::1"});

    cfg.redirect.ipv6 = false;
    const PlanResult v4_only = buildPlan(cfg);
    REQUIRE(v4_only.plan);
    CHECK_FALSE(v4_only.plan->ipv6);
    CHECK(anyContains(v4_only.plan->warnings, "IPv6 entries"));
}

TEST_CASE("plan errors name the config position", "[initnet][plan]") {
    config::Config cfg = walkthroughConfig();
    cfg.redirect.inbound.push_back(makeInbound(81, "nope", 23));
    cfg.redirect.inbound.push_back(makeInbound(80, "web", 25));
    cfg.redirect.inbound.push_back(makeInbound(0, "web", 27));
    cfg.redirect.exclude_cidrs = {"10.0.0.0/33", "not-a-cidr", "fd00::/129", "10.0.0.0/",
                                  "10.0.0.0/8x"};
    cfg.redirect.interfaces = {"eth0", "this-name-is-too-long", "a b"};
    const PlanResult result = buildPlan(cfg);
    CHECK_FALSE(result.plan);
    const auto& errors = result.errors;
    CHECK(anyContains(errors,
                      "sidecar.yaml:23:7: redirect.inbound: port 81 names listener \"nope\""));
    CHECK(anyContains(errors, "sidecar.yaml:25:7: redirect.inbound: port 80 is redirected twice"));
    CHECK(anyContains(errors, "sidecar.yaml:27:7: redirect.inbound: port 0"));
    for (const char* cidr :
         {"10.0.0.0/33", "not-a-cidr", "fd00::/129", "10.0.0.0/", "10.0.0.0/8x"}) {
        CHECK(anyContains(errors, std::string("\"") + cidr + "\" is not an IPv4 or IPv6 CIDR"));
    }
    CHECK(anyContains(errors, "\"this-name-is-too-long\" is not a valid interface name"));
    CHECK(anyContains(errors, "\"a b\" is not a valid interface name"));
    CHECK(errors.size() == 10);
}

TEST_CASE("plan warnings for rules that cannot work", "[initnet][plan]") {
    config::Config cfg = walkthroughConfig();
    cfg.listeners.push_back(makeListener("local", "127.0.0.1", 7000));
    cfg.redirect.inbound.push_back(makeInbound(7001, "local"));
    cfg.redirect.inbound.push_back(makeInbound(9901, "web"));
    cfg.redirect.interfaces = {"lo"};
    const PlanResult result = buildPlan(cfg);
    REQUIRE(result.plan);
    const auto& warnings = result.plan->warnings;
    CHECK(anyContains(warnings, "listens on 127.0.0.1:7000 (loopback only)"));
    CHECK(anyContains(warnings, "port 9901 is both redirected and excluded"));
    CHECK(anyContains(warnings, "lists \"lo\""));
}

TEST_CASE("an empty redirect section gives an empty plan", "[initnet][plan]") {
    config::Config cfg;
    cfg.redirect.ipv6 = false;
    const PlanResult result = buildPlan(cfg);
    REQUIRE(result.plan);
    CHECK(result.plan->redirects.empty());
    CHECK(result.plan->excluded_ports.size() == 1);  // the admin port of the defaults
    CHECK(anyContains(result.plan->warnings, "redirect.inbound is empty"));
}

}  // namespace
}  // namespace sidecar::initnet
