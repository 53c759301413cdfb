#pragma once
// Process metrics, rendered in the Prometheus text exposition format by the admin endpoint.
// Labels come only from configuration (listener names, certificate paths) and from small fixed
// sets (TLS version, result, status class), never from request data, so series stay bounded.

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sidecar::core {

class Histogram {
public:
    explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}
    void observe(double v) {
        size_t i = 0;
        while (i < bounds_.size() && v > bounds_[i]) ++i;
        ++counts_[i];
        sum_ += v;
        ++count_;
    }
    void render(std::string& out, const std::string& name, const std::string& labels) const;

private:
    std::vector<double> bounds_;
    std::vector<uint64_t> counts_;
    double sum_ = 0;
    uint64_t count_ = 0;
};

// Why a connection was closed at once after accept (the reason label of the rejected counter).
enum class RejectReason : uint8_t {
    MaxConnections,
    Draining,
    ConnectionRate,        // the listener's limits.connection_rate
    ClientConnections,     // limits.per_client.max_connections
    ClientConnectionRate,  // limits.per_client.connection_rate
    Count
};
const char* rejectReasonName(RejectReason r);

// Why a client TLS handshake failed: a bounded label set, from the backend-neutral reasons of
// tls/errors.h.
enum class HandshakeFailure : uint8_t {
    NoCommonVersion,
    NoCommonCipher,  // no common cipher suite, group or signature algorithm
    NoCommonAlpn,
    UnknownCa,
    BadCertificate,  // expired, not yet valid, wrong name or usage, weak, revoked, unverifiable
    CertificateRequired,
    NotAllowed,  // a verified client certificate outside the allow list
    PlainHttp,   // plain HTTP sent to the TLS port
    NotTls,      // neither TLS nor HTTP
    PeerClosed,  // the client closed or reset during the handshake
    Malformed,   // malformed or unexpected messages, bad records
    Timeout,
    Other,
    Count
};
const char* handshakeFailureName(HandshakeFailure f);
HandshakeFailure classifyHandshakeFailure(std::string_view reason);

// How a connection ended, by the reason passed to its teardown: a bounded label set.
enum class CloseReason : uint8_t {
    Done,             // the client or the exchange ended it normally
    ClientClosed,     // the client closed or reset unexpectedly
    UpstreamClosed,   // the app closed or reset
    IdleTimeout,
    HandshakeTimeout,
    HandshakeFailed,  // includes plain HTTP and non-TLS first bytes
    HeaderTimeout,
    UpstreamTimeout,  // connect or response timeout
    UpstreamFailed,   // connect refused, TLS origination failed
    Draining,
    FlushTimeout,
    Error,            // read/write errors, protocol errors
    Count
};
const char* closeReasonName(CloseReason r);
CloseReason classifyClose(std::string_view reason);

struct ListenerStats {
    ListenerStats();
    bool http = false;  // protocol: http (HTTP series are exported for these only)
    uint64_t accepted = 0;
    std::array<uint64_t, size_t(RejectReason::Count)> rejected{};
    int64_t active = 0;
    uint64_t bytes_in = 0;   // from clients
    uint64_t bytes_out = 0;  // to clients
    // TLS handshakes by version (index 0: TLS 1.2, 1: TLS 1.3) that succeeded, and failures.
    std::array<uint64_t, 2> handshakes_ok{};
    std::array<uint64_t, 2> handshakes_resumed{};
    // Failed and timed-out client handshakes by reason; the totals are derived from it.
    std::array<uint64_t, size_t(HandshakeFailure::Count)> handshake_failures{};
    uint64_t handshakeTimeouts() const { return handshake_failures[size_t(HandshakeFailure::Timeout)]; }
    uint64_t handshakesFailed() const {
        uint64_t n = 0;
        for (uint64_t v : handshake_failures) n += v;
        return n - handshakeTimeouts();
    }
    // Handshakes (client, or origination to the app) waiting for their step in the loop's
    // handshake slice now, and the times the listener stopped accepting because the handshakes
    // pending passed what the loop does in about 100 ms (new clients wait in the kernel's
    // listen backlog meanwhile).
    int64_t handshakes_waiting = 0;
    uint64_t accept_pauses = 0;
    Histogram handshake_seconds;
    Histogram upstream_connect_seconds;  // connect (and TLS origination) until the app is ready
    Histogram connection_seconds;        // accept to close, connections that were served
    std::array<uint64_t, size_t(CloseReason::Count)> closes{};
    uint64_t upstream_connect_failures = 0;
    uint64_t upstream_connect_timeouts = 0;
    uint64_t idle_timeouts = 0;
    // HTTP mode: requests by status code (100..599; 0 = no status), request duration, time to
    // the first byte of the response head.
    std::map<int, uint64_t> http_requests;
    Histogram request_seconds;
    Histogram response_head_seconds;
    uint64_t http_local_responses = 0;  // errors the proxy answered itself
    uint64_t requests_rate_limited = 0;  // answered 429 by limits.request_rate
    uint64_t requests_queued = 0;        // waited for an upstream slot (limits.upstream_concurrency)
    uint64_t requests_overloaded = 0;    // answered 503: queue full or its wait timed out
    int64_t upstream_in_flight = 0;      // connections holding an upstream slot now
    int64_t upstream_queued = 0;         // requests waiting for one now
};

// Upstream name resolutions by result (the result label), and the addresses held now.
enum class ResolveResult : uint8_t { Ok, NotFound, Timeout, Error, Count };
const char* resolveResultName(ResolveResult r);

struct UpstreamNameStats {
    std::array<uint64_t, size_t(ResolveResult::Count)> resolutions{};
    int64_t addresses = 0;
};

struct CertificateGauge {
    std::string listener;
    std::string path;
    int64_t not_after = 0;
};

struct Metrics {
    ListenerStats& listener(const std::string& name);
    std::map<std::string, std::unique_ptr<ListenerStats>> listeners;
    uint64_t cert_reloads_ok = 0;
    uint64_t cert_reloads_failed = 0;
    uint64_t config_reloads_ok = 0;
    uint64_t config_reloads_failed = 0;
    std::vector<CertificateGauge> certificates;
    // By upstream address as configured ("api.example.com:443"); names only.
    std::map<std::string, std::unique_ptr<UpstreamNameStats>> upstream_names;
    int64_t start_time = 0;  // unix seconds
    std::string version;     // sidecar_build_info
    std::string tls_backend;
    std::string tls_backends;  // compiled in, comma-separated
    // Log lines dropped because their stream was not writable: [0] access (stdout), [1] log.
    std::array<uint64_t, 2> log_lines_dropped{};
    bool draining = false;

    std::string render() const;
};

}  // namespace sidecar::core
