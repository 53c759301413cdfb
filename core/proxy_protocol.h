#pragma once
// PROXY protocol headers (v1 text, v2 binary with the TLS TLVs) sent to the upstream ahead of
// the client's bytes, so a TCP-mode app learns the client address and TLS facts.

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "tls/backend.h"

namespace sidecar::core {

struct ProxyHeaderFacts {
    sockaddr_storage source{};       // the client
    sockaddr_storage destination{};  // the address the client connected to
    const tls::SessionInfo* tls = nullptr;  // null for a plain listener
};

// Builds the header for version 1 or 2. Mixed or unknown address families give v1 "UNKNOWN"
// and v2 "LOCAL" (no addresses), as the protocol specifies.
std::string buildProxyHeader(int version, const ProxyHeaderFacts& facts);

}  // namespace sidecar::core
