#pragma once
// One client connection and its own upstream connection (strict 1:1 pairing). The Connection
// owns both sockets, its timer, its TLS sessions and its HTTP codec, and is freed only after
// every libuv handle it owns has delivered its close callback.
//
// State and deadlines: a connection is always in exactly one State, and the one deadline armed
// follows from it (deadlineAt()): the handshake deadline until the client's handshake is done,
// the connect deadline while the upstream is being reached, and in HTTP mode the header,
// upstream-response or idle deadline depending on where the exchange stands, as the codec
// reports it after each call (never from inside the codec's callbacks).
//
// Descriptors: a TLS listener allocates no TLS session until the client's first byte arrives
// (and a first byte that cannot start a TLS record or an HTTP request closes at once); HTTP
// mode opens the upstream connection when the first request head is complete, so an idle client
// holds one descriptor. TCP mode connects as soon as the client is established.
//
// Memory per connection is bounded whatever the peers do: a side is read only while the other
// side's unsent bytes are below kHighWatermark, and one read (or one pull of plaintext out of a
// TLS session) is sized to the room left below kHighWatermark + kReadSlack. Worst case per
// direction: kHighWatermark + kReadSlack + one TLS record's expansion, so both peers stalled:
// 2 x (32 + 16 + 1) KiB = about 98 KiB plus the TLS sessions' record buffers (about
// 2 x 16.7 KiB each with mbedTLS). A client that reads a long response slowly holds at most
// one direction's worth (~49 KiB) plus its TLS session. The kernel's socket buffers do the
// bulk of the buffering; these bounds only matter once a peer stops reading. Idle connections hold the TLS session
// and this object (about 1.3 KiB).

#include <uv.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/buffer.h"
#include "core/dns.h"
#include "http/codec.h"
#include "tls/backend.h"

namespace sidecar::core {

class Server;
class H2Link;
struct ListenerRuntime;
struct ListenerStats;

class Connection : private http::CodecEvents {
public:
    static constexpr size_t kHighWatermark = 32 * 1024;
    static constexpr size_t kLowWatermark = 8 * 1024;
    static constexpr size_t kReadSlack = 16 * 1024;  // a read when the other side is just below the mark
    static constexpr size_t kMinRead = 4 * 1024;
    static constexpr uint64_t kFlushTimeoutMs = 5000;
    // While draining, an HTTP connection with nothing in flight is closed once it has stayed
    // idle this long (a request already on its way is still served, with Connection: close).
    static constexpr uint64_t kDrainIdleGraceMs = 1000;
    // Requests answered 429 one after another on one connection, with none admitted between
    // them, after which the connection is closed with the last answer.
    static constexpr uint32_t kMaxRefusedInARow = 32;

    Connection(Server& server, std::shared_ptr<const ListenerRuntime> runtime);
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Accepts from the listening socket. On failure the connection closes itself.
    bool accept(uv_stream_t* listener);
    void start();
    // The one teardown path: closes every handle; `this` is deleted after the last callback.
    void close(const char* reason);
    // The server is draining: finish what is in flight, answer with Connection: close, close.
    void onDrain();
    // The server runs a handshake step it had queued (Server::deferHandshake): the client's,
    // or the origination handshake with the app; or serves the client's first read after its
    // handshake, or its end (Queued).
    void resumeHandshake();
    const std::string& peerIp() const { return peer_ip_; }
    // Counted in its client's open connections (limits.per_client): released when it closes.
    void holdClientSlot() { client_slot_ = true; }
    // The server gave this connection's queued request a slot (limits.upstream_concurrency).
    void onSlotGranted();
    // Plain HTTP listener over max_connections: a 503 answer, then close.
    void refuseBusy();

    enum class State : uint8_t {
        FirstByte,         // TLS listener, nothing received: no TLS session yet; handshake deadline
        Handshake,         // client TLS handshake; handshake deadline
        Connecting,        // upstream TCP connect and TLS origination; connect deadline
        Relay,             // TCP mode, or an HTTP connection turned tunnel; idle deadline
        Idle,              // HTTP, between requests; idle deadline (header deadline before the first)
        Queued,            // HTTP, a request waits for an upstream slot; queue deadline
        RequestHead,       // HTTP, a request head is arriving; header deadline
        AwaitingResponse,  // HTTP, request forwarded, no response head yet; upstream_response
        Transfer,          // HTTP, a request or response body is streaming; idle deadline
        Flushing,          // last bytes to the client, then close; flush deadline
        Closed,            // handles closing
    };
    static const char* stateName(State s);
    State state() const { return state_; }

private:
    friend class H2Link;
    enum SideId { kDown = 0, kUp = 1 };
    // What it waits for in the server's handshake queue: a handshake step (either side), or,
    // not counted as a handshake, the client's first read after its handshake, or the end of
    // a client that finished on an idle connection.
    enum class Queued : uint8_t { No, Handshake, FirstRead, End };

    struct Side {
        uv_tcp_t tcp;
        bool inited = false;      // uv_tcp_init done: needs uv_close
        bool connected = false;   // TCP established
        bool reading = false;
        bool handshaking = false;
        bool stepped = false;     // its handshake has taken a step in the server's slice
        bool eof = false;         // the peer finished sending (FIN or close_notify)
        bool shut = false;        // we finished sending (uv_shutdown issued)
        bool shut_done = false;
        bool closing = false;     // closed to try the next upstream address; callback pending
        size_t pending = 0;       // bytes queued in uv_write
        std::unique_ptr<tls::Session> tls;
        uv_shutdown_t shutdown_req;
    };

    ~Connection();

    static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) noexcept;
    static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept;
    static void onWrite(uv_write_t* req, int status) noexcept;
    static void onConnect(uv_connect_t* req, int status) noexcept;
    static void onShutdown(uv_shutdown_t* req, int status) noexcept;
    static void onTimer(uv_timer_t* t) noexcept;
    static void onClose(uv_handle_t* h) noexcept;

    Side& other(SideId id) { return sides_[1 - id]; }
    bool ready(const Side& s) const { return s.connected && !s.handshaking; }
    // How many bytes may be taken from `from` now without passing the destination's bound.
    size_t room(SideId from) const;

    // ---- states and deadlines ----
    void enter(State s);
    void settle();
    uint64_t deadlineAt() const;
    void rearm();
    void expire();

    void handleRead(SideId id, const uint8_t* data, size_t n);
    void handleReadResult(SideId id, ssize_t nread, const uv_buf_t* buf);
    void connected(int status);
    bool checkFirstByte(uint8_t byte);
    // A handshake step for the server's handshake slice; dequeued when no longer wanted.
    void queueHandshake(SideId id);
    void queueAfterHandshake(Queued what);
    void dequeueHandshake();
    void noteOriginating();
    void driveHandshake(SideId id);
    void onHandshakeDone(SideId id);
    void connectUpstream();
    void upstreamFailed(int status, const char* reason);
    // The connect to the current upstream address failed (a libuv status) or timed out (0).
    void upstreamAddressFailed(int status);
    static void onUpstreamRetryClosed(uv_handle_t* h) noexcept;
    // The upstream's name has not resolved, so there is no address to try: counted and logged.
    void noteNoUpstreamAddress();
    // The connect to `address` failed (a libuv status) or timed out (0): new connections pass it
    // over for dns.failure_backoff; counted and logged. `next`: another address will be tried.
    void noteConnectFailure(const dns::Address& address, int status, bool next);
    void onUpstreamReady();
    void sendProxyHeader(int version);
    void pump(SideId id);
    void deliver(SideId from, const uint8_t* p, size_t n);
    // The one path for bytes to a side: through its TLS session if it has one; held while the
    // upstream is being reached.
    void send(SideId to, const uint8_t* p, size_t n);
    void flushCiphertext(SideId id);
    std::optional<size_t> writeNow(SideId id, const uint8_t* p, size_t n);
    void writeRaw(SideId id, const uint8_t* p, size_t n);
    void writeOwned(SideId id, Bytes&& bytes);
    void queueWrite(SideId id, WriteReq* w);
    void afterWrite(SideId id);
    void onEof(SideId id);
    void shutdownSide(SideId id);
    void maybeFinish();
    void closeAfterFlush(const char* reason);
    void updateReading(SideId id);
    bool wantRead(SideId id) const;
    void touch();
    void fail(const char* what, const char* detail);
    void answerPlainHttp();
    void startCodec();
    http::CodecOptions codecOptions() const;
    http::ConnectionFacts codecFacts() const;
    std::string clientCertHeader() const;
    // One request's access line and metrics (HTTP/1.1 exchanges and HTTP/2 streams alike).
    void recordExchange(const http::Exchange& ex, uint64_t started_ns, uint64_t response_head_ns,
                        const char* protocol, const char* reason);
    // HTTP/2: the state follows from whether streams are open.
    void settleH2();
    // An HTTP/1.1 client of an h2c app: the app's frames in, the session's frames out.
    void deliverAppH2(const uint8_t* p, size_t n);
    void flushAppH2();
    // A handle this connection counts in closes_pending_ has delivered its close callback.
    void handleClosed();

    // http::CodecEvents: record only; deadlines are settled after the codec call returns.
    void sendUpstream(const uint8_t* p, size_t n) override;
    void sendDownstream(const uint8_t* p, size_t n) override;
    http::Admission admitRequest(const http::Exchange& ex, std::string_view key) override;
    void onRequestHead(const http::Exchange& ex) override;
    void onResponseHead(const http::Exchange& ex) override;
    void onExchangeComplete(const http::Exchange& ex) override;
    void collect(SideId to, const uint8_t* p, size_t n);
    // After a codec call: sends what it produced per side, then closes or settles.
    void afterCodec(http::Status st);
    void releaseSlot();
    void recordEnd();
    const char* localReason(int status) const;
    static std::string peerName(const tls::PeerIdentity& peer);
    static double secondsSince(uint64_t ns) { return ns == 0 ? 0 : double(uv_hrtime() - ns) / 1e9; }

    Server& server_;
    std::shared_ptr<const ListenerRuntime> rt_;
    ListenerStats& stats_;
    Side sides_[2];
    uv_timer_t timer_;
    uv_connect_t connect_req_;
    State state_ = State::FirstByte;
    std::unique_ptr<http::Codec> codec_;
    std::unique_ptr<H2Link> h2_;  // HTTP/2 terminated here (http.http2, ALPN h2)
    // An HTTP/1.1 client of an h2c app (upstream.http2 with http.http2): its exchanges, one at a
    // time, are h2 streams on the app connection.
    struct AppH2;
    std::unique_ptr<AppH2> app_h2_;
    bool batching_ = false;  // inside a codec feed: output is gathered per side
    Bytes batch_[2];
    Bytes upstream_hold_;  // HTTP: bytes for the app while its connection is being opened
    uint64_t state_since_ms_ = 0;     // when the current state was entered
    uint64_t head_since_ms_ = 0;      // when the request head being received began (0 = none)
    uint64_t drain_since_ms_ = 0;     // when the server began draining (0 = not draining)
    uint64_t exchanges_ = 0;          // request heads forwarded on this connection
    uint64_t completed_ = 0;          // exchanges completed on this connection
    uint64_t entered_completed_ = 0;  // completed_ when the current state was entered
    // Start times (uv_hrtime) of the requests in flight (pipelining keeps them in order).
    std::vector<uint64_t> request_started_ns_;
    uint64_t response_head_ns_ = 0;
    uint64_t accepted_ns_ = 0;         // uv_hrtime at start(); 0: never served
    uint64_t connect_started_ns_ = 0;  // the upstream connect began
    uint64_t bytes_in_ = 0;            // from the client, on the wire
    uint64_t bytes_out_ = 0;           // to the client, on the wire
    const char* end_reason_ = nullptr;    // why it ends: the first reason given
    const char* local_reason_ = nullptr;  // why core answers the next local response
    uint64_t started_ms_ = 0;
    uint64_t armed_at_ms_ = 0;  // when the timer fires, loop milliseconds (0 = not armed)
    uint64_t last_activity_ms_ = 0;
    int closes_pending_ = 0;
    bool counted_ = false;    // counted in stats.active
    Queued queued_ = Queued::No;
    bool first_read_ = true;  // the client's first read after its handshake is still to come
    // A TLS client until its first response has been relayed: its poll-phase work counts as
    // turnover (Server::noteTurnover).
    bool joining_ = false;
    bool originating_ = false;  // counted in Server::countOriginating
    uint64_t fresh_id_ = 0;  // a TLS connection with no first byte yet: its id in Server::enterFresh
    void leaveFresh();
    bool client_slot_ = false;  // counted in its client's open connections
    uint32_t refused_in_a_row_ = 0;  // limits.request_rate refusals since the last admitted request
    // Its place in the listener's upstream concurrency gate (limits.upstream_concurrency): a
    // slot is held from a request's admission until nothing is in flight on the connection.
    enum class Slot : uint8_t { None, Waiting, Held } slot_ = Slot::None;
    std::string peer_ip_;
    uint16_t peer_port_ = 0;
    // The upstream addresses this connection tries, in order (one after another on connect
    // failure or timeout), and the one being tried.
    std::vector<dns::Address> upstream_candidates_;
    size_t upstream_attempt_ = 0;
};

}  // namespace sidecar::core
