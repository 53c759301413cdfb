#pragma once

// Replays a script of codec inputs and records everything the codec emitted, so that a test can
// assert exact bytes, and so that the same script can be replayed with its data steps split at
// every position (the codec's output must not depend on how the network chunked the bytes).

#include <catch2/catch_test_macros.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "http/codec.h"

namespace sidecar::http::test {

struct Step {
    enum Kind { Request, Response, RequestEof, ResponseEof, LocalError, Drain } kind;
    std::string data;
    int status = 0;
};

inline Step req(std::string s) { return {Step::Request, std::move(s)}; }
inline Step resp(std::string s) { return {Step::Response, std::move(s)}; }
inline Step reqEof() { return {Step::RequestEof, {}}; }
inline Step respEof() { return {Step::ResponseEof, {}}; }
inline Step localError(int status) { return {Step::LocalError, {}, status}; }
inline Step drain() { return {Step::Drain, {}}; }

struct Outcome {
    std::string upstream;
    std::string downstream;
    std::vector<std::string> events;  // in order; includes byte counts of completed exchanges
    int closed_at = -1;               // index of the step that first returned Close
    bool operator==(const Outcome&) const = default;
};

inline std::string describe(const Outcome& o) {
    std::string s = "upstream=[" + o.upstream + "]\ndownstream=[" + o.downstream + "]\nevents:";
    for (const auto& e : o.events) s += "\n  " + e;
    s += "\nclosed_at=" + std::to_string(o.closed_at);
    return s;
}

class Recorder final : public CodecEvents {
public:
    Outcome out;
    void sendUpstream(const uint8_t* p, size_t n) override {
        CHECK(n > 0);
        out.upstream.append(reinterpret_cast<const char*>(p), n);
    }
    void sendDownstream(const uint8_t* p, size_t n) override {
        CHECK(n > 0);
        out.downstream.append(reinterpret_cast<const char*>(p), n);
    }
    void onRequestHead(const Exchange& e) override {
        out.events.push_back("request " + e.method + " " + e.target);
    }
    void onResponseHead(const Exchange& e) override {
        out.events.push_back("response " + std::to_string(e.status));
    }
    void onExchangeComplete(const Exchange& e) override {
        out.events.push_back("complete " + e.method + " " + e.target + " " +
                             std::to_string(e.status) + (e.local ? " local" : "") +
                             " req=" + std::to_string(e.request_bytes) +
                             " resp=" + std::to_string(e.response_bytes));
    }
    void onUpgrade() override { out.events.push_back("upgrade"); }
};

// Keeps nothing of what the codec emits, only its size: for cost and allocation measurements.
class ByteCounter final : public CodecEvents {
public:
    size_t bytes = 0;
    void sendUpstream(const uint8_t*, size_t n) override { bytes += n; }
    void sendDownstream(const uint8_t*, size_t n) override { bytes += n; }
};

inline ConnectionFacts defaultFacts() {
    ConnectionFacts f;
    f.client_ip = "192.0.2.7";
    f.client_port = 50000;
    f.proto = "https";
    return f;
}

// split_step < 0: whole steps; split_step == -2: every data step one byte at a time;
// otherwise step `split_step` is fed as [0, split_at) then [split_at, end).
inline Outcome run(const CodecOptions& options, const ConnectionFacts& facts,
                   const std::vector<Step>& steps, int split_step = -1, size_t split_at = 0) {
    Recorder rec;
    Codec codec(options, facts, rec);
    for (size_t i = 0; i < steps.size(); ++i) {
        const Step& step = steps[i];
        auto feed = [&](const std::string& data, size_t from, size_t to) {
            const auto* p = reinterpret_cast<const uint8_t*>(data.data()) + from;
            return step.kind == Step::Request ? codec.feedRequest(p, to - from)
                                              : codec.feedResponse(p, to - from);
        };
        Status s = Status::Continue;
        switch (step.kind) {
            case Step::Request:
            case Step::Response:
                if (split_step == -2) {
                    for (size_t k = 0; k < step.data.size() && s == Status::Continue; ++k) {
                        s = feed(step.data, k, k + 1);
                    }
                } else if (split_step == int(i)) {
                    s = feed(step.data, 0, split_at);
                    if (s == Status::Continue) s = feed(step.data, split_at, step.data.size());
                } else {
                    s = feed(step.data, 0, step.data.size());
                }
                break;
            case Step::RequestEof:
                s = codec.requestEof();
                break;
            case Step::ResponseEof:
                s = codec.responseEof();
                break;
            case Step::LocalError:
                s = codec.localError(step.status);
                break;
            case Step::Drain:
                codec.setDraining();
                break;
        }
        if (s == Status::Close) {
            rec.out.closed_at = int(i);
            break;  // core stops feeding once told to close
        }
    }
    return rec.out;
}

// Runs the script whole, one byte at a time, and split in two at every position of every data
// step; every run must produce `expected` exactly.
inline void checkAllSplits(const CodecOptions& options, const ConnectionFacts& facts,
                           const std::vector<Step>& steps, const Outcome& expected) {
    {
        const Outcome whole = run(options, facts, steps);
        INFO("whole steps\n" << describe(whole) << "\n--- expected\n" << describe(expected));
        REQUIRE(whole == expected);
    }
    {
        const Outcome bytewise = run(options, facts, steps, -2);
        INFO("one byte at a time\n" << describe(bytewise));
        REQUIRE(bytewise == expected);
    }
    for (size_t i = 0; i < steps.size(); ++i) {
        for (size_t k = 1; k < steps[i].data.size(); ++k) {
            const Outcome split = run(options, facts, steps, int(i), k);
            if (split != expected) {
                INFO("step " << i << " split at " << k << "\n" << describe(split));
                REQUIRE(split == expected);
            }
        }
    }
}

inline void checkAllSplits(const std::vector<Step>& steps, const Outcome& expected) {
    checkAllSplits(CodecOptions{}, defaultFacts(), steps, expected);
}

// What the proxy answers with itself.
inline std::string localResponse(int status, bool head_request = false) {
    std::string reason;
    switch (status) {
        case 400:
            reason = "Bad Request";
            break;
        case 408:
            reason = "Request Timeout";
            break;
        case 431:
            reason = "Request Header Fields Too Large";
            break;
        case 501:
            reason = "Not Implemented";
            break;
        case 502:
            reason = "Bad Gateway";
            break;
        case 503:
            reason = "Service Unavailable";
            break;
        case 504:
            reason = "Gateway Timeout";
            break;
        case 505:
            reason = "HTTP Version Not Supported";
            break;
        default:
            FAIL("no reason phrase for " << status);
    }
    return "HTTP/1.1 " + std::to_string(status) + " " + reason +
           "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(reason.size() + 1) +
           "\r\nConnection: close\r\n\r\n" + (head_request ? "" : reason + "\n");
}

// The headers added to every request with the default facts in X-Forwarded mode.
inline std::string xf(const std::string& host) {
    return "X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: https\r\n" +
           (host.empty() ? std::string() : "X-Forwarded-Host: " + host + "\r\n");
}

inline std::string complete(const std::string& method, const std::string& target, int status,
                            size_t req, size_t resp, bool local = false) {
    return "complete " + method + " " + target + " " + std::to_string(status) +
           (local ? " local" : "") + " req=" + std::to_string(req) +
           " resp=" + std::to_string(resp);
}

}  // namespace sidecar::http::test
