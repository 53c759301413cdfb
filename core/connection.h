#pragma once
// One client connection and its own upstream connection (strict 1:1 pairing). The Connection
// owns both sockets, its timer, its TLS sessions and its HTTP codec, and is freed only after
// every libuv handle it owns has delivered its close callback.
//
// Memory per connection is bounded whatever the peers do: a side is read only while the other
// side's unsent bytes are below kHighWatermark, one read adds at most Server::kReadBufferSize,
// and plaintext is pulled out of a TLS session only while the destination is below the mark.
// Worst case: 2 x (kHighWatermark + 64 KiB read + 32 KiB plaintext) + the TLS sessions'
// record buffers (about 2 x 16.7 KiB each with mbedTLS) = about 420 KiB; idle connections hold
// only the TLS record buffers and this object.

#include <uv.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/buffer.h"
#include "http/codec.h"
#include "tls/backend.h"

namespace sidecar::core {

class Server;
struct ListenerRuntime;
struct ListenerStats;

class Connection : private http::CodecEvents {
public:
    static constexpr size_t kHighWatermark = 128 * 1024;
    static constexpr size_t kLowWatermark = 32 * 1024;

    Connection(Server& server, std::shared_ptr<const ListenerRuntime> runtime);
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    // Accepts from the listening socket. On failure the connection closes itself.
    bool accept(uv_stream_t* listener);
    void start();
    // The one teardown path: closes every handle; `this` is deleted after the last callback.
    void close(const char* reason);
    // The server is draining: finish the current exchange and close.
    void onDrain();

private:
    enum SideId { kDown = 0, kUp = 1 };
    // Handshake and Connect guard the set-up; Open covers the idle, request-head and
    // upstream-response deadlines of an established connection; Flush bounds a closing one.
    enum class Deadline { None, Handshake, Connect, Open, Flush };

    struct Side {
        uv_tcp_t tcp;
        bool inited = false;      // uv_tcp_init done: needs uv_close
        bool connected = false;   // TCP established
        bool reading = false;
        bool handshaking = false;
        bool eof = false;         // the peer finished sending (FIN or close_notify)
        bool shut = false;        // we finished sending (uv_shutdown issued)
        bool shut_done = false;
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

    void handleRead(SideId id, const uint8_t* data, size_t n);
    void driveHandshake(SideId id);
    void onHandshakeDone(SideId id);
    void connectUpstream();
    void onUpstreamReady();
    void sendProxyHeader(int version);
    void pump(SideId id);
    void deliver(SideId from, const uint8_t* p, size_t n);
    void sendTo(SideId to, const uint8_t* p, size_t n);
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
    void arm(Deadline d, uint64_t ms);
    void touch();
    void fail(const char* what, const char* detail);
    void answerPlainHttp();
    void startCodec();
    void afterRequestFeed();
    void failUpstreamEarly(int status);
    void rearmOpen();
    void onOpenTimer();
    std::string clientCertHeader() const;

    // http::CodecEvents
    void sendUpstream(const uint8_t* p, size_t n) override;
    void sendDownstream(const uint8_t* p, size_t n) override;
    void onRequestHead(const http::Exchange& ex) override;
    void onResponseHead(const http::Exchange& ex) override;
    void onExchangeComplete(const http::Exchange& ex) override;
    void onUpgrade() override;
    void emit(SideId to, const uint8_t* p, size_t n);

    Server& server_;
    std::shared_ptr<const ListenerRuntime> rt_;
    ListenerStats& stats_;
    Side sides_[2];
    uv_timer_t timer_;
    uv_connect_t connect_req_;
    Deadline deadline_ = Deadline::None;
    std::unique_ptr<http::Codec> codec_;
    bool batching_ = false;  // inside a codec feed: output is gathered per side
    Bytes batch_[2];
    // Open-phase deadlines, absolute loop milliseconds (0 = not armed).
    uint64_t header_deadline_ms_ = 0;
    uint64_t response_deadline_ms_ = 0;
    // Start times of the requests in flight (pipelining keeps them in order).
    std::vector<uint64_t> request_started_ms_;
    uint64_t response_head_ms_ = 0;
    uint64_t started_ms_ = 0;
    uint64_t armed_at_ms_ = 0;  // when the timer fires, loop milliseconds
    uint64_t last_activity_ms_ = 0;
    int closes_pending_ = 0;
    bool closing_ = false;
    bool flushing_ = false;   // closing after the pending writes to the client
    bool counted_ = false;    // counted in stats.active
    bool first_read_ = true;
    int upstream_failed_ = 0;  // HTTP: upstream unreachable; the next request gets this status
    std::string peer_ip_;
    uint16_t peer_port_ = 0;
};

}  // namespace sidecar::core
