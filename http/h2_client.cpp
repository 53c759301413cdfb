#include "http/h2_client.h"

#include <llhttp.h>
#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "http/h2_common.h"

namespace sidecar::http {
namespace {

using namespace h2;

// A request head is limited by the client's http::Codec already; this only keeps a caller's bug
// from growing an exchange's memory without end.
constexpr size_t kMaxRequestHead = 256 * 1024;
// The connection window lets this many streams fill their own windows at once, so that one
// slow client does not stall the others; what is held stays bounded by the stream windows.
constexpr uint64_t kConnectionWindowStreams = 100;

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        if (lowerAscii(a[i]) != lowerAscii(b[i])) return false;
    }
    return true;
}

// Authority text: no space, control or DEL, and nothing that starts a path or userinfo.
bool isAuthority(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7f || c == '/' || c == '?' || c == '#' || c == '@') return false;
    }
    return true;
}

// HTTP/2 carries no reason phrase; HTTP/1.1 readers ignore it, people read it.
const char* reasonPhrase(int status) {
    static constexpr std::pair<int, const char*> kReasons[] = {
        {100, "Continue"},
        {102, "Processing"},
        {103, "Early Hints"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {203, "Non-Authoritative Information"},
        {204, "No Content"},
        {205, "Reset Content"},
        {206, "Partial Content"},
        {300, "Multiple Choices"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {415, "Unsupported Media Type"},
        {416, "Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {421, "Misdirected Request"},
        {422, "Unprocessable Content"},
        {425, "Too Early"},
        {426, "Upgrade Required"},
        {428, "Precondition Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
    };
    for (const auto& [code, reason] : kReasons) {
        if (code == status) return reason;
    }
    return "Unknown";
}

}  // namespace

struct H2Upstream::Impl {
    enum class Response : uint8_t {
        Head,      // waiting for (or receiving) a response head, interim ones included
        Body,      // the final head went out; DATA follow
        Trailers,  // receiving the trailing HEADERS
        Ended,     // onResponseEnd was called
        Failed,    // onExchangeFailed was called (or core refused/cancelled it)
    };

    struct Call {
        Impl* owner = nullptr;
        uint64_t id = 0;
        int32_t stream = 0;  // 0: no HEADERS submitted yet
        bool stream_closed = false;

        // ---- request (HTTP/1.1 in) ----
        llhttp_t parser;
        std::string target;
        HeadReader head;            // the head (or trailers) being parsed
        std::vector<Field> fields;  // the head's fields, then (after head_done) the trailers
        bool head_done = false;
        bool request_done = false;
        OutgoingBody out;  // de-chunked request body (and trailers) not yet handed to nghttp2

        // ---- response (HTTP/1.1 out) ----
        Response response = Response::Head;
        bool head_request = false;
        bool no_body = false;  // HEAD, 204, 304: the head has no body framing
        bool chunked = false;  // the head says Transfer-Encoding: chunked
        int status = 0;
        size_t block_bytes = 0;  // the header block being received, RFC 9113 accounting
        std::vector<Field> response_fields;

        WindowMarks window;  // the response: HTTP/1.1 bytes core took -> DATA bytes

        bool responseOpen() const {
            return response != Response::Ended && response != Response::Failed;
        }
    };

    Impl(const H2UpstreamOptions& o, H2UpstreamEvents& e) : options(o), events(e) {}
    ~Impl() {
        if (session) nghttp2_session_del(session);
    }

    Call* find(uint64_t id) {
        auto it = calls.find(id);
        return it == calls.end() ? nullptr : &it->second;
    }
    const Call* find(uint64_t id) const {
        auto it = calls.find(id);
        return it == calls.end() ? nullptr : &it->second;
    }
    Call* byStream(int32_t stream) {
        auto it = streams.find(stream);
        return it == streams.end() ? nullptr : find(it->second);
    }

    bool over() const { return closed || fatal || !session; }

    // ---- request side ----
    int submit(Call& c);
    void resume(Call& c);
    void drop(Call& c, uint32_t code);

    // ---- response side ----
    void addResponseField(Call& c, std::string_view name, std::string_view value);
    void headComplete(Call& c, bool end_stream);
    void endResponse(Call& c);
    void failResponse(Call& c, uint32_t code);
    void give(Call& c, const char* p, size_t framed, size_t raw, bool plain);
    void releaseWindow(Call& c);
    void maybeErase(Call& c);
    void failAll(uint32_t code);

    // nghttp2 callbacks
    static int onBeginHeaders(nghttp2_session*, const nghttp2_frame*, void*) noexcept;
    static int onHeader(nghttp2_session*, const nghttp2_frame*, const uint8_t*, size_t,
                        const uint8_t*, size_t, uint8_t, void*) noexcept;
    static int onFrameRecv(nghttp2_session*, const nghttp2_frame*, void*) noexcept;
    static int onDataChunk(nghttp2_session*, uint8_t, int32_t, const uint8_t*, size_t,
                           void*) noexcept;
    static int onFrameSend(nghttp2_session*, const nghttp2_frame*, void*) noexcept;
    static int onStreamClose(nghttp2_session*, int32_t, uint32_t, void*) noexcept;
    static ssize_t readBody(nghttp2_session*, int32_t, uint8_t*, size_t, uint32_t*,
                            nghttp2_data_source*, void*) noexcept;

    // llhttp callbacks (request parsing)
    static Call& of(llhttp_t* p) { return *static_cast<Call*>(p->data); }
    static int onUrl(llhttp_t*, const char*, size_t) noexcept;
    static int onRequestField(llhttp_t*, const char*, size_t) noexcept;
    static int onRequestValue(llhttp_t*, const char*, size_t) noexcept;
    static int onRequestValueComplete(llhttp_t*) noexcept;
    static int onRequestHeaders(llhttp_t*) noexcept;
    static int onRequestBody(llhttp_t*, const char*, size_t) noexcept;
    static int onRequestComplete(llhttp_t*) noexcept;
    static const llhttp_settings_t& requestSettings();

    H2UpstreamOptions options;
    H2UpstreamEvents& events;
    nghttp2_session* session = nullptr;
    // Node-based: a Call's address is stable (llhttp keeps a pointer to it).
    std::unordered_map<uint64_t, Call> calls;
    std::unordered_map<int32_t, uint64_t> streams;  // stream id -> exchange
    std::string scratch;                            // an HTTP/1.1 piece being built
    size_t active = 0;                              // calls whose response is open
    bool fatal = false;                             // a connection error: nothing more is read
    bool closed = false;                            // flush/feed returned Close, or eof()
    bool goaway_received = false;
};

// ---- request side ----

const llhttp_settings_t& H2Upstream::Impl::requestSettings() {
    // llhttp keeps a pointer to its settings: they live as long as the program.
    static const llhttp_settings_t settings = [] {
        llhttp_settings_t s;
        llhttp_settings_init(&s);
        s.on_url = &onUrl;
        s.on_header_field = &onRequestField;
        s.on_header_value = &onRequestValue;
        s.on_header_value_complete = &onRequestValueComplete;
        s.on_headers_complete = &onRequestHeaders;
        s.on_body = &onRequestBody;
        s.on_message_complete = &onRequestComplete;
        return s;
    }();
    return settings;
}

int H2Upstream::Impl::onUrl(llhttp_t* p, const char* at, size_t n) noexcept {
    Call& c = of(p);
    if (c.head.count(n, kMaxRequestHead) != 0) return -1;
    c.target.append(at, n);
    return 0;
}

int H2Upstream::Impl::onRequestField(llhttp_t* p, const char* at, size_t n) noexcept {
    return of(p).head.addName(at, n, kMaxRequestHead);
}

int H2Upstream::Impl::onRequestValue(llhttp_t* p, const char* at, size_t n) noexcept {
    return of(p).head.addValue(at, n, kMaxRequestHead);
}

int H2Upstream::Impl::onRequestValueComplete(llhttp_t* p) noexcept {
    Call& c = of(p);
    c.fields.push_back(c.head.take(true));
    return 0;
}

int H2Upstream::Impl::onRequestHeaders(llhttp_t* p) noexcept {
    Call& c = of(p);
    c.head_done = true;
    const int rv = c.owner->submit(c);
    std::vector<Field>().swap(c.fields);  // from now on: trailers
    std::string().swap(c.target);
    return rv;
}

int H2Upstream::Impl::onRequestBody(llhttp_t* p, const char* at, size_t n) noexcept {
    Call& c = of(p);
    if (c.stream_closed || c.response == Response::Failed) return 0;  // nobody reads it
    c.out.append(at, n);
    return 0;
}

int H2Upstream::Impl::onRequestComplete(llhttp_t* p) noexcept {
    Call& c = of(p);
    c.request_done = true;
    for (Field& f : c.fields) {
        // What a trailer section may carry into HTTP/2 (RFC 9110 section 6.5.1).
        if (isConnectionSpecific(f.name) || f.name == "content-length" || f.name == "host") {
            continue;
        }
        c.out.trailers.push_back(std::move(f));
    }
    std::vector<Field>().swap(c.fields);
    return HPE_PAUSED;  // one request per exchange
}

// The request head is complete: HEADERS for the app. Returns -1 if HTTP/2 cannot carry it.
int H2Upstream::Impl::submit(Call& c) {
    llhttp_t& p = c.parser;
    if (over() || goaway_received) return -1;
    if (p.http_major != 1 || p.method == HTTP_CONNECT || p.upgrade) return -1;
    const std::string method = llhttp_method_name(static_cast<llhttp_method_t>(p.method));

    // Origin form, "*" for OPTIONS, or absolute form (whose authority wins over Host).
    std::string path, authority;
    bool have_authority = false;
    const std::string_view target = c.target;
    if (target.starts_with('/')) {
        path = target;
    } else if (target == "*" && method == "OPTIONS") {
        path = target;
    } else {
        const size_t scheme_end = target.find("://");
        if (scheme_end == std::string_view::npos ||
            !(equalsIgnoreCase(target.substr(0, scheme_end), "http") ||
              equalsIgnoreCase(target.substr(0, scheme_end), "https"))) {
            return -1;
        }
        const std::string_view rest = target.substr(scheme_end + 3);
        const size_t slash = std::min(rest.find_first_of("/?"), rest.size());
        authority = rest.substr(0, slash);
        path = rest.substr(slash);
        if (path.empty() || path.front() == '?') path.insert(0, "/");
        have_authority = true;
        if (!isAuthority(authority)) return -1;
    }
    if (path.find_first_of(std::string_view("\r\n\0 ", 4)) != std::string::npos) return -1;

    // Fields the Connection field names are hop-by-hop too (RFC 9110 section 7.6.1).
    std::vector<std::string> named;
    bool host_seen = false;
    for (const Field& f : c.fields) {
        if (f.name == "host") {
            if (host_seen) return -1;
            host_seen = true;
            if (!have_authority) {
                if (!isAuthority(f.value)) return -1;
                authority = f.value;
            }
        }
        if (f.name == "connection") addConnectionOptions(f.value, named);
    }

    std::vector<nghttp2_nv> nva;
    nva.reserve(c.fields.size() + 4);
    nva.push_back(makeNv(":method", method));
    nva.push_back(makeNv(":scheme", "http"));
    if (!authority.empty()) nva.push_back(makeNv(":authority", authority));
    nva.push_back(makeNv(":path", path));
    for (const Field& f : c.fields) {
        if (f.name == "te") {
            if (!equalsIgnoreCase(f.value, "trailers")) continue;
        } else if (f.name == "host" || isConnectionSpecific(f.name)) {
            continue;
        }
        if (std::find(named.begin(), named.end(), f.name) != named.end()) continue;
        if (!isFieldValue(f.value)) return -1;
        nva.push_back(makeNv(f.name, f.name == "te" ? std::string_view("trailers") : f.value));
    }

    c.head_request = p.method == HTTP_HEAD;
    const bool has_body =
        (p.flags & F_CHUNKED) || ((p.flags & F_CONTENT_LENGTH) && p.content_length > 0);
    nghttp2_data_provider provider;
    provider.source.ptr = nullptr;
    provider.read_callback = &readBody;
    const int32_t id = nghttp2_submit_request(session, nullptr, nva.data(), nva.size(),
                                              has_body ? &provider : nullptr, nullptr);
    if (id < 0) return -1;
    c.stream = id;
    streams[id] = c.id;
    return 0;
}

void H2Upstream::Impl::resume(Call& c) {
    if (!c.out.deferred || c.stream == 0 || c.stream_closed) return;
    c.out.deferred = false;
    nghttp2_session_resume_data(session, c.stream);
}

ssize_t H2Upstream::Impl::readBody(nghttp2_session* session, int32_t id, uint8_t* buf,
                                   size_t length, uint32_t* flags, nghttp2_data_source*,
                                   void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    Call* c = self.byStream(id);
    if (!c) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return c->out.read(session, id, buf, length, flags, c->request_done);
}

// Core's side of an exchange is over (refused or cancelled): the stream is reset and the
// exchange forgotten, with no event.
void H2Upstream::Impl::drop(Call& c, uint32_t code) {
    if (c.stream != 0 && !c.stream_closed) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, c.stream, code);
        releaseWindow(c);
    }
    if (c.stream != 0) streams.erase(c.stream);
    if (c.responseOpen()) --active;
    calls.erase(c.id);
}

// ---- response side ----

void H2Upstream::Impl::give(Call& c, const char* p, size_t framed, size_t raw, bool plain) {
    if (framed == 0) return;
    c.window.given(framed, raw, plain);
    events.onResponse(c.id, reinterpret_cast<const uint8_t*>(p), framed);
}

// DATA core never reported consumed still holds the connection's window: it reopens now.
void H2Upstream::Impl::releaseWindow(Call& c) {
    if (const uint64_t held = c.window.release()) {
        nghttp2_session_consume_connection(session, size_t(held));
    }
}

void H2Upstream::Impl::addResponseField(Call& c, std::string_view name, std::string_view value) {
    if (name.starts_with(':')) {
        if (name == ":status" && c.response == Response::Head && value.size() == 3 &&
            std::all_of(value.begin(), value.end(), [](char d) { return d >= '0' && d <= '9'; })) {
            c.status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
        }
        return;
    }
    if (isConnectionSpecific(name)) return;  // nghttp2 refuses these already
    if (c.response == Response::Trailers && (name == "content-length" || name == "host")) return;
    c.response_fields.push_back({std::string(name), std::string(value)});
}

void H2Upstream::Impl::headComplete(Call& c, bool end_stream) {
    const int status = c.status;
    if (status < 100 || status == 101 || (status < 200 && end_stream)) {
        failResponse(c, NGHTTP2_PROTOCOL_ERROR);
        return;
    }
    std::string& out = scratch;
    out.assign("HTTP/1.1 ");
    out.append(std::to_string(status)).append(" ").append(reasonPhrase(status)).append("\r\n");
    bool has_length = false;
    for (const Field& f : c.response_fields) {
        if (f.name == "content-length") has_length = true;
        out.append(f.name).append(": ").append(f.value).append("\r\n");
    }
    c.response_fields.clear();
    c.status = 0;
    if (status < 200) {
        out.append("\r\n");  // interim: the final head follows on this stream
        give(c, out.data(), out.size(), 0, false);
        return;
    }
    c.no_body = c.head_request || status == 204 || status == 304;
    if (!c.no_body) {
        if (end_stream) {
            if (!has_length) out.append("content-length: 0\r\n");
        } else if (!has_length) {
            // No declared length: chunked framing finds the end and carries trailers.
            c.chunked = true;
            out.append("transfer-encoding: chunked\r\n");
        }
    }
    out.append("\r\n");
    c.response = Response::Body;
    give(c, out.data(), out.size(), 0, false);
    if (end_stream) endResponse(c);
}

void H2Upstream::Impl::endResponse(Call& c) {
    if (!c.responseOpen()) return;
    if (c.chunked) {
        std::string& out = scratch;
        out.assign("0\r\n");
        if (c.response == Response::Trailers) {
            for (const Field& f : c.response_fields) {
                out.append(f.name).append(": ").append(f.value).append("\r\n");
            }
        }
        out.append("\r\n");
        give(c, out.data(), out.size(), 0, false);
    }
    c.response_fields.clear();
    c.response = Response::Ended;
    --active;
    events.onResponseEnd(c.id);
}

// The response cannot be completed: the stream is reset (if still open) and core is told.
void H2Upstream::Impl::failResponse(Call& c, uint32_t code) {
    if (!c.responseOpen()) return;
    c.response = Response::Failed;
    --active;
    std::vector<Field>().swap(c.response_fields);
    c.out.discard();
    if (c.stream != 0 && !c.stream_closed) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, c.stream, code);
    }
    events.onExchangeFailed(c.id, code);
}

// A failed exchange is forgotten once its stream is gone; one that ended keeps taking its
// request bytes until the request is complete.
void H2Upstream::Impl::maybeErase(Call& c) {
    if (c.stream != 0 && !c.stream_closed) return;
    const bool erase =
        c.response == Response::Failed || (c.response == Response::Ended && c.request_done);
    if (!erase) return;
    if (c.stream != 0) streams.erase(c.stream);
    calls.erase(c.id);
}

void H2Upstream::Impl::failAll(uint32_t code) {
    std::vector<uint64_t> open;
    for (const auto& [id, c] : calls) {
        if (c.responseOpen()) open.push_back(id);
    }
    std::sort(open.begin(), open.end());  // in the order core started them, when ids grow
    for (uint64_t id : open) {
        Call& c = calls.at(id);
        c.response = Response::Failed;
        --active;
        events.onExchangeFailed(id, code);
    }
}

int H2Upstream::Impl::onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame,
                                     void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Call* c = self.byStream(frame->hd.stream_id);
    if (!c) return 0;
    c->block_bytes = 0;
    c->response_fields.clear();
    if (c->response == Response::Body) c->response = Response::Trailers;
    return 0;
}

int H2Upstream::Impl::onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                               size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                               void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Call* c = self.byStream(frame->hd.stream_id);
    if (!c || (c->response != Response::Head && c->response != Response::Trailers)) return 0;
    const std::string_view n(reinterpret_cast<const char*>(name), namelen);
    const std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    c->block_bytes += namelen + valuelen + kFieldOverhead;
    if (c->block_bytes > self.options.max_header_bytes) {
        self.failResponse(*c, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    if (!n.starts_with(':') && (!isFieldName(n) || !isFieldValue(v))) {
        // Not expressible as an HTTP/1.1 field: the response is malformed.
        self.failResponse(*c, NGHTTP2_PROTOCOL_ERROR);
        return 0;
    }
    self.addResponseField(*c, n, v);
    return 0;
}

int H2Upstream::Impl::onFrameRecv(nghttp2_session*, const nghttp2_frame* frame,
                                  void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    const bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    switch (frame->hd.type) {
        case NGHTTP2_HEADERS: {
            Call* c = self.byStream(frame->hd.stream_id);
            if (!c) break;
            if (c->response == Response::Head) {
                self.headComplete(*c, end_stream);
            } else if (c->response == Response::Trailers && end_stream) {
                self.endResponse(*c);
            }
            break;
        }
        case NGHTTP2_DATA: {
            Call* c = self.byStream(frame->hd.stream_id);
            if (c && end_stream && c->response == Response::Body) self.endResponse(*c);
            break;
        }
        case NGHTTP2_GOAWAY:
            // Streams above last_stream_id are closed by nghttp2 (REFUSED_STREAM); the others
            // run to their end, and no new one starts.
            self.goaway_received = true;
            break;
        default:
            break;
    }
    return 0;
}

int H2Upstream::Impl::onDataChunk(nghttp2_session* session, uint8_t, int32_t id,
                                  const uint8_t* data, size_t len, void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    if (len == 0) return 0;
    Call* c = self.byStream(id);
    if (!c || c->response != Response::Body || c->no_body) {
        // Nobody takes these bytes: the windows reopen at once.
        nghttp2_session_consume(session, id, len);
        return 0;
    }
    const char* p = reinterpret_cast<const char*>(data);
    if (!c->chunked) {
        self.give(*c, p, len, len, true);
        return 0;
    }
    std::string& out = self.scratch;
    out.clear();
    appendHex(out, len);
    out.append("\r\n").append(p, len).append("\r\n");
    self.give(*c, out.data(), out.size(), len, false);
    return 0;
}

// We never send GOAWAY ourselves except to end the session: nghttp2 found a connection error in
// the app's bytes (or feed gave up). Nothing more is read, so every open exchange fails now.
int H2Upstream::Impl::onFrameSend(nghttp2_session*, const nghttp2_frame* frame,
                                  void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    if (frame->hd.type != NGHTTP2_GOAWAY) return 0;
    self.fatal = true;
    self.failAll(frame->goaway.error_code != NGHTTP2_NO_ERROR ? frame->goaway.error_code
                                                              : uint32_t(NGHTTP2_INTERNAL_ERROR));
    return 0;
}

int H2Upstream::Impl::onStreamClose(nghttp2_session*, int32_t id, uint32_t error_code,
                                    void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    Call* c = self.byStream(id);
    if (!c) return 0;
    c->stream_closed = true;
    c->out.deferred = false;
    c->out.discard();
    self.releaseWindow(*c);
    if (c->responseOpen()) {
        // Reset by the app, refused after a GOAWAY, or closed before its response ended.
        const uint32_t code =
            error_code != NGHTTP2_NO_ERROR ? error_code : uint32_t(NGHTTP2_INTERNAL_ERROR);
        c->response = Response::Failed;
        --self.active;
        self.events.onExchangeFailed(c->id, code);
    }
    self.maybeErase(*c);
    return 0;
}

// ---- H2Upstream ----

H2Upstream::H2Upstream(const H2UpstreamOptions& options, H2UpstreamEvents& events)
    : impl_(std::make_unique<Impl>(options, events)) {
    impl_->session = newSession(Role::Client, impl_.get());
    if (!impl_->session) impl_->fatal = true;
}

H2Upstream::~H2Upstream() = default;

void H2Upstream::start() {
    Impl& m = *impl_;
    if (m.over()) return;
    // nghttp2 sends the client preface ahead of this SETTINGS.
    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, m.options.initial_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, m.options.max_header_bytes},
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    if (nghttp2_submit_settings(m.session, NGHTTP2_FLAG_NONE, settings, std::size(settings)) != 0) {
        m.fatal = true;
        return;
    }
    widenConnectionWindow(m.session, uint64_t(m.options.initial_window) * kConnectionWindowStreams);
}

bool H2Upstream::request(uint64_t exchange, const uint8_t* p, size_t n) {
    Impl& m = *impl_;
    if (m.over()) return false;
    Impl::Call* c = m.find(exchange);
    if (!c) {
        if (m.goaway_received) return false;
        c = &m.calls[exchange];
        c->owner = &m;
        c->id = exchange;
        llhttp_init(&c->parser, HTTP_REQUEST, &Impl::requestSettings());  // no lenient flags
        c->parser.data = c;
        ++m.active;
    }
    if (c->request_done) {
        // Bytes after the request are not part of this exchange.
        if (n == 0) return true;
        m.drop(*c, NGHTTP2_CANCEL);
        return false;
    }
    const char* begin = reinterpret_cast<const char*>(p);
    const llhttp_errno_t err = llhttp_execute(&c->parser, begin, n);
    bool ok = err == HPE_OK;
    if ((err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) && c->request_done) {
        ok = llhttp_get_error_pos(&c->parser) == begin + n;
    }
    if (!ok) {
        m.drop(*c, NGHTTP2_CANCEL);
        return false;
    }
    m.resume(*c);
    m.maybeErase(*c);
    return true;
}

void H2Upstream::cancel(uint64_t exchange) {
    Impl& m = *impl_;
    if (!m.session) return;
    if (Impl::Call* c = m.find(exchange)) m.drop(*c, NGHTTP2_CANCEL);
}

Status H2Upstream::feed(const uint8_t* p, size_t n) {
    Impl& m = *impl_;
    if (m.over()) return Status::Close;
    if (!receive(m.session, p, n)) {
        m.fatal = true;
        m.failAll(NGHTTP2_PROTOCOL_ERROR);
        return Status::Close;
    }
    if (!nghttp2_session_want_read(m.session)) {
        // After a GOAWAY with no stream left (or the app's connection error, already told).
        m.failAll(NGHTTP2_REFUSED_STREAM);
        return Status::Close;
    }
    return Status::Continue;
}

Status H2Upstream::flush(size_t budget) {
    Impl& m = *impl_;
    if (m.closed || !m.session) {
        m.closed = true;
        return Status::Close;
    }
    const bool sent = sendFrames(
        m.session, budget, [&m](const uint8_t* data, size_t n) { m.events.sendUpstream(data, n); });
    if (!sent) m.fatal = true;
    if (m.fatal ||
        (!nghttp2_session_want_read(m.session) && !nghttp2_session_want_write(m.session))) {
        m.failAll(m.fatal ? NGHTTP2_PROTOCOL_ERROR : NGHTTP2_REFUSED_STREAM);
        m.closed = true;
        return Status::Close;
    }
    return Status::Continue;
}

size_t H2Upstream::buffered(uint64_t exchange) const {
    const Impl::Call* c = impl_->find(exchange);
    return c ? c->out.buffered() : 0;
}

void H2Upstream::consumed(uint64_t exchange, size_t n) {
    Impl& m = *impl_;
    if (m.over() || n == 0) return;
    Impl::Call* c = m.find(exchange);
    if (!c || c->stream == 0 || c->stream_closed) return;
    if (const uint64_t more = c->window.consume(n)) {
        nghttp2_session_consume(m.session, c->stream, size_t(more));
    }
}

bool H2Upstream::canStart() const {
    const Impl& m = *impl_;
    if (m.over() || m.goaway_received) return false;
    size_t streams = 0;  // streams open or about to be (a response still owed)
    for (const auto& [id, c] : m.calls) {
        if (c.responseOpen() || (c.stream != 0 && !c.stream_closed)) ++streams;
    }
    const uint32_t limit =
        nghttp2_session_get_remote_settings(m.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return streams < limit;
}

size_t H2Upstream::activeExchanges() const { return impl_->active; }

void H2Upstream::eof() {
    Impl& m = *impl_;
    if (!m.session || m.closed) return;
    m.closed = true;
    m.failAll(NGHTTP2_INTERNAL_ERROR);
    m.streams.clear();
    m.calls.clear();
}

}  // namespace sidecar::http
