#include "core/resolver.h"

#include <ares.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>

namespace sidecar::core {

const char* caresVersion() { return ares_version(nullptr); }


namespace {

// resolv.conf and hosts files are a few hundred bytes; anything past this is not one of them.
constexpr size_t kMaxFileBytes = 1024 * 1024;

// Reads a small file whole; false when it cannot be opened (a missing file is normal: an empty
// root has neither resolv.conf nor hosts).
bool readSmallFile(const std::string& path, std::string* out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    out->assign(kMaxFileBytes, '\0');
    in.read(out->data(), std::streamsize(out->size()));
    out->resize(size_t(in.gcount()));
    return true;
}

std::string join(const std::vector<dns::Address>& addresses) {
    std::string out;
    for (const dns::Address& a : addresses) out += (out.empty() ? "" : ",") + a.toString();
    return out;
}

ResolveResult classify(int status) {
    switch (status) {
        case ARES_ENOTFOUND:
        case ARES_ENODATA:
            return ResolveResult::NotFound;
        case ARES_ETIMEOUT:
            return ResolveResult::Timeout;
        default:
            return ResolveResult::Error;
    }
}

dns::Policy policyOf(const config::Dns& dns) {
    dns::Policy p;
    p.min_ttl_ms = uint64_t(dns.min_ttl.count());
    p.max_ttl_ms = uint64_t(dns.max_ttl.count());
    p.failure_backoff_ms = uint64_t(dns.failure_backoff.count());
    return p;
}

}  // namespace

void toSockaddr(const dns::Address& address, uint16_t port, sockaddr_storage* out) {
    std::memset(out, 0, sizeof *out);
    if (address.family == 4) {
        auto* in = reinterpret_cast<sockaddr_in*>(out);
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        std::memcpy(&in->sin_addr, address.bytes.data(), 4);
    } else {
        auto* in6 = reinterpret_cast<sockaddr_in6*>(out);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        std::memcpy(&in6->sin6_addr, address.bytes.data(), 16);
    }
}

struct Resolver::Query {
    Resolver* resolver;
    std::weak_ptr<UpstreamTarget> target;
};

Resolver::Resolver(uv_loop_t* loop, Logger& log, Metrics& metrics)
    : loop_(loop), log_(log), metrics_(metrics) {
    ares_library_init(ARES_LIB_INIT_ALL);
    ares_timer_.data = this;
    refresh_timer_.data = this;
}

Resolver::~Resolver() {
    if (!closed_) {
        // The loop is gone: drop the channel without touching its handles.
        closed_ = true;
        handles_ = false;
        if (channel_) ares_destroy(channel_);
        channel_ = nullptr;
    }
    ares_library_cleanup();
}

void Resolver::configure(const config::Dns& dns) {
    if (closed_) return;
    if (!handles_) {
        uv_timer_init(loop_, &ares_timer_);
        uv_timer_init(loop_, &refresh_timer_);
        handles_ = true;
    }
    cfg_ = dns;
    policy_ = policyOf(dns);
    for (auto& [key, t] : targets_) t->policy = policy_;
    destroyChannel();

    std::string text;
    if (!readSmallFile(cfg_.resolv_conf, &text)) text.clear();
    const dns::ResolvConf conf = dns::parseResolvConf(text);

    std::vector<std::string> search(conf.search.begin(), conf.search.end());
    std::vector<char*> domains;
    for (std::string& d : search) domains.push_back(d.data());
    char lookups[] = "b";  // DNS only: the hosts file is read here, from the configured path
    ares_options o{};
    o.timeout = conf.timeout_s * 1000;
    o.tries = conf.attempts;
    o.ndots = conf.ndots;
    o.servers = nullptr;
    o.nservers = 0;  // set below, IPv6 included
    o.domains = domains.empty() ? nullptr : domains.data();
    o.ndomains = int(domains.size());
    o.lookups = lookups;
    o.sock_state_cb = onSocketState;
    o.sock_state_cb_data = this;
    o.sortlist = nullptr;
    o.nsort = 0;
    o.resolvconf_path = cfg_.resolv_conf.data();
    // Every setting is given, so c-ares reads no file and no environment of its own.
    int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_NDOTS | ARES_OPT_SERVERS |
               ARES_OPT_DOMAINS | ARES_OPT_LOOKUPS | ARES_OPT_SOCK_STATE_CB | ARES_OPT_SORTLIST |
               ARES_OPT_RESOLVCONF;
    mask |= conf.rotate ? ARES_OPT_ROTATE : ARES_OPT_NOROTATE;
    ares_channel channel = nullptr;
    int r = ares_init_options(&channel, &o, mask);
    std::string servers;
    for (const dns::Address& a : conf.nameservers)
        servers += (servers.empty() ? "" : ",") + a.toString();
    if (r == ARES_SUCCESS) {
        r = ares_set_servers_csv(channel, servers.c_str());
        if (r != ARES_SUCCESS) ares_destroy(channel);
    }
    if (r != ARES_SUCCESS) {
        channel_error_ = std::string("resolver setup failed: ") + ares_strerror(r);
        log_.error("cannot set up the DNS resolver; upstream names will not resolve",
                   {{"resolv_conf", cfg_.resolv_conf}, {"error", ares_strerror(r)}});
        return;
    }
    channel_ = channel;
    channel_error_.clear();
    std::string searchList;
    for (const std::string& d : conf.search) searchList += (searchList.empty() ? "" : " ") + d;
    log_.debug("DNS resolver configured", {{"resolv_conf", cfg_.resolv_conf},
                                           {"nameservers", servers},
                                           {"search", searchList},
                                           {"ndots", conf.ndots},
                                           {"timeout_s", conf.timeout_s},
                                           {"attempts", conf.attempts}});
}

void Resolver::destroyChannel() {
    if (!channel_) return;
    ares_channel channel = channel_;
    channel_ = nullptr;
    ares_destroy(channel);  // answers every query with ARES_EDESTRUCTION, closes its sockets
    if (handles_) uv_timer_stop(&ares_timer_);
}

std::shared_ptr<UpstreamTarget> Resolver::target(const config::SocketAddress& address) {
    const std::string key = address.toString();
    if (auto it = targets_.find(key); it != targets_.end()) return it->second;
    auto t = std::make_shared<UpstreamTarget>();
    t->address = address;
    t->policy = policy_;
    t->name = address.isName();
    if (!t->name) {
        if (auto ip = dns::parseAddress(address.host == "localhost" ? "127.0.0.1" : address.host))
            t->state.resolved({*ip}, std::numeric_limits<int32_t>::max(), 0, policy_);
    }
    return t;
}

void Resolver::adopt(const std::vector<std::shared_ptr<UpstreamTarget>>& targets, bool refreshAll) {
    std::map<std::string, std::shared_ptr<UpstreamTarget>> next;
    for (const auto& t : targets) {
        t->policy = policy_;
        next[t->address.toString()] = t;
    }
    for (auto& [key, t] : targets_) {
        auto it = next.find(key);
        if (it != next.end() && it->second == t) continue;
        // No longer used: connections that still hold it keep its addresses as they are.
        t->stats = nullptr;
        t->querying = false;
        if (it == next.end()) metrics_.upstream_names.erase(key);
    }
    targets_ = std::move(next);
    for (auto& [key, t] : targets_) {
        if (!t->name) continue;
        auto& stats = metrics_.upstream_names[key];
        if (!stats) stats = std::make_unique<UpstreamNameStats>();
        t->stats = stats.get();
        t->stats->addresses = int64_t(t->state.addresses().size());
    }
    for (auto& [key, t] : std::map(targets_)) {
        if (t->name && (refreshAll || t->state.health() == dns::NameState::Health::Pending))
            resolve(t);
    }
    armRefresh();
}

std::string Resolver::notReadyReason() const {
    for (const auto& [key, t] : targets_) {
        if (t->resolved()) continue;
        if (t->state.health() == dns::NameState::Health::Pending)
            return "upstream " + key + " is not resolved yet";
        return "upstream " + key + " does not resolve: " + t->state.lastError();
    }
    return "";
}

void Resolver::resolve(const std::shared_ptr<UpstreamTarget>& target) {
    UpstreamTarget& t = *target;
    if (closed_ || !t.name || t.querying) return;
    std::string hosts;
    if (readSmallFile(cfg_.hosts, &hosts)) {
        std::vector<dns::Address> listed = dns::lookupHosts(hosts, t.address.host);
        if (!listed.empty()) {
            // A hosts entry has no TTL: it is held as long as records may be.
            succeeded(t, std::move(listed), int64_t(policy_.max_ttl_ms / 1000), "hosts");
            return;
        }
    }
    if (!channel_) {
        failed(t, ARES_ENOTINITIALIZED, channel_error_);
        return;
    }
    t.querying = true;
    ares_addrinfo_hints hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    // c-ares may answer at once, from inside this call.
    ares_getaddrinfo(channel_, t.address.host.c_str(), nullptr, &hints, onAnswer,
                     new Query{this, target});
    armAresTimer();
}

void Resolver::onAnswer(void* arg, int status, int, ares_addrinfo* result) noexcept {
    std::unique_ptr<Query> q(static_cast<Query*>(arg));
    std::unique_ptr<ares_addrinfo, void (*)(ares_addrinfo*)> answer(result, ares_freeaddrinfo);
    std::shared_ptr<UpstreamTarget> t = q->target.lock();
    if (!t) return;
    t->querying = false;
    Resolver& r = *q->resolver;
    if (status == ARES_EDESTRUCTION || r.closed_) return;
    auto it = r.targets_.find(t->address.toString());
    if (it == r.targets_.end() || it->second != t) return;  // forgotten by a reload
    std::vector<dns::Address> addresses;
    int64_t ttl = std::numeric_limits<int32_t>::max();
    if (status == ARES_SUCCESS && answer) {
        for (ares_addrinfo_node* n = answer->nodes; n; n = n->ai_next) {
            dns::Address a;
            if (n->ai_family == AF_INET && n->ai_addr) {
                a.family = 4;
                std::memcpy(a.bytes.data(), &reinterpret_cast<sockaddr_in*>(n->ai_addr)->sin_addr,
                            4);
            } else if (n->ai_family == AF_INET6 && n->ai_addr) {
                a.family = 6;
                std::memcpy(a.bytes.data(), &reinterpret_cast<sockaddr_in6*>(n->ai_addr)->sin6_addr,
                            16);
            } else {
                continue;
            }
            addresses.push_back(a);
            ttl = std::min<int64_t>(ttl, n->ai_ttl);
        }
        for (ares_addrinfo_cname* c = answer->cnames; c; c = c->next)
            ttl = std::min<int64_t>(ttl, c->ttl);
    }
    if (!addresses.empty()) {
        r.succeeded(*t, std::move(addresses), ttl, "dns");
    } else {
        r.failed(*t, status == ARES_SUCCESS ? ARES_ENODATA : status,
                 ares_strerror(status == ARES_SUCCESS ? ARES_ENODATA : status));
    }
    r.armRefresh();
}

void Resolver::succeeded(UpstreamTarget& t, std::vector<dns::Address> addresses, int64_t ttl_s,
                         const char* source) {
    const uint64_t now = uv_now(loop_);
    const dns::NameState::Health before = t.state.health();
    const bool changed = t.state.resolved(std::move(addresses), ttl_s, now, t.policy);
    if (t.stats) {
        ++t.stats->resolutions[size_t(ResolveResult::Ok)];
        t.stats->addresses = int64_t(t.state.addresses().size());
    }
    const std::string list = join(t.state.addresses());
    const std::string upstream = t.address.toString();
    const uint64_t held_ms = t.state.refreshAt() - now;
    if (before != dns::NameState::Health::Resolved) {
        log_.info("upstream name resolved", {{"upstream", upstream},
                                             {"addresses", list},
                                             {"source", source},
                                             {"refresh_ms", held_ms}});
    } else if (changed) {
        log_.info("upstream addresses changed", {{"upstream", upstream},
                                                 {"addresses", list},
                                                 {"source", source},
                                                 {"refresh_ms", held_ms}});
    } else {
        log_.debug("upstream name re-resolved", {{"upstream", upstream}, {"refresh_ms", held_ms}});
    }
}

void Resolver::failed(UpstreamTarget& t, int status, const std::string& error) {
    const uint64_t now = uv_now(loop_);
    const bool changed = t.state.failed(error, now, t.policy);
    if (t.stats) ++t.stats->resolutions[size_t(classify(status))];
    const std::string upstream = t.address.toString();
    const uint64_t retry_ms = t.state.refreshAt() - now;
    if (!changed) {
        log_.debug("upstream name resolution failed again",
                   {{"upstream", upstream}, {"error", error}, {"retry_ms", retry_ms}});
    } else if (t.resolved()) {
        log_.warn("upstream name resolution failing; keeping the last addresses",
                  {{"upstream", upstream},
                   {"error", error},
                   {"addresses", join(t.state.addresses())},
                   {"retry_ms", retry_ms}});
    } else {
        log_.warn("upstream name does not resolve; not ready until it does",
                  {{"upstream", upstream}, {"error", error}, {"retry_ms", retry_ms}});
    }
}

void Resolver::armAresTimer() {
    if (!channel_ || !handles_ || closed_) return;
    timeval tv{};
    timeval* next = ares_timeout(channel_, nullptr, &tv);
    if (!next) {
        uv_timer_stop(&ares_timer_);
        return;
    }
    const uint64_t ms = uint64_t(next->tv_sec) * 1000 + uint64_t(next->tv_usec + 999) / 1000;
    uv_timer_start(&ares_timer_, onAresTimer, ms, 0);
}

void Resolver::armRefresh() {
    if (!handles_ || closed_) return;
    uint64_t next = std::numeric_limits<uint64_t>::max();
    for (const auto& [key, t] : targets_) {
        if (t->name && !t->querying) next = std::min(next, t->state.refreshAt());
    }
    if (next == std::numeric_limits<uint64_t>::max()) {
        uv_timer_stop(&refresh_timer_);
        return;
    }
    const uint64_t now = uv_now(loop_);
    uv_timer_start(&refresh_timer_, onRefreshTimer, next > now ? next - now : 0, 0);
}

void Resolver::onRefreshTimer(uv_timer_t* timer) noexcept {
    auto* r = static_cast<Resolver*>(timer->data);
    const uint64_t now = uv_now(r->loop_);
    for (auto& [key, t] : std::map(r->targets_)) {
        if (t->name && !t->querying && t->state.refreshAt() <= now) r->resolve(t);
    }
    r->armRefresh();
}

void Resolver::onAresTimer(uv_timer_t* timer) noexcept {
    auto* r = static_cast<Resolver*>(timer->data);
    if (!r->channel_) return;
    ares_process_fd(r->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    r->armAresTimer();
}

void Resolver::onSocketState(void* data, int fd, int readable, int writable) {
    auto* r = static_cast<Resolver*>(data);
    if (!r->handles_) return;  // the loop is gone (destructor without close)
    auto it = r->polls_.find(fd);
    if (!readable && !writable) {
        if (it == r->polls_.end()) return;
        uv_poll_t* poll = it->second;
        r->polls_.erase(it);
        // Stopped before c-ares closes the descriptor; freed once libuv lets go of it.
        uv_poll_stop(poll);
        uv_close(reinterpret_cast<uv_handle_t*>(poll),
                 [](uv_handle_t* h) noexcept { delete reinterpret_cast<uv_poll_t*>(h); });
        return;
    }
    uv_poll_t* poll = nullptr;
    if (it == r->polls_.end()) {
        poll = new uv_poll_t;
        int rc = uv_poll_init_socket(r->loop_, poll, fd);
        if (rc != 0) {
            delete poll;
            r->log_.warn("cannot watch a DNS socket", {{"error", uv_strerror(rc)}});
            return;  // the query times out through the c-ares timer
        }
        poll->data = r;
        r->polls_[fd] = poll;
    } else {
        poll = it->second;
    }
    const int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
    if (int rc = uv_poll_start(poll, events, onPoll); rc != 0)
        r->log_.warn("cannot watch a DNS socket", {{"error", uv_strerror(rc)}});
}

void Resolver::onPoll(uv_poll_t* poll, int status, int events) noexcept {
    auto* r = static_cast<Resolver*>(poll->data);
    if (!r->channel_) return;
    uv_os_fd_t fd = -1;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(poll), &fd) != 0) return;
    ares_socket_t read_fd = ARES_SOCKET_BAD;
    ares_socket_t write_fd = ARES_SOCKET_BAD;
    // An error on the socket: let c-ares read it to find out.
    if (status < 0 || (events & UV_READABLE)) read_fd = fd;
    if (status < 0 || (events & UV_WRITABLE)) write_fd = fd;
    ares_process_fd(r->channel_, read_fd, write_fd);  // may close `poll`
    r->armAresTimer();
}

void Resolver::close() {
    if (closed_) return;
    destroyChannel();
    closed_ = true;
    for (auto& [key, t] : targets_) t->stats = nullptr;
    if (!handles_) return;
    for (auto& [fd, poll] : polls_) {
        uv_poll_stop(poll);
        uv_close(reinterpret_cast<uv_handle_t*>(poll),
                 [](uv_handle_t* h) noexcept { delete reinterpret_cast<uv_poll_t*>(h); });
    }
    polls_.clear();
    uv_close(reinterpret_cast<uv_handle_t*>(&ares_timer_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&refresh_timer_), nullptr);
    handles_ = false;
}

}  // namespace sidecar::core
