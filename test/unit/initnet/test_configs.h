#pragma once
// Configs for the initnet tests, built directly as structs (no YAML).

#include <string>

#include "config/config.h"

namespace sidecar::initnet::test {

inline config::Listener makeListener(const std::string& name, const std::string& host,
                                     uint16_t port) {
    config::Listener listener;
    listener.name = name;
    listener.listen = {host, port};
    listener.protocol = config::Protocol::Http;
    listener.upstream.address = {"127.0.0.1", 80};
    return listener;
}

inline config::InboundRedirect makeInbound(uint16_t port, const std::string& listener,
                                           int line = 0) {
    config::InboundRedirect inbound;
    inbound.port = port;
    inbound.listener = listener;
    inbound.mark = {line, line > 0 ? 7 : 0};
    return inbound;
}

// The walkthrough: nginx on :80, the proxy's listener "web" on :8080, admin on 127.0.0.1:9901.
inline config::Config walkthroughConfig() {
    config::Config cfg;
    cfg.source = "sidecar.yaml";
    cfg.listeners.push_back(makeListener("web", "0.0.0.0", 8080));
    cfg.redirect.inbound.push_back(makeInbound(80, "web", 20));
    return cfg;
}

}  // namespace sidecar::initnet::test
