#pragma once
// Upstream name resolution on the loop. Names are looked up in the hosts file, then in DNS with
// c-ares: one uv_poll per c-ares socket and one uv_timer for its timeouts, so no thread blocks
// and nothing on the loop waits for an answer. Addresses are re-resolved when their TTL (clamped
// to dns.min_ttl..max_ttl) runs out; a failed resolution keeps the last good addresses. The
// decisions (TTL clamping, retry delays, address order and back-off) live in core/dns.h.

#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/dns.h"
#include "core/log.h"
#include "core/metrics.h"

struct ares_channeldata;
struct ares_addrinfo;

namespace sidecar::core {

// The c-ares library's version, for `sidecar version`.
const char* caresVersion();

// One upstream address as configured and what resolution knows of it: the shared, live part of a
// listener's runtime. Every runtime (and so every connection) naming the same host:port holds the
// same target; the Resolver updates it in place.
struct UpstreamTarget {
    config::SocketAddress address;  // as configured
    bool name = false;              // a DNS name; otherwise a fixed IP address or localhost
    dns::NameState state;
    dns::Policy policy;
    UpstreamNameStats* stats = nullptr;  // names only; null once the target is no longer used
    bool querying = false;

    // Addresses to try for one connection, in order (see dns::NameState::candidates).
    std::vector<dns::Address> candidates(uint64_t now) const {
        return state.candidates(now, policy);
    }
    bool resolved() const { return !state.addresses().empty(); }
};

// address:port as a socket address.
void toSockaddr(const dns::Address& address, uint16_t port, sockaddr_storage* out);

class Resolver {
public:
    Resolver(uv_loop_t* loop, Logger& log, Metrics& metrics);
    ~Resolver();
    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;

    // Takes the dns settings, reads resolv_conf and starts a fresh c-ares channel. Queries in
    // flight on the previous channel are dropped (adopt(..., true) asks again).
    void configure(const config::Dns& dns);
    // The target in use for `address`, or a new one (resolved once adopted). An IP address or
    // localhost makes a target that is resolved already and never asked for.
    std::shared_ptr<UpstreamTarget> target(const config::SocketAddress& address);
    // Makes `targets` the ones kept up to date; the others are forgotten. Names not yet resolved
    // are looked up now, and with refreshAll every name is (a reload).
    void adopt(const std::vector<std::shared_ptr<UpstreamTarget>>& targets, bool refreshAll);
    // Why the upstreams are not all usable ("" when every one has an address).
    std::string notReadyReason() const;
    void close();

private:
    struct Query;
    static void onSocketState(void* data, int fd, int readable, int writable);
    static void onPoll(uv_poll_t* poll, int status, int events) noexcept;
    static void onAresTimer(uv_timer_t* timer) noexcept;
    static void onRefreshTimer(uv_timer_t* timer) noexcept;
    static void onAnswer(void* arg, int status, int timeouts, ares_addrinfo* result) noexcept;
    void resolve(const std::shared_ptr<UpstreamTarget>& target);
    void succeeded(UpstreamTarget& t, std::vector<dns::Address> addresses, int64_t ttl_s,
                   const char* source);
    void failed(UpstreamTarget& t, int status, const std::string& error);
    void destroyChannel();
    void armAresTimer();
    void armRefresh();

    uv_loop_t* loop_;
    Logger& log_;
    Metrics& metrics_;
    ares_channeldata* channel_ = nullptr;
    std::string channel_error_;  // why there is no channel
    config::Dns cfg_;
    dns::Policy policy_;
    std::map<int, uv_poll_t*> polls_;  // by c-ares socket; each freed in its close callback
    uv_timer_t ares_timer_;
    uv_timer_t refresh_timer_;
    bool handles_ = false;
    bool closed_ = false;
    std::map<std::string, std::shared_ptr<UpstreamTarget>> targets_;  // by address.toString()
};

}  // namespace sidecar::core
