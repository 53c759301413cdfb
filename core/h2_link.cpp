#include "core/h2_link.h"

#include <algorithm>

#include "core/connection.h"
#include "core/ratelimit.h"
#include "core/server.h"

namespace sidecar::core {

namespace {

constexpr uint32_t kCancel = 0x8;  // HTTP/2 CANCEL

http::H2Options sessionOptions(const config::Listener& cfg) {
    http::H2Options o;
    o.max_concurrent_streams = cfg.http.http2.max_concurrent_streams;
    o.initial_window = cfg.http.http2.initial_window;
    o.max_header_bytes = cfg.limits.max_header_bytes;
    o.max_headers = cfg.limits.max_headers;
    return o;
}

}  // namespace

// One app connection: serving a stream, or idle in the pool.
struct H2Link::Upstream {
    explicit Upstream(H2Link& l) : link(l) {
        tcp.data = this;
        connect_req.data = this;
    }
    H2Link& link;
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    Stream* stream = nullptr;
    bool shared = false;  // the h2c connection every stream uses (upstream.http2)
    bool connected = false;
    bool reading = false;
    bool closing = false;
    size_t pending = 0;  // bytes queued in uv_write
};

// One request and its response: the stream's own HTTP/1.1 codec between the session and an app
// connection.
struct H2Link::Stream final : http::CodecEvents {
    Stream(H2Link& l, int32_t stream_id, const http::CodecOptions& o, const http::ConnectionFacts& f)
        : link(l), id(stream_id), codec(o, f, *this) {}

    H2Link& link;
    int32_t id;
    http::Codec codec;
    Upstream* up = nullptr;
    Bytes to_app;     // request bytes the app has not been handed yet
    Bytes to_client;  // response bytes for the session, from the last codec call
    size_t unacked = 0;  // request body bytes fed to the codec and not yet reported consumed
    uint64_t started_ns = 0;
    uint64_t response_head_ns = 0;
    uint64_t last_activity_ms = 0;
    uint64_t phase_since_ms = 0;
    uint64_t connect_started_ms = 0;
    uint64_t connect_started_ns = 0;
    http::Codec::Phase phase = http::Codec::Phase::Idle;
    std::vector<dns::Address> candidates;
    size_t attempt = 0;
    const char* local_reason = nullptr;
    bool head_request = false;
    bool complete = false;      // the exchange completed: the whole response went to the session
    bool codec_closed = false;  // the codec ended: its app connection cannot be reused
    bool eof_owed = false;      // the session is owed respondEof
    bool dirty = false;         // has bytes or an end for the session
    // With an h2c app: the exchange was handed to it, it failed there, or it is to be cancelled;
    // and the response bytes it produced and those reported consumed back to it.
    bool app_started = false;
    bool app_failed = false;
    bool cancel_owed = false;
    uint64_t fed = 0;
    uint64_t acked = 0;

    void sendUpstream(const uint8_t* p, size_t n) override { to_app.insert(to_app.end(), p, p + n); }
    void sendDownstream(const uint8_t* p, size_t n) override {
        to_client.insert(to_client.end(), p, p + n);
    }
    http::Admission admitRequest(const http::Exchange& ex, std::string_view key) override {
        return link.admit(*this, ex, key);
    }
    void onRequestHead(const http::Exchange&) override { ++link.conn_.exchanges_; }
    void onResponseHead(const http::Exchange&) override { response_head_ns = uv_hrtime(); }
    void onExchangeComplete(const http::Exchange& ex) override {
        complete = true;
        link.conn_.recordExchange(ex, started_ns, response_head_ns, "HTTP/2", local_reason);
    }
};

// The shared h2c connection to an app that speaks HTTP/2 (upstream.http2): each stream's
// HTTP/1.1 exchange, as its codec produced it, is carried as one h2 stream.
struct H2Link::AppSession final : http::H2UpstreamEvents {
    AppSession(H2Link& l, const http::H2UpstreamOptions& o) : link(l), session(o, *this) {}

    H2Link& link;
    http::H2Upstream session;
    Upstream* conn = nullptr;
    Bytes out;  // frames for the app from the last flush
    uint64_t connect_started_ms = 0;
    uint64_t connect_started_ns = 0;
    dns::Address address;

    void sendUpstream(const uint8_t* p, size_t n) override { out.insert(out.end(), p, p + n); }
    void onResponse(uint64_t exchange, const uint8_t* p, size_t n) override {
        Stream* s = link.find(int32_t(exchange));
        if (!s || s->codec_closed) return;
        s->fed += n;
        s->last_activity_ms = uv_now(link.conn_.server_.loop());
        link.runCodec(*s, s->codec.feedResponse(p, n));
    }
    void onResponseEnd(uint64_t) override {}
    void onExchangeFailed(uint64_t exchange, uint32_t) override {
        Stream* s = link.find(int32_t(exchange));
        if (!s || s->codec_closed) return;
        s->app_failed = true;
        link.runCodec(*s, s->codec.responseEof());
    }
};

H2Link::H2Link(Connection& conn)
    : conn_(conn), session_(sessionOptions(conn.rt_->cfg), *this), h2c_(conn.rt_->cfg.upstream.http2) {
    timer_.data = this;
    uv_timer_init(conn_.server_.loop(), &timer_);
    ++conn_.closes_pending_;
    check_.data = this;
    uv_check_init(conn_.server_.loop(), &check_);
    ++conn_.closes_pending_;
}

H2Link::~H2Link() = default;

void H2Link::start() {
    session_.start();
    settle();
}

H2Link::Stream* H2Link::find(int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
}

// ---- the client side ----

void H2Link::feed(const uint8_t* p, size_t n) {
    if (closed_) return;
    ++depth_;
    const http::Status st = session_.feed(p, n);
    --depth_;
    settleWith(st == http::Status::Close);
    if (st == http::Status::Close && !closed_) conn_.closeAfterFlush("HTTP/2 connection error");
}

void H2Link::clientDrained() { settle(); }

void H2Link::drain() {
    if (closed_ || goaway_) return;
    goaway_ = true;
    session_.goaway();
    // No more streams: the idle app connections are not needed.
    for (Upstream* u : std::vector<Upstream*>(idle_)) closeUpstream(u);
    idle_.clear();
    settleWith(true);
}

void H2Link::sendDownstream(const uint8_t* p, size_t n) {
    if (out_.capacity() == 0) out_ = conn_.server_.buffers().get();
    out_.insert(out_.end(), p, p + n);
}

void H2Link::onStreamRequest(int32_t id, std::string_view head, bool end_stream) {
    auto s = std::make_unique<Stream>(*this, id, conn_.codecOptions(), conn_.codecFacts());
    Stream& st = *s;
    streams_[id] = std::move(s);
    const uint64_t now = uv_now(conn_.server_.loop());
    st.started_ns = uv_hrtime();
    st.last_activity_ms = now;
    st.phase_since_ms = now;
    st.head_request = head.starts_with("HEAD ");
    if (conn_.drain_since_ms_ != 0) st.codec.setDraining();
    runCodec(st, st.codec.feedRequest(reinterpret_cast<const uint8_t*>(head.data()), head.size()));
}

void H2Link::onStreamBody(int32_t id, const uint8_t* p, size_t n) {
    Stream* s = find(id);
    if (!s) return;
    s->unacked += n;
    s->last_activity_ms = uv_now(conn_.server_.loop());
    runCodec(*s, s->codec.feedRequest(p, n));
}

void H2Link::onStreamRequestEnd(int32_t id) {
    // The head's framing (Content-Length, or the last chunk) already told the codec.
}

void H2Link::onStreamClosed(int32_t id, uint32_t error_code) {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& s = *it->second;
    if (s.up) release(s.up, s.complete && !s.codec_closed && s.codec.idleBetweenRequests());
    if (app_ && s.app_started && !s.complete && !s.app_failed) app_->session.cancel(uint64_t(id));
    if (!s.complete) {
        conn_.server_.log().debug("HTTP/2 stream reset", {{"listener", conn_.rt_->cfg.name},
                                                         {"client", conn_.peer_ip_},
                                                         {"stream", int64_t(id)},
                                                         {"error_code", int64_t(error_code)}});
    }
    finished_.push_back(std::move(it->second));
    streams_.erase(it);
}

void H2Link::onLocalResponse(int32_t, const http::Exchange& ex) {
    const uint64_t now = uv_hrtime();
    conn_.recordExchange(ex, now, 0, "HTTP/2", nullptr);
}

// ---- a stream's codec ----

http::Admission H2Link::admit(Stream& s, const http::Exchange& ex, std::string_view key) {
    const config::Limits& limits = conn_.rt_->cfg.limits;
    const uint64_t now = uv_now(conn_.server_.loop());
    for (size_t i = 0; i < limits.request_rate.size(); ++i) {
        const config::RequestRate& rule = limits.request_rate[i];
        if (!std::string_view(ex.target).starts_with(rule.path_prefix)) continue;
        if (rule.key == config::RequestKey::Client || key.empty()) key = conn_.peer_ip_;
        const uint64_t wait_ms = conn_.rt_->limiter->admitRequest(rule, i, key, now);
        if (wait_ms == 0) break;
        ++conn_.stats_.requests_rate_limited;
        conn_.server_.noteRefusal(conn_.rt_->cfg.name, "request_rate");
        s.local_reason = "rate_limited";
        return {.status = 429, .retry_after = retryAfterSeconds(wait_ms)};
    }
    return {};
}

// After a call into a stream's codec returned: what it produced is routed, outside of it. The
// stream may be gone once this returns.
void H2Link::runCodec(Stream& s, http::Status st) {
    ++depth_;
    if (!s.to_client.empty() || st == http::Status::Close) s.dirty = true;
    if (st == http::Status::Close && !s.codec_closed) {
        s.codec_closed = true;
        s.eof_owed = !s.complete;
        s.to_app.clear();  // nothing more goes to the app
        s.cancel_owed = s.app_started && !s.complete && !s.app_failed;
        if (s.up) {
            Upstream* u = s.up;
            s.up = nullptr;
            u->stream = nullptr;
            closeUpstream(u);
        }
    }
    if (!s.codec_closed && !s.to_app.empty()) {
        if (h2c_) {
            s.dirty = true;  // the shared app session takes it in settle()
        } else if (!s.up) {
            attach(s);
        } else if (s.up->connected) {
            Bytes b = std::move(s.to_app);
            s.to_app = Bytes();
            writeApp(*s.up, b.data(), b.size());
        }
    }
    const http::Codec::Phase phase = s.codec.phase();
    if (phase != s.phase) {
        s.phase = phase;
        s.phase_since_ms = uv_now(conn_.server_.loop());
    }
    // The exchange is over: its app connection serves the next stream.
    if (s.complete && s.up) {
        Upstream* u = s.up;
        release(u, !s.codec_closed && s.codec.idleBetweenRequests());
    }
    --depth_;
    settle();
}

// The session takes what the streams produced, then the client gets the session's frames.
void H2Link::settle() { settleWith(false); }

// What the session and the app session produce goes out once per loop iteration (the check
// phase), gathering every stream's frames of that iteration into one write; flush_now sends it
// at once (before a close, so that a GOAWAY is not lost).
void H2Link::settleWith(bool flush_now) {
    if (depth_ > 0 || closed_) return;
    ++depth_;
    if (h2c_) toAppSession();
    std::vector<int32_t>& ids = settle_ids_;
    ids.clear();
    for (const auto& [id, s] : streams_) {
        if (s->dirty || s->unacked != 0 || s->fed != s->acked) ids.push_back(id);
    }
    for (int32_t id : ids) {
        Stream* s = find(id);
        if (!s) continue;
        if (s->dirty) {
            s->dirty = false;
            if (!s->to_client.empty()) {
                Bytes b = std::move(s->to_client);
                s->to_client = Bytes();
                session_.respond(id, b.data(), b.size(), s->head_request);
            }
            if (s->eof_owed) {
                s->eof_owed = false;
                session_.respondEof(id);
            }
        }
        // Request body the app has taken (or that is discarded) reopens the client's windows.
        const Upstream* u = h2c_ ? (app_ ? app_->conn : nullptr) : s->up;
        bool taken = u && u->connected && u->pending <= Connection::kLowWatermark && s->to_app.empty();
        if (h2c_) taken = taken && app_->session.buffered(uint64_t(id)) <= Connection::kLowWatermark;
        if (s->unacked != 0 && (taken || s->codec_closed || s->complete)) {
            session_.consumed(id, s->unacked);
            s->unacked = 0;
        }
        // Response bytes the client is taking reopen the h2c app's windows.
        if (s->fed != s->acked && app_ && session_.buffered(id) < Connection::kHighWatermark) {
            app_->session.consumed(uint64_t(id), size_t(s->fed - s->acked));
            s->acked = s->fed;
        }
    }
    if (flush_now) {
        flushSession();
        flushAppSession();
    } else if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&check_))) {
        uv_check_start(&check_, onCheck);
    }
    --depth_;
    if (closed_) return;
    finished_.clear();
    dead_apps_.clear();
    total_buffered_ = buffered();  // once here, not per app connection
    for (Upstream* u : upstreams_) updateReading(*u);
    rearm();
    conn_.settle();
}

void H2Link::onCheck(uv_check_t* h) noexcept {
    auto* link = static_cast<H2Link*>(h->data);
    uv_check_stop(h);
    link->settleWith(true);
}

// The session's frames go out while what is queued for the client stays below the high mark; a
// client that does not read gets nothing more until its queue drains (clientDrained).
void H2Link::flushSession() {
    while (!closed_) {
        const size_t pending = conn_.sides_[Connection::kDown].pending;
        if (pending >= Connection::kHighWatermark) return;
        const http::Status st = session_.flush(Connection::kHighWatermark - pending);
        const bool produced = !out_.empty();
        if (produced) {
            Bytes b = std::move(out_);
            out_ = Bytes();
            conn_.send(Connection::kDown, b.data(), b.size());
            conn_.server_.buffers().put(std::move(b));
        }
        if (st == http::Status::Close) {
            if (!closed_) conn_.closeAfterFlush("HTTP/2 session ended");
            return;
        }
        if (!produced) return;
    }
}

// ---- app connections ----

// A stream has bytes for the app and no connection yet: an idle one from the pool, or a new one.
void H2Link::attach(Stream& s) {
    while (!idle_.empty()) {
        Upstream* u = idle_.back();
        idle_.pop_back();
        if (u->closing || !u->connected) continue;
        u->stream = &s;
        s.up = u;
        Bytes b = std::move(s.to_app);
        s.to_app = Bytes();
        writeApp(*u, b.data(), b.size());
        return;
    }
    const uint64_t now = uv_now(conn_.server_.loop());
    s.candidates = conn_.rt_->upstream->candidates(now);
    s.attempt = 0;
    s.connect_started_ns = uv_hrtime();
    if (s.candidates.empty()) {
        conn_.noteNoUpstreamAddress();
        runCodec(s, s.codec.localError(503));
        return;
    }
    connect(s);
}

void H2Link::connect(Stream& s) {
    auto* u = new Upstream(*this);
    int r = uv_tcp_init(conn_.server_.loop(), &u->tcp);
    if (r != 0) {
        delete u;
        runCodec(s, s.codec.localError(502));
        return;
    }
    ++conn_.closes_pending_;
    upstreams_.push_back(u);
    u->stream = &s;
    s.up = u;
    s.connect_started_ms = uv_now(conn_.server_.loop());
    sockaddr_storage address;
    toSockaddr(s.candidates[s.attempt], conn_.rt_->cfg.upstream.address.port, &address);
    r = uv_tcp_connect(&u->connect_req, &u->tcp, reinterpret_cast<const sockaddr*>(&address), onConnect);
    if (r != 0) connectFailed(s, r);
}

// The address being tried failed (a libuv status) or timed out (0): the next one, or an answer.
void H2Link::connectFailed(Stream& s, int status) {
    const bool timeout = status == 0;
    const bool next = s.attempt + 1 < s.candidates.size();
    conn_.noteConnectFailure(s.candidates[s.attempt], status, next);
    Upstream* u = s.up;
    s.up = nullptr;
    if (u) {
        u->stream = nullptr;
        closeUpstream(u);
    }
    if (next) {
        ++s.attempt;
        connect(s);
        return;
    }
    runCodec(s, s.codec.localError(timeout ? 504 : 502));
}

void H2Link::onConnect(uv_connect_t* req, int status) noexcept {
    auto* u = static_cast<Upstream*>(req->data);
    H2Link& link = u->link;
    if (status == UV_ECANCELED || u->closing || link.closed_) return;
    if (u->shared) {
        if (!link.app_ || link.app_->conn != u) {
            link.closeUpstream(u);
        } else if (status != 0) {
            link.appSessionFailed(status);
        } else {
            AppSession& app = *link.app_;
            link.conn_.rt_->upstream->state.connectSucceeded(app.address);
            link.conn_.stats_.upstream_connect_seconds.observe(Connection::secondsSince(app.connect_started_ns));
            u->connected = true;
            uv_tcp_nodelay(&u->tcp, 1);
            app.session.start();
        }
        link.settle();
        return;
    }
    Stream* s = u->stream;
    if (!s) {
        link.closeUpstream(u);
        return;
    }
    if (status != 0) {
        link.connectFailed(*s, status);
        return;
    }
    link.conn_.rt_->upstream->state.connectSucceeded(s->candidates[s->attempt]);
    link.conn_.stats_.upstream_connect_seconds.observe(Connection::secondsSince(s->connect_started_ns));
    u->connected = true;
    uv_tcp_nodelay(&u->tcp, 1);
    if (!s->to_app.empty()) {
        Bytes b = std::move(s->to_app);
        s->to_app = Bytes();
        link.writeApp(*u, b.data(), b.size());
    }
    link.settle();
}

void H2Link::writeApp(Upstream& u, const uint8_t* p, size_t n) {
    if (u.closing || n == 0) return;
    size_t sent = 0;
    if (u.pending == 0) {
        uv_buf_t b = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(p)), unsigned(n));
        int r = uv_try_write(reinterpret_cast<uv_stream_t*>(&u.tcp), &b, 1);
        if (r >= 0) {
            sent = size_t(r);
        } else if (r != UV_EAGAIN && r != UV_ENOSYS) {
            onAppEof(u);
            return;
        }
    }
    if (sent < n) {
        WriteReq* w = conn_.server_.writeReqs().get();
        w->data = conn_.server_.buffers().get();
        w->data.assign(p + sent, p + n);
        w->size = w->data.size();
        w->owner = &u;
        w->req.data = w;
        uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(w->data.data()), unsigned(w->size));
        int r = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&u.tcp), &b, 1, onWrite);
        if (r != 0) {
            conn_.server_.writeReqs().put(w, conn_.server_.buffers());
            onAppEof(u);
            return;
        }
        u.pending += w->size;
    }
}

void H2Link::onWrite(uv_write_t* req, int status) noexcept {
    auto* w = static_cast<WriteReq*>(req->data);
    auto* u = static_cast<Upstream*>(w->owner);
    H2Link& link = u->link;
    u->pending -= w->size;
    w->owner = nullptr;
    link.conn_.server_.writeReqs().put(w, link.conn_.server_.buffers());
    if (u->closing || link.closed_) return;
    if (status != 0) {
        link.onAppEof(*u);
        link.settle();
        return;
    }
    link.settle();
}

bool H2Link::wantRead(const Upstream& u) const {
    if (u.closing || !u.connected || closed_) return false;
    if (u.shared) {
        return conn_.sides_[Connection::kDown].pending < Connection::kHighWatermark &&
               total_buffered_ < kMaxBuffered;
    }
    const Stream* s = u.stream;
    if (!s) return true;  // idle in the pool: watch for the app closing it
    if (conn_.sides_[Connection::kDown].pending >= Connection::kHighWatermark) return false;
    return session_.buffered(s->id) < Connection::kHighWatermark && total_buffered_ < kMaxBuffered;
}

void H2Link::updateReading(Upstream& u) {
    const bool want = wantRead(u);
    if (want == u.reading) return;
    auto* stream = reinterpret_cast<uv_stream_t*>(&u.tcp);
    if (want) {
        if (uv_read_start(stream, onAlloc, onRead) != 0) {
            onAppEof(u);
            return;
        }
    } else {
        uv_read_stop(stream);
    }
    u.reading = want;
}

size_t H2Link::buffered() const {
    size_t total = 0;
    for (const auto& [id, s] : streams_) total += session_.buffered(id);
    return total;
}

// A read is sized to the room left below its stream's mark and the link's, as the
// Connection sizes its own (never empty: libuv may allocate once more after reading stopped).
void H2Link::onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
    auto* u = static_cast<Upstream*>(h->data);
    H2Link& link = u->link;
    size_t room = Connection::kHighWatermark + Connection::kReadSlack;
    if (u->shared) {
        const size_t all = link.buffered();
        room = (all < kMaxBuffered ? kMaxBuffered - all : 0) + Connection::kReadSlack;
    } else if (const Stream* s = u->stream) {
        const size_t mine = link.session_.buffered(s->id);
        const size_t all = link.buffered();
        room = std::min(mine < Connection::kHighWatermark ? Connection::kHighWatermark - mine : 0,
                        all < kMaxBuffered ? kMaxBuffered - all : 0) +
               Connection::kReadSlack;
    }
    buf->base = reinterpret_cast<char*>(link.conn_.server_.readBuffer());
    buf->len = std::clamp(room, Connection::kMinRead, Server::kReadBufferSize);
}

void H2Link::onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
    auto* u = static_cast<Upstream*>(stream->data);
    H2Link& link = u->link;
    if (u->closing || link.closed_) return;
    if (nread > 0) {
        link.onAppRead(*u, reinterpret_cast<const uint8_t*>(buf->base), size_t(nread));
    } else if (nread < 0) {
        link.onAppEof(*u);
    }
    if (!link.closed_) link.settle();
}

void H2Link::onAppRead(Upstream& u, const uint8_t* p, size_t n) {
    if (u.shared) {
        if (!app_ || app_->conn != &u) {
            closeUpstream(&u);
            return;
        }
        conn_.touch();
        ++depth_;
        const http::Status st = app_->session.feed(p, n);
        --depth_;
        if (st == http::Status::Close) appSessionFailed(0);
        return;
    }
    Stream* s = u.stream;
    if (!s) {
        closeUpstream(&u);  // an idle app connection has nothing to say
        return;
    }
    conn_.touch();
    s->last_activity_ms = uv_now(conn_.server_.loop());
    runCodec(*s, s->codec.feedResponse(p, n));
}

// The app closed its connection, or it failed.
void H2Link::onAppEof(Upstream& u) {
    if (u.shared) {
        if (app_ && app_->conn == &u) {
            appSessionFailed(0);
        } else {
            closeUpstream(&u);
        }
        return;
    }
    Stream* s = u.stream;
    if (!s) {
        closeUpstream(&u);
        return;
    }
    s->up = nullptr;
    u.stream = nullptr;
    closeUpstream(&u);
    runCodec(*s, s->codec.responseEof());
}

// A stream is done with its app connection: kept for the next stream, or closed.
void H2Link::release(Upstream* u, bool reusable) {
    if (u->stream) u->stream->up = nullptr;
    u->stream = nullptr;
    if (!reusable || goaway_ || closed_ || u->closing || !u->connected ||
        idle_.size() >= conn_.rt_->cfg.http.http2.upstream_pool) {
        closeUpstream(u);
        return;
    }
    idle_.push_back(u);
}

void H2Link::closeUpstream(Upstream* u) {
    if (u->closing) return;
    u->closing = true;
    if (u->stream) u->stream->up = nullptr;
    u->stream = nullptr;
    idle_.erase(std::remove(idle_.begin(), idle_.end(), u), idle_.end());
    uv_close(reinterpret_cast<uv_handle_t*>(&u->tcp), onUpstreamClosed);
}

void H2Link::onUpstreamClosed(uv_handle_t* h) noexcept {
    auto* u = static_cast<Upstream*>(h->data);
    H2Link& link = u->link;
    Connection& conn = link.conn_;
    link.upstreams_.erase(std::remove(link.upstreams_.begin(), link.upstreams_.end(), u),
                          link.upstreams_.end());
    delete u;
    conn.handleClosed();
}

// ---- an h2c app ----

// Streams' request bytes go to the shared app session once its connection is up; the app's
// stream limit makes new exchanges wait their turn.
void H2Link::toAppSession() {
    bool waiting = false;
    for (auto& [id, s] : streams_) {
        if (s->cancel_owed) {
            s->cancel_owed = false;
            if (app_) app_->session.cancel(uint64_t(id));
        }
        if (s->to_app.empty() || s->codec_closed) continue;
        if (!app_ || !app_->conn || !app_->conn->connected) {
            waiting = true;
            continue;
        }
        if (!s->app_started && !app_->session.canStart()) continue;
        Bytes b = std::move(s->to_app);
        s->to_app = Bytes();
        s->app_started = true;
        if (!app_->session.request(uint64_t(id), b.data(), b.size())) {
            s->app_failed = true;
            runCodec(*s, s->codec.localError(502));
        }
    }
    if (waiting && !app_) openAppSession();
}

void H2Link::openAppSession() {
    const config::Listener& cfg = conn_.rt_->cfg;
    http::H2UpstreamOptions o;
    o.initial_window = cfg.http.http2.initial_window;
    app_ = std::make_unique<AppSession>(*this, o);
    const std::vector<dns::Address> candidates = conn_.rt_->upstream->candidates(uv_now(conn_.server_.loop()));
    if (candidates.empty()) {
        conn_.noteNoUpstreamAddress();
        appSessionFailed(UV_EAI_NONAME);
        return;
    }
    auto* u = new Upstream(*this);
    if (uv_tcp_init(conn_.server_.loop(), &u->tcp) != 0) {
        delete u;
        appSessionFailed(UV_ENOMEM);
        return;
    }
    ++conn_.closes_pending_;
    upstreams_.push_back(u);
    u->shared = true;
    app_->conn = u;
    app_->address = candidates.front();
    app_->connect_started_ms = uv_now(conn_.server_.loop());
    app_->connect_started_ns = uv_hrtime();
    sockaddr_storage address;
    toSockaddr(app_->address, cfg.upstream.address.port, &address);
    const int r = uv_tcp_connect(&u->connect_req, &u->tcp, reinterpret_cast<const sockaddr*>(&address), onConnect);
    if (r != 0) appSessionFailed(r);
}

// The shared app connection failed to open (a libuv status; 0: timed out or ended): every
// stream on it or waiting for it is answered (502, 504 for a connect timeout), and the next
// stream opens a new one.
void H2Link::appSessionFailed(int status) {
    if (!app_) return;
    Upstream* u = app_->conn;
    const bool connecting = u && !u->connected;
    if (connecting) conn_.noteConnectFailure(app_->address, status, false);
    ++depth_;
    app_->session.eof();  // exchanges on it fail: 502
    const int answer = connecting && status == 0 ? 504 : 502;
    std::vector<int32_t> waiting;
    for (const auto& [id, s] : streams_) {
        if (!s->app_started && !s->to_app.empty() && !s->codec_closed) waiting.push_back(id);
    }
    for (int32_t id : waiting) {
        if (Stream* s = find(id)) runCodec(*s, s->codec.localError(answer));
    }
    --depth_;
    if (u) {
        u->stream = nullptr;
        closeUpstream(u);
    }
    app_->conn = nullptr;
    dead_apps_.push_back(std::move(app_));
}

void H2Link::flushAppSession() {
    while (app_ && app_->conn && app_->conn->connected && !app_->conn->closing) {
        Upstream& u = *app_->conn;
        if (u.pending >= Connection::kHighWatermark) return;
        const http::Status st = app_->session.flush(Connection::kHighWatermark - u.pending);
        const bool produced = !app_->out.empty();
        if (produced) {
            Bytes b = std::move(app_->out);
            app_->out = Bytes();
            writeApp(u, b.data(), b.size());
        }
        if (st == http::Status::Close) {
            appSessionFailed(0);
            return;
        }
        if (!produced) return;
    }
}

// ---- deadlines ----

uint64_t H2Link::deadlineOf(const Stream& s) const {
    const config::Listener& cfg = conn_.rt_->cfg;
    if (s.up && !s.up->connected) return s.connect_started_ms + uint64_t(cfg.upstream.connect_timeout.count());
    if (h2c_ && !s.app_started && !s.to_app.empty() && app_ && app_->conn && !app_->conn->connected)
        return app_->connect_started_ms + uint64_t(cfg.upstream.connect_timeout.count());
    if (s.codec_closed) return 0;  // answered; the session sends it at the client's pace
    if (s.phase == http::Codec::Phase::AwaitingResponse)
        return s.phase_since_ms + uint64_t(cfg.timeouts.upstream_response.count());
    const uint64_t idle = uint64_t(cfg.timeouts.idle.count());
    return idle != 0 && !s.complete ? s.last_activity_ms + idle : 0;
}

void H2Link::rearm() {
    uint64_t next = 0;
    for (const auto& [id, s] : streams_) {
        const uint64_t at = deadlineOf(*s);
        if (at != 0 && (next == 0 || at < next)) next = at;
    }
    if (next == 0) return;
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_)) && armed_at_ms_ <= next) return;
    const uint64_t now = uv_now(conn_.server_.loop());
    armed_at_ms_ = std::max(next, now);
    uv_timer_start(&timer_, onTimer, next > now ? next - now : 0, 0);
}

void H2Link::onTimer(uv_timer_t* t) noexcept {
    auto* link = static_cast<H2Link*>(t->data);
    if (link->closed_) return;
    const uint64_t now = uv_now(link->conn_.server_.loop());
    std::vector<int32_t> due;
    for (const auto& [id, s] : link->streams_) {
        const uint64_t at = link->deadlineOf(*s);
        if (at != 0 && at <= now) due.push_back(id);
    }
    ++link->depth_;
    for (int32_t id : due) {
        // An earlier expiry may have answered this stream already.
        Stream* s = link->find(id);
        if (!s) continue;
        const uint64_t at = link->deadlineOf(*s);
        if (at != 0 && at <= now) link->expire(*s);
    }
    --link->depth_;
    link->settle();
}

void H2Link::expire(Stream& s) {
    const config::Listener& cfg = conn_.rt_->cfg;
    if (s.up && !s.up->connected) {
        connectFailed(s, 0);
        return;
    }
    if (h2c_ && !s.app_started && app_ && app_->conn && !app_->conn->connected) {
        appSessionFailed(0);
        return;
    }
    if (s.phase == http::Codec::Phase::AwaitingResponse) {
        conn_.server_.log().warn("upstream response timeout", {{"listener", cfg.name},
                                                               {"upstream", cfg.upstream.address.toString()},
                                                               {"client", conn_.peer_ip_}});
        runCodec(s, s.codec.localError(504));
        return;
    }
    ++conn_.stats_.idle_timeouts;
    conn_.server_.log().debug("HTTP/2 stream idle timeout", {{"listener", cfg.name}, {"client", conn_.peer_ip_}});
    session_.resetStream(s.id, kCancel);
    s.cancel_owed = s.app_started && !s.complete && !s.app_failed;
    if (s.up) {
        Upstream* u = s.up;
        s.up = nullptr;
        u->stream = nullptr;
        closeUpstream(u);
    }
    s.codec_closed = true;
}

void H2Link::closeAll() {
    if (closed_) return;
    closed_ = true;
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onHandleClosed);
    uv_check_stop(&check_);
    uv_close(reinterpret_cast<uv_handle_t*>(&check_), onHandleClosed);
    idle_.clear();
    for (Upstream* u : std::vector<Upstream*>(upstreams_)) {
        if (u->closing) continue;
        u->closing = true;
        u->stream = nullptr;
        uv_close(reinterpret_cast<uv_handle_t*>(&u->tcp), onUpstreamClosed);
    }
    for (auto& [id, s] : streams_) s->up = nullptr;
}

void H2Link::onHandleClosed(uv_handle_t* h) noexcept {
    auto* link = static_cast<H2Link*>(h->data);
    link->conn_.handleClosed();
}

}  // namespace sidecar::core
