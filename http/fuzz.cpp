#include "http/fuzz.h"

#include <llhttp.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <string_view>

#include "http/codec.h"

namespace sidecar::http {
namespace {

[[noreturn]] void broken(const char* what, std::string_view bytes = {}) {
    std::fprintf(stderr, "codec contract broken: %s\n%.*s\n", what, int(bytes.size()), bytes.data());
    std::abort();
}

// Bytes RFC 9112 section 3.2 allows in a request-target (RFC 3986 characters less '#', plus the
// brackets of an IP literal), each '%' starting a pct-encoded octet. Written apart from the
// codec's own grammar so that the two check each other.
bool targetBytesAllowed(std::string_view target) {
    const std::string_view allowed =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/?[]";
    const std::string_view hex = "0123456789abcdefABCDEF";
    for (size_t i = 0; i < target.size(); ++i) {
        if (target[i] == '%') {
            if (target.size() - i < 3) return false;
            if (hex.find(target[i + 1]) == std::string_view::npos ||
                hex.find(target[i + 2]) == std::string_view::npos) {
                return false;
            }
            i += 2;
        } else if (allowed.find(target[i]) == std::string_view::npos) {
            return false;
        }
    }
    return !target.empty();
}

// What the app receives must be well-framed HTTP/1.1 with no ambiguity: a second, strict llhttp
// parser (no lenient flags) reads everything sent upstream and must never fail, and it must see
// exactly one request begin per forwarded head. Each request line must be HTTP/1.0 or HTTP/1.1
// (llhttp also parses RTSP and ICE) with an HTTP method and a target of RFC 9112 section 3.2
// bytes. After a 101 the bytes are a tunnel and unchecked.
class UpstreamCheck {
public:
    UpstreamCheck() {
        llhttp_settings_init(&settings_);
        settings_.on_message_begin = [](llhttp_t* p) noexcept {
            ++static_cast<UpstreamCheck*>(p->data)->begins;
            return 0;
        };
        // The codec forwards a head in one piece, so the whole line is in the buffer being fed.
        settings_.on_method = [](llhttp_t* p, const char* at, size_t) noexcept {
            static_cast<UpstreamCheck*>(p->data)->line_start_ = at;
            return 0;
        };
        settings_.on_version = [](llhttp_t* p, const char* at, size_t n) noexcept {
            auto* self = static_cast<UpstreamCheck*>(p->data);
            if (self->line_start_ == nullptr) broken("a request line forwarded in pieces");
            self->checkLine(*p, {self->line_start_, size_t(at + n - self->line_start_)});
            self->line_start_ = nullptr;
            return 0;
        };
        llhttp_init(&parser_, HTTP_REQUEST, &settings_);
        parser_.data = this;
    }
    UpstreamCheck(const UpstreamCheck&) = delete;
    UpstreamCheck& operator=(const UpstreamCheck&) = delete;

    void feed(const uint8_t* data, size_t n) {
        if (tunnel) return;
        line_start_ = nullptr;
        const char* p = reinterpret_cast<const char*>(data);
        const char* end = p + n;
        while (p < end) {
            if (paused_upgrade_) {  // the app did not switch protocols: HTTP goes on
                llhttp_resume_after_upgrade(&parser_);
                paused_upgrade_ = false;
            }
            llhttp_errno_t err = llhttp_execute(&parser_, p, size_t(end - p));
            if (err == HPE_OK) return;
            if (err != HPE_PAUSED_UPGRADE) broken(llhttp_get_error_reason(&parser_), {p, size_t(end - p)});
            paused_upgrade_ = true;
            p = llhttp_get_error_pos(&parser_);
        }
    }

    uint64_t begins = 0;
    bool tunnel = false;

private:
    void checkLine(const llhttp_t& p, std::string_view line) const {
        if (!line.ends_with(" HTTP/1.1") && !line.ends_with(" HTTP/1.0")) {
            broken("a request line that is not HTTP/1.x went upstream", line);
        }
        if (p.method > HTTP_UNLINK && p.method != HTTP_QUERY) {
            broken("a method that is not HTTP went upstream", line);
        }
        const size_t sp1 = line.find(' ');
        const std::string_view target = line.substr(sp1 + 1, line.size() - 9 - sp1 - 1);
        if (!targetBytesAllowed(target) || (target == "*" && p.method != HTTP_OPTIONS)) {
            broken("a request-target outside RFC 9112 went upstream", line);
        }
    }

    llhttp_settings_t settings_;
    llhttp_t parser_;
    bool paused_upgrade_ = false;
    const char* line_start_ = nullptr;
};

// What the client receives must be a strictly valid sequence of responses, one final response
// per request in order (a HEAD request's has no body), so the client never desyncs. Bytes are
// parsed after each codec call, when the requests they answer are known: a request rejected
// before it was forwarded is learnt from its onExchangeComplete.
class DownstreamCheck {
public:
    DownstreamCheck() {
        llhttp_settings_init(&settings_);
        settings_.on_headers_complete = [](llhttp_t* p) noexcept {
            auto* self = static_cast<DownstreamCheck*>(p->data);
            const int code = p->status_code;
            if (code / 100 == 1 && code != 101) return 1;  // interim: no body, a final follows
            if (self->head_.empty()) broken("a response nobody asked for");
            return self->head_.front() && code != 101 ? 1 : 0;
        };
        settings_.on_message_complete = [](llhttp_t* p) noexcept {
            auto* self = static_cast<DownstreamCheck*>(p->data);
            const int code = p->status_code;
            if (code / 100 == 1 && code != 101) return 0;
            self->head_.pop_front();
            ++self->finals;
            return 0;
        };
        llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
        parser_.data = this;
    }
    DownstreamCheck(const DownstreamCheck&) = delete;
    DownstreamCheck& operator=(const DownstreamCheck&) = delete;

    void request(bool head) { head_.push_back(head); }
    void add(const uint8_t* p, size_t n) { bytes_.append(reinterpret_cast<const char*>(p), n); }

    void parse() {
        if (!tunnel && !bytes_.empty()) {
            llhttp_errno_t err = llhttp_execute(&parser_, bytes_.data(), bytes_.size());
            if (err == HPE_PAUSED_UPGRADE) {
                tunnel = true;
            } else if (err != HPE_OK) {
                broken(llhttp_get_error_reason(&parser_), bytes_);
            }
        }
        bytes_.clear();
    }
    // The connection ends: a response framed by the close completes for the client, even when
    // the proxy cut it short (an error after its body started): counted in cut_by_close.
    void finish() {
        if (tunnel) return;
        const uint64_t before = finals;
        (void)llhttp_finish(&parser_);
        cut_by_close = finals - before;
    }

    uint64_t finals = 0;
    uint64_t cut_by_close = 0;
    bool tunnel = false;

private:
    llhttp_settings_t settings_;
    llhttp_t parser_;
    std::deque<bool> head_;  // per request in client order: was it HEAD
    std::string bytes_;
};

// Checks the contract core relies on: nothing is emitted once Close was returned, the codec
// never asks to send an empty range, and both byte streams stay strictly valid.
class CheckingEvents final : public CodecEvents {
public:
    bool closed = false;
    DownstreamCheck downstream;
    uint64_t completed = 0;

    // After every codec call: the client has seen exactly the completed exchanges.
    void afterCall(bool ends) {
        downstream.parse();
        if (ends) downstream.finish();
        if (downstream.tunnel) return;
        if (downstream.finals != completed && downstream.finals - downstream.cut_by_close != completed)
            broken("the client saw a different number of responses than were completed");
    }

    void sendUpstream(const uint8_t* p, size_t n) override {
        check(n > 0);
        upstream_.feed(p, n);
    }
    void sendDownstream(const uint8_t* p, size_t n) override {
        check(n > 0);
        downstream.add(p, n);
    }
    void onRequestHead(const Exchange& ex) override {
        check(true);
        downstream.request(ex.method == "HEAD");
        ++heads_;
        check(upstream_.tunnel || upstream_.begins == heads_);
    }
    void onResponseHead(const Exchange& ex) override {
        check(true);
        if (ex.status == 101) upstream_.tunnel = true;  // held client bytes follow, raw
    }
    void onExchangeComplete(const Exchange& ex) override {
        check(true);
        if (++completed > heads_) downstream.request(ex.method == "HEAD");  // never forwarded
    }
    void onUpgrade() override {
        check(true);
        upstream_.tunnel = true;
    }

private:
    void check(bool ok) const {
        if (!ok) broken("empty range or head count mismatch");
        if (closed) broken("event after Close");
    }
    UpstreamCheck upstream_;
    uint64_t heads_ = 0;
};

}  // namespace

void fuzzCodec(const uint8_t* data, size_t size) noexcept {
    if (size == 0) return;
    CodecOptions options;
    const uint8_t config = data[0];
    options.forwarded = static_cast<ForwardedMode>(config % 3);
    if (config & 4) {
        options.max_header_bytes = 256;
        options.max_headers = 4;
        options.max_pipelined = 2;
        options.max_held_bytes = 64;
    }
    ConnectionFacts facts;
    facts.client_ip = (config & 8) ? "2001:db8::1" : "192.0.2.7";
    facts.client_port = 40000;
    if (config & 16) facts.client_cert = "Hash=ab;Subject=\"CN=client\"";
    CheckingEvents events;
    Codec codec(options, facts, events);

    size_t i = 1;
    // Input continues after Close on purpose: every later call must return Close and emit
    // nothing.
    while (i + 1 < size) {
        const uint8_t op = data[i] % 6;
        size_t len = data[i + 1];
        i += 2;
        if (len > size - i) len = size - i;
        Status s = Status::Continue;
        switch (op) {
            case 0:
                s = codec.feedRequest(data + i, len);
                break;
            case 1:
                s = codec.feedResponse(data + i, len);
                break;
            case 2:
                s = codec.requestEof();
                break;
            case 3:
                s = codec.responseEof();
                break;
            case 4:
                s = codec.localError(len % 2 ? 504 : 408);
                break;
            default:
                codec.setDraining();
                break;
        }
        (void)codec.awaitingRequestHead();
        (void)codec.awaitingResponse();
        (void)codec.idleBetweenRequests();
        (void)codec.tunneling();
        i += len;
        if (events.closed && s != Status::Close && op != 5) broken("a call after Close did not return Close");
        if (!events.closed) events.afterCall(s == Status::Close);
        if (s == Status::Close) events.closed = true;
    }
}

}  // namespace sidecar::http
