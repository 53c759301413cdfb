#include "http/h2_common.h"

#include <algorithm>
#include <cstring>

namespace sidecar::http::h2 {

std::string lowered(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = lowerAscii(c);
    return out;
}

std::string_view trimmed(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool isTchar(char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool isFieldName(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s) {
        if (!isTchar(c) || (c >= 'A' && c <= 'Z')) return false;
    }
    return true;
}

bool isFieldValue(std::string_view s) {
    return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

bool isConnectionSpecific(std::string_view lower) {
    return lower == "connection" || lower == "keep-alive" || lower == "proxy-connection" ||
           lower == "transfer-encoding" || lower == "upgrade" || lower == "te" ||
           lower == "http2-settings";
}

void addConnectionOptions(std::string_view value, std::vector<std::string>& named) {
    while (!value.empty()) {
        const size_t comma = std::min(value.find(','), value.size());
        const std::string_view token = trimmed(value.substr(0, comma));
        if (!token.empty()) named.push_back(lowered(token));
        value.remove_prefix(std::min(comma + 1, value.size()));
    }
}

void appendHex(std::string& out, size_t n) {
    char buf[2 * sizeof(size_t)];
    size_t i = sizeof(buf);
    do {
        buf[--i] = "0123456789abcdef"[n & 0xf];
        n >>= 4;
    } while (n != 0);
    out.append(buf + i, sizeof(buf) - i);
}

nghttp2_nv makeNv(std::string_view name, std::string_view value) {
    return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
            reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
            NGHTTP2_NV_FLAG_NONE};
}

int HeadReader::addName(const char* at, size_t n, size_t limit) {
    if (count(n, limit) != 0) return -1;
    name.append(at, n);
    return 0;
}

int HeadReader::addValue(const char* at, size_t n, size_t limit) {
    if (count(n, limit) != 0) return -1;
    value.append(at, n);
    return 0;
}

Field HeadReader::take(bool trim) {
    Field f{lowered(name), trim ? std::string(trimmed(value)) : std::move(value)};
    name.clear();
    value.clear();
    return f;
}

// ---- session ----

namespace {

int rejectInvalidHeader(nghttp2_session*, const nghttp2_frame*, const uint8_t*, size_t,
                        const uint8_t*, size_t, uint8_t, void*) noexcept {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

}  // namespace

nghttp2_session* newSession(Role role, const SessionCallbacks& callbacks, void* user) {
    nghttp2_session_callbacks* cbs = nullptr;
    nghttp2_option* opt = nullptr;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
        if (cbs) nghttp2_session_callbacks_del(cbs);
        return nullptr;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, callbacks.begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, callbacks.header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, &rejectInvalidHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, callbacks.frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, callbacks.data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, callbacks.frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, callbacks.stream_close);

    // Windows reopen only as core hands the bytes onward (consumed()); HTTP messaging checks
    // stay on (the default): a malformed message resets its stream.
    nghttp2_option_set_no_auto_window_update(opt, 1);
    // Replies the peer does not read (PING and SETTINGS ACKs, RST_STREAM) are capped: past it,
    // NGHTTP2_ERR_FLOODED ends the connection.
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
#ifdef SIDECAR_NGHTTP2_MAX_CONTINUATIONS
    // A header block spread over more CONTINUATION frames ends the connection
    // (CVE-2024-28182); the header-list limits bound what is kept either way.
    nghttp2_option_set_max_continuations(opt, 8);
#endif
    nghttp2_session* session = nullptr;
    const int rv = role == Role::Server ? nghttp2_session_server_new2(&session, cbs, user, opt)
                                        : nghttp2_session_client_new2(&session, cbs, user, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    return rv == 0 ? session : nullptr;
}

void widenConnectionWindow(nghttp2_session* session, uint64_t bytes) {
    bytes = std::min<uint64_t>(bytes, NGHTTP2_MAX_WINDOW_SIZE);
    if (bytes > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE) {
        nghttp2_session_set_local_window_size(session, NGHTTP2_FLAG_NONE, 0, int32_t(bytes));
    }
}

bool receive(nghttp2_session* session, const uint8_t* p, size_t n) {
    const ssize_t rv = nghttp2_session_mem_recv(session, p, n);
    if (rv >= 0) return true;
    nghttp2_session_terminate_session(
        session, rv == NGHTTP2_ERR_FLOODED ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR);
    return false;
}

// ---- outgoing body ----

void OutgoingBody::append(const char* p, size_t n) {
    if (offset != 0 && offset * 2 >= bytes.size()) {
        bytes.erase(0, offset);
        offset = 0;
    }
    bytes.append(p, n);
}

void OutgoingBody::discard() {
    std::string().swap(bytes);
    offset = 0;
}

ssize_t OutgoingBody::read(nghttp2_session* session, int32_t stream, uint8_t* buf, size_t length,
                           uint32_t* flags, bool complete) {
    const size_t n = std::min(length, buffered());
    if (n > 0) {
        std::memcpy(buf, bytes.data() + offset, n);
        offset += n;
        if (offset == bytes.size()) {
            bytes.clear();
            offset = 0;
        }
    }
    if (complete && buffered() == 0) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!trailers.empty()) {
            std::vector<nghttp2_nv> nva;
            nva.reserve(trailers.size());
            for (const Field& f : trailers) nva.push_back(makeNv(f.name, f.value));
            if (nghttp2_submit_trailer(session, stream, nva.data(), nva.size()) == 0) {
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            }
            std::vector<Field>().swap(trailers);
        }
        return ssize_t(n);
    }
    if (n == 0) {
        deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return ssize_t(n);
}

// ---- flow control ----

void WindowMarks::given(uint64_t framed, uint64_t raw, bool plain) {
    framed_given_ += framed;
    raw_given_ += raw;
    if (marks_.size() == kMaxMarks) marks_.pop_front();
    marks_.push_back({framed_given_, raw_given_, plain});
}

uint64_t WindowMarks::consume(uint64_t n) {
    framed_consumed_ = std::min(framed_consumed_ + n, framed_given_);
    uint64_t raw = raw_credited_;
    while (!marks_.empty() && marks_.front().framed_end <= framed_consumed_) {
        raw = std::max(raw, marks_.front().raw_end);
        marks_.pop_front();
    }
    if (!marks_.empty() && marks_.front().plain) {
        // Inside a plain piece a framed byte is a DATA byte. When older pieces were forgotten
        // the bytes ahead may span framed ones too, which can only under-count (never wrap).
        const Mark& next = marks_.front();
        const uint64_t ahead = next.framed_end - framed_consumed_;
        if (ahead <= next.raw_end) raw = std::max(raw, next.raw_end - ahead);
    }
    if (framed_consumed_ == framed_given_) raw = raw_given_;
    raw = std::min(raw, raw_given_);
    if (raw <= raw_credited_) return 0;
    const uint64_t more = raw - raw_credited_;
    raw_credited_ = raw;
    return more;
}

uint64_t WindowMarks::release() {
    const uint64_t rest = raw_given_ - raw_credited_;
    raw_credited_ = raw_given_;
    marks_.clear();
    return rest;
}

}  // namespace sidecar::http::h2
