#include "http/h2.h"

#include <llhttp.h>
#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "http/h2_common.h"

namespace sidecar::http {
namespace {

using namespace h2;

// An app's response head is limited by the stream's http::Codec already; this only keeps a
// misbehaving one from growing a stream's memory without end.
constexpr size_t kMaxResponseHead = 256 * 1024;

// Request-line parts: no space, control or DEL, which would split the line.
bool isLineText(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7f) return false;
    }
    return true;
}

bool isToken(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), isTchar); }

// A method whose request usually has content: with no DATA it gets "content-length: 0", so
// that an HTTP/1.1 reader does not wait for a body (RFC 9112 section 6.3).
bool expectsBody(std::string_view method) {
    return method == "POST" || method == "PUT" || method == "PATCH";
}

}  // namespace

struct H2Session::Impl {
    struct Stream {
        Impl* owner = nullptr;
        int32_t id = 0;

        // ---- request ----
        std::string method, path, authority, host;
        std::string fields;        // "name: value\r\n" for the regular fields kept, in order
        std::string cookies;       // every cookie field, joined with "; "
        std::string trailers;      // the client's trailer lines, for a chunked body
        uint64_t block_bytes = 0;  // the header block being received, RFC 9113 accounting
        uint32_t block_fields = 0;
        uint64_t request_bytes = 0;
        bool over_limit = false;  // the request's header list is over the limits: 431
        bool bad = false;         // a field HTTP/1.1 cannot carry: 400
        bool in_trailers = false;
        bool has_content_length = false;
        bool delivered = false;  // onStreamRequest was called
        bool chunked = false;    // the head says Transfer-Encoding: chunked
        bool request_ended = false;
        bool response_ended = false;  // our END_STREAM went out
        bool reset_sent = false;      // a reset we decided on (not a client's fault)

        WindowMarks window;  // the request body: framed bytes core took -> DATA bytes

        // ---- response ----
        llhttp_t parser;
        bool parser_ready = false;
        bool head_request = false;
        bool final_head = false;     // the final response head was submitted
        bool has_provider = false;   // DATA follow the final head
        bool response_done = false;  // the app's response is complete
        bool response_failed = false;
        HeadReader response_head;            // the response head (or trailers) being parsed
        std::vector<Field> response_fields;  // the head (or trailers) being parsed
        OutgoingBody out;  // de-framed response body (and trailers) not yet handed to nghttp2
    };

    Impl(const H2Options& o, H2Events& e) : options(o), events(e) {
        const uint64_t cap =
            std::max<uint64_t>(options.max_resets, 2ull * options.max_concurrent_streams);
        reset_cap = std::max<uint64_t>(cap, 1);
        reset_budget = reset_cap;
    }
    ~Impl() {
        if (session) nghttp2_session_del(session);
    }

    Stream* find(int32_t id) {
        auto it = streams.find(id);
        return it == streams.end() ? nullptr : &it->second;
    }
    const Stream* find(int32_t id) const {
        auto it = streams.find(id);
        return it == streams.end() ? nullptr : &it->second;
    }

    // ---- request side ----
    void addField(Stream& s, std::string_view name, std::string_view value);
    void finishHead(Stream& s, bool end_stream);
    void answerLocally(Stream& s, int status);
    void deliverBody(Stream& s, const uint8_t* p, size_t framed, size_t raw);
    void endRequest(Stream& s);
    void spendReset();
    void resetOwn(Stream& s, uint32_t code);

    // ---- response side ----
    void failResponse(Stream& s);
    void submitHead(Stream& s, int status, bool final_head, bool no_body);
    std::vector<Field> filtered(std::vector<Field>& fields) const;
    void bodyArrived(Stream& s);

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

    // llhttp callbacks (response parsing)
    static Stream& of(llhttp_t* p) { return *static_cast<Stream*>(p->data); }
    static int onResponseField(llhttp_t*, const char*, size_t) noexcept;
    static int onResponseValue(llhttp_t*, const char*, size_t) noexcept;
    static int onResponseValueComplete(llhttp_t*) noexcept;
    static int onResponseStatus(llhttp_t*, const char*, size_t) noexcept;
    static int onResponseHeaders(llhttp_t*) noexcept;
    static int onResponseBody(llhttp_t*, const char*, size_t) noexcept;
    static int onResponseComplete(llhttp_t*) noexcept;
    static const llhttp_settings_t& responseSettings();

    H2Options options;
    H2Events& events;
    nghttp2_session* session = nullptr;
    // Node-based: a Stream's address is stable (llhttp keeps a pointer to it).
    std::unordered_map<int32_t, Stream> streams;
    std::string scratch;  // a framed request body piece
    size_t open = 0;      // delivered streams not yet closed
    uint64_t reset_cap = 0;
    uint64_t reset_budget = 0;
    bool fatal = false;   // a connection error: GOAWAY queued, nothing more is read
    bool closed = false;  // flush returned Close
    bool goaway_sent = false;
};

// ---- request side ----

void H2Session::Impl::addField(Stream& s, std::string_view name, std::string_view value) {
    s.block_bytes += name.size() + value.size() + kFieldOverhead;
    ++s.block_fields;
    s.request_bytes += name.size() + value.size() + 4;  // as an HTTP/1.1 line
    if (s.block_bytes > options.max_header_bytes || s.block_fields > options.max_headers) {
        // Nothing more of this list is stored: a head over the limits is answered 431, a
        // trailer section over them is dropped whole.
        if (!s.in_trailers)
            s.over_limit = true;
        else
            std::string().swap(s.trailers);
        return;
    }
    if (s.in_trailers) {
        // Forwarded only inside a chunked body (as its trailer section); dropped otherwise.
        if (s.chunked && !name.starts_with(':') && isFieldName(name) && isFieldValue(value) &&
            !isConnectionSpecific(name) && name != "content-length" && name != "host") {
            s.trailers.append(name).append(": ").append(value).append("\r\n");
        }
        return;
    }
    if (s.over_limit) return;
    if (!isFieldValue(value)) {
        s.bad = true;
        return;
    }
    if (name.starts_with(':')) {
        if (name == ":method") {
            s.method.assign(value);
        } else if (name == ":path") {
            s.path.assign(value);
        } else if (name == ":authority") {
            s.authority.assign(value);
        } else if (name != ":scheme") {
            s.bad = true;  // :protocol (extended CONNECT) or unknown
        }
        return;
    }
    if (!isFieldName(name) || isConnectionSpecific(name)) {
        // nghttp2 refuses these already, except `te: trailers`, which HTTP/1.1 forwards as is.
        if (!(name == "te" && value == "trailers")) {
            s.bad = true;
            return;
        }
    }
    if (name == "host") {
        s.host.assign(value);
        return;
    }
    if (name == "cookie") {
        // RFC 9113 section 8.2.3: cookie crumbs become one field for HTTP/1.1.
        if (!s.cookies.empty()) s.cookies.append("; ");
        s.cookies.append(value);
        return;
    }
    if (name == "content-length") s.has_content_length = true;
    s.fields.append(name).append(": ").append(value).append("\r\n");
}

void H2Session::Impl::finishHead(Stream& s, bool end_stream) {
    s.request_ended = end_stream;
    int status = 0;
    if (s.over_limit) {
        status = 431;
    } else if (s.bad || s.method == "CONNECT" || !isToken(s.method) || !isLineText(s.path)) {
        status = 400;
    } else if (!s.path.starts_with('/') && !(s.path == "*" && s.method == "OPTIONS")) {
        status = 400;
    }
    std::string_view authority = s.authority.empty() ? std::string_view(s.host) : s.authority;
    if (status == 0 && (!isLineText(authority) || !isFieldValue(authority))) status = 400;
    if (status != 0) {
        answerLocally(s, status);
        return;
    }

    std::string head;
    head.reserve(s.method.size() + s.path.size() + authority.size() + s.fields.size() +
                 s.cookies.size() + 64);
    head.append(s.method).append(" ").append(s.path).append(" HTTP/1.1\r\nHost: ");
    head.append(authority).append("\r\n").append(s.fields);
    if (!s.cookies.empty()) head.append("cookie: ").append(s.cookies).append("\r\n");
    if (!s.has_content_length) {
        if (!end_stream) {
            // DATA without a declared length: HTTP/1.1 needs chunked framing to find the end.
            head.append("transfer-encoding: chunked\r\n");
            s.chunked = true;
        } else if (expectsBody(s.method)) {
            head.append("content-length: 0\r\n");
        }
    }
    head.append("\r\n");
    s.request_bytes += s.method.size() + s.path.size() + 12;
    std::string().swap(s.fields);
    std::string().swap(s.cookies);
    std::string().swap(s.host);
    std::string().swap(s.authority);
    s.delivered = true;
    ++open;
    events.onStreamRequest(s.id, head, end_stream);
    if (end_stream) events.onStreamRequestEnd(s.id);
}

void H2Session::Impl::answerLocally(Stream& s, int status) {
    const std::string code = std::to_string(status);
    const nghttp2_nv nva[] = {makeNv(":status", code), makeNv("content-length", "0")};
    Exchange ex;
    ex.method = std::move(s.method);
    ex.target = std::move(s.path);
    ex.status = status;
    ex.local = true;
    ex.version = "HTTP/2";
    ex.request_bytes = s.request_bytes;
    ex.response_bytes = 0;
    for (const auto& nv : nva) ex.response_bytes += nv.namelen + nv.valuelen + 4;
    if (nghttp2_submit_response(session, s.id, nva, std::size(nva), nullptr) != 0) {
        resetOwn(s, NGHTTP2_INTERNAL_ERROR);
    }
    std::string().swap(s.fields);
    std::string().swap(s.cookies);
    std::string().swap(s.host);
    std::string().swap(s.authority);
    events.onLocalResponse(s.id, ex);
}

void H2Session::Impl::deliverBody(Stream& s, const uint8_t* p, size_t framed, size_t raw) {
    // Without chunked framing, a framed byte is a DATA byte.
    s.window.given(framed, raw, !s.chunked);
    events.onStreamBody(s.id, p, framed);
}

void H2Session::Impl::endRequest(Stream& s) {
    if (!s.delivered || s.request_ended) return;
    s.request_ended = true;
    if (s.chunked) {
        scratch.assign("0\r\n").append(s.trailers).append("\r\n");
        std::string().swap(s.trailers);
        deliverBody(s, reinterpret_cast<const uint8_t*>(scratch.data()), scratch.size(), 0);
    }
    events.onStreamRequestEnd(s.id);
}

void H2Session::Impl::spendReset() {
    if (reset_budget > 0) --reset_budget;
    if (reset_budget == 0 && !fatal) {
        fatal = true;
        nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
    }
}

void H2Session::Impl::resetOwn(Stream& s, uint32_t code) {
    if (s.reset_sent) return;
    s.reset_sent = true;
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s.id, code);
}

int H2Session::Impl::onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame,
                                    void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    const int32_t id = frame->hd.stream_id;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        if (self.fatal) return 0;
        Stream& s = self.streams[id];
        s.owner = &self;
        s.id = id;
    } else if (Stream* s = self.find(id)) {
        s->in_trailers = true;
        s->block_bytes = 0;
        s->block_fields = 0;
    }
    return 0;
}

int H2Session::Impl::onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                              size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                              void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    Stream* s = self.find(frame->hd.stream_id);
    if (!s) return 0;
    self.addField(*s, {reinterpret_cast<const char*>(name), namelen},
                  {reinterpret_cast<const char*>(value), valuelen});
    return 0;
}

int H2Session::Impl::onFrameRecv(nghttp2_session*, const nghttp2_frame* frame,
                                 void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    const int32_t id = frame->hd.stream_id;
    Stream* s = self.find(id);
    switch (frame->hd.type) {
        case NGHTTP2_HEADERS:
            if (!s) break;
            if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
                self.finishHead(*s, frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
            } else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
                self.endRequest(*s);  // trailers
            }
            break;
        case NGHTTP2_DATA:
            if (s && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) self.endRequest(*s);
            break;
        case NGHTTP2_RST_STREAM:
            // The client cancelled a stream we were working on (rapid reset, CVE-2023-44487).
            if (s && !s->response_ended) self.spendReset();
            break;
        default:
            break;
    }
    return 0;
}

int H2Session::Impl::onDataChunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data,
                                 size_t len, void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    Stream* s = self.find(id);
    if (len == 0) return 0;
    if (!s || !s->delivered || s->request_ended) {
        // Nobody takes these bytes: the windows reopen at once.
        nghttp2_session_consume(session, id, len);
        return 0;
    }
    if (!s->chunked) {
        self.deliverBody(*s, data, len, len);
        return 0;
    }
    std::string& out = self.scratch;
    out.clear();
    appendHex(out, len);
    out.append("\r\n").append(reinterpret_cast<const char*>(data), len).append("\r\n");
    self.deliverBody(*s, reinterpret_cast<const uint8_t*>(out.data()), out.size(), len);
    return 0;
}

int H2Session::Impl::onFrameSend(nghttp2_session*, const nghttp2_frame* frame,
                                 void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    Stream* s = self.find(frame->hd.stream_id);
    const uint8_t type = frame->hd.type;
    if ((type == NGHTTP2_HEADERS || type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && s) {
        s->response_ended = true;
        // The response is complete before the request: ask the client to stop sending
        // (RFC 9113 section 8.1), so that the stream closes.
        if (!s->request_ended) self.resetOwn(*s, NGHTTP2_NO_ERROR);
    } else if (type == NGHTTP2_RST_STREAM && (!s || !s->reset_sent) &&
               frame->rst_stream.error_code != NGHTTP2_NO_ERROR) {
        // nghttp2 reset a stream for the client's protocol error: as costly as a client reset.
        self.spendReset();
    }
    return 0;
}

int H2Session::Impl::onStreamClose(nghttp2_session* session, int32_t id, uint32_t error_code,
                                   void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    auto it = self.streams.find(id);
    if (it == self.streams.end()) return 0;
    Stream& s = it->second;
    // DATA core never reported consumed still holds the connection's window.
    if (const uint64_t held = s.window.release()) {
        nghttp2_session_consume_connection(session, size_t(held));
    }
    const bool delivered = s.delivered;
    if (delivered && error_code == NGHTTP2_NO_ERROR && s.response_ended) {
        self.reset_budget = std::min(self.reset_cap, self.reset_budget + 1);
    }
    self.streams.erase(it);
    if (delivered) {
        --self.open;
        self.events.onStreamClosed(id, error_code);
    }
    return 0;
}

// ---- response side ----

const llhttp_settings_t& H2Session::Impl::responseSettings() {
    // llhttp keeps a pointer to its settings: they live as long as the program.
    static const llhttp_settings_t settings = [] {
        llhttp_settings_t s;
        llhttp_settings_init(&s);
        s.on_status = &onResponseStatus;
        s.on_header_field = &onResponseField;
        s.on_header_value = &onResponseValue;
        s.on_header_value_complete = &onResponseValueComplete;
        s.on_headers_complete = &onResponseHeaders;
        s.on_body = &onResponseBody;
        s.on_message_complete = &onResponseComplete;
        return s;
    }();
    return settings;
}

int H2Session::Impl::onResponseStatus(llhttp_t* p, const char*, size_t n) noexcept {
    return of(p).response_head.count(n, kMaxResponseHead);
}

int H2Session::Impl::onResponseField(llhttp_t* p, const char* at, size_t n) noexcept {
    return of(p).response_head.addName(at, n, kMaxResponseHead);
}

int H2Session::Impl::onResponseValue(llhttp_t* p, const char* at, size_t n) noexcept {
    return of(p).response_head.addValue(at, n, kMaxResponseHead);
}

int H2Session::Impl::onResponseValueComplete(llhttp_t* p) noexcept {
    Stream& s = of(p);
    s.response_fields.push_back(s.response_head.take(false));
    return 0;
}

// Connection-specific fields and those the Connection field names go; the rest keep their order.
std::vector<Field> H2Session::Impl::filtered(std::vector<Field>& fields) const {
    std::vector<std::string> named;
    for (const Field& f : fields) {
        if (f.name == "connection") addConnectionOptions(f.value, named);
    }
    std::vector<Field> out;
    out.reserve(fields.size());
    for (Field& f : fields) {
        if (isConnectionSpecific(f.name)) continue;
        if (std::find(named.begin(), named.end(), f.name) != named.end()) continue;
        out.push_back(std::move(f));
    }
    fields.clear();
    return out;
}

void H2Session::Impl::submitHead(Stream& s, int status, bool final_head, bool no_body) {
    const std::vector<Field> fields = filtered(s.response_fields);
    const std::string code = std::to_string(status);
    std::vector<nghttp2_nv> nva;
    nva.reserve(fields.size() + 1);
    nva.push_back(makeNv(":status", code));
    for (const Field& f : fields) nva.push_back(makeNv(f.name, f.value));
    int rv;
    if (!final_head) {
        rv = nghttp2_submit_headers(session, NGHTTP2_FLAG_NONE, s.id, nullptr, nva.data(),
                                    nva.size(), nullptr);
    } else if (no_body) {
        rv = nghttp2_submit_response(session, s.id, nva.data(), nva.size(), nullptr);
    } else {
        nghttp2_data_provider provider;
        provider.source.ptr = nullptr;
        provider.read_callback = &readBody;
        s.has_provider = true;
        rv = nghttp2_submit_response(session, s.id, nva.data(), nva.size(), &provider);
    }
    if (rv != 0) resetOwn(s, NGHTTP2_INTERNAL_ERROR);
}

int H2Session::Impl::onResponseHeaders(llhttp_t* p) noexcept {
    Stream& s = of(p);
    Impl& self = *s.owner;
    const int status = p->status_code;
    if (p->http_major != 1 || status == 101) return -1;  // no HTTP/2 form: reset
    if (status < 200) {
        self.submitHead(s, status, false, true);
        return 1;  // no body; the final response follows
    }
    const bool empty_length =
        (p->flags & F_CONTENT_LENGTH) && p->content_length == 0 && !(p->flags & F_CHUNKED);
    const bool no_body = s.head_request || status == 204 || status == 304 || empty_length;
    s.final_head = true;
    self.submitHead(s, status, true, no_body);
    return s.head_request ? 1 : 0;
}

int H2Session::Impl::onResponseBody(llhttp_t* p, const char* at, size_t n) noexcept {
    Stream& s = of(p);
    if (!s.has_provider) return 0;
    s.out.append(at, n);
    s.owner->bodyArrived(s);
    return 0;
}

int H2Session::Impl::onResponseComplete(llhttp_t* p) noexcept {
    Stream& s = of(p);
    if (!s.final_head) {
        // An interim response ended: the next message on this stream is parsed afresh.
        s.response_fields.clear();
        s.response_head.bytes = 0;
        return 0;
    }
    s.response_done = true;
    if (s.has_provider) {
        if (!s.response_fields.empty()) s.out.trailers = s.owner->filtered(s.response_fields);
        s.owner->bodyArrived(s);
    }
    return HPE_PAUSED;  // nothing after the final response belongs to this stream
}

void H2Session::Impl::bodyArrived(Stream& s) {
    if (!s.out.deferred) return;
    s.out.deferred = false;
    nghttp2_session_resume_data(session, s.id);
}

ssize_t H2Session::Impl::readBody(nghttp2_session* session, int32_t id, uint8_t* buf, size_t length,
                                  uint32_t* flags, nghttp2_data_source*, void* user) noexcept {
    Impl& self = *static_cast<Impl*>(user);
    Stream* s = self.find(id);
    if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return s->out.read(session, id, buf, length, flags, s->response_done);
}

void H2Session::Impl::failResponse(Stream& s) {
    s.response_failed = true;
    s.out.discard();
    resetOwn(s, NGHTTP2_INTERNAL_ERROR);
}

// ---- H2Session ----

H2Session::H2Session(const H2Options& options, H2Events& events)
    : impl_(std::make_unique<Impl>(options, events)) {
    impl_->session = newSession(Role::Server, impl_.get());
    if (!impl_->session) impl_->fatal = true;
}

H2Session::~H2Session() = default;

void H2Session::start() {
    Impl& m = *impl_;
    if (!m.session) return;
    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, m.options.max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, m.options.initial_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, m.options.max_header_bytes},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        // No RFC 7540 priority tree: closed streams are not kept for it.
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    if (nghttp2_submit_settings(m.session, NGHTTP2_FLAG_NONE, settings, std::size(settings)) != 0) {
        m.fatal = true;
        return;
    }
    // The connection window lets every stream fill its own window: a stream whose app is slow
    // does not stall the others, and the bytes held stay bounded by the per-stream windows.
    widenConnectionWindow(m.session, uint64_t(m.options.initial_window) *
                                         std::max<uint32_t>(m.options.max_concurrent_streams, 1));
}

Status H2Session::feed(const uint8_t* p, size_t n) {
    Impl& m = *impl_;
    if (m.closed || m.fatal || !m.session) return Status::Close;
    if (!receive(m.session, p, n)) m.fatal = true;
    if (m.fatal || !nghttp2_session_want_read(m.session)) return Status::Close;
    return Status::Continue;
}

void H2Session::respond(int32_t stream, const uint8_t* p, size_t n, bool head_request) {
    Impl& m = *impl_;
    if (m.closed || !m.session) return;
    Impl::Stream* s = m.find(stream);
    if (!s || !s->delivered || s->response_done || s->response_failed || s->reset_sent) return;
    if (!s->parser_ready) {
        llhttp_init(&s->parser, HTTP_RESPONSE, &Impl::responseSettings());  // no lenient flags
        s->parser.data = s;
        s->parser_ready = true;
        s->head_request = head_request;
    }
    const llhttp_errno_t err = llhttp_execute(&s->parser, reinterpret_cast<const char*>(p), n);
    if (err == HPE_OK || (err == HPE_PAUSED && s->response_done)) return;
    m.failResponse(*s);
}

void H2Session::respondEof(int32_t stream) {
    Impl& m = *impl_;
    if (m.closed || !m.session) return;
    Impl::Stream* s = m.find(stream);
    if (!s || !s->delivered || s->response_done || s->response_failed || s->reset_sent) return;
    if (s->parser_ready && llhttp_finish(&s->parser) == HPE_OK && s->response_done) return;
    if (!s->response_done) m.failResponse(*s);
}

void H2Session::resetStream(int32_t stream, uint32_t error_code) {
    Impl& m = *impl_;
    if (m.closed || !m.session) return;
    if (Impl::Stream* s = m.find(stream)) {
        s->out.discard();
        s->response_failed = true;
        m.resetOwn(*s, error_code);
    }
}

void H2Session::consumed(int32_t stream, size_t n) {
    Impl& m = *impl_;
    if (m.closed || !m.session || n == 0) return;
    Impl::Stream* s = m.find(stream);
    if (!s || !s->delivered) return;
    if (const uint64_t more = s->window.consume(n)) {
        nghttp2_session_consume(m.session, stream, size_t(more));
    }
}

size_t H2Session::buffered(int32_t stream) const {
    const Impl::Stream* s = impl_->find(stream);
    return s ? s->out.buffered() : 0;
}

Status H2Session::flush(size_t budget) {
    Impl& m = *impl_;
    if (m.closed || !m.session) {
        m.closed = true;
        return Status::Close;
    }
    const bool sent = sendFrames(m.session, budget, [&m](const uint8_t* data, size_t n) {
        m.events.sendDownstream(data, n);
    });
    if (!sent) m.fatal = true;
    if (m.fatal ||
        (!nghttp2_session_want_read(m.session) && !nghttp2_session_want_write(m.session))) {
        m.closed = true;
        return Status::Close;
    }
    return Status::Continue;
}

void H2Session::goaway() {
    Impl& m = *impl_;
    if (m.closed || m.goaway_sent || !m.session) return;
    m.goaway_sent = true;
    nghttp2_submit_goaway(m.session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(m.session), NGHTTP2_NO_ERROR,
                          nullptr, 0);
}

size_t H2Session::openStreams() const { return impl_->open; }

const char* nghttp2Version() { return nghttp2_version(0)->version_str; }

}  // namespace sidecar::http
