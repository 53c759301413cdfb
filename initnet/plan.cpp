#include "initnet/plan.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <set>

namespace sidecar::initnet {
namespace {

std::string position(const config::Config& cfg, const config::Mark& mark) {
    std::string where = cfg.source.empty() ? std::string("config") : cfg.source;
    if (mark.line > 0) {
        where += ":" + std::to_string(mark.line) + ":" + std::to_string(mark.column);
    }
    return where + ": ";
}

std::string formatAddress(const config::SocketAddress& address) {
    std::string host = address.ipv6() ? "[" + address.host + "]" : address.host;
    return host + ":" + std::to_string(address.port);
}

bool isLoopbackHost(const std::string& host) {
    return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

enum class CidrFamily { Invalid, V4, V6 };

// "10.0.0.0/8", "10.1.2.3" (one host), "fd00::/8". The address is not required to be the network
// address: iptables masks it itself.
CidrFamily classifyCidr(const std::string& text) {
    const auto slash = text.find('/');
    const std::string address = text.substr(0, slash);
    const bool v6 = address.find(':') != std::string::npos;
    unsigned char buffer[16];
    if (inet_pton(v6 ? AF_INET6 : AF_INET, address.c_str(), buffer) != 1) {
        return CidrFamily::Invalid;
    }
    if (slash != std::string::npos) {
        const std::string prefix = text.substr(slash + 1);
        unsigned length = 0;
        const auto [end, ec] =
            std::from_chars(prefix.data(), prefix.data() + prefix.size(), length);
        if (prefix.empty() || ec != std::errc() || end != prefix.data() + prefix.size() ||
            length > (v6 ? 128u : 32u)) {
            return CidrFamily::Invalid;
        }
    }
    return v6 ? CidrFamily::V6 : CidrFamily::V4;
}

// Linux interface names: at most 15 bytes, no whitespace or '/'; iptables adds a trailing '+'
// wildcard ("eth+").
bool validInterface(const std::string& name) {
    if (name.empty() || name.size() > 15 || name == "." || name == "..") return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return c > ' ' && c < 127 && c != '/' && c != '"' && c != '\\' && c != '\'';
    });
}

}  // namespace

PlanResult buildPlan(const config::Config& cfg) {
    PlanResult result;
    RedirectPlan plan;
    const config::Redirect& redirect = cfg.redirect;
    const config::Mark no_mark;

    std::set<uint16_t> excluded;
    if (cfg.admin.enabled && cfg.admin.listen.port != 0) {
        plan.excluded_ports.push_back({cfg.admin.listen.port, ExclusionReason::AdminPort});
        excluded.insert(cfg.admin.listen.port);
    }
    for (uint16_t port : redirect.exclude_ports) {
        if (port == 0) {
            result.errors.push_back(position(cfg, no_mark) +
                                    "redirect.exclude_ports: port 0 is not a valid port");
            continue;
        }
        if (excluded.insert(port).second) {
            plan.excluded_ports.push_back({port, ExclusionReason::Configured});
        }
    }

    std::set<uint16_t> captured;
    for (const config::InboundRedirect& inbound : redirect.inbound) {
        const std::string where = position(cfg, inbound.mark);
        if (inbound.port == 0) {
            result.errors.push_back(where + "redirect.inbound: port 0 is not a valid port");
            continue;
        }
        if (!captured.insert(inbound.port).second) {
            result.errors.push_back(where + "redirect.inbound: port " +
                                    std::to_string(inbound.port) + " is redirected twice");
            continue;
        }
        const auto listener =
            std::find_if(cfg.listeners.begin(), cfg.listeners.end(),
                         [&](const config::Listener& l) { return l.name == inbound.listener; });
        if (listener == cfg.listeners.end()) {
            result.errors.push_back(where + "redirect.inbound: port " +
                                    std::to_string(inbound.port) + " names listener \"" +
                                    inbound.listener + "\", which does not exist");
            continue;
        }
        if (listener->listen.port == 0) {
            result.errors.push_back(where + "redirect.inbound: listener \"" + listener->name +
                                    "\" has no fixed port to redirect to");
            continue;
        }
        PortRedirect entry;
        entry.port = inbound.port;
        entry.to_port = listener->listen.port;
        entry.listener = listener->name;
        entry.listener_address = formatAddress(listener->listen);
        entry.listener_accepts_ipv6 = listener->listen.ipv6();
        if (isLoopbackHost(listener->listen.host)) {
            // REDIRECT rewrites the destination to the receiving interface's own address, so a
            // listener bound to loopback never sees the redirected connections.
            plan.warnings.push_back("port " + std::to_string(entry.port) + " is redirected to " +
                                    "listener \"" + entry.listener + "\", which listens on " +
                                    entry.listener_address + " (loopback only): it will not " +
                                    "receive redirected connections; listen on 0.0.0.0 or [::]");
        }
        if (excluded.count(entry.port) != 0) {
            plan.warnings.push_back("port " + std::to_string(entry.port) +
                                    " is both redirected and excluded: the exclusion wins, " +
                                    "nothing is redirected for it");
        }
        plan.redirects.push_back(std::move(entry));
    }

    for (const std::string& cidr : redirect.exclude_cidrs) {
        switch (classifyCidr(cidr)) {
            case CidrFamily::V4:
                plan.excluded_sources_v4.push_back(cidr);
                break;
            case CidrFamily::V6:
                plan.excluded_sources_v6.push_back(cidr);
                break;
            case CidrFamily::Invalid:
                result.errors.push_back(position(cfg, no_mark) + "redirect.exclude_cidrs: \"" +
                                        cidr + "\" is not an IPv4 or IPv6 CIDR");
                break;
        }
    }
    if (!redirect.ipv6 && !plan.excluded_sources_v6.empty()) {
        plan.warnings.push_back(
            "redirect.exclude_cidrs has IPv6 entries but redirect.ipv6 is "
            "off: they have no effect");
    }

    for (const std::string& name : redirect.interfaces) {
        if (!validInterface(name)) {
            result.errors.push_back(position(cfg, no_mark) + "redirect.interfaces: \"" + name +
                                    "\" is not a valid interface name");
            continue;
        }
        if (name == "lo") {
            plan.warnings.push_back(
                "redirect.interfaces lists \"lo\": traffic arriving on "
                "loopback is never redirected");
        }
        plan.interfaces.push_back(name);
    }
    plan.ipv6 = redirect.ipv6;
    if (redirect.inbound.empty()) {
        plan.warnings.push_back("redirect.inbound is empty: nothing will be redirected");
    }

    if (result.errors.empty()) result.plan = std::move(plan);
    return result;
}

}  // namespace sidecar::initnet
