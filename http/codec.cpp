#include "http/codec.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string_view>

namespace sidecar::http {
namespace {

constexpr uint8_t kBegin = 1;
constexpr uint8_t kHeadersDone = 2;
constexpr uint8_t kMessageDone = 4;
constexpr uint8_t kChunkHeader = 8;
constexpr uint8_t kChunkComplete = 16;
constexpr uint8_t kLineDone = 32;

struct StatusText {
    int code;
    std::string_view reason;
};

constexpr StatusText kStatusTexts[] = {
    {400, "Bad Request"},           {405, "Method Not Allowed"},
    {408, "Request Timeout"},       {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"}, {501, "Not Implemented"},
    {502, "Bad Gateway"},           {503, "Service Unavailable"},
    {504, "Gateway Timeout"},       {505, "HTTP Version Not Supported"},
};

std::string_view reasonFor(int& code) {
    for (const auto& s : kStatusTexts) {
        if (s.code == code) return s.reason;
    }
    code = 500;
    return "Internal Server Error";
}

inline char lowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? char(c + ('a' - 'A')) : c; }

// `lower` must be lower case.
bool equalsLower(std::string_view s, std::string_view lower) {
    if (s.size() != lower.size()) return false;
    for (size_t i = 0; i < s.size(); ++i) {
        if (lowerAscii(s[i]) != lower[i]) return false;
    }
    return true;
}

// 1xx other than 101: no body, and the final response to the same request follows.
bool isInterim(int status) { return status / 100 == 1 && status != 101; }

// A CR that is not the start of a CRLF.
bool hasBareCr(std::string_view head) {
    for (size_t i = head.find('\r'); i != std::string_view::npos; i = head.find('\r', i + 1)) {
        if (i + 1 == head.size() || head[i + 1] != '\n') return true;
    }
    return false;
}

std::string_view trimOws(std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
}

bool isTchar(char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool isHexDigit(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// RFC 3986: every byte unreserved, a sub-delim, one of `extra`, or a '%' that starts a
// pct-encoded octet. Refuses '#' (a fragment), spaces, controls, bytes >= 0x80 and every other
// delimiter, which readers behind the proxy could each interpret their own way.
bool isUriText(std::string_view s, std::string_view extra) {
    for (size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (c == '%') {
            if (s.size() - i < 3 || !isHexDigit(s[i + 1]) || !isHexDigit(s[i + 2])) return false;
            i += 2;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     std::string_view("-._~!$&'()*+,;=").find(c) != std::string_view::npos ||
                     extra.find(c) != std::string_view::npos)) {
            return false;
        }
    }
    return true;
}

bool isPathAndQuery(std::string_view s) { return isUriText(s, ":@/?"); }

// RFC 3986 authority, "[userinfo@]host[:port]", with a host; CONNECT's authority-form is
// "host:port" only (RFC 9112 section 3.2.3).
bool isAuthority(std::string_view s, bool connect) {
    const size_t at = s.find('@');
    if (at != std::string_view::npos) {
        if (connect || !isUriText(s.substr(0, at), ":")) return false;
        s.remove_prefix(at + 1);
    }
    size_t host_end;
    if (!s.empty() && s.front() == '[') {
        host_end = s.find(']');
        if (host_end == std::string_view::npos || host_end == 1) return false;
        if (!isUriText(s.substr(1, host_end - 1), ":")) return false;
        ++host_end;
    } else {
        host_end = std::min(s.find(':'), s.size());
        if (host_end == 0 || !isUriText(s.substr(0, host_end), {})) return false;
    }
    const std::string_view port = s.substr(host_end);
    if (port.empty()) return !connect;
    if (port.front() != ':' || (connect && port.size() == 1)) return false;
    return std::all_of(port.begin() + 1, port.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// RFC 9112 section 3.2 "absolute-form": scheme ":" hier-part ["?" query].
bool isAbsoluteUri(std::string_view s) {
    const size_t colon = s.find(':');
    if (colon == 0 || colon == std::string_view::npos) return false;
    for (size_t i = 0; i < colon; ++i) {
        const char c = s[i];
        const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alpha && (i == 0 || !((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'))) {
            return false;
        }
    }
    std::string_view rest = s.substr(colon + 1);
    if (rest.starts_with("//")) {
        rest.remove_prefix(2);
        const size_t end = std::min(rest.find_first_of("/?"), rest.size());
        if (!isAuthority(rest.substr(0, end), false)) return false;
        rest.remove_prefix(end);
    }
    return isPathAndQuery(rest);
}

// The request line is complete (llhttp has read the version, not yet the CRLF): what llhttp
// leaves to the application. llhttp also speaks RTSP ("DESCRIBE / RTSP/1.0") and ICE
// ("SOURCE / ICE/1.0") and accepts their methods, and it lets through request-targets that
// RFC 9112 section 3.2 does not allow. Returns 0 or the status to answer with.
int requestLineError(std::string_view line, const llhttp_t& parser) {
    const std::string_view version = line.substr(line.rfind(' ') + 1);
    if (version != "HTTP/1.1" && version != "HTTP/1.0") {
        return version.starts_with("HTTP/") ? 505 : 400;
    }
    // Exactly "method SP target SP version": llhttp tolerates repeated spaces.
    const size_t sp1 = line.find(' ');
    const size_t sp2 = line.find(' ', sp1 + 1);
    if (sp1 == 0 || sp2 == sp1 + 1 || sp2 != line.size() - version.size() - 1) return 400;
    // HTTP methods that llhttp knows, less SOURCE (ICE) and PRI (only h2's preface uses it).
    const auto method = static_cast<llhttp_method>(parser.method);
    if (method > HTTP_UNLINK && method != HTTP_QUERY) return 400;
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (method == HTTP_CONNECT) return isAuthority(target, true) ? 0 : 400;
    if (target == "*") return method == HTTP_OPTIONS ? 0 : 400;
    if (target.starts_with('/')) return isPathAndQuery(target) ? 0 : 400;
    return isAbsoluteUri(target) ? 0 : 400;
}

bool isToken(std::string_view v) {
    if (v.empty()) return false;
    for (char c : v) {
        if (!isTchar(c)) return false;
    }
    return true;
}

// Values the proxy injects come from core (peer address, certificate fields) and must not be
// able to break the head they are placed in.
std::string withoutControls(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (char c : v) {
        const auto u = static_cast<unsigned char>(c);
        if (u >= 0x20 && u != 0x7f) out.push_back(c);
    }
    return out;
}

void appendQuoted(std::string& out, std::string_view v) {
    out.push_back('"');
    for (char c : v) {
        if (c == '"' || c == '\\') out.push_back('\\');
        out.push_back(c);
    }
    out.push_back('"');
}

// Walks the header lines of a head already validated by llhttp (CRLF line ends, no folding,
// no whitespace before the colon). Calls f(line_with_crlf, name, value) and returns the count.
template <class F>
size_t forEachHeader(std::string_view head, F&& f) {
    size_t pos = head.find('\n') + 1;  // skip the request/status line
    size_t count = 0;
    while (pos < head.size()) {
        const size_t eol = head.find('\n', pos);
        const size_t len = eol - 1 - pos;  // without CRLF
        if (len == 0) break;
        const std::string_view line = head.substr(pos, len);
        const size_t colon = line.find(':');
        ++count;
        f(head.substr(pos, eol + 1 - pos), line.substr(0, colon), trimOws(line.substr(colon + 1)));
        pos = eol + 1;
    }
    return count;
}

// Appends `head` without its Connection and Keep-Alive fields (hop-by-hop: the proxy sets its
// own) and without the empty line that ends it. Returns the number of fields in `head`.
size_t appendWithoutConnectionFields(std::string& out, std::string_view head) {
    out.append(head.data(), head.find('\n') + 1);
    return forEachHeader(head, [&](std::string_view raw, std::string_view name, auto) {
        if (name.size() == 10 && (equalsLower(name, "connection") || equalsLower(name, "keep-alive"))) {
            return;
        }
        out.append(raw);
    });
}

}  // namespace

struct Codec::Callbacks {
    static Codec* self(llhttp_t* p) { return static_cast<Codec*>(p->data); }

    // Pausing at each boundary makes llhttp_execute() return there, so the codec learns the
    // exact byte offset (llhttp_get_error_pos) of every head end and message end.
    static int requestBegin(llhttp_t* p) noexcept {
        self(p)->request_events_ |= kBegin;
        return HPE_PAUSED;
    }
    static int requestLine(llhttp_t* p) noexcept {
        self(p)->request_events_ |= kLineDone;
        return HPE_PAUSED;
    }
    static int requestHeaders(llhttp_t* p) noexcept {
        self(p)->request_events_ |= kHeadersDone;
        return HPE_PAUSED;
    }
    static int requestComplete(llhttp_t* p) noexcept {
        self(p)->request_events_ |= kMessageDone;
        return HPE_PAUSED;
    }
    static int responseBegin(llhttp_t* p) noexcept {
        self(p)->response_events_ |= kBegin;
        return HPE_PAUSED;
    }
    static int responseHeaders(llhttp_t* p) noexcept {
        Codec* c = self(p);
        c->response_events_ |= kHeadersDone;
        const bool head = c->pending_count_ > 0 && c->front().head_request;
        // 1 = no body: the message completes right here, where on_message_complete pauses.
        if (isInterim(p->status_code) || head) return 1;
        return HPE_PAUSED;
    }
    static int responseComplete(llhttp_t* p) noexcept {
        self(p)->response_events_ |= kMessageDone;
        return HPE_PAUSED;
    }
    static int requestChunkHeader(llhttp_t* p) noexcept {
        self(p)->request_events_ |= kChunkHeader;
        return HPE_PAUSED;
    }
    static int requestChunkComplete(llhttp_t* p) noexcept {
        self(p)->request_events_ |= kChunkComplete;
        return HPE_PAUSED;
    }
    static int responseChunkHeader(llhttp_t* p) noexcept {
        self(p)->response_events_ |= kChunkHeader;
        return HPE_PAUSED;
    }
    static int responseChunkComplete(llhttp_t* p) noexcept {
        self(p)->response_events_ |= kChunkComplete;
        return HPE_PAUSED;
    }

    static llhttp_settings_t make(llhttp_cb begin, llhttp_cb headers, llhttp_cb complete,
                                  llhttp_cb chunk_header, llhttp_cb chunk_complete) {
        llhttp_settings_t settings;
        llhttp_settings_init(&settings);
        settings.on_message_begin = begin;
        settings.on_headers_complete = headers;
        settings.on_message_complete = complete;
        settings.on_chunk_header = chunk_header;
        settings.on_chunk_complete = chunk_complete;
        return settings;
    }
    // llhttp keeps a pointer to its settings: they live as long as the program.
    static const llhttp_settings_t& request() {
        static const llhttp_settings_t settings = [] {
            llhttp_settings_t s = make(&requestBegin, &requestHeaders, &requestComplete,
                                       &requestChunkHeader, &requestChunkComplete);
            s.on_version_complete = &requestLine;  // the end of the request line
            return s;
        }();
        return settings;
    }
    static const llhttp_settings_t& response() {
        static const llhttp_settings_t settings =
            make(&responseBegin, &responseHeaders, &responseComplete, &responseChunkHeader,
                 &responseChunkComplete);
        return settings;
    }
};

Codec::Codec(const CodecOptions& options, const ConnectionFacts& facts, CodecEvents& events)
    : options_(options), events_(events) {
    // llhttp_init leaves every lenient flag off; none is ever enabled.
    llhttp_init(&request_parser_, HTTP_REQUEST, &Callbacks::request());
    llhttp_init(&response_parser_, HTTP_RESPONSE, &Callbacks::response());
    request_parser_.data = this;
    response_parser_.data = this;
    if (options_.max_pipelined == 0) options_.max_pipelined = 1;

    const std::string ip = withoutControls(facts.client_ip);
    const std::string proto = withoutControls(facts.proto);
    fallback_host_ = withoutControls(facts.local_host);
    request_id_prefix_ = withoutControls(facts.request_id_prefix);
    switch (options_.forwarded) {
        case ForwardedMode::XForwarded:
            inject_ = "X-Forwarded-For: " + ip + "\r\nX-Forwarded-Proto: " + proto + "\r\n";
            break;
        case ForwardedMode::Forwarded:
            inject_ = "Forwarded: for=";
            if (ip.empty()) {
                inject_ += "unknown";
            } else if (ip.find(':') != std::string::npos) {
                inject_ += "\"[" + ip + "]\"";
            } else if (isToken(ip)) {
                inject_ += ip;
            } else {
                appendQuoted(inject_, ip);
            }
            inject_ += ";proto=";
            if (isToken(proto)) {
                inject_ += proto;
            } else {
                appendQuoted(inject_, proto);
            }
            break;
        case ForwardedMode::None:
            break;
    }
    const std::string cert = withoutControls(facts.client_cert);
    if (!cert.empty()) xfcc_line_ = "X-Forwarded-Client-Cert: " + cert + "\r\n";

    // Buffers grow on first use: a connection that never sends a request costs no head space.
    pending_.resize(2);
}

// ---- request side ---------------------------------------------------------------------------

Status Codec::feedRequest(const uint8_t* p, size_t n) {
    if (closing_) return Status::Close;
    if (tunnel_) {
        if (n > 0) events_.sendUpstream(p, n);
        return Status::Continue;
    }
    const char* begin = reinterpret_cast<const char*>(p);
    processRequest(begin, begin + n);
    return status();
}

void Codec::processRequest(const char* p, const char* end) {
    while (!closing_) {
        if (request_state_ == RequestState::Stopped) return;
        if (request_state_ == RequestState::Held) {
            hold(p, end);
            return;
        }
        if (request_state_ == RequestState::Idle && p != end &&
            pending_count_ >= options_.max_pipelined) {
            request_state_ = RequestState::Held;
            hold_reason_ = HoldReason::PipelineFull;
            continue;
        }
        request_events_ = 0;
        // Called with zero bytes too: after a pause llhttp still has steps to run that need no
        // input (message end of a bodiless request, the upgrade pause).
        const llhttp_errno_t err = llhttp_execute(&request_parser_, p, size_t(end - p));
        const char* stop = err == HPE_OK ? end : llhttp_get_error_pos(&request_parser_);
        if (!consumeRequestBytes(p, stop)) return;
        p = stop;
        if (err == HPE_OK) return;
        if (err == HPE_PAUSED) {
            llhttp_resume(&request_parser_);
            if (request_events_ & kBegin) {
                request_state_ = RequestState::Head;
                request_head_.clear();
                request_line_size_ = 0;
            }
            if (request_events_ & kLineDone) {
                request_line_size_ = request_head_.size();
                if (const int error = requestLineError(request_head_, request_parser_)) {
                    failRequest(error, false);
                    return;
                }
            }
            if (request_events_ & kHeadersDone) finishRequestHead();
            if (request_events_ & (kChunkHeader | kChunkComplete)) {
                chunkBoundary(request_framing_, request_parser_, true);
            }
            if (request_events_ & kMessageDone) finishRequestMessage();
            continue;
        }
        if (err == HPE_PAUSED_UPGRADE) {
            if (upgrade_seq_ <= last_completed_seq_) {
                // Already answered without 101 (the app replied before the body ended).
                llhttp_resume_after_upgrade(&request_parser_);
            } else {
                request_state_ = RequestState::Held;
                hold_reason_ = HoldReason::Upgrade;
            }
            continue;
        }
        if (request_state_ == RequestState::Body) {
            failRequest(400, true);
            return;
        }
        int status = 400;
        if (err == HPE_PAUSED_H2_UPGRADE) {
            status = 505;
        } else if (err == HPE_INVALID_VERSION) {
            // llhttp checks the digits once both are read: a well-formed "HTTP/d.d" at the end
            // of what it consumed is a version we do not speak rather than a malformed line.
            const std::string_view line(request_head_);
            const size_t n = line.size();
            const auto digit = [](char c) { return c >= '0' && c <= '9'; };
            if (n >= 8 && line.compare(n - 8, 5, "HTTP/") == 0 && digit(line[n - 3]) &&
                line[n - 2] == '.' && digit(line[n - 1]) &&
                !(line[n - 3] == '1' && (line[n - 1] == '0' || line[n - 1] == '1'))) {
                status = 505;
            }
        }
        failRequest(status, false);
        return;
    }
}

bool Codec::consumeRequestBytes(const char* p, const char* stop) {
    const size_t n = size_t(stop - p);
    if (n == 0) return true;
    switch (request_state_) {
        case RequestState::Head:
            if (request_head_.size() + n > options_.max_header_bytes) {
                request_head_.append(p, options_.max_header_bytes - request_head_.size());
                failRequest(431, false);
                return false;
            }
            request_head_.append(p, n);
            return true;
        case RequestState::Body:
            if (pending_count_ > 0 && back().seq == current_request_seq_) {
                back().exchange.request_bytes += n;
            }
            if (!forwardBody(request_framing_, p, n, true)) {
                failRequest(431, true);
                return false;
            }
            return true;
        default:
            return true;  // empty lines before a request
    }
}

void Codec::finishRequestHead() {
    const int error = buildRequestHead();
    if (error != 0) {
        failRequest(error, false);
        return;
    }
    if (draining_ && pending_count_ > 0) {
        // Its answer would never be delivered: the connection ends after the current one.
        request_state_ = RequestState::Stopped;
        return;
    }
    const llhttp_t& parser = request_parser_;
    Pending& slot = pushPending();
    slot.seq = next_seq_++;
    fillFromRequestLine(slot.exchange);
    if (options_.log_fields) {
        slot.exchange.authority = authority_;
        slot.exchange.user_agent = user_agent_;
        slot.exchange.request_id = request_id_;
        slot.exchange.version = parser.http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
    }
    slot.exchange.status = 0;
    slot.exchange.request_bytes = request_head_.size();
    slot.exchange.response_bytes = 0;
    slot.exchange.local = false;
    slot.head_request = parser.method == HTTP_HEAD;
    slot.upgrade = parser.upgrade != 0;
    slot.close_after = !llhttp_should_keep_alive(&parser);
    slot.http10 = parser.http_minor == 0;
    current_request_seq_ = slot.seq;
    if (slot.upgrade) upgrade_seq_ = slot.seq;
    request_framing_.reset(parser.flags & F_CHUNKED);
    request_state_ = RequestState::Body;
    slot.refused = events_.admitRequest(slot.exchange, admission_key_);
    if (slot.refused.defer) {
        // Nothing of it goes out until admit(); what follows the head is held meanwhile.
        slot.refused = {};
        deferred_head_.assign(out_);
        request_state_ = RequestState::Held;
        hold_reason_ = HoldReason::Admission;
        return;
    }
    if (slot.refused.status != 0) {
        discard_seq_ = slot.seq;
        answerRefused();
        return;
    }
    events_.sendUpstream(reinterpret_cast<const uint8_t*>(out_.data()), out_.size());
    events_.onRequestHead(slot.exchange);
}

// Validates what llhttp leaves to the application and writes the head to forward into out_.
// Returns 0 or the status to answer with.
int Codec::buildRequestHead() {
    const llhttp_t& parser = request_parser_;
    const std::string_view head(request_head_);
    const std::string_view line = head.substr(0, head.find('\r'));

    // A line with a version was checked when it ended (requestLineError); one without is
    // HTTP/0.9, which llhttp accepts.
    if (parser.http_major != 1 || parser.http_minor > 1) return 400;
    if (parser.method == HTTP_CONNECT) return 501;
    if (parser.flags & F_TRANSFER_ENCODING) {
        // Not ending in chunked: the length is unknowable (llhttp flags it only after this
        // point). HTTP/1.0 has no chunked coding: its framing cannot be trusted.
        if (!(parser.flags & F_CHUNKED) || parser.http_minor == 0) return 400;
    }

    const ForwardedMode mode = options_.forwarded;
    const std::string_view admission = options_.admission_header;
    admission_key_.clear();
    const bool log_fields = options_.log_fields;
    const bool want_request_id = log_fields || !request_id_prefix_.empty();
    if (log_fields) user_agent_.clear();
    if (want_request_id) request_id_.clear();
    out_.clear();
    out_.append(head.data(), line.size() + 2);
    std::string_view host;
    int hosts = 0;
    int transfer_encodings = 0;
    bool only_chunked = true;
    const size_t count = forEachHeader(head, [&](std::string_view raw, std::string_view name,
                                                 std::string_view value) {
        bool drop = false;
        if (!admission.empty() && admission_key_.empty() && equalsLower(name, admission)) {
            admission_key_.assign(value);
        }
        if (log_fields && name.size() == 10 && equalsLower(name, "user-agent")) {
            user_agent_.assign(value);
        } else if (want_request_id && name.size() == 12 && equalsLower(name, "x-request-id")) {
            request_id_.assign(value);
        }
        switch (name.size()) {
            case 4:
                if (equalsLower(name, "host")) {
                    ++hosts;
                    host = value;
                }
                break;
            case 9:
                drop = mode != ForwardedMode::None && equalsLower(name, "forwarded");
                break;
            case 15:
                drop = mode != ForwardedMode::None && equalsLower(name, "x-forwarded-for");
                break;
            case 16:
                drop = mode != ForwardedMode::None && equalsLower(name, "x-forwarded-host");
                break;
            case 17:
                if (equalsLower(name, "transfer-encoding")) {
                    ++transfer_encodings;
                    only_chunked = only_chunked && equalsLower(value, "chunked");
                } else {
                    drop = mode != ForwardedMode::None && equalsLower(name, "x-forwarded-proto");
                }
                break;
            case 23:
                drop = equalsLower(name, "x-forwarded-client-cert");
                break;
            default:
                break;
        }
        if (!drop) out_.append(raw);
    });
    if (count > options_.max_headers) return 431;
    if (hosts > 1 || (hosts == 0 && parser.http_minor == 1)) return 400;
    // Only plain "chunked" is accepted: other codings are not understood end to end.
    if (transfer_encodings > 1 || !only_chunked) return 501;

    if (hosts == 0) host = fallback_host_;
    if (log_fields) authority_.assign(host);
    switch (mode) {
        case ForwardedMode::XForwarded:
            out_ += inject_;
            if (!host.empty()) {
                out_ += "X-Forwarded-Host: ";
                out_ += host;
                out_ += "\r\n";
            }
            break;
        case ForwardedMode::Forwarded:
            out_ += inject_;
            if (!host.empty()) {
                out_ += ";host=";
                if (isToken(host)) {
                    out_ += host;
                } else {
                    appendQuoted(out_, host);
                }
            }
            out_ += "\r\n";
            break;
        case ForwardedMode::None:
            break;
    }
    if (!request_id_prefix_.empty() && request_id_.empty()) {
        request_id_ = request_id_prefix_ + "-" + std::to_string(++request_ids_);
        out_ += "X-Request-Id: ";
        out_ += request_id_;
        out_ += "\r\n";
    }
    out_ += xfcc_line_;
    out_ += "\r\n";
    return 0;
}

void Codec::finishRequestMessage() {
    const bool close =
        pending_count_ > 0 && back().seq == current_request_seq_ && back().close_after;
    request_state_ = close ? RequestState::Stopped : RequestState::Idle;
}

void Codec::failRequest(int status, bool in_body) {
    request_state_ = RequestState::Stopped;
    if (queued_error_ != 0) return;
    queued_error_ = status;
    if (in_body) {
        // Its head already went upstream: the answer replaces that exchange's response.
        queued_error_seq_ = current_request_seq_;
    } else {
        queued_error_seq_ = 0;
        failed_ = Exchange{};
        fillFromRequestLine(failed_);
        failed_.request_bytes = request_head_.size();
    }
    maybeEmitQueuedError();
}

void Codec::hold(const char* p, const char* end) {
    const size_t n = size_t(end - p);
    if (n == 0) return;
    if (held_.size() + n > options_.max_held_bytes) {
        closing_ = true;
        return;
    }
    held_.append(p, n);
}

void Codec::resumeHeld() {
    if (request_state_ != RequestState::Held || replaying_ || closing_) return;
    if (hold_reason_ == HoldReason::Admission) return;  // until admit()
    if (hold_reason_ == HoldReason::Upgrade) {
        if (upgrade_seq_ > last_completed_seq_) return;
        llhttp_resume_after_upgrade(&request_parser_);
    } else if (pending_count_ >= options_.max_pipelined) {
        return;
    }
    request_state_ = RequestState::Idle;
    hold_reason_ = HoldReason::None;
    replayHeld();
}

// Processes the held client bytes as if they arrived now (none at all still lets llhttp finish
// a bodiless message).
void Codec::replayHeld() {
    replay_.swap(held_);
    held_.clear();
    replaying_ = true;
    processRequest(replay_.data(), replay_.data() + replay_.size());
    replaying_ = false;
    replay_.clear();
}

Status Codec::admit(const Admission& decision) {
    if (closing_ || request_state_ != RequestState::Held || hold_reason_ != HoldReason::Admission) {
        return status();
    }
    Pending& slot = back();  // the deferred request is the newest
    hold_reason_ = HoldReason::None;
    request_state_ = RequestState::Body;
    if (decision.status != 0) {
        slot.refused = decision;
        slot.refused.defer = false;
        discard_seq_ = slot.seq;
        answerRefused();
    } else {
        events_.sendUpstream(reinterpret_cast<const uint8_t*>(deferred_head_.data()),
                             deferred_head_.size());
        events_.onRequestHead(slot.exchange);
    }
    deferred_head_.clear();
    deferred_head_.shrink_to_fit();
    replayHeld();  // the rest of the request, and what was pipelined after it
    if (request_eof_ && !closing_) return requestEof();  // the client had finished meanwhile
    return status();
}

Status Codec::requestEof() {
    if (closing_) return Status::Close;
    request_eof_ = true;
    if (tunnel_) {
        closing_ = true;
        return Status::Close;
    }
    if (request_state_ == RequestState::Body) {
        // The request can never be completed; the app holds a truncated one.
        closing_ = true;
        return Status::Close;
    }
    if (request_state_ == RequestState::Head || request_state_ == RequestState::Idle) {
        request_state_ = RequestState::Stopped;
    }
    if (pending_count_ == 0 && queued_error_ == 0) closing_ = true;
    return status();
}

// ---- bodies --------------------------------------------------------------------------------

// Chunk data is forwarded as it arrives. Chunk framing (size lines, the CRLF after data, the
// last chunk and trailers) is forwarded only once llhttp has accepted it, so a peer never
// receives a malformed or prematurely terminated chunked body: a body error leaves it with a
// truncated message, then the connection closes.
bool Codec::forwardBody(Framing& framing, const char* p, size_t n, bool upstream) {
    if (framing.chunked) {
        const size_t data = size_t(std::min<uint64_t>(framing.remaining, n));
        framing.remaining -= data;
        if (data > 0) send(p, data, upstream);
        p += data;
        n -= data;
        if (n == 0) return true;
        if (framing.held.size() + n > options_.max_header_bytes) return false;
        framing.held.append(p, n);
        return true;
    }
    send(p, n, upstream);
    return true;
}

void Codec::chunkBoundary(Framing& framing, const llhttp_t& parser, bool upstream) {
    if (!framing.held.empty()) {
        send(framing.held.data(), framing.held.size(), upstream);
        framing.held.clear();
    }
    // At a chunk header llhttp holds the chunk size; at a chunk end it holds 0.
    framing.remaining = parser.content_length;
}

void Codec::send(const char* p, size_t n, bool upstream) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(p);
    if (upstream) {
        if (discard_seq_ != 0 && discard_seq_ == current_request_seq_) return;  // refused
        events_.sendUpstream(bytes, n);
    } else {
        events_.sendDownstream(bytes, n);
        front().exchange.response_bytes += n;
    }
}

// ---- response side --------------------------------------------------------------------------

Status Codec::feedResponse(const uint8_t* p, size_t n) {
    if (closing_) return Status::Close;
    if (tunnel_) {
        if (n > 0) events_.sendDownstream(p, n);
        return Status::Continue;
    }
    const char* begin = reinterpret_cast<const char*>(p);
    processResponse(begin, begin + n);
    return status();
}

void Codec::processResponse(const char* p, const char* end) {
    while (!closing_) {
        if (tunnel_) {
            if (p != end) events_.sendDownstream(reinterpret_cast<const uint8_t*>(p), end - p);
            return;
        }
        response_events_ = 0;
        const llhttp_errno_t err = llhttp_execute(&response_parser_, p, size_t(end - p));
        const char* stop = err == HPE_OK ? end : llhttp_get_error_pos(&response_parser_);
        if (!consumeResponseBytes(p, stop)) return;
        p = stop;
        if (err == HPE_OK) return;
        if (err != HPE_PAUSED) {
            failResponse();
            return;
        }
        llhttp_resume(&response_parser_);
        if (response_events_ & kBegin) {
            if (pending_count_ == 0) {
                closing_ = true;  // a response nobody asked for
                return;
            }
            response_state_ = ResponseState::Head;
            response_head_.clear();
        }
        if ((response_events_ & kHeadersDone) && !finishResponseHead()) return;
        if (response_events_ & (kChunkHeader | kChunkComplete)) {
            chunkBoundary(response_framing_, response_parser_, false);
        }
        if (response_events_ & kMessageDone) finishResponseMessage();
    }
}

bool Codec::consumeResponseBytes(const char* p, const char* stop) {
    const size_t n = size_t(stop - p);
    if (n == 0) return true;
    switch (response_state_) {
        case ResponseState::Head:
            if (response_head_.size() + n > options_.max_header_bytes) {
                failResponse();
                return false;
            }
            response_head_.append(p, n);
            return true;
        case ResponseState::Body:
            if (!forwardBody(response_framing_, p, n, false)) {
                failResponse();
                return false;
            }
            return true;
        default:
            return true;  // empty lines before a response
    }
}

bool Codec::finishResponseHead() {
    const llhttp_t& parser = response_parser_;
    if (parser.http_major != 1 || parser.http_minor > 1) {
        failResponse();
        return false;
    }
    Pending& f = front();
    const int code = parser.status_code;
    const bool interim = isInterim(code);
    const std::string_view head(response_head_);
    // llhttp ends a status line at a bare CR ("200 OK\r\rX: 1"); a client may read it as one
    // line, so a head is forwarded only if every CR in it starts a CRLF.
    if (hasBareCr(head)) {
        failResponse();
        return false;
    }

    if (interim || code == 101) {
        if ((code == 101 && !f.upgrade) ||
            forEachHeader(head, [](auto, auto, auto) {}) > options_.max_headers) {
            failResponse();
            return false;
        }
        if (interim) {
            // HTTP/1.0 has no 1xx (RFC 9110 15.2): a 1.0 client, or a 1xx in a 1.0 status line,
            // is not forwarded; the final response follows either way. Connection fields of a
            // 1xx are dropped: a client could take "close" there as the end of the connection.
            if (!f.http10 && parser.http_minor == 1) {
                out_.clear();
                appendWithoutConnectionFields(out_, head);
                out_ += "\r\n";
                events_.sendDownstream(reinterpret_cast<const uint8_t*>(out_.data()), out_.size());
                f.exchange.response_bytes += out_.size();
            }
            response_framing_.reset(false);
            response_interim_ = true;
            response_state_ = ResponseState::Body;
            return true;
        }
        events_.sendDownstream(reinterpret_cast<const uint8_t*>(head.data()), head.size());
        f.exchange.response_bytes += head.size();
        // 101: the app switched protocols; the held client bytes belong to the new protocol.
        f.exchange.status = 101;
        tunnel_ = true;
        events_.onResponseHead(f.exchange);
        completeFront();
        // Client bytes in arrival order: a partial chunk frame, then bytes held after the
        // request. From here on nothing is parsed.
        if (!request_framing_.held.empty()) {
            send(request_framing_.held.data(), request_framing_.held.size(), true);
            request_framing_.reset(false);
        }
        if (!held_.empty()) {
            send(held_.data(), held_.size(), true);
            held_.clear();
        }
        events_.onUpgrade();
        if (request_eof_) closing_ = true;
        return true;
    }

    f.close_after = f.close_after || draining_ || !llhttp_should_keep_alive(&parser);
    const bool client_sees_keep_alive = parser.http_minor == 1
                                            ? !(parser.flags & F_CONNECTION_CLOSE)
                                            : (parser.flags & F_CONNECTION_KEEP_ALIVE) != 0;
    const bool edit = f.close_after && client_sees_keep_alive;
    size_t count;
    if (edit) {
        out_.clear();
        count = appendWithoutConnectionFields(out_, head);
        out_ += "Connection: close\r\n\r\n";
    } else {
        count = forEachHeader(head, [](auto, auto, auto) {});
    }
    if (count > options_.max_headers) {
        failResponse();
        return false;
    }
    const std::string_view send = edit ? std::string_view(out_) : head;
    response_framing_.reset(parser.flags & F_CHUNKED);
    response_final_started_ = true;
    response_state_ = ResponseState::Body;
    f.exchange.status = code;
    f.exchange.response_bytes += send.size();
    events_.sendDownstream(reinterpret_cast<const uint8_t*>(send.data()), send.size());
    events_.onResponseHead(f.exchange);
    return true;
}

void Codec::finishResponseMessage() {
    response_state_ = ResponseState::Idle;
    if (response_interim_) {
        response_interim_ = false;
        // llhttp applies "Connection: close" or HTTP/1.0 in a 1xx as in a final response and
        // would refuse what follows; an interim response never ends the exchange.
        llhttp_reset(&response_parser_);
        return;
    }
    if (tunnel_) return;
    const bool close = front().close_after;
    completeFront();
    if (close) {
        closing_ = true;
        return;
    }
    afterExchange();
}

void Codec::completeFront() {
    Pending& f = front();
    last_completed_seq_ = f.seq;
    response_final_started_ = false;
    events_.onExchangeComplete(f.exchange);
    popPending();
}

// Work unblocked by a completed exchange: held client bytes, a queued error, the end.
void Codec::afterExchange() {
    answerRefused();
    resumeHeld();
    maybeEmitQueuedError();
    if (closing_ || pending_count_ > 0) return;
    if (request_eof_ || draining_ ||
        (request_state_ == RequestState::Stopped && queued_error_ == 0)) {
        closing_ = true;
    }
}

void Codec::failResponse() {
    if (!closing_ && pending_count_ > 0 && !response_final_started_) {
        answerFront(502);
    }
    closing_ = true;
}

Status Codec::responseEof() {
    if (closing_) return Status::Close;
    if (!tunnel_ && response_state_ == ResponseState::Body && !response_interim_) {
        response_events_ = 0;
        const llhttp_errno_t err = llhttp_finish(&response_parser_);
        if ((err == HPE_OK || err == HPE_PAUSED) && (response_events_ & kMessageDone)) {
            finishResponseMessage();
        }
    }
    if (!closing_ && !tunnel_) failResponse();  // 502 if an answer is owed and not started
    closing_ = true;
    return Status::Close;
}

// ---- generated responses --------------------------------------------------------------------

Status Codec::localError(int status) {
    if (closing_) return Status::Close;
    if (!tunnel_ && !response_final_started_) {
        if (pending_count_ > 0) {
            answerFront(status);
        } else if (request_state_ == RequestState::Head || queued_error_ != 0) {
            if (queued_error_ == 0) {
                failed_ = Exchange{};
                fillFromRequestLine(failed_);
                failed_.request_bytes = request_head_.size();
            }
            emitLocal(status, failed_, failed_.method == "HEAD");
        }
    }
    closing_ = true;
    return Status::Close;
}

void Codec::maybeEmitQueuedError() {
    if (queued_error_ == 0 || closing_) return;
    if (queued_error_seq_ == 0) {
        if (pending_count_ > 0) return;
        emitLocal(queued_error_, failed_, failed_.method == "HEAD");
        closing_ = true;
        return;
    }
    if (pending_count_ == 0 || front().seq > queued_error_seq_) {
        closing_ = true;  // that exchange was answered by the app already
        return;
    }
    if (front().seq < queued_error_seq_ || response_final_started_) return;
    answerFront(queued_error_);
    closing_ = true;
}

// Refused requests are answered in order, once every request ahead of them has been.
void Codec::answerRefused() {
    while (!closing_ && pending_count_ > 0 && front().refused.status != 0 &&
           !response_final_started_) {
        Pending& f = front();
        const bool close = f.close_after || draining_ || f.refused.close;
        emitLocal(f.refused.status, f.exchange, f.head_request, !close, f.refused.retry_after);
        last_completed_seq_ = f.seq;
        popPending();
        if (close) closing_ = true;
    }
}

void Codec::answerFront(int status) {
    Pending& f = front();
    emitLocal(status, f.exchange, f.head_request);
    last_completed_seq_ = f.seq;
    popPending();
}

void Codec::emitLocal(int status, Exchange& exchange, bool head_request, bool keep_alive,
                      uint32_t retry_after) {
    const std::string_view reason = reasonFor(status);
    char digits[24];
    out_.clear();
    out_ += "HTTP/1.1 ";
    out_.append(digits, std::to_chars(digits, digits + sizeof digits, status).ptr);
    out_ += ' ';
    out_ += reason;
    out_ += "\r\nContent-Type: text/plain\r\nContent-Length: ";
    out_.append(digits, std::to_chars(digits, digits + sizeof digits, reason.size() + 1).ptr);
    if (retry_after != 0) {
        out_ += "\r\nRetry-After: ";
        out_.append(digits, std::to_chars(digits, digits + sizeof digits, retry_after).ptr);
    }
    out_ += keep_alive ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n";
    if (!head_request) {
        out_ += reason;
        out_ += '\n';
    }
    exchange.status = status;
    exchange.local = true;
    exchange.response_bytes += out_.size();
    events_.sendDownstream(reinterpret_cast<const uint8_t*>(out_.data()), out_.size());
    events_.onExchangeComplete(exchange);
}

void Codec::fillFromRequestLine(Exchange& exchange) const {
    const std::string_view head(request_head_);
    size_t eol = head.find("\r\n");
    if (eol == std::string_view::npos && request_line_size_ > 0) eol = request_line_size_;
    if (eol == std::string_view::npos) {
        exchange.method.clear();
        exchange.target.clear();
        return;
    }
    const std::string_view line = head.substr(0, eol);
    const size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) {
        exchange.method.assign(line);
        exchange.target.clear();
        return;
    }
    exchange.method.assign(line.substr(0, sp1));
    std::string_view rest = line.substr(sp1 + 1);
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    exchange.target.assign(rest.substr(0, rest.find(' ')));
}

// ---- pending exchanges ----------------------------------------------------------------------

Codec::Pending& Codec::pushPending() {
    if (pending_count_ == pending_.size()) {
        std::vector<Pending> grown(pending_.size() * 2);
        for (size_t i = 0; i < pending_count_; ++i) {
            grown[i] = std::move(pending_[(pending_head_ + i) % pending_.size()]);
        }
        pending_.swap(grown);
        pending_head_ = 0;
    }
    ++pending_count_;
    return back();
}

void Codec::popPending() {
    pending_head_ = (pending_head_ + 1) % pending_.size();
    --pending_count_;
}

// ---- state ----------------------------------------------------------------------------------

bool Codec::awaitingRequestHead() const {
    return !closing_ && !tunnel_ && request_state_ == RequestState::Head;
}

bool Codec::awaitingResponse() const { return !closing_ && !tunnel_ && pending_count_ > 0; }

bool Codec::idleBetweenRequests() const {
    return !closing_ && !tunnel_ && pending_count_ == 0 && queued_error_ == 0 &&
           request_state_ == RequestState::Idle && response_state_ == ResponseState::Idle;
}

bool Codec::tunneling() const { return tunnel_; }

Codec::Phase Codec::phase() const {
    if (closing_) return Phase::Closed;
    if (tunnel_) return Phase::Tunnel;
    if (hold_reason_ == HoldReason::Admission) return Phase::Admission;
    if (response_state_ == ResponseState::Body) return Phase::Response;
    if (request_state_ == RequestState::Body) return Phase::RequestBody;
    if (pending_count_ > 0 || queued_error_ != 0) return Phase::AwaitingResponse;
    if (request_state_ == RequestState::Head) return Phase::RequestHead;
    return Phase::Idle;
}

void Codec::setDraining() { draining_ = true; }

}  // namespace sidecar::http
