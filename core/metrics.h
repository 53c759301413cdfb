#pragma once
// Process metrics, rendered in the Prometheus text exposition format by the admin endpoint.
// Labels come only from configuration (listener names, certificate paths) and from small fixed
// sets (TLS version, result, status class), never from request data, so series stay bounded.

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
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

struct ListenerStats {
    ListenerStats();
    uint64_t accepted = 0;
    std::array<uint64_t, size_t(RejectReason::Count)> rejected{};
    int64_t active = 0;
    uint64_t bytes_in = 0;   // from clients
    uint64_t bytes_out = 0;  // to clients
    // TLS handshakes by version (index 0: TLS 1.2, 1: TLS 1.3) that succeeded, and failures.
    std::array<uint64_t, 2> handshakes_ok{};
    std::array<uint64_t, 2> handshakes_resumed{};
    uint64_t handshakes_failed = 0;
    uint64_t handshake_timeouts = 0;
    Histogram handshake_seconds;
    uint64_t upstream_connect_failures = 0;
    uint64_t upstream_connect_timeouts = 0;
    uint64_t idle_timeouts = 0;
    // HTTP mode: requests by status class (index 1..5; 0 = no status), request duration.
    std::array<uint64_t, 6> http_requests{};
    Histogram request_seconds;
    uint64_t http_local_responses = 0;  // errors the proxy answered itself
    uint64_t requests_rate_limited = 0;  // answered 429 by limits.request_rate
    uint64_t requests_queued = 0;        // waited for an upstream slot (limits.upstream_concurrency)
    uint64_t requests_overloaded = 0;    // answered 503: queue full or its wait timed out
    int64_t upstream_in_flight = 0;      // connections holding an upstream slot now
    int64_t upstream_queued = 0;         // requests waiting for one now
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
    int64_t start_time = 0;  // unix seconds
    // Log lines dropped because their stream was not writable: [0] access (stdout), [1] log.
    std::array<uint64_t, 2> log_lines_dropped{};
    bool draining = false;

    std::string render() const;
};

}  // namespace sidecar::core
