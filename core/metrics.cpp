#include "core/metrics.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <system_error>

namespace sidecar::core {

namespace {

// The shortest text that reads back as exactly v: counters past 10^9 (bytes) keep every digit.
// Integral values (every counter and gauge) take the integer path; snprintf/strtod rather than
// std::to_chars(double), which would link about 170 KB of tables into the static binary.
std::string num(double v) {
    char buf[32];
    if (v >= 0 && v < 9007199254740992.0 && v == double(uint64_t(v))) {
        auto [end, ec] = std::to_chars(buf, buf + sizeof buf, uint64_t(v));
        return std::string(buf, end);
    }
    if (std::isnan(v)) return "NaN";
    for (int precision = 1; precision <= 17; ++precision) {
        std::snprintf(buf, sizeof buf, "%.*g", precision, v);
        if (std::strtod(buf, nullptr) == v) break;
    }
    return buf;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

void sample(std::string& out, const std::string& name, const std::string& labels, double v) {
    out += name;
    if (!labels.empty()) {
        out += '{';
        out += labels;
        out += '}';
    }
    out += ' ';
    out += num(v);
    out += '\n';
}

std::string escapeLabel(const std::string& v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

std::string listenerLabel(const std::string& name) { return "listener=\"" + escapeLabel(name) + "\""; }

const std::vector<double> kLatencyBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                            0.05,   0.1,   0.25,   0.5,   1,    2.5, 5, 10};

}  // namespace

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
    uint64_t cumulative = 0;
    std::string prefix = labels.empty() ? "" : labels + ",";
    for (size_t i = 0; i < bounds_.size(); ++i) {
        cumulative += counts_[i];
        sample(out, name + "_bucket", prefix + "le=\"" + num(bounds_[i]) + "\"", double(cumulative));
    }
    cumulative += counts_.back();
    sample(out, name + "_bucket", prefix + "le=\"+Inf\"", double(cumulative));
    sample(out, name + "_sum", labels, sum_);
    sample(out, name + "_count", labels, double(count_));
}

const char* rejectReasonName(RejectReason r) {
    switch (r) {
        case RejectReason::MaxConnections: return "max_connections";
        case RejectReason::Draining: return "draining";
        case RejectReason::ConnectionRate: return "connection_rate";
        case RejectReason::ClientConnections: return "client_connections";
        case RejectReason::ClientConnectionRate: return "client_connection_rate";
        case RejectReason::Count: break;
    }
    return "?";
}

ListenerStats::ListenerStats() : handshake_seconds(kLatencyBounds), request_seconds(kLatencyBounds) {}

ListenerStats& Metrics::listener(const std::string& name) {
    auto it = listeners.find(name);
    if (it == listeners.end()) it = listeners.emplace(name, std::make_unique<ListenerStats>()).first;
    return *it->second;
}

std::string Metrics::render() const {
    std::string out;
    out.reserve(8192);
    auto each = [&](const char* name, const char* type, const char* help, auto value) {
        header(out, name, type, help);
        for (const auto& [key, s] : listeners) sample(out, name, listenerLabel(key), double(value(*s)));
    };
    each("sidecar_connections_accepted_total", "counter", "Client connections accepted and served (rejected ones are not counted here).",
         [](const ListenerStats& s) { return s.accepted; });
    header(out, "sidecar_connections_rejected_total", "counter",
           "Client connections closed at once after accept, by reason.");
    for (const auto& [key, s] : listeners) {
        for (size_t r = 0; r < s->rejected.size(); ++r) {
            sample(out, "sidecar_connections_rejected_total",
                   listenerLabel(key) + ",reason=\"" + rejectReasonName(RejectReason(r)) + "\"",
                   double(s->rejected[r]));
        }
    }
    each("sidecar_http_requests_rate_limited_total", "counter",
         "HTTP requests answered 429 by the request rate limit, never forwarded.",
         [](const ListenerStats& s) { return s.requests_rate_limited; });
    each("sidecar_http_requests_queued_total", "counter",
         "HTTP requests that waited for an upstream slot (limits.upstream_concurrency).",
         [](const ListenerStats& s) { return s.requests_queued; });
    each("sidecar_http_requests_overloaded_total", "counter",
         "HTTP requests answered 503 by limits.upstream_concurrency: queue full or wait timed out.",
         [](const ListenerStats& s) { return s.requests_overloaded; });
    each("sidecar_upstream_requests_in_flight", "gauge",
         "Client connections holding an upstream slot (limits.upstream_concurrency) now.",
         [](const ListenerStats& s) { return s.upstream_in_flight; });
    each("sidecar_upstream_requests_queued", "gauge",
         "HTTP requests waiting for an upstream slot now.",
         [](const ListenerStats& s) { return s.upstream_queued; });
    each("sidecar_connections_active", "gauge", "Client connections open now.",
         [](const ListenerStats& s) { return s.active; });
    each("sidecar_received_bytes_total", "counter", "Bytes received from clients (on the wire).",
         [](const ListenerStats& s) { return s.bytes_in; });
    each("sidecar_sent_bytes_total", "counter", "Bytes sent to clients (on the wire).",
         [](const ListenerStats& s) { return s.bytes_out; });

    header(out, "sidecar_tls_handshakes_total", "counter",
           "TLS handshakes with clients by version and result.");
    for (const auto& [key, s] : listeners) {
        std::string l = listenerLabel(key);
        sample(out, "sidecar_tls_handshakes_total", l + ",version=\"1.2\",result=\"ok\"", double(s->handshakes_ok[0]));
        sample(out, "sidecar_tls_handshakes_total", l + ",version=\"1.3\",result=\"ok\"", double(s->handshakes_ok[1]));
        sample(out, "sidecar_tls_handshakes_total", l + ",version=\"\",result=\"failed\"", double(s->handshakes_failed));
        sample(out, "sidecar_tls_handshakes_total", l + ",version=\"\",result=\"timeout\"", double(s->handshake_timeouts));
    }
    header(out, "sidecar_tls_resumed_handshakes_total", "counter",
           "Successful TLS handshakes that resumed a session, by version.");
    for (const auto& [key, s] : listeners) {
        std::string l = listenerLabel(key);
        sample(out, "sidecar_tls_resumed_handshakes_total", l + ",version=\"1.2\"", double(s->handshakes_resumed[0]));
        sample(out, "sidecar_tls_resumed_handshakes_total", l + ",version=\"1.3\"", double(s->handshakes_resumed[1]));
    }
    header(out, "sidecar_tls_handshake_duration_seconds", "histogram",
           "Time from accept to a completed TLS handshake.");
    for (const auto& [key, s] : listeners)
        s->handshake_seconds.render(out, "sidecar_tls_handshake_duration_seconds", listenerLabel(key));

    each("sidecar_upstream_connect_failures_total", "counter",
         "Upstream connections that failed (refused, unreachable, TLS origination failed).",
         [](const ListenerStats& s) { return s.upstream_connect_failures; });
    each("sidecar_upstream_connect_timeouts_total", "counter",
         "Upstream connections not established within connect_timeout.",
         [](const ListenerStats& s) { return s.upstream_connect_timeouts; });
    each("sidecar_idle_timeouts_total", "counter", "Connections closed by the idle timeout.",
         [](const ListenerStats& s) { return s.idle_timeouts; });

    header(out, "sidecar_http_requests_total", "counter",
           "HTTP requests answered, by status class (HTTP listeners).");
    static const char* classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (const auto& [key, s] : listeners) {
        for (int i = 0; i < 6; ++i) {
            sample(out, "sidecar_http_requests_total",
                   listenerLabel(key) + ",code=\"" + classes[i] + "\"", double(s->http_requests[i]));
        }
    }
    each("sidecar_http_local_responses_total", "counter",
         "HTTP error responses generated by the proxy itself (400, 408, 431, 502, 503, 504...).",
         [](const ListenerStats& s) { return s.http_local_responses; });
    header(out, "sidecar_http_request_duration_seconds", "histogram",
           "Time from a request head to the end of its response (HTTP listeners).");
    for (const auto& [key, s] : listeners)
        s->request_seconds.render(out, "sidecar_http_request_duration_seconds", listenerLabel(key));

    header(out, "sidecar_certificate_reloads_total", "counter", "Certificate reloads by result.");
    sample(out, "sidecar_certificate_reloads_total", "result=\"ok\"", double(cert_reloads_ok));
    sample(out, "sidecar_certificate_reloads_total", "result=\"failed\"", double(cert_reloads_failed));
    header(out, "sidecar_config_reloads_total", "counter", "Configuration reloads by result.");
    sample(out, "sidecar_config_reloads_total", "result=\"ok\"", double(config_reloads_ok));
    sample(out, "sidecar_config_reloads_total", "result=\"failed\"", double(config_reloads_failed));
    header(out, "sidecar_certificate_not_after_seconds", "gauge",
           "Expiry (unix seconds) of each certificate being served.");
    for (const CertificateGauge& c : certificates) {
        sample(out, "sidecar_certificate_not_after_seconds",
               listenerLabel(c.listener) + ",path=\"" + escapeLabel(c.path) + "\"", double(c.not_after));
    }
    header(out, "sidecar_log_lines_dropped_total", "counter",
           "Log lines dropped because their stream (stdout, stderr) was not writable.");
    sample(out, "sidecar_log_lines_dropped_total", "stream=\"access\"",
           double(log_lines_dropped[0]));
    sample(out, "sidecar_log_lines_dropped_total", "stream=\"log\"", double(log_lines_dropped[1]));
    header(out, "sidecar_draining", "gauge", "1 while the proxy drains before exit.");
    sample(out, "sidecar_draining", "", draining ? 1 : 0);
    header(out, "sidecar_start_time_seconds", "gauge", "Process start time (unix seconds).");
    sample(out, "sidecar_start_time_seconds", "", double(start_time));
    return out;
}

}  // namespace sidecar::core
