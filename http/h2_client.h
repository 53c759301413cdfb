#pragma once

// HTTP/2 client side of one cleartext (h2c, prior knowledge) connection to the app, driven with
// nghttp2. Pure byte transformer like H2Session: core hands it, per exchange, the HTTP/1.1
// request bytes an http::Codec produced, and gets back, per exchange, HTTP/1.1 response bytes
// that the same kind of Codec parses. Many exchanges share the one connection as streams. No
// libuv, no sockets, no clocks.
//
// Requests are parsed with llhttp (no lenient flag) and become HEADERS (+ DATA, + trailing
// HEADERS). Responses are rebuilt as HTTP/1.1: the status line, the app's fields, and a framing
// that matches what follows: Content-Length when the app declared one (trailers, if any, are
// then dropped), otherwise Transfer-Encoding: chunked with the trailers as chunked trailer
// fields (gRPC's grpc-status), nothing for HEAD, 204 and 304.
//
// Memory is bounded: a response header list is capped (options.max_header_bytes, advertised as
// SETTINGS_MAX_HEADER_LIST_SIZE); response DATA is held to the stream's receive window, which
// reopens only as core reports bytes handed onward (consumed); request body is buffered per
// exchange only up to what core lets in (it stops feeding an exchange while buffered() is above
// its watermark); control-frame floods from the app end the connection (nghttp2's limits).

#include <cstddef>
#include <cstdint>
#include <memory>

#include "http/codec.h"

namespace sidecar::http {

struct H2UpstreamOptions {
    uint32_t initial_window = 65535;    // per-stream receive window we advertise (bytes)
    uint32_t max_header_bytes = 65536;  // a response header list larger than this resets the
                                        // stream (502 by core)
};

// Implemented by core. Called synchronously from inside H2Upstream calls; must not call back
// into the H2Upstream.
class H2UpstreamEvents {
public:
    virtual ~H2UpstreamEvents() = default;
    virtual void sendUpstream(const uint8_t* p, size_t n) = 0;  // bytes for the app; copy them
    // HTTP/1.1 response bytes for an exchange (head, body with framing, trailers), in order.
    virtual void onResponse(uint64_t exchange, const uint8_t* p, size_t n) = 0;
    // The exchange's response is complete (all its bytes were given to onResponse).
    virtual void onResponseEnd(uint64_t exchange) = 0;
    // The exchange failed: the app reset its stream or the response was malformed; core answers
    // 502 if nothing was sent yet. Called at most once per exchange, never after onResponseEnd.
    // `error_code` is the HTTP/2 error code (REFUSED_STREAM: the app never processed it, so it
    // may be retried on another connection).
    virtual void onExchangeFailed(uint64_t exchange, uint32_t error_code) = 0;
};

class H2Upstream {
public:
    H2Upstream(const H2UpstreamOptions&, H2UpstreamEvents&);
    ~H2Upstream();
    H2Upstream(const H2Upstream&) = delete;
    H2Upstream& operator=(const H2Upstream&) = delete;

    void start();  // connection preface + SETTINGS (sent by the next flush)
    // HTTP/1.1 request bytes for an exchange (core's own id), in order and in any pieces. The
    // head becomes HEADERS (Host -> :authority, connection-specific fields dropped: connection,
    // keep-alive, proxy-connection, transfer-encoding, upgrade, and te unless its value is
    // "trailers"; names lower-cased; :scheme http), the body DATA (de-chunked), chunked trailers
    // a trailing HEADERS. Returns false if the request cannot be carried (malformed HTTP/1.1, or
    // the session is over): core fails that exchange. An exchange whose response ended before
    // its request keeps taking the rest of the request (dropped once the app stops reading it).
    bool request(uint64_t exchange, const uint8_t* p, size_t n);
    // Core gives up on an exchange (client reset, timeout): RST_STREAM CANCEL; no further events
    // for it.
    void cancel(uint64_t exchange);
    // Bytes from the app. Close on a connection error (open exchanges get onExchangeFailed) or
    // after a GOAWAY once nothing is left.
    Status feed(const uint8_t* p, size_t n);
    // Frames for the app through sendUpstream, stopping once about `budget` bytes have gone (the
    // rest waits for the next call). Call after start, request, cancel, feed and consumed.
    // Close: the session is over; close once what was sent is flushed.
    Status flush(size_t budget = SIZE_MAX);
    // Request body bytes accepted by request() for this exchange and not yet sent to the app
    // (core stops feeding that exchange above its watermark).
    size_t buffered(uint64_t exchange) const;
    // Core handed n response bytes of this exchange onward (to the client): reopens that much
    // of the stream's and the connection's windows, counted in DATA bytes (heads and chunk
    // framing open nothing).
    void consumed(uint64_t exchange, size_t n);
    // A new exchange may start now (below the app's SETTINGS_MAX_CONCURRENT_STREAMS, no GOAWAY
    // received, the session not over).
    bool canStart() const;
    size_t activeExchanges() const;  // exchanges whose response has neither ended nor failed
    // The app closed the connection: every exchange still open gets onExchangeFailed.
    void eof();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sidecar::http
