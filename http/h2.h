#pragma once

// HTTP/2 server side of one client connection, terminated with nghttp2. Pure byte transformer
// like the HTTP/1.1 codec: core feeds it the client's plaintext and, per stream, the HTTP/1.1
// response bytes that stream's exchange produced; it hands back the bytes for the client and,
// per stream, an HTTP/1.1 request (head, then body with its HTTP/1.1 framing) for core to run
// through an http::Codec to the app. No libuv, no sockets, no clocks.
//
// Every stream is parsed: nghttp2 enforces RFC 9113 section 8 (pseudo-headers, connection-
// specific headers, TE, content-length against DATA) and this class refuses what would not
// survive as HTTP/1.1 (field bytes, absolute paths, CONNECT). The HTTP/1.1 head it builds
// carries Host from :authority, the client's headers (cookies joined), and a Content-Length
// or Transfer-Encoding: chunked framing that matches the DATA that follows.
//
// Memory is bounded: a stream's header list is capped (limits.max_header_bytes, max_headers);
// a response body is buffered per stream only up to what core lets in (core stops reading the
// app while buffered(stream) is above its watermark); the request body is held to the stream's
// flow-control window, which is reopened only as core reports bytes written to the app
// (consumed); concurrent streams are capped by SETTINGS_MAX_CONCURRENT_STREAMS.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "http/codec.h"

namespace sidecar::http {

struct H2Options {
    uint32_t max_concurrent_streams = 100;
    uint32_t initial_window = 65535;      // per-stream receive window we advertise (bytes)
    uint32_t max_header_bytes = 32768;    // sum over a header list of name + value + 32 (RFC 9113)
    uint32_t max_headers = 100;           // fields in a header list, pseudo-headers included
    // Rapid reset (CVE-2023-44487): a budget of streams reset before their response completed,
    // by the client (RST_STREAM) or by the session for the client's protocol errors. It starts
    // at max(max_resets, 2 * max_concurrent_streams), each reset spends one and each stream
    // answered in full earns one back up to that cap; once spent, the connection ends with
    // GOAWAY ENHANCE_YOUR_CALM. Counted in streams, not time: the session has no clock.
    uint32_t max_resets = 200;
};

// Implemented by core. Called synchronously from inside H2Session calls; must not call back into
// the session.
class H2Events {
public:
    virtual ~H2Events() = default;
    virtual void sendDownstream(const uint8_t* p, size_t n) = 0;  // for the client; copy it
    // A stream's request head is complete and valid. `head` is an HTTP/1.1 request head, CRLFs
    // and the final blank line included. `end_stream`: no body follows (the head says so too).
    virtual void onStreamRequest(int32_t stream, std::string_view head, bool end_stream) = 0;
    // Request body bytes with their HTTP/1.1 framing (chunk-encoded when the head says chunked;
    // the last chunk and its terminator come with the last call before onStreamRequestEnd).
    virtual void onStreamBody(int32_t stream, const uint8_t* p, size_t n) = 0;
    virtual void onStreamRequestEnd(int32_t stream) = 0;  // the client finished this request
    // The stream is gone: answered in full, reset by the client, or reset by us. Called once for
    // every stream that got onStreamRequest; core drops its exchange (and its app connection
    // unless the exchange had finished cleanly). `error_code` is the HTTP/2 error code (0 for a
    // stream that ended normally). Streams still open when the session ends (a call returned
    // Close, or the session is destroyed) get no call: core drops them itself.
    virtual void onStreamClosed(int32_t stream, uint32_t error_code) = 0;
    // A request answered by the session itself, never offered to core: status 431 (header list
    // over the limits) or 400 (a request HTTP/1.1 cannot carry). For the access log and metrics.
    virtual void onLocalResponse(int32_t stream, const Exchange& ex) {}
};

// The nghttp2 library's version, for `sidecar version`.
const char* nghttp2Version();

class H2Session {
public:
    H2Session(const H2Options&, H2Events&);
    ~H2Session();
    H2Session(const H2Session&) = delete;
    H2Session& operator=(const H2Session&) = delete;

    // Queues the server's SETTINGS (sent by the next flush). Call once, before feed.
    void start();
    // Plaintext from the client. Close: a connection error (GOAWAY queued; flush, then close).
    Status feed(const uint8_t* p, size_t n);
    // HTTP/1.1 response bytes for a stream, in order and in any pieces: status line, headers,
    // body with its framing, trailers. Interim 1xx heads become non-final HEADERS (101 resets the
    // stream). The final head becomes HEADERS with connection-specific fields removed and names
    // lower-cased; the body is de-framed into DATA; chunked trailers become a trailing HEADERS.
    // `head_request`: the request was HEAD, so the response has no body whatever its head says.
    // A response that does not parse resets the stream (INTERNAL_ERROR).
    void respond(int32_t stream, const uint8_t* p, size_t n, bool head_request);
    // The app's connection ended: completes a body delimited by the connection's end; a response
    // that is incomplete otherwise resets the stream.
    void respondEof(int32_t stream);
    // Core gives up on a stream (its exchange failed after the response began): RST_STREAM.
    void resetStream(int32_t stream, uint32_t error_code);
    // Core wrote n bytes of this stream's request body to the app: reopens that much of the
    // stream's and the connection's receive windows.
    void consumed(int32_t stream, size_t n);
    // Response body bytes accepted by respond() for this stream and not yet sent to the client.
    size_t buffered(int32_t stream) const;
    // Produces the frames that may be sent now through sendDownstream, stopping once `budget`
    // bytes have gone (the rest waits for the next call). Call after feed, respond, respondEof,
    // resetStream, consumed and goaway. Close: the session is over (after a GOAWAY, or nothing
    // more can be said); close once what was sent is flushed.
    Status flush(size_t budget = SIZE_MAX);
    // The server is draining: GOAWAY with the last stream id; streams in flight finish, no new
    // ones start; once none is left, flush returns Close.
    void goaway();
    size_t openStreams() const;  // streams that got onStreamRequest and not yet onStreamClosed

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace sidecar::http
