#pragma once

// What the two HTTP/2 sides (H2Session towards clients, H2Upstream towards the app) share:
// both translate between HTTP/1.1 bytes and HTTP/2 frames with nghttp2, so both check fields
// the same way, configure their nghttp2 session with the same flood limits, feed a body into
// DATA frames from a buffer, and map what core reports as handed on (HTTP/1.1 bytes, framing
// included) back to the DATA bytes flow control counts. Internal to sidecar_http; no libuv.

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace sidecar::http::h2 {

constexpr size_t kFieldOverhead = 32;  // RFC 9113 section 6.5.2: per field, name + value + 32

// ---- fields ----

struct Field {
    std::string name, value;
};

inline char lowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? char(c + ('a' - 'A')) : c; }
std::string lowered(std::string_view s);
std::string_view trimmed(std::string_view s);  // without surrounding spaces and tabs
bool isTchar(char c);
// A lower-case token: what HTTP/1.1 reads back as the same field name.
bool isFieldName(std::string_view s);
// No byte that would end or split an HTTP/1.1 header line.
bool isFieldValue(std::string_view s);
// Fields that describe one HTTP/1.1 connection and mean nothing (or are forbidden) in HTTP/2,
// `te` included (its one value HTTP/2 carries, "trailers", is each caller's exception).
bool isConnectionSpecific(std::string_view lower);
// The lower-cased names a Connection field's value lists: hop-by-hop fields too (RFC 9110
// section 7.6.1). Appended to `named`.
void addConnectionOptions(std::string_view value, std::vector<std::string>& named);
// A chunk-size line's number.
void appendHex(std::string& out, size_t n);
// A view for nghttp2 of bytes that must outlive the submit call.
nghttp2_nv makeNv(std::string_view name, std::string_view value);

// An HTTP/1.1 head (or trailer section) as llhttp hands it over: in pieces, which are counted
// so that a peer (or a caller's bug) cannot grow it without end. The add* calls return what an
// llhttp callback returns: 0, or -1 once the head is over `limit` bytes.
struct HeadReader {
    size_t bytes = 0;         // of the head so far
    std::string name, value;  // the field being read

    int count(size_t n, size_t limit) {
        bytes += n;
        return bytes > limit ? -1 : 0;
    }
    int addName(const char* at, size_t n, size_t limit);
    int addValue(const char* at, size_t n, size_t limit);
    // The field is complete: its name lower-cased, its value with surrounding blanks removed
    // when `trim`. Ready for the next field.
    Field take(bool trim);
};

// ---- session ----

struct SessionCallbacks {
    nghttp2_on_begin_headers_callback begin_headers;
    nghttp2_on_header_callback header;
    nghttp2_on_frame_recv_callback frame_recv;
    nghttp2_on_data_chunk_recv_callback data_chunk;
    nghttp2_on_frame_send_callback frame_send;
    nghttp2_on_stream_close_callback stream_close;
};

enum class Role : uint8_t { Server, Client };

// A session whose windows reopen only when the caller says (nghttp2_session_consume), whose
// peer cannot flood it with frames it must answer, and where a field nghttp2 would otherwise
// drop silently (a name that is not a token) makes the message malformed (RFC 9113 section
// 8.2.1): the stream is reset. nullptr if nghttp2 is out of memory.
nghttp2_session* newSession(Role role, const SessionCallbacks& callbacks, void* user);

// The same, with the callbacks `Handler` declares as static member functions of these names and
// `handler` as their user data.
template <class Handler>
nghttp2_session* newSession(Role role, Handler* handler) {
    return newSession(role,
                      {&Handler::onBeginHeaders, &Handler::onHeader, &Handler::onFrameRecv,
                       &Handler::onDataChunk, &Handler::onFrameSend, &Handler::onStreamClose},
                      handler);
}

// Advertises a connection window of `bytes` (capped at the largest HTTP/2 allows) when it is
// larger than the initial one, so that several streams can fill their own windows at once.
void widenConnectionWindow(nghttp2_session* session, uint64_t bytes);

// The peer's bytes. False on a connection error (a bad preface, a flood of unread replies, out
// of memory): the session is terminated with GOAWAY and nothing more should be read.
bool receive(nghttp2_session* session, const uint8_t* p, size_t n);

// Hands the frames that may go now to `send(data, n)`, stopping once `budget` bytes have gone.
// False if nghttp2 failed (the session is over).
template <class Send>
bool sendFrames(nghttp2_session* session, size_t budget, Send&& send) {
    size_t sent = 0;
    while (sent < budget) {
        const uint8_t* data = nullptr;
        const ssize_t n = nghttp2_session_mem_send(session, &data);
        if (n < 0) return false;
        if (n == 0) break;
        send(data, size_t(n));
        sent += size_t(n);
    }
    return true;
}

// ---- outgoing body ----

// A body on its way into DATA frames: the de-framed HTTP/1.1 body bytes accepted and not yet
// taken by nghttp2, and the trailers that follow it. Bounded by the caller's watermark.
struct OutgoingBody {
    std::string bytes;
    size_t offset = 0;
    std::vector<Field> trailers;
    bool deferred = false;  // the data provider waits for bytes: resume the stream when they come

    size_t buffered() const { return bytes.size() - offset; }
    void append(const char* p, size_t n);
    void discard();  // frees the bytes (the stream was reset)
    // nghttp2's data provider read: copies what is buffered; `complete`: no more bytes will
    // come, so the last DATA ends the stream, or the trailers do.
    ssize_t read(nghttp2_session* session, int32_t stream, uint8_t* buf, size_t length,
                 uint32_t* flags, bool complete);
};

// ---- flow control ----

// Core reports progress in the HTTP/1.1 bytes it handed on (heads, chunk framing, body), while
// the windows count DATA bytes. Each piece handed on is remembered by where it ends in both
// counts: a piece's DATA bytes reopen the windows once all of it was taken, or byte for byte
// for a plain piece (DATA bytes one for one, a body without chunked framing).
class WindowMarks {
public:
    // A piece of `framed` HTTP/1.1 bytes that carries `raw` DATA bytes was handed on.
    void given(uint64_t framed, uint64_t raw, bool plain);
    // Core took n more of those bytes: the DATA bytes the windows may reopen by now.
    uint64_t consume(uint64_t n);
    // The stream is gone: the DATA bytes never credited, which still hold the connection's
    // window. Everything counts as credited afterwards.
    uint64_t release();

private:
    // Beyond this many pieces, the oldest are forgotten, which only delays window updates.
    static constexpr size_t kMaxMarks = 32;
    struct Mark {
        uint64_t framed_end, raw_end;
        bool plain;
    };
    std::deque<Mark> marks_;
    uint64_t framed_given_ = 0, framed_consumed_ = 0;
    uint64_t raw_given_ = 0, raw_credited_ = 0;
};

}  // namespace sidecar::http::h2
