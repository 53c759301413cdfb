#include "core/connection.h"

#include <cstring>

#include "core/proxy_protocol.h"
#include "core/server.h"

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
    touch();
    if (rt_->server_tls) {
        Side& d = sides_[kDown];
        d.tls = rt_->server_tls->newSession();
        d.handshaking = true;
        arm(Deadline::Handshake, rt_->cfg.timeouts.handshake.count());
        updateReading(kDown);
    } else {
        startCodec();
        connectUpstream();
    }
}

// ---- reading ----

void Connection::onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
    auto* c = static_cast<Connection*>(h->data);
    buf->base = reinterpret_cast<char*>(c->server_.readBuffer());
    buf->len = Server::kReadBufferSize;
}

void Connection::onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
    auto* c = static_cast<Connection*>(stream->data);
    SideId id = reinterpret_cast<uv_tcp_t*>(stream) == &c->sides_[kDown].tcp ? kDown : kUp;
    if (c->closing_) return;
    if (nread > 0) {
        c->handleRead(id, reinterpret_cast<const uint8_t*>(buf->base), static_cast<size_t>(nread));
    } else if (nread == UV_EOF) {
        c->onEof(id);
    } else if (nread < 0) {
        c->fail(id == kDown ? "client read error" : "upstream read error", uv_strerror(static_cast<int>(nread)));
    }
}

void Connection::handleRead(SideId id, const uint8_t* data, size_t n) {
    Side& s = sides_[id];
    touch();
    if (id == kDown) stats_.bytes_in += n;
    if (flushing_) return;  // closing: what the client still sends is read and dropped
    if (!s.tls) {
        deliver(id, data, n);
        updateReading(id);
        return;
    }
    if (id == kDown && first_read_) {
        first_read_ = false;
        // A TLS record starts with 0x16; an HTTP request with an upper-case method.
        if (data[0] >= 'A' && data[0] <= 'Z') {
            answerPlainHttp();
            return;
        }
    }
    s.tls->feedCiphertext(data, n);
    if (s.handshaking) {
        driveHandshake(id);
        if (closing_ || s.handshaking) return;
    }
    pump(id);
}

void Connection::answerPlainHttp() {
    ++stats_.handshakes_failed;
    server_.log().info("client sent plain HTTP to a TLS port",
                       {{"listener", rt_->cfg.name}, {"client", peer_ip_}});
    sides_[kDown].tls.reset();
    writeRaw(kDown, reinterpret_cast<const uint8_t*>(kPlainHttpAnswer), sizeof kPlainHttpAnswer - 1);
    closeAfterFlush("plain HTTP on a TLS port");
}

void Connection::driveHandshake(SideId id) {
    Side& s = sides_[id];
    tls::Result r = s.tls->handshake();
    flushCiphertext(id);
    if (closing_) return;
    switch (r) {
        case tls::Result::Ok:
            s.handshaking = false;
            onHandshakeDone(id);
            return;
        case tls::Result::WantRead:
        case tls::Result::WantWrite:
            updateReading(id);
            return;
        case tls::Result::Eof:
        case tls::Result::Error:
            if (id == kDown) {
                ++stats_.handshakes_failed;
                server_.log().info("TLS handshake failed", {{"listener", rt_->cfg.name},
                                                            {"client", peer_ip_},
                                                            {"error", s.tls->error()}});
            } else {
                ++stats_.upstream_connect_failures;
                server_.log().warn("upstream TLS handshake failed",
                                   {{"listener", rt_->cfg.name},
                                    {"upstream", rt_->cfg.upstream.address.toString()},
                                    {"error", s.tls->error()}});
                if (codec_) {
                    failUpstreamEarly(502);
                    return;
                }
            }
            close("TLS handshake failed");
            return;
    }
}

void Connection::onHandshakeDone(SideId id) {
    const tls::SessionInfo& info = sides_[id].tls->info();
    if (id == kDown) {
        int v = versionIndex(info.version);
        ++stats_.handshakes_ok[v];
        if (info.resumed) ++stats_.handshakes_resumed[v];
        stats_.handshake_seconds.observe(double(uv_now(server_.loop()) - started_ms_) / 1000.0);
        server_.log().debug("TLS handshake done", {{"listener", rt_->cfg.name},
                                                   {"client", peer_ip_},
                                                   {"version", info.version},
                                                   {"cipher", info.cipher},
                                                   {"sni", info.sni},
                                                   {"alpn", info.alpn}});
        startCodec();
        connectUpstream();
    } else {
        onUpstreamReady();
    }
}

void Connection::connectUpstream() {
    Side& u = sides_[kUp];
    int r = uv_tcp_init(server_.loop(), &u.tcp);
    if (r != 0) {
        fail("upstream socket", uv_strerror(r));
        return;
    }
    u.inited = true;
    ++closes_pending_;
    r = uv_tcp_connect(&connect_req_, &u.tcp, reinterpret_cast<const sockaddr*>(&rt_->upstream),
                       onConnect);
    if (r != 0) {
        ++stats_.upstream_connect_failures;
        fail("upstream connect failed", uv_strerror(r));
        return;
    }
    arm(Deadline::Connect, rt_->cfg.upstream.connect_timeout.count());
    // Until the upstream is ready, plaintext stays inside the client's TLS session.
    updateReading(kDown);
}

void Connection::onConnect(uv_connect_t* req, int status) noexcept {
    auto* c = static_cast<Connection*>(req->data);
    // upstream_failed_: the connect timed out and the client is being answered.
    if (status == UV_ECANCELED || c->closing_ || c->upstream_failed_ != 0) return;
    if (status != 0) {
        ++c->stats_.upstream_connect_failures;
        c->server_.log().warn("upstream connect failed",
                              {{"listener", c->rt_->cfg.name},
                               {"upstream", c->rt_->cfg.upstream.address.toString()},
                               {"client", c->peer_ip_},
                               {"error", uv_strerror(status)}});
        if (c->codec_) {
            c->failUpstreamEarly(502);
            return;
        }
        c->close("upstream connect failed");
        return;
    }
    Side& u = c->sides_[kUp];
    u.connected = true;
    uv_tcp_nodelay(&u.tcp, 1);
    if (int version = c->rt_->cfg.upstream.proxy_protocol; version != 0) c->sendProxyHeader(version);
    if (c->rt_->client_tls) {
        u.tls = c->rt_->client_tls->newSession();
        u.handshaking = true;
        c->driveHandshake(kUp);
        return;
    }
    c->onUpstreamReady();
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
    deadline_ = Deadline::Open;
    rearmOpen();
    updateReading(kUp);
    updateReading(kDown);
    if (sides_[kDown].tls) pump(kDown);
    if (sides_[kUp].tls) pump(kUp);
}

// Pulls plaintext out of a side's TLS session while the other side can take it.
void Connection::pump(SideId id) {
    Side& s = sides_[id];
    if (!s.tls || s.handshaking) return;
    Side& o = other(id);
    uint8_t* buf = server_.plainBuffer();
    while (!closing_ && !s.eof && !flushing_ &&
           ((ready(o) && o.pending < kHighWatermark) || (id == kDown && upstream_failed_ != 0))) {
        size_t n = 0;
        tls::Result r = s.tls->readPlain(buf, Server::kPlainBufferSize, &n);
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
    if (closing_) return;
    flushCiphertext(id);  // session tickets, key updates
    updateReading(id);
}

void Connection::deliver(SideId from, const uint8_t* p, size_t n) {
    if (!codec_ || codec_->tunneling()) {
        sendTo(from == kDown ? kUp : kDown, p, n);
        return;
    }
    // What one feed produces for a side leaves as one write (one TLS record): a rewritten head
    // and the body bytes after it are not split into separate records and syscalls.
    batching_ = true;
    http::Status st = from == kDown ? codec_->feedRequest(p, n) : codec_->feedResponse(p, n);
    batching_ = false;
    for (SideId id : {kUp, kDown}) {
        Bytes& b = batch_[id];
        if (b.empty()) continue;
        sendTo(id, b.data(), b.size());
        server_.buffers().put(std::move(b));
        b = Bytes();
    }
    if (st == http::Status::Close) {
        closeAfterFlush("HTTP exchange ended the connection");
        return;
    }
    if (from == kDown) afterRequestFeed();
}

// ---- HTTP mode ----

void Connection::startCodec() {
    if (rt_->cfg.protocol != config::Protocol::Http) return;
    const Side& d = sides_[kDown];
    // h2 negotiated by ALPN is tunneled raw to an h2c upstream.
    if (d.tls && d.tls->info().alpn == "h2") return;
    const config::Listener& cfg = rt_->cfg;
    http::CodecOptions o;
    o.max_header_bytes = cfg.limits.max_header_bytes;
    o.max_headers = cfg.limits.max_headers;
    o.forwarded = static_cast<http::ForwardedMode>(cfg.http.forwarded);
    http::ConnectionFacts f;
    f.client_ip = peer_ip_;
    f.client_port = peer_port_;
    f.proto = d.tls ? "https" : "http";
    if (d.tls && cfg.http.client_cert_header) f.client_cert = clientCertHeader();
    codec_ = std::make_unique<http::Codec>(o, f, static_cast<http::CodecEvents&>(*this));
    request_started_ms_.reserve(4);
    // The first request head must arrive within the header timeout too.
    header_deadline_ms_ = uv_now(server_.loop()) + uint64_t(cfg.timeouts.header.count());
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

// The upstream cannot be reached. Nothing has been read from the client yet (it is read only
// once the upstream is ready), so no answer is owed: read the first request head so that it
// gets the 502/504 instead of a silent close. A request already forwarded is answered now.
void Connection::failUpstreamEarly(int status) {
    if (codec_->awaitingResponse()) {
        codec_->localError(status);
        closeAfterFlush("upstream unavailable");
        return;
    }
    upstream_failed_ = status;
    deadline_ = Deadline::Open;
    rearmOpen();
    updateReading(kUp);  // after a failed TLS origination: nothing more to read there
    updateReading(kDown);
    if (sides_[kDown].tls) pump(kDown);
}

void Connection::afterRequestFeed() {
    if (!codec_ || closing_) return;
    if (upstream_failed_ != 0 && codec_->awaitingResponse()) {
        codec_->localError(upstream_failed_);
        closeAfterFlush("upstream unavailable");
        return;
    }
    uint64_t now = uv_now(server_.loop());
    if (codec_->awaitingRequestHead()) {
        if (header_deadline_ms_ == 0) header_deadline_ms_ = now + uint64_t(rt_->cfg.timeouts.header.count());
    } else {
        header_deadline_ms_ = 0;
    }
    if (deadline_ == Deadline::Open) rearmOpen();
}

void Connection::sendUpstream(const uint8_t* p, size_t n) { emit(kUp, p, n); }

void Connection::sendDownstream(const uint8_t* p, size_t n) { emit(kDown, p, n); }

void Connection::emit(SideId to, const uint8_t* p, size_t n) {
    if (!batching_) {
        sendTo(to, p, n);
        return;
    }
    Bytes& b = batch_[to];
    if (b.capacity() == 0) b = server_.buffers().get();
    b.insert(b.end(), p, p + n);
}

void Connection::onRequestHead(const http::Exchange&) {
    uint64_t now = uv_now(server_.loop());
    request_started_ms_.push_back(now);
    if (response_deadline_ms_ == 0)
        response_deadline_ms_ = now + uint64_t(rt_->cfg.timeouts.upstream_response.count());
}

void Connection::onResponseHead(const http::Exchange& ex) {
    response_head_ms_ = uv_now(server_.loop());
    touch();
    // 1xx heads are followed by the real one; the deadline is met either way.
    response_deadline_ms_ = 0;
    rearmOpen();
}

void Connection::onExchangeComplete(const http::Exchange& ex) {
    uint64_t now = uv_now(server_.loop());
    uint64_t started = now;
    if (!request_started_ms_.empty()) {
        started = request_started_ms_.front();
        request_started_ms_.erase(request_started_ms_.begin());
    }
    ++stats_.http_requests[ex.status >= 100 && ex.status < 600 ? ex.status / 100 : 0];
    if (ex.local) ++stats_.http_local_responses;
    stats_.request_seconds.observe(double(now - started) / 1000.0);
    if (rt_->cfg.http.access_log) {
        const tls::SessionInfo* info = sides_[kDown].tls ? &sides_[kDown].tls->info() : nullptr;
        int64_t upstream_ms = ex.local || response_head_ms_ < started ? -1 : int64_t(response_head_ms_ - started);
        server_.log().access({{"listener", rt_->cfg.name},
                              {"client", peer_ip_},
                              {"method", ex.method},
                              {"path", ex.target},
                              {"status", ex.status},
                              {"bytes_in", ex.request_bytes},
                              {"bytes_out", ex.response_bytes},
                              {"duration_ms", int64_t(now - started)},
                              {"upstream_ms", upstream_ms},
                              {"tls_version", info ? info->version : ""},
                              {"sni", info ? info->sni : ""},
                              {"alpn", info ? info->alpn : ""}});
    }
    if (codec_ && codec_->awaitingResponse() && response_deadline_ms_ == 0)
        response_deadline_ms_ = now + uint64_t(rt_->cfg.timeouts.upstream_response.count());
    if (sides_[kDown].eof && codec_ && !codec_->awaitingResponse()) {
        closeAfterFlush("client finished");
        return;
    }
    rearmOpen();
}

void Connection::onUpgrade() {
    header_deadline_ms_ = 0;
    response_deadline_ms_ = 0;
}

void Connection::rearmOpen() {
    if (closing_ || deadline_ != Deadline::Open) return;
    uint64_t next = 0;
    auto consider = [&next](uint64_t at) {
        if (at != 0 && (next == 0 || at < next)) next = at;
    };
    // While a response head is awaited its own deadline governs; otherwise the idle one.
    uint64_t idle = uint64_t(rt_->cfg.timeouts.idle.count());
    if (idle != 0 && response_deadline_ms_ == 0) consider(last_activity_ms_ + idle);
    consider(header_deadline_ms_);
    consider(response_deadline_ms_);
    // A timer already due no later than `next` stays: firing early only re-evaluates. This keeps
    // the per-request path free of timer-heap updates.
    if (next == 0) return;
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_)) && armed_at_ms_ <= next) return;
    uint64_t now = uv_now(server_.loop());
    armed_at_ms_ = next > now ? next : now;
    uv_timer_start(&timer_, onTimer, next > now ? next - now : 0, 0);
}

void Connection::onOpenTimer() {
    uint64_t now = uv_now(server_.loop());
    const config::Listener& cfg = rt_->cfg;
    if (codec_ && header_deadline_ms_ != 0 && now >= header_deadline_ms_) {
        server_.log().info("request header timeout", {{"listener", cfg.name}, {"client", peer_ip_}});
        codec_->localError(408);
        closeAfterFlush("request header timeout");
        return;
    }
    if (codec_ && response_deadline_ms_ != 0 && now >= response_deadline_ms_) {
        server_.log().warn("upstream response timeout", {{"listener", cfg.name},
                                                         {"upstream", cfg.upstream.address.toString()},
                                                         {"client", peer_ip_}});
        codec_->localError(504);
        closeAfterFlush("upstream response timeout");
        return;
    }
    uint64_t idle = uint64_t(cfg.timeouts.idle.count());
    if (idle != 0 && response_deadline_ms_ == 0 && now - last_activity_ms_ >= idle) {
        ++stats_.idle_timeouts;
        server_.log().debug("idle timeout", {{"listener", cfg.name}, {"client", peer_ip_}});
        close("idle timeout");
        return;
    }
    rearmOpen();
}

void Connection::sendTo(SideId to, const uint8_t* p, size_t n) {
    Side& s = sides_[to];
    if (closing_ || s.shut) return;
    if (to == kUp && upstream_failed_ != 0) return;  // the request is answered locally
    if (s.tls) {
        size_t written = 0;
        tls::Result r = s.tls->writePlain(p, n, &written);
        if (r == tls::Result::Error) {
            fail("TLS write failed", s.tls->error());
            return;
        }
        flushCiphertext(to);
    } else {
        writeRaw(to, p, n);
    }
}

// ---- writing ----

void Connection::flushCiphertext(SideId id) {
    Side& s = sides_[id];
    if (!s.tls || !s.tls->hasCiphertext() || closing_) return;
    Bytes out = server_.buffers().get();
    s.tls->takeCiphertext(out);
    writeOwned(id, std::move(out));
}

// Writes what the socket takes at once when nothing is queued ahead of it. Returns how many
// bytes went, or nothing after failing the connection.
std::optional<size_t> Connection::writeNow(SideId id, const uint8_t* p, size_t n) {
    Side& s = sides_[id];
    if (id == kDown) stats_.bytes_out += n;
    if (s.pending != 0) return 0;
    uv_buf_t b = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(p)), unsigned(n));
    int r = uv_try_write(reinterpret_cast<uv_stream_t*>(&s.tcp), &b, 1);
    if (r >= 0) return size_t(r);
    if (r == UV_EAGAIN || r == UV_ENOSYS) return 0;
    fail(id == kDown ? "client write error" : "upstream write error", uv_strerror(r));
    return std::nullopt;
}

void Connection::writeRaw(SideId id, const uint8_t* p, size_t n) {
    if (closing_ || n == 0) return;
    std::optional<size_t> sent = writeNow(id, p, n);
    if (!sent || *sent == n) return;
    WriteReq* w = server_.writeReqs().get();
    w->data = server_.buffers().get();
    w->data.assign(p + *sent, p + n);
    queueWrite(id, w);
}

void Connection::writeOwned(SideId id, Bytes&& bytes) {
    std::optional<size_t> sent;
    if (!closing_ && !bytes.empty()) sent = writeNow(id, bytes.data(), bytes.size());
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
    if (c->closing_) return;
    if (status != 0) {
        c->fail(id == kDown ? "client write error" : "upstream write error", uv_strerror(status));
        return;
    }
    c->afterWrite(id);
}

void Connection::afterWrite(SideId id) {
    if (sides_[id].pending > kLowWatermark) return;
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
    if (id == kDown && s.handshaking) {
        if (s.tls) ++stats_.handshakes_failed;
        close("client closed during the TLS handshake");
        return;
    }
    if (flushing_) {
        if (id == kDown) close("client closed");
        return;
    }
    if (codec_ && !codec_->tunneling()) {
        http::Status st = id == kDown ? codec_->requestEof() : codec_->responseEof();
        // A client that half-closes after its requests still gets their responses.
        if (st == http::Status::Close || id == kUp || !codec_->awaitingResponse())
            closeAfterFlush(id == kDown ? "client finished" : "upstream closed");
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
    if (s.shut || closing_ || !s.connected) return;
    s.shut = true;
    if (s.tls && !s.handshaking) {
        s.tls->shutdown();
        flushCiphertext(id);
        if (closing_) return;
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
    if (status == UV_ECANCELED || c->closing_) return;
    SideId id = req == &c->sides_[kDown].shutdown_req ? kDown : kUp;
    c->sides_[id].shut_done = true;
    if (c->flushing_ && id == kDown) {
        // Everything is sent; wait for the client to close so that its unread bytes do not
        // turn our close into a reset that could destroy the answer in flight.
        if (c->sides_[kDown].eof) c->close("flushed");
        return;
    }
    c->maybeFinish();
}

void Connection::maybeFinish() {
    if (closing_) return;
    const Side& d = sides_[kDown];
    const Side& u = sides_[kUp];
    if (d.eof && u.eof && d.shut_done && u.shut_done) close("done");
}

// Sends what is queued for the client, then closes (used after a local answer).
void Connection::closeAfterFlush(const char* reason) {
    if (closing_ || flushing_) return;
    flushing_ = true;
    server_.log().debug("closing after flush", {{"reason", reason}});
    Side& d = sides_[kDown];
    if (sides_[kUp].reading) {
        uv_read_stop(reinterpret_cast<uv_stream_t*>(&sides_[kUp].tcp));
        sides_[kUp].reading = false;
    }
    updateReading(kDown);
    // A client that neither reads its answer nor closes gets a few seconds, not forever.
    arm(Deadline::Flush, 5000);
    if (!d.shut) shutdownSide(kDown);
    if (d.eof || (d.shut && !d.connected)) close(reason);
}

void Connection::fail(const char* what, const char* detail) {
    if (closing_) return;
    server_.log().debug("connection error", {{"listener", rt_->cfg.name},
                                             {"client", peer_ip_},
                                             {"error", what},
                                             {"detail", detail}});
    close(what);
}

void Connection::close(const char* reason) {
    if (closing_) return;
    closing_ = true;
    server_.log().debug("connection closed", {{"listener", rt_->cfg.name},
                                              {"client", peer_ip_},
                                              {"reason", reason}});
    if (counted_) {
        --stats_.active;
        counted_ = false;
    }
    uv_timer_stop(&timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), onClose);
    for (Side& s : sides_) {
        if (s.inited) uv_close(reinterpret_cast<uv_handle_t*>(&s.tcp), onClose);
    }
    server_.forget(this);
}

void Connection::onClose(uv_handle_t* h) noexcept {
    auto* c = static_cast<Connection*>(h->data);
    if (--c->closes_pending_ == 0) delete c;
}

void Connection::onDrain() {
    // TCP connections finish on their own or at the drain deadline. Connections still in
    // their handshake can go now; HTTP ones finish their exchange and answer with
    // Connection: close.
    if (sides_[kDown].handshaking) {
        close("draining");
        return;
    }
    if (codec_ && !codec_->tunneling()) {
        codec_->setDraining();
        if (codec_->idleBetweenRequests() && !codec_->awaitingResponse()) closeAfterFlush("draining");
    }
}

// ---- flow control and timers ----

bool Connection::wantRead(SideId id) const {
    const Side& s = sides_[id];
    if (closing_ || s.eof || !s.connected) return false;
    if (flushing_) return id == kDown;  // lingering: drain what the client still sends
    if (upstream_failed_ != 0) return id == kDown;  // only the request head, to answer it
    if (s.handshaking) return true;
    const Side& o = sides_[1 - id];
    return ready(o) && !o.shut && o.pending < kHighWatermark;
}

void Connection::updateReading(SideId id) {
    Side& s = sides_[id];
    if (!s.inited || closing_) return;
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

void Connection::arm(Deadline d, uint64_t ms) {
    deadline_ = d;
    armed_at_ms_ = uv_now(server_.loop()) + ms;
    uv_timer_start(&timer_, onTimer, ms, 0);
}

void Connection::onTimer(uv_timer_t* t) noexcept {
    auto* c = static_cast<Connection*>(t->data);
    if (c->closing_) return;
    const auto& cfg = c->rt_->cfg;
    switch (c->deadline_) {
        case Deadline::Handshake:
            ++c->stats_.handshake_timeouts;
            c->server_.log().info("TLS handshake timeout", {{"listener", cfg.name}, {"client", c->peer_ip_}});
            c->close("handshake timeout");
            return;
        case Deadline::Connect:
            ++c->stats_.upstream_connect_timeouts;
            c->server_.log().warn("upstream connect timeout",
                                  {{"listener", cfg.name},
                                   {"upstream", cfg.upstream.address.toString()},
                                   {"client", c->peer_ip_}});
            if (c->codec_) {
                c->failUpstreamEarly(504);
                return;
            }
            c->close("upstream connect timeout");
            return;
        case Deadline::Open:
            c->onOpenTimer();
            return;
        case Deadline::Flush:
            c->close("flush timeout");
            return;
        case Deadline::None:
            return;
    }
}

}  // namespace sidecar::core
