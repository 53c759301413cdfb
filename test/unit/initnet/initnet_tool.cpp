// Test-only driver: `sidecar init-net` with a Config built from flags instead of a YAML file, for
// test/e2e/initnet_netns.sh until the sidecar binary's CLI is wired.
//
//   initnet_tool [--port P --to T [--name N] [--listen-host H]]... [--exclude-port P]...
//                [--exclude-cidr C]... [--interface IF]... [--ipv6 on|off]
//                [--admin-port P | --no-admin] apply|clean [init-net options]
//
// Each --port starts a redirect; --to/--name/--listen-host describe the listener it goes to
// (default name "web", then "web2", ...; default host 0.0.0.0).

#include <charconv>
#include <csignal>
#include <iostream>
#include <string>
#include <vector>

#include "config/config.h"
#include "initnet/command.h"

namespace {

bool parsePort(const std::string& text, uint16_t& port) {
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
        return false;
    }
    port = static_cast<uint16_t>(value);
    return true;
}

int usage(const std::string& message) {
    std::cerr << "initnet_tool: " << message << "\n";
    return sidecar::initnet::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    namespace config = sidecar::config;
    config::Config cfg;
    cfg.source = "<initnet_tool flags>";
    std::vector<std::string> rest;

    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag.rfind("--", 0) != 0 || flag == "--help" || flag == "--dry-run") {
            rest.assign(argv + i, argv + argc);
            break;
        }
        if (flag == "--no-admin") {
            cfg.admin.enabled = false;
            continue;
        }
        if (i + 1 >= argc) return usage(flag + " needs a value");
        const std::string value = argv[++i];
        uint16_t port = 0;
        if (flag == "--port") {
            if (!parsePort(value, port)) return usage("bad port " + value);
            config::Listener listener;
            const size_t index = cfg.listeners.size() + 1;
            listener.name = index == 1 ? "web" : "web" + std::to_string(index);
            listener.listen = {"0.0.0.0", 0};
            cfg.listeners.push_back(listener);
            cfg.redirect.inbound.push_back({port, listener.name, {}});
        } else if (cfg.listeners.empty() &&
                   (flag == "--to" || flag == "--name" || flag == "--listen-host")) {
            return usage(flag + " must follow --port");
        } else if (flag == "--to") {
            if (!parsePort(value, port)) return usage("bad port " + value);
            cfg.listeners.back().listen.port = port;
        } else if (flag == "--name") {
            cfg.listeners.back().name = value;
            cfg.redirect.inbound.back().listener = value;
        } else if (flag == "--listen-host") {
            cfg.listeners.back().listen.host = value;
        } else if (flag == "--exclude-port") {
            if (!parsePort(value, port)) return usage("bad port " + value);
            cfg.redirect.exclude_ports.push_back(port);
        } else if (flag == "--exclude-cidr") {
            cfg.redirect.exclude_cidrs.push_back(value);
        } else if (flag == "--interface") {
            cfg.redirect.interfaces.push_back(value);
        } else if (flag == "--ipv6") {
            if (value != "on" && value != "off") return usage("--ipv6 takes on or off");
            cfg.redirect.ipv6 = value == "on";
        } else if (flag == "--admin-port") {
            if (!parsePort(value, port)) return usage("bad port " + value);
            cfg.admin.listen.port = port;
        } else {
            return usage("unknown flag " + flag);
        }
    }
    return sidecar::initnet::runCommand(rest, cfg, std::cout, std::cerr);
}
