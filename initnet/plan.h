#pragma once
// The redirect plan: what `sidecar init-net` will capture, as plain data derived from the config.
// Nothing here knows about iptables syntax; render.h turns a plan into rules.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace sidecar::initnet {

// TCP to `port` is redirected to `to_port`, the port its listener listens on. The target port is
// always taken from the listener entry, so the redirect and the listener cannot disagree.
struct PortRedirect {
    uint16_t port = 0;
    uint16_t to_port = 0;
    std::string listener;                // listener name
    std::string listener_address;        // as configured, e.g. "0.0.0.0:8080", "[::]:8080"
    bool listener_accepts_ipv6 = false;  // listens on an IPv6 address ([::] also accepts IPv4)
};

enum class ExclusionReason { AdminPort, Configured };

// Destination port whose traffic is never redirected.
struct PortExclusion {
    uint16_t port = 0;
    ExclusionReason reason = ExclusionReason::Configured;
};

struct RedirectPlan {
    std::vector<PortRedirect> redirects;        // in config order
    std::vector<PortExclusion> excluded_ports;  // admin port first, then config order, no repeats
    std::vector<std::string> excluded_sources_v4;  // source CIDRs, as written
    std::vector<std::string> excluded_sources_v6;
    std::vector<std::string> interfaces;  // empty = traffic arriving on any interface
    bool ipv6 = false;                    // also render ip6tables rules
    // Things that are valid but probably not what the user wants; printed, never fatal.
    std::vector<std::string> warnings;
};

struct PlanResult {
    std::optional<RedirectPlan> plan;  // set when errors is empty
    std::vector<std::string> errors;   // "file:line:col: message" when the position is known
};

// Derives the plan from a config. Checks what the plan itself depends on (listener references,
// ports, CIDR and interface syntax) even though the loader validates too: the rules must never be
// rendered from something iptables would misread.
PlanResult buildPlan(const config::Config& cfg);

}  // namespace sidecar::initnet
