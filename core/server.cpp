#include "core/server.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "core/connection.h"
#include "tls/factory.h"

namespace sidecar::core {

namespace {

tls::KeyPairSource pairSource(const config::CertKeyPair& p) {
    tls::KeyPairSource s;
    s.certificate_path = p.certificate;
    s.private_key_path = p.private_key;
    s.certificate_pem = p.certificate_pem;
    s.private_key_pem = p.private_key_pem;
    return s;
}

std::vector<std::string> serverAlpn(const config::Listener& l) {
    if (!l.tls->alpn.empty()) return l.tls->alpn;
    if (l.protocol == config::Protocol::Http) {
        if (l.upstream.http2 || l.http.http2.enabled) return {"h2", "http/1.1"};
        return {"http/1.1"};
    }
    return {};
}

}  // namespace

bool resolveAddress(const config::SocketAddress& a, sockaddr_storage* out) {
    std::memset(out, 0, sizeof *out);
    std::string host = a.host == "localhost" ? "127.0.0.1" : a.host;
    if (host.find(':') != std::string::npos) {
        return uv_ip6_addr(host.c_str(), a.port, reinterpret_cast<sockaddr_in6*>(out)) == 0;
    }
    return uv_ip4_addr(host.c_str(), a.port, reinterpret_cast<sockaddr_in*>(out)) == 0;
}

bool peerAddress(const uv_tcp_t* tcp, std::string* ip, uint16_t* port) {
    sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return false;
    char buf[INET6_ADDRSTRLEN] = {0};
    if (ss.ss_family == AF_INET6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
        uv_ip6_name(a, buf, sizeof buf);
        *port = ntohs(a->sin6_port);
        // Show IPv4 clients of a dual-stack listener as plain IPv4.
        if (std::strncmp(buf, "::ffff:", 7) == 0 && std::strchr(buf + 7, '.')) {
            *ip = buf + 7;
            return true;
        }
    } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&ss);
        uv_ip4_name(a, buf, sizeof buf);
        *port = ntohs(a->sin_port);
    }
    *ip = buf;
    return true;
}

// ---- Listener ----

Listener::Listener(Server& s, std::shared_ptr<const ListenerRuntime> rt) : runtime(std::move(rt)), server(s) {
    handle.data = this;
}

std::optional<std::string> Listener::bind() {
    int r = uv_tcp_init(server.loop(), &handle);
    if (r != 0) return std::string("socket: ") + uv_strerror(r);
    inited_ = true;
    sockaddr_storage addr;
    if (!resolveAddress(runtime->cfg.listen, &addr)) return std::string("bad listen address");
    r = uv_tcp_bind(&handle, reinterpret_cast<const sockaddr*>(&addr), 0);
    if (r == 0) {
        r = uv_listen(reinterpret_cast<uv_stream_t*>(&handle), 1024, [](uv_stream_t* s, int status) noexcept {
            auto* l = static_cast<Listener*>(s->data);
            if (status != 0) {
                l->server.log().warn("accept error", {{"listener", l->runtime->cfg.name},
                                                      {"error", uv_strerror(status)}});
                return;
            }
            l->server.onListenerReadable(*l);
        });
    }
    if (r != 0) {
        std::string error = "cannot listen on " + runtime->cfg.listen.toString() + ": " + uv_strerror(r);
        if (r == UV_EACCES && runtime->cfg.listen.port < 1024)
            error += " (ports below 1024 need root or the CAP_NET_BIND_SERVICE capability; or listen "
                     "on a port of 1024 or more)";
        return error;
    }
    return std::nullopt;
}

void Listener::close() {
    server.forgetListener(this);
    if (!inited_) {
        delete this;
        return;
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&handle), [](uv_handle_t* h) noexcept {
        delete static_cast<Listener*>(h->data);
    });
}

// ---- Server ----

Server::Server(uv_loop_t* loop, Logger& log, tls::Backend& backend, Metrics& metrics,
               config::Validators validators)
    : loop_(loop),
      log_(log),
      backend_(backend),
      metrics_(metrics),
      read_buf_(new uint8_t[kReadBufferSize]),
      plain_buf_(new uint8_t[kPlainBufferSize]),
      idle_trim_(
          loop, [this] { return connections_.empty(); },
          [this] {
              buffers_.release();
              write_reqs_.release();
          }),
      resolver_(loop, log, metrics),
      validators_(std::move(validators)) {}

Server::~Server() = default;

static tls::Policy tlsPolicy(const config::TlsPolicy& p) {
    return {p.cipher_suites, p.tls13_cipher_suites, p.groups, p.key_log};
}

std::shared_ptr<ListenerRuntime> Server::buildRuntime(const config::Listener& l, std::string* error) {
    auto rt = std::make_shared<ListenerRuntime>();
    rt->cfg = l;
    rt->stats = &metrics_.listener(l.name);
    rt->stats->http = l.protocol == config::Protocol::Http;
    std::unique_ptr<ListenerLimiter>& limiter = limiters_[l.name];
    if (!limiter) limiter = std::make_unique<ListenerLimiter>();
    rt->limiter = limiter.get();
    rt->upstream = resolver_.target(l.upstream.address);
    if (l.tls) {
        tls::ServerOptions o;
        o.pair = pairSource(l.tls->pair);
        for (const config::SniEntry& e : l.tls->sni) o.sni.push_back({e.server_names, pairSource(e.pair)});
        o.min_version = l.tls->min_version;
        o.max_version = l.tls->max_version;
        o.policy = tlsPolicy(l.tls->policy);
        o.client_crl_path = l.tls->client_crl;
        o.alpn = serverAlpn(l);
        o.client_auth = static_cast<tls::ClientAuth>(l.tls->client_auth);
        o.client_ca_path = l.tls->client_ca;
        o.allow = {l.tls->allow.san_uri, l.tls->allow.san_dns, l.tls->allow.cn};
        o.session_tickets = l.tls->session_tickets.enabled;
        o.ticket_lifetime_seconds =
            uint32_t(std::chrono::duration_cast<std::chrono::seconds>(l.tls->session_tickets.rotate).count());
        rt->server_tls = backend_.serverContext(o, error);
        if (!rt->server_tls) return nullptr;
    }
    if (l.upstream.tls) {
        const config::UpstreamTls& u = *l.upstream.tls;
        tls::ClientOptions o;
        o.ca_path = u.ca;
        // An upstream named by DNS is verified under that name, written without a final dot.
        std::string host = l.upstream.address.host;
        if (host.size() > 1 && host.back() == '.') host.pop_back();
        o.server_name = u.server_name.empty() ? host : u.server_name;
        o.pair.certificate_path = u.certificate;
        o.pair.private_key_path = u.private_key;
        o.min_version = u.min_version;
        o.max_version = u.max_version;
        o.policy = tlsPolicy(u.policy);
        o.alpn = u.alpn;
        rt->client_tls = backend_.clientContext(o, error);
        if (!rt->client_tls) return nullptr;
    }
    return rt;
}

bool Server::start(const config::Config& cfg) {
    cfg_ = cfg;
    metrics_.start_time = int64_t(time(nullptr));
    // From here on a log reader that stops reading costs dropped lines, never a stalled loop.
    log_.attach(loop_);
    resolver_.configure(cfg.dns);
    bool ok = true;
    for (const config::Listener& l : cfg.listeners) {
        std::string error;
        std::shared_ptr<ListenerRuntime> rt = buildRuntime(l, &error);
        if (!rt) {
            log_.error("cannot set up listener", {{"listener", l.name}, {"error", error}});
            if (start_error_.empty()) start_error_ = "listener " + l.name + ": " + error;
            ok = false;
            continue;
        }
        fingerprints_[l.name] = materialFingerprint(l);
        rt->limiter->setUpstreamCap(l.limits.upstream_concurrency);
        auto* listener = new Listener(*this, rt);
        if (auto err = listener->bind()) {
            log_.error("cannot listen", {{"listener", l.name}, {"error", *err}});
            if (start_error_.empty()) start_error_ = "listener " + l.name + ": " + *err;
            listener->close();
            ok = false;
            continue;
        }
        listeners_.push_back(listener);
        for (const config::TlsPolicy* p : {l.tls ? &l.tls->policy : nullptr,
                                           l.upstream.tls ? &l.upstream.tls->policy : nullptr})
            if (p != nullptr && !p->key_log.empty())
                log_.warn("TLS KEY LOG IS ON: session secrets are written to a file, and anyone "
                          "who reads it can decrypt this listener's traffic; for debugging only",
                          {{"listener", l.name}, {"key_log", p->key_log}});
        log_.info("listening", {{"listener", l.name},
                                {"address", l.listen.toString()},
                                {"upstream", l.upstream.address.toString()},
                                {"tls", l.tls ? "on" : "off"},
                                {"protocol", l.protocol == config::Protocol::Http ? "http" : "tcp"}});
    }
    // A name that does not resolve yet leaves the listener up and the proxy not ready.
    std::vector<std::shared_ptr<UpstreamTarget>> targets;
    for (Listener* l : listeners_) targets.push_back(l->runtime->upstream);
    resolver_.adopt(targets, false);
    if (cfg.admin.enabled) {
        AdminServer::Hooks hooks;
        hooks.ready = [this] { return ready(); };
        hooks.not_ready_reason = [this] { return notReadyReason(); };
        hooks.metrics = [this] {
            metrics_.log_lines_dropped = {log_.droppedAccessLines(), log_.droppedLogLines()};
            return metrics_.render();
        };
        hooks.shutdown = [this] { beginDrain("POST /shutdown"); };
        admin_ = std::make_unique<AdminServer>(loop_, log_, std::move(hooks));
        if (auto err = admin_->listen(cfg.admin.listen)) {
            log_.error("cannot start the admin endpoint", {{"error", *err}});
            if (start_error_.empty()) start_error_ = "admin endpoint: " + *err;
            ok = false;
        } else {
            log_.info("admin endpoint listening", {{"address", cfg.admin.listen.toString()}});
        }
    }
    uv_signal_init(loop_, &sig_term_);
    uv_signal_init(loop_, &sig_int_);
    uv_signal_init(loop_, &sig_hup_);
    uv_timer_init(loop_, &drain_timer_);
    uv_timer_init(loop_, &debounce_timer_);
    uv_timer_init(loop_, &poll_timer_);
    uv_prepare_init(loop_, &log_flush_);
    uv_check_init(loop_, &loop_check_);
    uv_idle_init(loop_, &loop_idle_);
    uv_timer_init(loop_, &refusal_timer_);
    sig_term_.data = sig_int_.data = sig_hup_.data = drain_timer_.data = this;
    debounce_timer_.data = poll_timer_.data = log_flush_.data = this;
    loop_check_.data = loop_idle_.data = refusal_timer_.data = this;
    refreshCertificateGauges();
    watchCertificateFiles();
    handles_inited_ = true;
    uv_signal_start(&sig_term_, onSignal, SIGTERM);
    uv_signal_start(&sig_int_, onSignal, SIGINT);
    uv_signal_start(&sig_hup_, onSignal, SIGHUP);
    // Access lines written during one loop iteration leave in one write before the loop next
    // waits; the handle does not keep the loop alive by itself.
    uv_prepare_start(&log_flush_, onLoopIdle);
    uv_unref(reinterpret_cast<uv_handle_t*>(&log_flush_));
    uv_check_start(&loop_check_, onLoopCheck);
    uv_unref(reinterpret_cast<uv_handle_t*>(&loop_check_));
    uv_unref(reinterpret_cast<uv_handle_t*>(&refusal_timer_));
    if (!ok) {
        beginDrain("start-up failed");
        return false;
    }
    ready_ = true;
    return true;
}

void Server::onSignal(uv_signal_t* h, int signum) noexcept {
    auto* s = static_cast<Server*>(h->data);
    if (signum == SIGHUP) {
        s->log_.info("SIGHUP: reloading configuration and certificates");
        if (!s->draining_) s->reloadConfig();
        return;
    }
    if (s->draining_) {
        s->log_.warn("second stop signal: closing all connections now");
        for (Connection* c : std::vector<Connection*>(s->connections_.begin(), s->connections_.end()))
            c->close("forced stop");
        s->finishIfDrained();
        return;
    }
    s->beginDrain(signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

void Server::beginDrain(const char* why) {
    if (draining_) return;
    draining_ = true;
    metrics_.draining = true;
    log_.info("draining", {{"reason", why},
                           {"connections", uint64_t(connections_.size())},
                           {"timeout_ms", int64_t(cfg_.drain_timeout.count())}});
    for (Listener* l : listeners_) l->close();
    listeners_.clear();
    for (Connection* c : std::vector<Connection*>(connections_.begin(), connections_.end())) c->onDrain();
    if (!connections_.empty()) {
        uv_timer_start(&drain_timer_, onDrainTimer, uint64_t(cfg_.drain_timeout.count()), 0);
    }
    finishIfDrained();
}

void Server::onLoopIdle(uv_prepare_t* h) noexcept {
    auto* s = static_cast<Server*>(h->data);
    s->log_.flushAccess();
    ++s->iteration_;
}

void Server::deferHandshake(Connection* c, bool finishing) {
    (finishing ? finishing_queue_ : handshake_queue_).emplace_back(c, uv_now(loop_));
    updateLoopIdle();
}

void Server::cancelHandshake(Connection* c) {
    std::erase_if(handshake_queue_, [c](const auto& q) { return q.first == c; });
    std::erase_if(finishing_queue_, [c](const auto& q) { return q.first == c; });
    updateLoopIdle();
}

// While handshakes or granted slots wait, the loop polls without blocking.
void Server::updateLoopIdle() {
    if (!handles_inited_) return;
    if (handshakesQueued() == 0 && granted_.empty() && accept_pending_.empty()) {
        uv_idle_stop(&loop_idle_);
    } else {
        uv_idle_start(&loop_idle_, [](uv_idle_t*) noexcept {});
    }
}

// After the poll phase: paused listeners that may accept again are re-armed, requests given an
// upstream slot go on (cheap), then queued handshakes, oldest first, for one slice (at least one
// step per iteration).
void Server::onLoopCheck(uv_check_t* h) noexcept {
    auto* s = static_cast<Server*>(h->data);
    // Listeners paused by their accept batch, or while handshakes are backlogged: one accept
    // each re-arms them for the next poll.
    std::vector<Listener*> paused;
    paused.swap(s->accept_pending_);
    for (Listener* l : paused) {
        if (s->handshakesBacklogged(*l)) {
            s->accept_pending_.push_back(l);
            continue;
        }
        l->accept_deferred = false;
        l->batch_accepted = 1;
        l->batch_iteration = s->iteration_ + 1;  // counts in the next iteration's batch
        s->onAccept(*l);
    }
    while (!s->granted_.empty()) {
        Connection* c = s->granted_.front();
        s->granted_.pop_front();
        c->onSlotGranted();
    }
    if (s->handshakesQueued() != 0) {
        const uint64_t start = uv_hrtime();
        // The rest of this iteration, when the poll did not wait: the handshakes get as long,
        // within bounds; the wider bound once the oldest has waited kHandshakeWaitMs.
        // Turnover outside the slice (clients joining and ending: their accepts, first requests'
        // app connects and responses, ends and teardowns) is the storm's own work, not the
        // rest's: it widens no slice, and is taken from it.
        const uint64_t poll = s->handshakes_carried_ ? start - s->check_done_ns_ : 0;
        const uint64_t turnover = std::min(s->turnover_ns_, poll);
        const uint64_t others = poll - turnover;
        uint64_t oldest = UINT64_MAX;
        for (const auto* q : {&s->finishing_queue_, &s->handshake_queue_})
            if (!q->empty()) oldest = std::min(oldest, q->front().second);
        const bool overdue = uv_now(s->loop_) - oldest >= kHandshakeWaitMs;
        const uint64_t share =
            std::clamp(others, kHandshakeSliceNs, overdue ? kMaxHandshakeSliceNs : kShortHandshakeSliceNs);
        const uint64_t slice = share > turnover ? share - turnover : 0;
        uint64_t now = start;
        for (bool first = true; s->handshakesQueued() != 0; first = false) {
            // Handshakes already under way first: each is a client about to be served.
            auto& q = s->finishing_queue_.empty() ? s->handshake_queue_ : s->finishing_queue_;
            const bool fresh = &q == &s->handshake_queue_;
            // A step starts only when its kind's recent average fits in what is left of the
            // slice (a new handshake's first step, or one under way); the first always runs.
            if (!first && now - start + (fresh ? s->first_step_ns_ : s->next_step_ns_) >= slice) break;
            Connection* c = q.front().first;
            q.pop_front();
            c->resumeHandshake();
            const uint64_t then = now;
            now = uv_hrtime();
            s->noteStep(now - then, fresh);
        }
    }
    s->handshakes_carried_ = s->handshakesQueued() != 0;
    s->turnover_ns_ = 0;
    s->check_done_ns_ = uv_hrtime();
    s->updateLoopIdle();
}

// The loop time a handshake costs, all its steps (pieces of a flight included): the step time
// spent while 8 new handshakes took their first step, as a moving average over about the last
// 16 handshakes (a storm's pacing follows it within a few dozen).
void Server::noteStep(uint64_t ns, bool first) {
    // And each kind's own step, over about the last 16.
    uint64_t& kind = first ? first_step_ns_ : next_step_ns_;
    kind += (int64_t(ns) - int64_t(kind)) / 16;
    steps_ns_ += ns;
    if (first && ++steps_started_ == 8) {
        handshake_ns_ += (int64_t(steps_ns_ / 8) - int64_t(handshake_ns_)) / 2;
        steps_ns_ = 0;
        steps_started_ = 0;
    }
}

void Server::releaseUpstreamSlot(Connection* c, ListenerLimiter& limiter) {
    // Granted but not yet told: its slot is handed on like any other.
    std::erase(granted_, c);
    limiter.upstream().release();
    grantWaiters(limiter);
}

void Server::grantWaiters(ListenerLimiter& limiter) {
    const config::UpstreamConcurrency& cap = limiter.upstreamCap();
    // With the cap turned off by a reload, every waiter goes on.
    const uint32_t max = cap.enabled() ? cap.max : std::numeric_limits<uint32_t>::max();
    while (uintptr_t id = limiter.upstream().grant(max)) granted_.push_back(reinterpret_cast<Connection*>(id));
    updateLoopIdle();
}

void Server::noteRefusal(const std::string& listener, const char* reason) {
    ++refusals_[{listener, reason}];
    if (handles_inited_ && !uv_is_active(reinterpret_cast<uv_handle_t*>(&refusal_timer_))) {
        uv_timer_start(&refusal_timer_, onRefusalSummary, kRefusalSummaryMs, 0);
    }
}

// One line per listener and reason per interval, however many clients were refused.
void Server::onRefusalSummary(uv_timer_t* t) noexcept {
    auto* s = static_cast<Server*>(t->data);
    for (const auto& [key, count] : s->refusals_) {
        s->log_.warn("refused by limits",
                     {{"listener", key.first},
                      {"reason", key.second},
                      {"count", count},
                      {"interval_s", uint64_t(kRefusalSummaryMs / 1000)}});
    }
    s->refusals_.clear();
}

void Server::onDrainTimer(uv_timer_t* t) noexcept {
    auto* s = static_cast<Server*>(t->data);
    s->log_.warn("drain timeout: closing remaining connections",
                 {{"connections", uint64_t(s->connections_.size())}});
    for (Connection* c : std::vector<Connection*>(s->connections_.begin(), s->connections_.end()))
        c->close("drain timeout");
    s->finishIfDrained();
}

void Server::finishIfDrained() {
    if (!draining_ || finished_ || !connections_.empty()) return;
    finished_ = true;
    log_.info("drained; exiting");
    closeOwnHandles();
}

void Server::closeOwnHandles() {
    if (admin_) admin_->close();
    idle_trim_.close();
    resolver_.close();
    if (!handles_inited_) return;
    handles_inited_ = false;
    log_.detach();
    for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&sig_term_), reinterpret_cast<uv_handle_t*>(&sig_int_),
                           reinterpret_cast<uv_handle_t*>(&sig_hup_), reinterpret_cast<uv_handle_t*>(&drain_timer_),
                           reinterpret_cast<uv_handle_t*>(&debounce_timer_),
                           reinterpret_cast<uv_handle_t*>(&poll_timer_),
                           reinterpret_cast<uv_handle_t*>(&log_flush_),
                           reinterpret_cast<uv_handle_t*>(&loop_check_),
                           reinterpret_cast<uv_handle_t*>(&loop_idle_),
                           reinterpret_cast<uv_handle_t*>(&refusal_timer_)}) {
        uv_close(h, nullptr);
    }
    closeWatchers();
}

// ---- reload ----

namespace {

void addFile(std::string& out, const std::string& path) {
    if (path.empty()) return;
    out += path;
    out += '\0';
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        out += "<unreadable>";
        return;
    }
    std::ostringstream ss;
    ss << f.rdbuf();
    out += ss.str();
    out += '\0';
}

std::string directoryOf(const std::string& path) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

// Closes a watcher; it is freed in its close callback.
void closeWatcher(uv_fs_event_t* w) {
    uv_close(reinterpret_cast<uv_handle_t*>(w), [](uv_handle_t* h) noexcept { delete reinterpret_cast<uv_fs_event_t*>(h); });
}

// The serial numbers of the certificates a listener serves, for the reload log line.
std::string serials(const ListenerRuntime& rt) {
    std::string out;
    if (rt.server_tls)
        for (const tls::CertificateInfo& ci : rt.server_tls->certificates())
            out += (out.empty() ? "" : ",") + ci.serial_hex;
    return out;
}

std::vector<std::string> materialPaths(const config::Listener& l) {
    std::vector<std::string> paths;
    if (l.tls) {
        paths.push_back(l.tls->pair.certificate);
        paths.push_back(l.tls->pair.private_key);
        for (const config::SniEntry& e : l.tls->sni) {
            paths.push_back(e.pair.certificate);
            paths.push_back(e.pair.private_key);
        }
        paths.push_back(l.tls->client_ca);
        paths.push_back(l.tls->client_crl);
    }
    if (l.upstream.tls) {
        paths.push_back(l.upstream.tls->ca);
        paths.push_back(l.upstream.tls->certificate);
        paths.push_back(l.upstream.tls->private_key);
    }
    std::vector<std::string> out;
    for (std::string& p : paths)
        if (!p.empty()) out.push_back(std::move(p));
    return out;
}

}  // namespace

// The digest of everything a listener's TLS contexts are built from; a reload happens only
// when it changes (a needless rebuild would also invalidate session tickets).
std::string Server::materialFingerprint(const config::Listener& l) const {
    std::string all;
    for (const std::string& p : materialPaths(l)) addFile(all, p);
    return std::to_string(std::hash<std::string>{}(all)) + ":" + std::to_string(all.size());
}

void Server::refreshCertificateGauges() {
    metrics_.certificates.clear();
    int64_t now = int64_t(time(nullptr));
    for (Listener* l : listeners_) {
        const ListenerRuntime& rt = *l->runtime;
        if (!rt.server_tls) continue;
        for (const tls::CertificateInfo& ci : rt.server_tls->certificates()) {
            metrics_.certificates.push_back({rt.cfg.name, ci.source, ci.not_after});
            if (ci.not_after != 0 && ci.not_after < now) {
                log_.error("certificate has EXPIRED", {{"listener", rt.cfg.name}, {"certificate", ci.source},
                                                       {"subject", ci.subject}, {"not_after", rfc3339(ci.not_after)}});
            } else if (ci.not_before > now) {
                log_.error("certificate is NOT YET VALID", {{"listener", rt.cfg.name}, {"certificate", ci.source},
                                                            {"subject", ci.subject}, {"not_before", rfc3339(ci.not_before)}});
            }
        }
    }
}

void Server::noteCertificatesReloaded(const ListenerRuntime& rt, const char* why) {
    ++metrics_.cert_reloads_ok;
    log_.info("certificates reloaded", {{"listener", rt.cfg.name}, {"reason", why}, {"serial", serials(rt)}});
}

void Server::closeWatchers() {
    for (uv_fs_event_t* w : watchers_) closeWatcher(w);
    watchers_.clear();
}

void Server::watchCertificateFiles() {
    closeWatchers();
    // Kubernetes updates a Secret volume by swapping a `..data` symlink in the directory, so the
    // directory is watched, not the file.
    std::set<std::string> dirs;
    for (Listener* l : listeners_)
        for (const std::string& p : materialPaths(l->runtime->cfg)) dirs.insert(directoryOf(p));
    for (const std::string& d : dirs) {
        auto* w = new uv_fs_event_t;
        uv_fs_event_init(loop_, w);
        w->data = this;
        int r = uv_fs_event_start(w, onFsEvent, d.c_str(), 0);
        if (r != 0) {
            log_.warn("cannot watch certificate directory; SIGHUP or cert_poll_interval still reload",
                      {{"directory", d}, {"error", uv_strerror(r)}});
            closeWatcher(w);
            continue;
        }
        watchers_.push_back(w);
    }
    uv_timer_stop(&poll_timer_);
    if (cfg_.cert_poll_interval.count() > 0) {
        uint64_t ms = uint64_t(cfg_.cert_poll_interval.count());
        uv_timer_start(&poll_timer_, [](uv_timer_t* t) noexcept {
            static_cast<Server*>(t->data)->reloadCertificates("poll", false);
        }, ms, ms);
    }
}

void Server::onFsEvent(uv_fs_event_t* h, const char*, int, int status) noexcept {
    auto* s = static_cast<Server*>(h->data);
    if (status != 0 || s->draining_) return;
    // Writers replace several files in a row: wait for the burst to settle.
    uv_timer_start(&s->debounce_timer_, onReloadTimer, 250, 0);
}

void Server::onReloadTimer(uv_timer_t* t) noexcept {
    static_cast<Server*>(t->data)->reloadCertificates("file change", false);
}

void Server::reloadCertificates(const char* why, bool force) {
    if (draining_) return;
    bool changed = false;
    for (Listener* l : listeners_) {
        // Keeps cfg alive past the swap below: the old runtime may have no other owner.
        const std::shared_ptr<const ListenerRuntime> current = l->runtime;
        const config::Listener& cfg = current->cfg;
        if (!cfg.tls && !cfg.upstream.tls) continue;
        std::string fp = materialFingerprint(cfg);
        std::string& known = fingerprints_[cfg.name];
        if (!force && fp == known) continue;
        known = fp;
        std::string error;
        std::shared_ptr<ListenerRuntime> rt = buildRuntime(cfg, &error);
        if (!rt) {
            ++metrics_.cert_reloads_failed;
            log_.error("certificate reload failed; still serving the previous certificate",
                       {{"listener", cfg.name}, {"reason", why}, {"error", error}});
            continue;
        }
        l->runtime = rt;
        changed = true;
        noteCertificatesReloaded(*rt, why);
    }
    if (changed) refreshCertificateGauges();
}

void Server::reloadConfig() {
    if (cfg_.source.empty() || cfg_.source[0] == '<') {
        reloadCertificates("SIGHUP", false);
        return;
    }
    config::LoadResult res = config::loadFile(cfg_.source, validators_);
    if (!res.errors.empty()) {
        ++metrics_.config_reloads_failed;
        for (const config::Error& e : res.errors) log_.error("config reload rejected", {{"error", e.toString()}});
        log_.error("keeping the previous configuration", {{"errors", uint64_t(res.errors.size())}});
        return;
    }
    config::Config next = std::move(*res.config);
    if (next.admin.listen.toString() != cfg_.admin.listen.toString() || next.admin.enabled != cfg_.admin.enabled)
        log_.warn("admin endpoint changes take effect after a restart");
    // Contexts and sessions come from the backend the process started with.
    std::string_view wanted_backend =
        next.tls_backend.empty() ? tls::defaultBackendName() : std::string_view(next.tls_backend);
    if (wanted_backend != backend_.name())
        log_.warn("tls_backend changes take effect after a restart",
                  {{"running", backend_.name()}, {"configured", wanted_backend}});
    next.tls_backend = cfg_.tls_backend;
    // Build every runtime first: a reload applies completely or not at all.
    std::vector<std::shared_ptr<ListenerRuntime>> runtimes;
    for (const config::Listener& l : next.listeners) {
        std::string error;
        std::shared_ptr<ListenerRuntime> rt = buildRuntime(l, &error);
        if (!rt) {
            ++metrics_.config_reloads_failed;
            log_.error("config reload rejected; keeping the previous configuration",
                       {{"listener", l.name}, {"error", error}});
            return;
        }
        runtimes.push_back(std::move(rt));
    }
    // Pair every new listener with the socket it keeps: the old listener of the same name and
    // address, else any old listener on that address (a rename keeps its socket, since a second
    // bind there would fail). New addresses are bound before anything is closed, so that a failed
    // bind leaves the previous configuration serving, whole.
    std::vector<Listener*> old = listeners_;
    std::vector<Listener*> paired(runtimes.size(), nullptr);
    auto pair = [&](bool same_name) {
        for (size_t i = 0; i < runtimes.size(); ++i) {
            if (paired[i]) continue;
            const config::Listener& want = runtimes[i]->cfg;
            for (Listener*& l : old) {
                if (!l || l->runtime->cfg.listen.toString() != want.listen.toString()) continue;
                if (same_name && l->runtime->cfg.name != want.name) continue;
                paired[i] = l;
                l = nullptr;
                break;
            }
        }
    };
    pair(true);
    pair(false);
    std::vector<Listener*> fresh;
    for (size_t i = 0; i < runtimes.size(); ++i) {
        if (paired[i]) continue;
        auto* listener = new Listener(*this, runtimes[i]);
        if (auto err = listener->bind()) {
            ++metrics_.config_reloads_failed;
            log_.error("config reload rejected; keeping the previous configuration",
                       {{"listener", runtimes[i]->cfg.name}, {"error", *err}});
            listener->close();
            for (Listener* f : fresh) f->close();
            return;
        }
        paired[i] = listener;
        fresh.push_back(listener);
    }
    // Commit. Certificates that changed since they were loaded count as certificate reloads,
    // whichever of SIGHUP or the file watch noticed them first.
    std::map<std::string, std::string> fingerprints;
    listeners_.clear();
    for (size_t i = 0; i < runtimes.size(); ++i) {
        Listener* l = paired[i];
        l->runtime = runtimes[i];
        listeners_.push_back(l);
        const config::Listener& lc = runtimes[i]->cfg;
        // New limits apply at once; a larger upstream cap lets waiters in now.
        ListenerLimiter& limiter = *runtimes[i]->limiter;
        limiter.setUpstreamCap(lc.limits.upstream_concurrency);
        grantWaiters(limiter);
        showGate(*runtimes[i]->stats, limiter.upstream());
        std::string fp = materialFingerprint(lc);
        auto known = fingerprints_.find(lc.name);
        if ((lc.tls || lc.upstream.tls) && known != fingerprints_.end() && known->second != fp) {
            noteCertificatesReloaded(*runtimes[i], "SIGHUP");
        }
        fingerprints[lc.name] = std::move(fp);
        if (std::find(fresh.begin(), fresh.end(), l) != fresh.end())
            log_.info("listening", {{"listener", lc.name}, {"address", lc.listen.toString()}});
    }
    for (Listener* l : old) {
        if (!l) continue;
        log_.info("listener removed", {{"listener", l->runtime->cfg.name}});
        l->close();
    }
    config::Admin admin = cfg_.admin;
    cfg_ = std::move(next);
    cfg_.admin = admin;
    log_.configure(cfg_.log);
    fingerprints_ = std::move(fingerprints);
    refreshCertificateGauges();
    watchCertificateFiles();
    // resolv.conf is read again and every upstream name resolved anew.
    resolver_.configure(cfg_.dns);
    std::vector<std::shared_ptr<UpstreamTarget>> targets;
    for (Listener* l : listeners_) targets.push_back(l->runtime->upstream);
    resolver_.adopt(targets, true);
    ++metrics_.config_reloads_ok;
    log_.info("configuration reloaded", {{"listeners", uint64_t(listeners_.size())}});
}

std::string Server::notReadyReason() const {
    if (draining_) return "draining";
    if (!ready_) return "starting";
    return resolver_.notReadyReason();
}

void Server::onListenerReadable(Listener& l) {
    if (l.batch_iteration != iteration_) {
        l.batch_iteration = iteration_;
        l.batch_accepted = 0;
    }
    if (l.accept_deferred) return;
    const bool batch_done = l.batch_accepted >= kAcceptBatch;
    if (batch_done || handshakesBacklogged(l)) {
        if (!batch_done) ++l.runtime->stats->accept_pauses;
        // Not accepting stops libuv watching the socket until the next uv_accept.
        l.accept_deferred = true;
        accept_pending_.push_back(&l);
        updateLoopIdle();
        return;
    }
    ++l.batch_accepted;
    const uint64_t start = uv_hrtime();
    onAccept(l);
    if (l.runtime->server_tls) noteTurnover(uv_hrtime() - start);  // a TLS client joining
}

// Drops the fresh connections that stopped counting: those that sent a first byte or closed,
// and those accepted kFreshMs ago or earlier.
void Server::pruneFresh() {
    const uint64_t now = uv_now(loop_);
    while (!fresh_.empty()) {
        auto [at, id] = fresh_.front();
        if (at + kFreshMs > now && fresh_ids_.count(id) != 0) break;
        fresh_ids_.erase(id);
        fresh_.pop_front();
    }
}

uint64_t Server::enterFresh() {
    pruneFresh();  // on every accept, so the list never holds more than the last kFreshMs
    fresh_.emplace_back(uv_now(loop_), ++fresh_seq_);
    fresh_ids_.insert(fresh_seq_);
    return fresh_seq_;
}

bool Server::handshakesBacklogged(const Listener& l) {
    const bool originates = l.runtime->client_tls != nullptr;
    if (!l.runtime->server_tls && !originates) return false;
    // Nothing queued, nothing pending: silent clients cannot close a listener. App connections
    // being opened with TLS count from their connect, before their first step is queued (a
    // burst of plain clients would otherwise all be accepted before the first one is).
    if (handshakesQueued() == 0 && !(originates && originating_ != 0)) return false;
    pruneFresh();
    // The floor holds only while it stands for at most kMaxPendingHandshakesNs of work: with
    // slow handshakes (TLS to the app, ~5-15 ms each) 64 would outlast a 1 s connect deadline.
    const uint64_t ns = std::max<uint64_t>(handshake_ns_, 1);
    const uint64_t floor = std::min<uint64_t>(kMinPendingHandshakes, kMaxPendingHandshakesNs / ns);
    const size_t cap = std::clamp<uint64_t>(kPendingHandshakesNs / ns, std::max<uint64_t>(floor, 1),
                                            kMaxPendingHandshakes);
    // Pending: queued steps, TLS clients with no ClientHello yet, and for a listener that
    // originates TLS, app connections being opened (each is about to need steps; one already
    // queued counts twice, which errs on the side of pausing).
    return handshakesQueued() + fresh_ids_.size() + (originates ? originating_ : 0) >= cap;
}

void Server::forgetListener(Listener* l) {
    if (std::erase(accept_pending_, l) != 0) updateLoopIdle();
}

void Server::onAccept(Listener& l) {
    auto* c = new Connection(*this, l.runtime);
    if (!c->accept(reinterpret_cast<uv_stream_t*>(&l.handle))) return;
    const ListenerRuntime& rt = *l.runtime;
    RejectReason reason = RejectReason::Count;
    if (draining_) {
        reason = RejectReason::Draining;
    } else if (uint64_t(rt.stats->active) > rt.cfg.limits.max_connections) {
        reason = RejectReason::MaxConnections;
    } else {
        // Before any TLS work: a refused client costs an accept and a close.
        bool counted = false;
        switch (rt.limiter->admitConnection(rt.cfg.limits, c->peerIp(), uv_now(loop_), &counted)) {
            case ListenerLimiter::Refusal::None: break;
            case ListenerLimiter::Refusal::ConnectionRate: reason = RejectReason::ConnectionRate; break;
            case ListenerLimiter::Refusal::ClientConnections:
                reason = RejectReason::ClientConnections;
                break;
            case ListenerLimiter::Refusal::ClientConnectionRate:
                reason = RejectReason::ClientConnectionRate;
                break;
        }
        if (counted) c->holdClientSlot();
    }
    if (reason != RejectReason::Count) {
        ++rt.stats->rejected[size_t(reason)];
        log_.debug("connection rejected",
                   {{"listener", rt.cfg.name}, {"client", c->peerIp()}, {"reason", rejectReasonName(reason)}});
        if (reason != RejectReason::Draining) noteRefusal(rt.cfg.name, rejectReasonName(reason));
        // A plain HTTP client over max_connections is told so (503) for the price of one write;
        // up to a bound, past which closing is cheaper. A TLS client would cost a handshake first.
        if (reason == RejectReason::MaxConnections && rt.cfg.protocol == config::Protocol::Http &&
            !rt.server_tls && uint64_t(rt.stats->active) <= 2 * uint64_t(rt.cfg.limits.max_connections)) {
            connections_.insert(c);
            c->refuseBusy();
            return;
        }
        c->close("rejected at accept");
        return;
    }
    connections_.insert(c);
    c->start();
}

void Server::forget(Connection* c) {
    connections_.erase(c);
    if (draining_) finishIfDrained();
    else if (connections_.empty()) idle_trim_.arm();
}

}  // namespace sidecar::core
