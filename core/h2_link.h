#pragma once
// HTTP/2 terminated on a client connection (http.http2): the streams of one Connection whose
// client negotiated h2. The Connection keeps the client side (its socket, TLS session, reads,
// writes and teardown); an H2Link runs the http::H2Session over the client's plaintext and gives
// every stream its own http::Codec, fed the stream's request as HTTP/1.1, and its own app
// connection, taken from a small pool of idle keep-alive ones or opened for it. Every guarantee
// of HTTP/1.1 mode therefore holds per stream: forwarding headers and X-Forwarded-Client-Cert
// set by the proxy, header limits, 502 on a bad response, 504 on a late one, one access line.
//
// Teardown stays the Connection's: every libuv handle opened here (app sockets, the streams'
// timer, the check handle that sends each loop iteration's frames in one write) counts in its
// closes_pending_, and close() closes them all through closeAll().
//
// Memory: request bodies are held to the client's flow-control windows, which reopen only as
// the app takes the bytes; an app is read only while its stream's undelivered response bytes
// stay below Connection::kHighWatermark and the link's total below kMaxBuffered; the client is
// read only while what is queued for it stays below the same mark (core/connection.h).

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/buffer.h"
#include "core/dns.h"
#include "http/codec.h"
#include "http/h2.h"
#include "http/h2_client.h"

namespace sidecar::core {

class Connection;

class H2Link final : private http::H2Events {
public:
    // Response bytes held for the client over all streams of one connection, beyond which no
    // app connection of it is read.
    static constexpr size_t kMaxBuffered = 128 * 1024;

    explicit H2Link(Connection& conn);
    ~H2Link() override;
    H2Link(const H2Link&) = delete;
    H2Link& operator=(const H2Link&) = delete;

    void start();                            // the server's SETTINGS
    void feed(const uint8_t* p, size_t n);   // the client's plaintext
    void clientDrained();                    // the client's write queue went below the low mark
    void drain();                            // GOAWAY: streams in flight finish, no new ones
    void closeAll();                         // teardown: closes every handle opened here
    size_t openStreams() const { return streams_.size(); }

private:
    struct Stream;
    struct Upstream;
    struct AppSession;

    // http::H2Events
    void sendDownstream(const uint8_t* p, size_t n) override;
    void onStreamRequest(int32_t id, std::string_view head, bool end_stream) override;
    void onStreamBody(int32_t id, const uint8_t* p, size_t n) override;
    void onStreamRequestEnd(int32_t id) override;
    void onStreamClosed(int32_t id, uint32_t error_code) override;
    void onLocalResponse(int32_t id, const http::Exchange& ex) override;

    Stream* find(int32_t id);
    http::Admission admit(Stream& s, const http::Exchange& ex, std::string_view key);
    // After any call into the session or a stream's codec: what the streams produced goes out,
    // finished streams are dropped, reads and the timer follow.
    void settle();
    void settleWith(bool flush_now);
    static void onCheck(uv_check_t* h) noexcept;
    void flushSession();
    void runCodec(Stream& s, http::Status st);
    void deliverResponse(Stream& s);
    void endStream(Stream& s, bool reusable);

    // App connections.
    void toApp(Stream& s, const uint8_t* p, size_t n);
    void attach(Stream& s);
    void connect(Stream& s);
    void connectFailed(Stream& s, int status);
    void writeApp(Upstream& u, const uint8_t* p, size_t n);
    void updateReading(Upstream& u);
    bool wantRead(const Upstream& u) const;
    void release(Upstream* u, bool reusable);
    void closeUpstream(Upstream* u);
    void onAppRead(Upstream& u, const uint8_t* p, size_t n);
    void onAppEof(Upstream& u);
    static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) noexcept;
    static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept;
    static void onConnect(uv_connect_t* req, int status) noexcept;
    static void onWrite(uv_write_t* req, int status) noexcept;
    static void onUpstreamClosed(uv_handle_t* h) noexcept;

    // An h2c app (upstream.http2): every stream is an exchange on one shared app connection.
    void toAppSession();
    void openAppSession();
    void appSessionFailed(int status);
    void flushAppSession();

    // Per-stream deadlines: connect, upstream_response and idle, on one timer.
    uint64_t deadlineOf(const Stream& s) const;
    void rearm();
    void expire(Stream& s);
    static void onTimer(uv_timer_t* t) noexcept;
    static void onHandleClosed(uv_handle_t* h) noexcept;

    size_t buffered() const;

    Connection& conn_;
    http::H2Session session_;
    std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
    std::vector<std::unique_ptr<Stream>> finished_;  // dropped once no call is inside them
    std::vector<Upstream*> idle_;                    // keep-alive app connections, newest last
    std::vector<Upstream*> upstreams_;               // every app connection open or closing
    const bool h2c_;                                 // the app speaks h2c (upstream.http2)
    std::unique_ptr<AppSession> app_;                // the shared h2c connection, once opened
    std::vector<std::unique_ptr<AppSession>> dead_apps_;  // ended, dropped outside their calls
    Bytes out_;                                      // the session's bytes for the client
    uv_timer_t timer_;
    uv_check_t check_;  // the iteration's frames go out in the check phase (settleWith)
    uint64_t armed_at_ms_ = 0;
    size_t total_buffered_ = 0;          // buffered(), as of the last settle()
    std::vector<int32_t> settle_ids_;    // settle()'s scratch list, kept for its capacity
    bool closed_ = false;
    bool goaway_ = false;
    int depth_ = 0;  // nested settle() calls
};

}  // namespace sidecar::core
