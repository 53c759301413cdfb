#include "core/connection.h"

#include <sys/random.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "core/h2_link.h"
#include "core/proxy_protocol.h"
#include "core/server.h"
#include "http/h2_client.h"

namespace sidecar::core {

namespace {

const char kPlainHttpAnswer[] =
    "HTTP/1.1 400 Bad Request\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 51\r\n"
    "Connection: close\r\n"
    "\r\n"
    "Client sent a plain HTTP request to an HTTPS port.\n";

int versionIndex(const std::string& v) { return v == "TLSv1.3" ? 1 : 0; }

}  // namespace

namespace {

// Unique to this process and connection: 8 random hex digits drawn once, then a connection
// number (the codec appends the request's number on the connection).
std::string requestIdPrefix() {
    static const std::string process = [] {
        uint32_t r = 0;
        if (getrandom(&r, sizeof r, 0) != ssize_t(sizeof r)) r = uint32_t(uv_hrtime());
        char buf[9];
        std::snprintf(buf, sizeof buf, "%08x", r);
        return std::string(buf);
    }();
    static uint64_t connections = 0;
    return process + "-" + std::to_string(++connections);
}

}  // namespace

// An HTTP/1.1 client of an h2c app: the codec forwards one exchange at a time (max_pipelined 1),
// and each becomes an h2 stream on this connection's app connection; the app's frames come back
// as HTTP/1.1 bytes for the codec.
struct Connection::AppH2 final : http::H2UpstreamEvents {
    AppH2(Connection& c, const http::H2UpstreamOptions& o) : conn(c), session(o, *this) {}

    Connection& conn;
    http::H2Upstream session;
    uint64_t exchange = 1;  // the exchange the codec is sending (advanced as each completes)
    Bytes out;              // frames for the app from the last session call
    http::Status status = http::Status::Continue;  // of the codec calls made inside a feed
    std::vector<std::pair<uint64_t, size_t>> fed;  // response bytes per exchange in a feed

    void sendUpstream(const uint8_t* p, size_t n) override { out.insert(out.end(), p, p + n); }
    void onResponse(uint64_t ex, const uint8_t* p, size_t n) override {
        if (status == http::Status::Close) return;
        status = conn.codec_->feedResponse(p, n);
        if (!fed.empty() && fed.back().first == ex) {
            fed.back().second += n;
        } else {
            fed.emplace_back(ex, n);
        }
    }
    void onResponseEnd(uint64_t) override {}
    void onExchangeFailed(uint64_t, uint32_t) override {
        if (status != http::Status::Close) status = conn.codec_->responseEof();
    }
};

Connection::Connection(Server& server, std::shared_ptr<const ListenerRuntime> runtime)
    : server_(server), rt_(std::move(runtime)), stats_(*rt_->stats) {
    for (Side& s : sides_) s.tcp.data = this;
    timer_.data = this;
    connect_req_.data = this;
    uv_timer_init(server_.loop(), &timer_);
    ++closes_pending_;
    uv_tcp_init(server_.loop(), &sides_[kDown].tcp);
    sides_[kDown].inited = true;
    ++closes_pending_;
}

Connection::~Connection() = default;

const char* Connection::stateName(State s) {
    switch (s) {
        case State::FirstByte: return "first-byte";
        case State::Handshake: return "handshake";
        case State::Connecting: return "connecting";
        case State::Relay: return "relay";
        case State::Idle: return "idle";
        case State::Queued: return "queued";
        case State::RequestHead: return "request-head";
        case State::AwaitingResponse: return "awaiting-response";
        case State::Transfer: return "transfer";
        case State::Flushing: return "flushing";
        case State::Closed: return "closed";
    }
    return "?";
}

bool Connection::accept(uv_stream_t* listener) {
    int r = uv_accept(listener, reinterpret_cast<uv_stream_t*>(&sides_[kDown].tcp));
    if (r != 0) {
        server_.log().warn("accept failed", {{"listener", rt_->cfg.name}, {"error", uv_strerror(r)}});
        close("accept failed");
        return false;
    }
    sides_[kDown].connected = true;
    peerAddress(&sides_[kDown].tcp, &peer_ip_, &peer_port_);
    ++stats_.active;
    counted_ = true;
    return true;
}

void Connection::start() {
    ++stats_.accepted;
    uv_tcp_nodelay(&sides_[kDown].tcp, 1);
    started_ms_ = uv_now(server_.loop());
    accepted_ns_ = uv_hrtime();
    touch();
    if (rt_->server_tls) {
        joining_ = true;
        // The TLS session is allocated when the first byte shows a ClientHello.
        fresh_id_ = server_.enterFresh();
        enter(State::FirstByte);
        updateReading(kDown);
    } else if (rt_->cfg.protocol == config::Protocol::Http) {
        startCodec();
        enter(State::Idle);
        updateReading(kDown);
    } else {
        connectUpstream();
    }
}

// ---- states and deadlines ----

void Connection::enter(State s) {
    state_ = s;
    noteOriginating();
    state_since_ms_ = uv_now(server_.loop());
    entered_completed_ = completed_;
    rearm();
}

// HTTP mode: derives the state from where the codec stands, after a codec call has returned.
void Connection::settle() {
    if (h2_) {
        settleH2();
        return;
    }
    if (!codec_ || state_ == State::Flushing || state_ == State::Closed) return;
    // Nothing in flight: the upstream slot goes back (closeAfterFlush gives it back otherwise).
    if (slot_ == Slot::Held && codec_->idleBetweenRequests()) releaseSlot();
    if (!sides_[kUp].inited && !upstream_hold_.empty()) {
        connectUpstream();
        return;
    }
    if (state_ == State::Connecting || state_ == State::Handshake || state_ == State::FirstByte) return;
    if (sides_[kDown].eof && !codec_->awaitingResponse()) {
        closeAfterFlush("client finished");
        return;
    }
    uint64_t now = uv_now(server_.loop());
    if (codec_->awaitingRequestHead()) {
        if (head_since_ms_ == 0) head_since_ms_ = now;
    } else if (exchanges_ > 0) {
        head_since_ms_ = 0;
    }
    State next = State::Idle;
    switch (codec_->phase()) {
        case http::Codec::Phase::Idle: next = State::Idle; break;
        case http::Codec::Phase::Admission: next = State::Queued; break;
        case http::Codec::Phase::RequestHead: next = State::RequestHead; break;
        case http::Codec::Phase::RequestBody:
        case http::Codec::Phase::Response: next = State::Transfer; break;
        case http::Codec::Phase::AwaitingResponse: next = State::AwaitingResponse; break;
        case http::Codec::Phase::Tunnel: next = State::Relay; break;
        case http::Codec::Phase::Closed: closeAfterFlush("HTTP exchange ended the connection"); return;
    }
    // A completed exchange starts the next one's deadlines afresh, even in the same state.
    if (next != state_ || completed_ != entered_completed_) {
        enter(next);
    } else {
        rearm();
    }
}

void Connection::settleH2() {
    if (state_ == State::Flushing || state_ == State::Closed || state_ == State::Handshake) return;
    if (sides_[kDown].eof) {
        closeAfterFlush("client finished");
        return;
    }
    // The streams keep their own deadlines (core/h2_link); the connection's is idle time.
    const State next = h2_->openStreams() != 0 ? State::Transfer : State::Idle;
    if (next != state_ || completed_ != entered_completed_) {
        enter(next);
    } else {
        rearm();
    }
}

// Absolute loop time of the deadline the current state has armed (0 = none).
uint64_t Connection::deadlineAt() const {
    const config::Timeouts& t = rt_->cfg.timeouts;
    const uint64_t idle = uint64_t(t.idle.count());
    const uint64_t idle_at = idle != 0 ? last_activity_ms_ + idle : 0;
    auto earliest = [](uint64_t a, uint64_t b) { return a == 0 ? b : (b == 0 ? a : std::min(a, b)); };
    const uint64_t grace_at =
        drain_since_ms_ != 0 ? std::max(drain_since_ms_, last_activity_ms_) + kDrainIdleGraceMs : 0;
    switch (state_) {
        case State::FirstByte:
            return earliest(started_ms_ + uint64_t(t.handshake.count()), grace_at);
        case State::Handshake:
            return started_ms_ + uint64_t(t.handshake.count());
        case State::Connecting:
            return state_since_ms_ + uint64_t(rt_->cfg.upstream.connect_timeout.count());
        case State::Relay:
        case State::Transfer:
            return idle_at;
        case State::Idle:
            // The first request head is due within the header timeout of the handshake.
            return earliest(exchanges_ == 0 ? head_since_ms_ + uint64_t(t.header.count()) : idle_at,
                            grace_at);
        case State::Queued:
            return state_since_ms_ + uint64_t(rt_->limiter->upstreamCap().queue_timeout.count());
        case State::RequestHead:
            return head_since_ms_ + uint64_t(t.header.count());
        case State::AwaitingResponse:
            // A pipelined head that arrives meanwhile is timed from its first byte, but only
            // once the responses owed before it are done (RequestHead): a 408 now would take
            // the place of the response the app is still preparing.
            return state_since_ms_ + uint64_t(t.upstream_response.count());
        case State::Flushing:
            return state_since_ms_ + kFlushTimeoutMs;
        case State::Closed:
            return 0;
    }
    return 0;
}

void Connection::rearm() {
    if (state_ == State::Closed) return;
    uint64_t next = deadlineAt();
    if (next == 0) return;
    // A timer already due no later than `next` stays: firing early only re-evaluates. This keeps
    // the per-request path free of timer-heap updates.
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_)) && armed_at_ms_ <= next) return;
    uint64_t now = uv_now(server_.loop());
    armed_at_ms_ = next > now ? next : now;
    uv_timer_start(&timer_, onTimer, next > now ? next - now : 0, 0);
}

void Connection::onTimer(uv_timer_t* t) noexcept {
    auto* c = static_cast<Connection*>(t->data);
    if (c->state_ == State::Closed) return;
    uint64_t due = c->deadlineAt();
    if (due != 0 && uv_now(c->server_.loop()) >= due) {
        c->expire();
        return;
    }
    c->rearm();
}

// The current state's deadline has passed.
void Connection::expire() {
    const config::Listener& cfg = rt_->cfg;
    const uint64_t now = uv_now(server_.loop());
    const bool drained = drain_since_ms_ != 0 &&
                         now >= std::max(drain_since_ms_, last_activity_ms_) + kDrainIdleGraceMs;
    if (h2_ && (state_ == State::Idle || state_ == State::Transfer)) {
        if (drained) {
            closeAfterFlush("draining");
            return;
        }
        ++stats_.idle_timeouts;
        server_.log().debug("idle timeout", {{"listener", cfg.name}, {"client", peer_ip_}});
        // A GOAWAY first, so that the client knows no stream was lost.
        h2_->drain();
        if (state_ != State::Closed) closeAfterFlush("idle timeout");
        return;
    }
    switch (state_) {
        case State::FirstByte:
        case State::Handshake:
            if (state_ == State::FirstByte && drained) {
                close("draining");
                return;
            }
            ++stats_.handshake_failures[size_t(HandshakeFailure::Timeout)];
            server_.log().info("TLS handshake timeout", {{"listener", cfg.name}, {"client", peer_ip_}});
            close("handshake timeout");
            return;
        case State::Connecting:
            if (sides_[kUp].closing) return;  // the next address is about to be tried
            if (!sides_[kUp].connected) {
                upstreamAddressFailed(0);
                return;
            }
            ++stats_.upstream_connect_timeouts;
            server_.log().warn("upstream connect timeout",
                               {{"listener", cfg.name},
                                {"upstream", cfg.upstream.address.toString()},
                                {"client", peer_ip_}});
            upstreamFailed(504, "upstream connect timeout");
            return;
        case State::Idle:
            if (drained) {
                closeAfterFlush("draining");
                return;
            }
            if (exchanges_ == 0) break;  // the first request head is late: 408
            [[fallthrough]];
        case State::Relay:
        case State::Transfer:
            ++stats_.idle_timeouts;
            server_.log().debug("idle timeout", {{"listener", cfg.name}, {"client", peer_ip_}});
            close("idle timeout");
            return;
        case State::RequestHead:
            break;
        case State::Queued: {
            // Its turn did not come: answered 503, and the connection stays usable.
            releaseSlot();
            ++stats_.requests_overloaded;
            server_.noteRefusal(cfg.name, "upstream_queue_timeout");
            local_reason_ = "upstream_queue_timeout";
            const uint32_t retry = retryAfterSeconds(uint64_t(rt_->limiter->upstreamCap().queue_timeout.count()));
            batching_ = true;
            http::Status st = codec_->admit({503, retry});
            batching_ = false;
            afterCodec(st);
            if (state_ != State::Closed && state_ != State::Flushing) {
                updateReading(kDown);
                pump(kDown);
            }
            return;
        }
        case State::AwaitingResponse:
            server_.log().warn("upstream response timeout", {{"listener", cfg.name},
                                                             {"upstream", cfg.upstream.address.toString()},
                                                             {"client", peer_ip_}});
            codec_->localError(504);
            closeAfterFlush("upstream response timeout");
            return;
        case State::Flushing:
            close("flush timeout");
            return;
        case State::Closed:
            return;
    }
    server_.log().info("request header timeout", {{"listener", cfg.name}, {"client", peer_ip_}});
    codec_->localError(408);
    closeAfterFlush("request header timeout");
}

// ---- reading ----

size_t Connection::room(SideId from) const {
    const Side& to = sides_[1 - from];
    // HTTP/2: the client is read while what is queued for it stays below the mark (the streams'
    // own bounds are the session's flow-control windows).
    if (h2_) {
        const Side& d = sides_[kDown];
        return d.pending >= kHighWatermark ? 0 : kHighWatermark - d.pending + kReadSlack;
    }
    // HTTP, a request waits for its turn: the client is not read meanwhile.
    if (from == kDown && slot_ == Slot::Waiting) return 0;
    // HTTP before the app's connection is opened: the codec needs the request head.
    if (codec_ && from == kDown && !sides_[kUp].inited) return kReadSlack;
    if (!ready(to) || to.shut || to.pending >= kHighWatermark) return 0;
    return kHighWatermark - to.pending + kReadSlack;
}

void Connection::onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
    auto* c = static_cast<Connection*>(h->data);
    SideId id = reinterpret_cast<uv_tcp_t*>(h) == &c->sides_[kDown].tcp ? kDown : kUp;
    size_t n = Server::kReadBufferSize;
    // Once established, a read is sized to what the other side may still queue. libuv may
    // allocate once more after reading was paused, so a read is never made empty.
    if (!c->sides_[id].handshaking && c->state_ != State::FirstByte && c->state_ != State::Flushing)
        n = std::clamp(c->room(id), kMinRead, Server::kReadBufferSize);
    buf->base = reinterpret_cast<char*>(c->server_.readBuffer());
    buf->len = n;
}

void Connection::onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
    auto* c = static_cast<Connection*>(stream->data);
    SideId id = reinterpret_cast<uv_tcp_t*>(stream) == &c->sides_[kDown].tcp ? kDown : kUp;
    if (c->state_ == State::Closed) return;
    const bool joining = c->joining_;
    const uint64_t start = uv_hrtime();
    c->handleReadResult(id, nread, buf);
    // The first response has been relayed: the client is established.
    if (joining && id == kUp && nread > 0) c->joining_ = false;
    // Turnover: a client joining, or one that has just ended (closed, or its end queued).
    if (joining || c->state_ == State::Closed || c->queued_ == Queued::End)
        c->server_.noteTurnover(uv_hrtime() - start);
}

void Connection::handleReadResult(SideId id, ssize_t nread, const uv_buf_t* buf) {
    if (nread > 0) {
        handleRead(id, reinterpret_cast<const uint8_t*>(buf->base), static_cast<size_t>(nread));
    } else if (nread == UV_EOF) {
        onEof(id);
    } else if (nread < 0) {
        fail(id == kDown ? "client read error" : "upstream read error", uv_strerror(static_cast<int>(nread)));
    }
}

void Connection::handleRead(SideId id, const uint8_t* data, size_t n) {
    Side& s = sides_[id];
    touch();
    if (id == kDown) {
        stats_.bytes_in += n;
        bytes_in_ += n;
    }
    if (state_ == State::Flushing) return;  // closing: what the client still sends is read and dropped
    if (id == kDown && state_ == State::FirstByte) {
        leaveFresh();
        if (!checkFirstByte(data[0])) return;
    }
    if (!s.tls) {
        deliver(id, data, n);
        updateReading(id);
        return;
    }
    s.tls->feedCiphertext(data, n);
    if (s.handshaking) {
        // A handshake step (the client's, or the origination handshake with the app) runs after
        // the poll phase, in the server's handshake slice: first every connection with
        // something to read is served.
        queueHandshake(id);
        return;
    }
    if (id == kDown && first_read_) {
        // So is a new client's first read after its handshake (its first request, with the
        // app connection it opens): a storm's requests arrive together once their handshakes
        // are done, and would otherwise all be served in one poll phase.
        queueAfterHandshake(Queued::FirstRead);
        return;
    }
    pump(id);
}

// A handshake that has taken a step goes with those under way, ahead of new ones: each is a
// client about to be served.
void Connection::queueHandshake(SideId id) {
    if (queued_ != Queued::No) return;
    server_.deferHandshake(this, sides_[id].stepped);
    ++stats_.handshakes_waiting;
    queued_ = Queued::Handshake;
}

// With the handshakes under way: each is a client about to be served, or done with.
void Connection::queueAfterHandshake(Queued what) {
    if (queued_ != Queued::No) return;
    server_.deferHandshake(this, true);
    queued_ = what;
    updateReading(kDown);  // a first read: the session holds what was read until then
}

void Connection::dequeueHandshake() {
    if (queued_ == Queued::No) return;
    server_.cancelHandshake(this);
    if (queued_ == Queued::Handshake) --stats_.handshakes_waiting;
    queued_ = Queued::No;
}

// Counted while opening a connection to the app with TLS origination: each will need handshake
// steps, so the server's accept pacing counts them (Server::handshakesBacklogged).
void Connection::noteOriginating() {
    const bool on = state_ == State::Connecting && rt_->client_tls != nullptr;
    if (on == originating_) return;
    originating_ = on;
    server_.countOriginating(on);
}

void Connection::leaveFresh() {
    if (fresh_id_ != 0) server_.leaveFresh(fresh_id_);
    fresh_id_ = 0;
}

void Connection::resumeHandshake() {
    const Queued what = queued_;
    queued_ = Queued::No;
    if (what == Queued::Handshake) --stats_.handshakes_waiting;
    if (state_ == State::Closed) return;
    if (what == Queued::FirstRead) {
        first_read_ = false;
        pump(kDown);
        return;
    }
    if (what == Queued::End) {
        closeAfterFlush("client finished");
        return;
    }
    // One side handshakes at a time: the app is reached after the client's handshake.
    const SideId id = sides_[kDown].handshaking ? kDown : kUp;
    Side& s = sides_[id];
    if (state_ == State::Closed || !s.handshaking || !s.connected || s.closing) return;
    if (id == kUp && state_ != State::Connecting) return;  // the app was given up meanwhile
    s.stepped = true;
    driveHandshake(id);
    if (state_ == State::Closed || s.handshaking) return;
    pump(id);
}

// A TLS record starts with 0x16 (a handshake record); an HTTP request with an upper-case method.
// Anything else is neither, and is refused before any TLS state exists.
bool Connection::checkFirstByte(uint8_t byte) {
    if (byte == 0x16) {
        Side& d = sides_[kDown];
        d.tls = rt_->server_tls->newSession();
        d.handshaking = true;
        enter(State::Handshake);
        return true;
    }
    const bool http = byte >= 'A' && byte <= 'Z';
    ++stats_.handshake_failures[size_t(http ? HandshakeFailure::PlainHttp : HandshakeFailure::NotTls)];
    if (http) {
        answerPlainHttp();
        return false;
    }
    server_.log().info("TLS handshake failed", {{"listener", rt_->cfg.name},
                                                {"client", peer_ip_},
                                                {"error", "the client did not send a TLS ClientHello"}});
    close("not TLS");
    return false;
}

void Connection::answerPlainHttp() {
    server_.log().info("client sent plain HTTP to a TLS port",
                       {{"listener", rt_->cfg.name}, {"client", peer_ip_}});
    writeRaw(kDown, reinterpret_cast<const uint8_t*>(kPlainHttpAnswer), sizeof kPlainHttpAnswer - 1);
    closeAfterFlush("plain HTTP on a TLS port");
}

void Connection::driveHandshake(SideId id) {
    Side& s = sides_[id];
    tls::Result r = s.tls->handshake(Server::kHandshakeStepBudgetNs);
    flushCiphertext(id);
    if (state_ == State::Closed) return;
    switch (r) {
        case tls::Result::Ok:
            s.handshaking = false;
            onHandshakeDone(id);
            return;
        case tls::Result::WantWrite:
            // Its budget is spent: the rest of the flight is worked off in a later slice, with
            // the handshakes under way.
            queueHandshake(id);
            updateReading(id);
            return;
        case tls::Result::WantRead:
            updateReading(id);
            return;
        case tls::Result::Eof:
        case tls::Result::Error:
            if (id == kDown) {
                ++stats_.handshake_failures[size_t(classifyHandshakeFailure(s.tls->error()))];
                // A refused client certificate: say whose it was.
                const tls::PeerIdentity& peer = s.tls->info().peer;
                server_.log().info("TLS handshake failed", {{"listener", rt_->cfg.name},
                                                            {"client", peer_ip_},
                                                            {"error", s.tls->error()},
                                                            {"peer_subject", peer.subject},
                                                            {"peer_uri", peer.san_uri.empty() ? "" : peer.san_uri.front()},
                                                            {"peer_dns", peer.san_dns.empty() ? "" : peer.san_dns.front()}});
                close("TLS handshake failed");
                return;
            }
            ++stats_.upstream_connect_failures;
            server_.log().warn("upstream TLS handshake failed",
                               {{"listener", rt_->cfg.name},
                                {"upstream", rt_->cfg.upstream.address.toString()},
                                {"error", s.tls->error()}});
            upstreamFailed(502, "upstream TLS handshake failed");
            return;
    }
}

void Connection::onHandshakeDone(SideId id) {
    if (id == kUp) {
        onUpstreamReady();
        return;
    }
    const tls::SessionInfo& info = sides_[kDown].tls->info();
    int v = versionIndex(info.version);
    ++stats_.handshakes_ok[v];
    if (info.resumed) ++stats_.handshakes_resumed[v];
    stats_.handshake_seconds.observe(secondsSince(accepted_ns_));
    server_.log().debug("TLS handshake done", {{"listener", rt_->cfg.name},
                                               {"client", peer_ip_},
                                               {"version", info.version},
                                               {"cipher", info.cipher},
                                               {"sni", info.sni},
                                               {"alpn", info.alpn}});
    startCodec();
    if (h2_) {
        enter(State::Idle);
        h2_->start();
        // Draining already: the SETTINGS the session starts with, then a GOAWAY.
        if (drain_since_ms_ != 0) h2_->drain();
        if (state_ == State::Closed || state_ == State::Flushing) return;
        updateReading(kDown);
        pump(kDown);
        return;
    }
    if (!codec_) {
        connectUpstream();
        return;
    }
    enter(State::Idle);
    updateReading(kDown);
    pump(kDown);  // a request may have arrived with the client's last handshake flight
}

void Connection::connectUpstream() {
    const UpstreamTarget& target = *rt_->upstream;
    if (upstream_candidates_.empty()) {
        // Once per connection: the addresses as resolved now, recently failed ones last.
        upstream_candidates_ = target.candidates(uv_now(server_.loop()));
        upstream_attempt_ = 0;
        if (upstream_candidates_.empty()) {
            noteNoUpstreamAddress();
            upstreamFailed(503, "upstream name not resolved");
            return;
        }
    }
    Side& u = sides_[kUp];
    int r = uv_tcp_init(server_.loop(), &u.tcp);
    if (r != 0) {
        fail("upstream socket", uv_strerror(r));
        return;
    }
    u.inited = true;
    ++closes_pending_;
    if (connect_started_ns_ == 0) connect_started_ns_ = uv_hrtime();  // over every address tried
    enter(State::Connecting);
    sockaddr_storage address;
    toSockaddr(upstream_candidates_[upstream_attempt_], rt_->cfg.upstream.address.port, &address);
    r = uv_tcp_connect(&connect_req_, &u.tcp, reinterpret_cast<const sockaddr*>(&address),
                       onConnect);
    if (r != 0) {
        upstreamAddressFailed(r);
        return;
    }
    // Until the upstream is ready, the client is not read (TLS plaintext stays in the session).
    updateReading(kDown);
}

// The upstream cannot be reached. In HTTP mode a request is waiting for it (the connection is
// opened for one), so the client is answered; in TCP mode the connection just closes.
void Connection::upstreamFailed(int status, const char* reason) {
    if (codec_) {
        codec_->localError(status);
        closeAfterFlush(reason);
        return;
    }
    close(reason);
}

// The address being tried is passed over by new connections for dns.failure_backoff, and this
// connection moves on to the next one, if any, once the failed socket has closed.
void Connection::upstreamAddressFailed(int status) {
    const bool timeout = status == 0;
    const bool next = upstream_attempt_ + 1 < upstream_candidates_.size();
    noteConnectFailure(upstream_candidates_[upstream_attempt_], status, next);
    if (!next) {
        upstreamFailed(timeout ? 504 : 502,
                       timeout ? "upstream connect timeout" : "upstream connect failed");
        return;
    }
    ++upstream_attempt_;
    Side& u = sides_[kUp];
    dequeueHandshake();  // a step for the address given up (its deadline passed while queued)
    u.closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&u.tcp), onUpstreamRetryClosed);
}

void Connection::noteNoUpstreamAddress() {
    ++stats_.upstream_connect_failures;
    server_.log().warn("upstream has no address: its name has not resolved",
                       {{"listener", rt_->cfg.name},
                        {"upstream", rt_->cfg.upstream.address.toString()},
                        {"client", peer_ip_},
                        {"error", rt_->upstream->state.lastError()}});
}

void Connection::noteConnectFailure(const dns::Address& address, int status, bool next) {
    const bool timeout = status == 0;
    rt_->upstream->state.connectFailed(address, uv_now(server_.loop()));
    if (timeout) {
        ++stats_.upstream_connect_timeouts;
    } else {
        ++stats_.upstream_connect_failures;
    }
    server_.log().warn(timeout ? "upstream connect timeout" : "upstream connect failed",
                       {{"listener", rt_->cfg.name},
                        {"upstream", rt_->cfg.upstream.address.toString()},
                        {"address", address.toString()},
                        {"client", peer_ip_},
                        {"error", timeout ? "timeout" : uv_strerror(status)},
                        {"next", next ? "trying the next address" : "none left"}});
}

void Connection::onUpstreamRetryClosed(uv_handle_t* h) noexcept {
    auto* c = static_cast<Connection*>(h->data);
    Side& u = c->sides_[kUp];
    u.closing = false;
    u.inited = false;
    u.connected = false;
    u.reading = false;
    if (--c->closes_pending_ == 0) {
        delete c;
        return;
    }
    if (c->state_ == State::Connecting) c->connectUpstream();
}

void Connection::onConnect(uv_connect_t* req, int status) noexcept {
    auto* c = static_cast<Connection*>(req->data);
    // Flushing: the connect timed out and the client is being answered.
    if (status == UV_ECANCELED || c->state_ == State::Closed || c->state_ == State::Flushing) return;
    const bool joining = c->joining_;
    const uint64_t start = uv_hrtime();
    c->connected(status);
    if (joining) c->server_.noteTurnover(uv_hrtime() - start);
}

void Connection::connected(int status) {
    if (status != 0) {
        upstreamAddressFailed(status);
        return;
    }
    rt_->upstream->state.connectSucceeded(upstream_candidates_[upstream_attempt_]);
    Side& u = sides_[kUp];
    u.connected = true;
    uv_tcp_nodelay(&u.tcp, 1);
    if (int version = rt_->cfg.upstream.proxy_protocol; version != 0) sendProxyHeader(version);
    if (rt_->client_tls) {
        u.tls = rt_->client_tls->newSession();
        u.handshaking = true;
        u.stepped = false;
        // Even the first step (the ClientHello and its key share) is public-key work: it waits
        // for the handshake slice like the rest.
        queueHandshake(kUp);
        updateReading(kUp);
        return;
    }
    onUpstreamReady();
}

void Connection::sendProxyHeader(int version) {
    ProxyHeaderFacts facts;
    int len = sizeof facts.source;
    uv_tcp_getpeername(&sides_[kDown].tcp, reinterpret_cast<sockaddr*>(&facts.source), &len);
    len = sizeof facts.destination;
    uv_tcp_getsockname(&sides_[kDown].tcp, reinterpret_cast<sockaddr*>(&facts.destination), &len);
    if (sides_[kDown].tls) facts.tls = &sides_[kDown].tls->info();
    std::string header = buildProxyHeader(version, facts);
    writeRaw(kUp, reinterpret_cast<const uint8_t*>(header.data()), header.size());
}

void Connection::onUpstreamReady() {
    stats_.upstream_connect_seconds.observe(secondsSince(connect_started_ns_));
    if (app_h2_) app_h2_->session.start();
    if (!upstream_hold_.empty()) {
        Bytes held = std::move(upstream_hold_);
        upstream_hold_ = Bytes();
        send(kUp, held.data(), held.size());
        server_.buffers().put(std::move(held));
        if (state_ == State::Closed) return;
    }
    if (codec_) {
        state_ = State::Idle;  // left Connecting; settle() names the real state
        noteOriginating();
        settle();
    } else {
        enter(State::Relay);
    }
    if (state_ == State::Closed || state_ == State::Flushing) return;
    updateReading(kUp);
    updateReading(kDown);
    if (sides_[kDown].tls) pump(kDown);
    if (sides_[kUp].tls) pump(kUp);
}

// Pulls plaintext out of a side's TLS session while the other side can take it.
void Connection::pump(SideId id) {
    Side& s = sides_[id];
    if (!s.tls || s.handshaking) return;
    uint8_t* buf = server_.plainBuffer();
    while (state_ != State::Closed && state_ != State::Flushing && !s.eof) {
        size_t cap = std::min(room(id), Server::kPlainBufferSize);
        if (cap == 0) break;
        size_t n = 0;
        tls::Result r = s.tls->readPlain(buf, cap, &n);
        if (r == tls::Result::Ok) {
            if (n > 0) deliver(id, buf, n);
            continue;
        }
        if (r == tls::Result::Eof) {
            flushCiphertext(id);
            onEof(id);
            return;
        }
        if (r == tls::Result::Error) {
            flushCiphertext(id);
            fail(id == kDown ? "client TLS error" : "upstream TLS error", s.tls->error());
            return;
        }
        break;  // WantRead / WantWrite
    }
    if (state_ == State::Closed) return;
    flushCiphertext(id);  // session tickets, key updates
    updateReading(id);
}

void Connection::deliver(SideId from, const uint8_t* p, size_t n) {
    if (h2_) {
        h2_->feed(p, n);
        return;
    }
    if (app_h2_ && from == kUp) {
        deliverAppH2(p, n);
        return;
    }
    if (!codec_ || codec_->tunneling()) {
        send(from == kDown ? kUp : kDown, p, n);
        return;
    }
    // What one feed produces for a side leaves as one write (one TLS record): a rewritten head
    // and the body bytes after it are not split into separate records and syscalls.
    batching_ = true;
    http::Status st = from == kDown ? codec_->feedRequest(p, n) : codec_->feedResponse(p, n);
    batching_ = false;
    afterCodec(st);
}

void Connection::afterCodec(http::Status st) {
    for (SideId id : {kUp, kDown}) {
        Bytes& b = batch_[id];
        if (b.empty()) continue;
        send(id, b.data(), b.size());
        server_.buffers().put(std::move(b));
        b = Bytes();
    }
    if (st == http::Status::Close) {
        closeAfterFlush("HTTP exchange ended the connection");
        return;
    }
    settle();
}

void Connection::deliverAppH2(const uint8_t* p, size_t n) {
    AppH2& app = *app_h2_;
    app.status = http::Status::Continue;
    app.fed.clear();
    batching_ = true;
    const http::Status session = app.session.feed(p, n);
    if (session == http::Status::Close && app.status != http::Status::Close) app.status = codec_->responseEof();
    batching_ = false;
    // What went on to the client reopens the app's windows.
    for (const auto& [ex, bytes] : app.fed) app.session.consumed(ex, bytes);
    flushAppH2();
    if (state_ == State::Closed) return;
    afterCodec(app.status);
}

void Connection::flushAppH2() {
    while (app_h2_ && state_ != State::Closed) {
        const Side& u = sides_[kUp];
        if (!ready(u) || u.pending >= kHighWatermark) return;
        const http::Status st = app_h2_->session.flush(kHighWatermark - u.pending);
        const bool produced = !app_h2_->out.empty();
        if (produced) {
            Bytes b = std::move(app_h2_->out);
            app_h2_->out = Bytes();
            writeRaw(kUp, b.data(), b.size());
            server_.buffers().put(std::move(b));
        }
        if (st == http::Status::Close) {
            closeAfterFlush("upstream closed");
            return;
        }
        if (!produced) return;
    }
}

// ---- HTTP mode ----

void Connection::startCodec() {
    if (rt_->cfg.protocol != config::Protocol::Http) return;
    const Side& d = sides_[kDown];
    if (d.tls && d.tls->info().alpn == "h2") {
        // h2 is terminated here (every stream parsed), or tunneled raw to an h2c upstream.
        if (rt_->cfg.http.http2.enabled) {
            h2_ = std::make_unique<H2Link>(*this);
            head_since_ms_ = uv_now(server_.loop());
        }
        return;
    }
    http::CodecOptions options = codecOptions();
    if (rt_->cfg.upstream.http2 && rt_->cfg.http.http2.enabled) {
        options.max_pipelined = 1;
        http::H2UpstreamOptions o;
        o.initial_window = rt_->cfg.http.http2.initial_window;
        app_h2_ = std::make_unique<AppH2>(*this, o);
    }
    codec_ = std::make_unique<http::Codec>(options, codecFacts(), static_cast<http::CodecEvents&>(*this));
    if (drain_since_ms_ != 0) codec_->setDraining();
    // The first request head must arrive within the header timeout of this moment.
    head_since_ms_ = uv_now(server_.loop());
}

http::CodecOptions Connection::codecOptions() const {
    const config::Listener& cfg = rt_->cfg;
    http::CodecOptions o;
    o.max_header_bytes = cfg.limits.max_header_bytes;
    o.max_headers = cfg.limits.max_headers;
    o.forwarded = static_cast<http::ForwardedMode>(cfg.http.forwarded);
    o.log_fields = cfg.http.access_log;
    for (const config::RequestRate& rule : cfg.limits.request_rate) {
        if (rule.key == config::RequestKey::Header) o.admission_header = rule.header;
    }
    return o;
}

// What the codec says of this client (an HTTP/2 connection gives each stream the same facts;
// request ids count per stream then, under a prefix of their own).
http::ConnectionFacts Connection::codecFacts() const {
    const config::Listener& cfg = rt_->cfg;
    const Side& d = sides_[kDown];
    http::ConnectionFacts f;
    f.client_ip = peer_ip_;
    f.client_port = peer_port_;
    f.proto = d.tls ? "https" : "http";
    if (d.tls && cfg.http.client_cert_header) f.client_cert = clientCertHeader();
    if (cfg.http.request_id) f.request_id_prefix = requestIdPrefix();
    return f;
}

// X-Forwarded-Client-Cert in the common Hash/Subject/URI/DNS form, for a verified client.
std::string Connection::clientCertHeader() const {
    const tls::PeerIdentity& peer = sides_[kDown].tls->info().peer;
    if (!peer.presented || !peer.verified) return {};
    std::string v = "Hash=" + peer.sha256_hex;
    std::string subject;
    for (char ch : peer.subject) {
        if (ch == '"' || ch == '\\') subject += '\\';
        if (static_cast<unsigned char>(ch) < 0x20) continue;
        subject += ch;
    }
    v += ";Subject=\"" + subject + "\"";
    for (const std::string& u : peer.san_uri) v += ";URI=" + u;
    for (const std::string& d : peer.san_dns) v += ";DNS=" + d;
    return v;
}

void Connection::sendUpstream(const uint8_t* p, size_t n) { collect(kUp, p, n); }

void Connection::sendDownstream(const uint8_t* p, size_t n) { collect(kDown, p, n); }

void Connection::collect(SideId to, const uint8_t* p, size_t n) {
    if (!batching_) {
        send(to, p, n);
        return;
    }
    Bytes& b = batch_[to];
    if (b.capacity() == 0) b = server_.buffers().get();
    b.insert(b.end(), p, p + n);
}

http::Admission Connection::admitRequest(const http::Exchange& ex, std::string_view key) {
    const config::Limits& limits = rt_->cfg.limits;
    const uint64_t now = uv_now(server_.loop());
    // The first rule whose prefix the path starts with (the path as sent: no normalization).
    for (size_t i = 0; i < limits.request_rate.size(); ++i) {
        const config::RequestRate& rule = limits.request_rate[i];
        if (!std::string_view(ex.target).starts_with(rule.path_prefix)) continue;
        // Without the header, a request is keyed by its client's address.
        if (rule.key == config::RequestKey::Client || key.empty()) key = peer_ip_;
        const uint64_t wait_ms = rt_->limiter->admitRequest(rule, i, key, now);
        if (wait_ms == 0) {
            refused_in_a_row_ = 0;
            break;
        }
        ++stats_.requests_rate_limited;
        server_.noteRefusal(rt_->cfg.name, "request_rate");
        // Its local answer completes an exchange like any other: keep the start times in order.
        request_started_ns_.push_back(uv_hrtime());
        // A client that keeps sending regardless is closed after its answer.
        const bool hammering = ++refused_in_a_row_ >= kMaxRefusedInARow;
        local_reason_ = "rate_limited";
        return {.status = 429, .retry_after = retryAfterSeconds(wait_ms), .close = hammering};
    }
    // One slot per connection with requests in flight: pipelined requests ride on it.
    if (slot_ == Slot::Held) return {};
    const config::UpstreamConcurrency& cap = rt_->limiter->upstreamCap();
    if (!cap.enabled()) return {};
    ConcurrencyGate& gate = rt_->limiter->upstream();
    const ConcurrencyGate::Result r = gate.acquire(cap.max, cap.queue, reinterpret_cast<uintptr_t>(this));
    showGate(stats_, gate);
    switch (r) {
        case ConcurrencyGate::Result::Acquired:
            slot_ = Slot::Held;
            return {};
        case ConcurrencyGate::Result::Queued:
            slot_ = Slot::Waiting;
            ++stats_.requests_queued;
            return {.defer = true};
        case ConcurrencyGate::Result::Refused:
            break;
    }
    ++stats_.requests_overloaded;
    server_.noteRefusal(rt_->cfg.name, "upstream_queue_full");
    local_reason_ = "upstream_queue_full";
    request_started_ns_.push_back(uv_hrtime());
    return {503, retryAfterSeconds(uint64_t(cap.queue_timeout.count()))};
}

void Connection::onSlotGranted() {
    if (state_ == State::Closed || slot_ != Slot::Waiting) return;
    slot_ = Slot::Held;
    batching_ = true;
    http::Status st = codec_->admit({});
    batching_ = false;
    afterCodec(st);
    if (state_ == State::Closed || state_ == State::Flushing) return;
    updateReading(kDown);
    pump(kDown);
}

// Gives the connection's slot back, or its place in the queue.
void Connection::releaseSlot() {
    if (slot_ == Slot::None) return;
    const bool held = slot_ == Slot::Held;
    slot_ = Slot::None;
    ConcurrencyGate& gate = rt_->limiter->upstream();
    // A waiter already granted (and not yet told) holds a slot too.
    if (held || !gate.cancel(reinterpret_cast<uintptr_t>(this))) server_.releaseUpstreamSlot(this, *rt_->limiter);
    showGate(stats_, gate);
}

void Connection::refuseBusy() {
    static const char kBusy[] =
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Length: 20\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n"
        "\r\n"
        "Too many connections";
    started_ms_ = uv_now(server_.loop());
    touch();
    writeRaw(kDown, reinterpret_cast<const uint8_t*>(kBusy), sizeof kBusy - 1);
    closeAfterFlush("over max_connections");
}

void Connection::onRequestHead(const http::Exchange&) {
    request_started_ns_.push_back(uv_hrtime());
    ++exchanges_;
}

void Connection::onResponseHead(const http::Exchange&) {
    response_head_ns_ = uv_hrtime();
    touch();
}

void Connection::onExchangeComplete(const http::Exchange& ex) {
    if (app_h2_) ++app_h2_->exchange;  // the codec's next request is a new h2 stream
    uint64_t started = uv_hrtime();
    if (!request_started_ns_.empty()) {
        started = request_started_ns_.front();
        request_started_ns_.erase(request_started_ns_.begin());
    }
    recordExchange(ex, started, response_head_ns_, ex.version, nullptr);
    local_reason_ = nullptr;  // it named this exchange's local answer
}

void Connection::recordExchange(const http::Exchange& ex, uint64_t started, uint64_t response_head_ns,
                                const char* protocol, const char* reason) {
    const uint64_t now = uv_hrtime();
    if (!reason) reason = ex.local ? localReason(ex.status) : "";
    ++completed_;
    ++stats_.http_requests[ex.status >= 100 && ex.status < 600 ? ex.status : 0];
    const bool answered = !ex.local && response_head_ns >= started;
    if (answered) stats_.response_head_seconds.observe(double(response_head_ns - started) / 1e9);
    if (ex.local) ++stats_.http_local_responses;
    stats_.request_seconds.observe(double(now - started) / 1e9);
    if (!rt_->cfg.http.access_log) return;
    const tls::SessionInfo* info = sides_[kDown].tls ? &sides_[kDown].tls->info() : nullptr;
    const int64_t upstream_us = answered ? int64_t((response_head_ns - started) / 1000) : -1;
    server_.log().access({{"listener", rt_->cfg.name},
                          {"client", peer_ip_},
                          {"client_port", unsigned(peer_port_)},
                          {"protocol", protocol},
                          {"method", ex.method},
                          {"authority", ex.authority},
                          {"path", ex.target},
                          {"status", ex.status},
                          {"local", ex.local ? "yes" : "no"},
                          {"reason", reason},
                          {"bytes_in", ex.request_bytes},
                          {"bytes_out", ex.response_bytes},
                          {"duration_ms", int64_t((now - started) / 1000000)},
                          {"duration_us", int64_t((now - started) / 1000)},
                          {"upstream_ms", upstream_us < 0 ? -1 : upstream_us / 1000},
                          {"user_agent", ex.user_agent},
                          {"request_id", ex.request_id},
                          {"tls_version", info ? info->version : ""},
                          {"sni", info ? info->sni : ""},
                          {"alpn", info ? info->alpn : ""},
                          {"peer", info ? peerName(info->peer) : ""}});
}

// Why the proxy answered a request itself: what core was doing, else what the status says.
const char* Connection::localReason(int status) const {
    if (local_reason_) return local_reason_;
    switch (status) {
        case 400: return "invalid_request";
        case 408: return "header_timeout";
        case 413:
        case 431: return "request_too_large";
        case 501: return "not_implemented";
        case 502: return "upstream_failed";
        case 504: return "upstream_timeout";
        case 505: return "http_version";
        default: return "local";
    }
}

// The identity a verified client certificate carries: its first URI SAN (SPIFFE IDs), else its
// first DNS SAN, else its CN.
std::string Connection::peerName(const tls::PeerIdentity& peer) {
    if (!peer.verified) return {};
    if (!peer.san_uri.empty()) return peer.san_uri.front();
    if (!peer.san_dns.empty()) return peer.san_dns.front();
    return peer.cn;
}

void Connection::send(SideId to, const uint8_t* p, size_t n) {
    Side& s = sides_[to];
    if (state_ == State::Closed || s.shut || n == 0) return;
    if (to == kUp) {
        if (state_ == State::Flushing) return;  // the client is being answered locally
        if (!ready(s)) {
            // The app's connection is being opened for this request; bounded by one feed.
            if (upstream_hold_.capacity() == 0) upstream_hold_ = server_.buffers().get();
            upstream_hold_.insert(upstream_hold_.end(), p, p + n);
            return;
        }
    }
    if (app_h2_ && to == kUp) {
        if (!app_h2_->session.request(app_h2_->exchange, p, n)) {
            server_.log().warn("request not carried to the h2c app", {{"listener", rt_->cfg.name},
                                                                      {"client", peer_ip_}});
            closeAfterFlush("h2c app session failed");
            return;
        }
        flushAppH2();
        return;
    }
    if (!s.tls) {
        writeRaw(to, p, n);
        return;
    }
    // A backend may take part of the bytes, or ask for its ciphertext to be taken first.
    size_t off = 0;
    int stalls = 0;
    while (off < n) {
        size_t written = 0;
        tls::Result r = s.tls->writePlain(p + off, n - off, &written);
        off += written;
        if (r == tls::Result::Error) {
            flushCiphertext(to);
            fail("TLS write failed", s.tls->error());
            return;
        }
        flushCiphertext(to);
        if (state_ == State::Closed) return;
        if (written == 0 && (r != tls::Result::WantWrite || ++stalls > 4)) {
            fail("TLS write failed", "the TLS session took no bytes");
            return;
        }
    }
}

// ---- writing ----

void Connection::flushCiphertext(SideId id) {
    Side& s = sides_[id];
    if (!s.tls || !s.tls->hasCiphertext() || state_ == State::Closed) return;
    // An empty vector in exchange: the session keeps no spare capacity while it waits.
    Bytes out;
    s.tls->takeCiphertext(out);
    writeOwned(id, std::move(out));
}

// Writes what the socket takes at once when nothing is queued ahead of it. Returns how many
// bytes went, or nothing after failing the connection.
std::optional<size_t> Connection::writeNow(SideId id, const uint8_t* p, size_t n) {
    Side& s = sides_[id];
    if (id == kDown) {
        stats_.bytes_out += n;
        bytes_out_ += n;
    }
    if (s.pending != 0) return 0;
    uv_buf_t b = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(p)), unsigned(n));
    int r = uv_try_write(reinterpret_cast<uv_stream_t*>(&s.tcp), &b, 1);
    if (r >= 0) return size_t(r);
    if (r == UV_EAGAIN || r == UV_ENOSYS) return 0;
    fail(id == kDown ? "client write error" : "upstream write error", uv_strerror(r));
    return std::nullopt;
}

void Connection::writeRaw(SideId id, const uint8_t* p, size_t n) {
    if (state_ == State::Closed || n == 0) return;
    std::optional<size_t> sent = writeNow(id, p, n);
    if (!sent || *sent == n) return;
    WriteReq* w = server_.writeReqs().get();
    w->data = server_.buffers().get();
    w->data.assign(p + *sent, p + n);
    queueWrite(id, w);
}

void Connection::writeOwned(SideId id, Bytes&& bytes) {
    std::optional<size_t> sent;
    if (state_ != State::Closed && !bytes.empty()) sent = writeNow(id, bytes.data(), bytes.size());
    if (!sent || *sent == bytes.size()) {
        server_.buffers().put(std::move(bytes));
        return;
    }
    if (*sent > 0) bytes.erase(bytes.begin(), bytes.begin() + long(*sent));
    WriteReq* w = server_.writeReqs().get();
    w->data = std::move(bytes);
    queueWrite(id, w);
}

void Connection::queueWrite(SideId id, WriteReq* w) {
    Side& s = sides_[id];
    w->conn = this;
    w->side = id;
    w->size = w->data.size();
    w->req.data = w;
    uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(w->data.data()), unsigned(w->size));
    int r = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&s.tcp), &b, 1, onWrite);
    if (r != 0) {
        server_.writeReqs().put(w, server_.buffers());
        fail(id == kDown ? "client write error" : "upstream write error", uv_strerror(r));
        return;
    }
    s.pending += w->size;
    updateReading(id == kDown ? kUp : kDown);
}

void Connection::onWrite(uv_write_t* req, int status) noexcept {
    auto* w = static_cast<WriteReq*>(req->data);
    Connection* c = w->conn;
    auto id = static_cast<SideId>(w->side);
    c->sides_[id].pending -= w->size;
    c->server_.writeReqs().put(w, c->server_.buffers());
    if (c->state_ == State::Closed) return;
    if (status != 0) {
        c->fail(id == kDown ? "client write error" : "upstream write error", uv_strerror(status));
        return;
    }
    c->afterWrite(id);
}

void Connection::afterWrite(SideId id) {
    if (sides_[id].pending > kLowWatermark) return;
    if (app_h2_ && id == kUp) flushAppH2();
    if (h2_) {
        // The session's waiting frames go out, then the client is read again.
        h2_->clientDrained();
        if (state_ == State::Closed || state_ == State::Flushing) return;
        pump(kDown);
        updateReading(kDown);
        return;
    }
    // Resume the paused side, first draining plaintext still buffered inside its TLS session.
    SideId from = id == kDown ? kUp : kDown;
    if (sides_[from].tls) {
        pump(from);
    } else {
        updateReading(from);
    }
}

// ---- half-close and teardown ----

void Connection::onEof(SideId id) {
    Side& s = sides_[id];
    if (s.eof) return;
    s.eof = true;
    updateReading(id);
    if (id == kDown && (state_ == State::FirstByte || s.handshaking)) {
        if (s.tls) ++stats_.handshake_failures[size_t(HandshakeFailure::PeerClosed)];
        close("client closed during the TLS handshake");
        return;
    }
    if (state_ == State::Flushing) {
        if (id == kDown) close("client closed");
        return;
    }
    if (h2_) {
        closeAfterFlush("client finished");
        return;
    }
    if (codec_ && !codec_->tunneling()) {
        http::Status st = id == kDown ? codec_->requestEof() : codec_->responseEof();
        if (id == kDown && st == http::Status::Close && s.tls && queued_ == Queued::No) {
            // A TLS client done with an idle connection: its teardown (close_notify, both
            // sockets) waits for the slice too, as a storm's clients often all leave at once.
            queueAfterHandshake(Queued::End);
            return;
        }
        if (st == http::Status::Close || id == kUp) {
            closeAfterFlush(id == kDown ? "client finished" : "upstream closed");
            return;
        }
        settle();  // a client that half-closes after its requests still gets their responses
        return;
    }
    SideId to = id == kDown ? kUp : kDown;
    if (!ready(sides_[to])) {
        close(id == kDown ? "client closed before the upstream was ready" : "upstream closed");
        return;
    }
    shutdownSide(to);
    maybeFinish();
}

void Connection::shutdownSide(SideId id) {
    Side& s = sides_[id];
    if (s.shut || state_ == State::Closed || !s.connected) return;
    s.shut = true;
    if (s.tls && !s.handshaking) {
        s.tls->shutdown();
        flushCiphertext(id);
        if (state_ == State::Closed) return;
    }
    s.shutdown_req.data = this;
    int r = uv_shutdown(&s.shutdown_req, reinterpret_cast<uv_stream_t*>(&s.tcp), onShutdown);
    if (r != 0) {
        s.shut_done = true;
        if (r != UV_ENOTCONN) server_.log().debug("shutdown failed", {{"error", uv_strerror(r)}});
    }
}

void Connection::onShutdown(uv_shutdown_t* req, int status) noexcept {
    auto* c = static_cast<Connection*>(req->data);
    if (status == UV_ECANCELED || c->state_ == State::Closed) return;
    SideId id = req == &c->sides_[kDown].shutdown_req ? kDown : kUp;
    c->sides_[id].shut_done = true;
    if (c->state_ == State::Flushing && id == kDown) {
        // Everything is sent; wait for the client to close so that its unread bytes do not
        // turn our close into a reset that could destroy the answer in flight.
        if (c->sides_[kDown].eof) c->close("flushed");
        return;
    }
    c->maybeFinish();
}

void Connection::maybeFinish() {
    if (state_ == State::Closed) return;
    const Side& d = sides_[kDown];
    const Side& u = sides_[kUp];
    if (d.eof && u.eof && d.shut_done && u.shut_done) close("done");
}

// Sends what is queued for the client, then closes (after a local answer, or to end a
// connection that may have requests on the way).
void Connection::closeAfterFlush(const char* reason) {
    if (state_ == State::Closed || state_ == State::Flushing) return;
    releaseSlot();  // nothing more goes to the app
    if (!end_reason_) end_reason_ = reason;
    server_.log().debug("closing after flush", {{"reason", reason}});
    // A client that neither reads its answer nor closes gets a few seconds, not forever.
    enter(State::Flushing);
    Side& d = sides_[kDown];
    if (sides_[kUp].reading) {
        uv_read_stop(reinterpret_cast<uv_stream_t*>(&sides_[kUp].tcp));
        sides_[kUp].reading = false;
    }
    updateReading(kDown);
    if (!d.shut) shutdownSide(kDown);
    if (d.eof || (d.shut && !d.connected)) close(reason);
}

void Connection::fail(const char* what, const char* detail) {
    if (state_ == State::Closed) return;
    server_.log().debug("connection error", {{"listener", rt_->cfg.name},
                                             {"client", peer_ip_},
                                             {"error", what},
                                             {"detail", detail}});
    close(what);
}

// A served connection ends: its duration and how it ended, and in TCP mode (and for a tunnel
// after an HTTP upgrade) its one access line.
void Connection::recordEnd() {
    const double seconds = secondsSince(accepted_ns_);
    const CloseReason why = classifyClose(end_reason_);
    stats_.connection_seconds.observe(seconds);
    ++stats_.closes[size_t(why)];
    const bool tunnel = codec_ && codec_->tunneling();
    if ((rt_->cfg.protocol == config::Protocol::Http && !tunnel) || !rt_->cfg.http.access_log) return;
    const tls::SessionInfo* info =
        sides_[kDown].tls && !sides_[kDown].handshaking ? &sides_[kDown].tls->info() : nullptr;
    server_.log().access({{"listener", rt_->cfg.name},
                          {"kind", tunnel ? "tunnel" : "connection"},
                          {"client", peer_ip_},
                          {"client_port", unsigned(peer_port_)},
                          {"bytes_in", bytes_in_},
                          {"bytes_out", bytes_out_},
                          {"duration_ms", int64_t(seconds * 1000)},
                          {"end", closeReasonName(why)},
                          {"tls_version", info ? info->version : ""},
                          {"cipher", info ? info->cipher : ""},
                          {"sni", info ? info->sni : ""},
                          {"alpn", info ? info->alpn : ""},
                          {"peer", info ? peerName(info->peer) : ""}});
}

void Connection::close(const char* reason) {
    if (state_ == State::Closed) return;
    server_.log().debug("connection closed", {{"listener", rt_->cfg.name},
                                              {"client", peer_ip_},
                                              {"state", stateName(state_)},
                                              {"reason", reason}});
    state_ = State::Closed;
    if (!end_reason_) end_reason_ = reason;
    if (accepted_ns_ != 0) recordEnd();
    dequeueHandshake();
    noteOriginating();
    leaveFresh();
    if (counted_) {
        --stats_.active;
        counted_ = false;
    }
    if (client_slot_) {
        rt_->limiter->releaseConnection(peer_ip_);
        client_slot_ = false;
    }
    releaseSlot();
    if (h2_) h2_->closeAll();
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onClose);
    for (Side& s : sides_) {
        if (s.inited && !s.closing) uv_close(reinterpret_cast<uv_handle_t*>(&s.tcp), onClose);
    }
    server_.forget(this);
}

void Connection::onClose(uv_handle_t* h) noexcept { static_cast<Connection*>(h->data)->handleClosed(); }

void Connection::handleClosed() {
    if (--closes_pending_ != 0) return;
    Server& server = server_;
    const uint64_t start = uv_hrtime();
    delete this;
    server.noteTurnover(uv_hrtime() - start);
}

// Draining: HTTP exchanges in flight finish and their responses carry Connection: close; a
// request that arrives on an idle keep-alive connection is still served the same way; a
// connection that stays idle for kDrainIdleGraceMs is closed. TCP relays and handshakes
// finish on their own or at the drain deadline.
void Connection::onDrain() {
    if (state_ == State::Closed) return;
    drain_since_ms_ = uv_now(server_.loop());
    if (codec_ && !codec_->tunneling()) codec_->setDraining();
    if (h2_) h2_->drain();
    rearm();
}

// ---- flow control ----

bool Connection::wantRead(SideId id) const {
    const Side& s = sides_[id];
    if (state_ == State::Closed || s.eof || !s.connected) return false;
    if (state_ == State::Flushing) return id == kDown;  // lingering: drain what the client still sends
    if (s.handshaking || (id == kDown && state_ == State::FirstByte)) return true;
    if (id == kDown && queued_ == Queued::FirstRead) return false;
    return room(id) > 0;
}

void Connection::updateReading(SideId id) {
    Side& s = sides_[id];
    if (!s.inited || state_ == State::Closed) return;
    bool want = wantRead(id);
    if (want == s.reading) return;
    auto* stream = reinterpret_cast<uv_stream_t*>(&s.tcp);
    if (want) {
        int r = uv_read_start(stream, onAlloc, onRead);
        if (r != 0) {
            fail("read start", uv_strerror(r));
            return;
        }
    } else {
        uv_read_stop(stream);
    }
    s.reading = want;
}

void Connection::touch() { last_activity_ms_ = uv_now(server_.loop()); }

}  // namespace sidecar::core
