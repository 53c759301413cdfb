#include "core/metrics.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include "tls/errors.h"

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
// Connections live from milliseconds (one request) to hours (keep-alive, tunnels).
const std::vector<double> kDurationBounds = {0.01, 0.1, 1, 10, 60, 300, 1800, 3600, 21600};

// This process's CPU seconds, resident and virtual bytes, open and maximum descriptors.
struct ProcessFacts {
    double cpu_seconds = 0;
    double resident_bytes = 0;
    double virtual_bytes = 0;
    double open_fds = 0;
    double max_fds = 0;
};

ProcessFacts processFacts() {
    ProcessFacts f;
    if (FILE* stat = std::fopen("/proc/self/stat", "re")) {
        char buf[1024];
        size_t n = std::fread(buf, 1, sizeof buf - 1, stat);
        std::fclose(stat);
        buf[n] = 0;
        // The fields after the command, which is in parentheses and may hold anything.
        if (const char* p = std::strrchr(buf, ')')) {
            unsigned long utime = 0, stime = 0, vsize = 0;
            long rss = 0;
            if (std::sscanf(p + 2,
                            "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d "
                            "%*d %*u %lu %ld",
                            &utime, &stime, &vsize, &rss) == 4) {
                const double ticks = double(sysconf(_SC_CLK_TCK));
                f.cpu_seconds = double(utime + stime) / ticks;
                f.virtual_bytes = double(vsize);
                f.resident_bytes = double(rss) * double(sysconf(_SC_PAGESIZE));
            }
        }
    }
    if (DIR* d = opendir("/proc/self/fd")) {
        while (const dirent* e = readdir(d)) {
            if (e->d_name[0] != '.') f.open_fds += 1;
        }
        closedir(d);
        f.open_fds -= 1;  // the directory being read
    }
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) f.max_fds = double(limit.rlim_cur);
    return f;
}

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

const char* resolveResultName(ResolveResult r) {
    switch (r) {
        case ResolveResult::Ok: return "ok";
        case ResolveResult::NotFound: return "not_found";
        case ResolveResult::Timeout: return "timeout";
        case ResolveResult::Error: return "error";
        case ResolveResult::Count: break;
    }
    return "?";
}

const char* handshakeFailureName(HandshakeFailure f) {
    switch (f) {
        case HandshakeFailure::NoCommonVersion: return "no_common_version";
        case HandshakeFailure::NoCommonCipher: return "no_common_cipher";
        case HandshakeFailure::NoCommonAlpn: return "no_common_alpn";
        case HandshakeFailure::UnknownCa: return "unknown_ca";
        case HandshakeFailure::BadCertificate: return "bad_certificate";
        case HandshakeFailure::CertificateRequired: return "certificate_required";
        case HandshakeFailure::NotAllowed: return "not_allowed";
        case HandshakeFailure::PlainHttp: return "plain_http";
        case HandshakeFailure::NotTls: return "not_tls";
        case HandshakeFailure::PeerClosed: return "peer_closed";
        case HandshakeFailure::Malformed: return "malformed";
        case HandshakeFailure::Timeout: return "timeout";
        case HandshakeFailure::Other:
        case HandshakeFailure::Count: break;
    }
    return "other";
}

HandshakeFailure classifyHandshakeFailure(std::string_view reason) {
    namespace r = tls::reason;
    using F = HandshakeFailure;
    static const std::pair<const char*, F> table[] = {
        {r::kNoVersion, F::NoCommonVersion},
        {r::kNoCommonParameters, F::NoCommonCipher},
        {r::kNoAlpn, F::NoCommonAlpn},
        {r::kCertUnknownCa, F::UnknownCa},
        {r::kCertExpired, F::BadCertificate},
        {r::kCertNotYetValid, F::BadCertificate},
        {r::kCertNameMismatch, F::BadCertificate},
        {r::kCertUsage, F::BadCertificate},
        {r::kCertWeak, F::BadCertificate},
        {r::kCertRevoked, F::BadCertificate},
        {r::kCertVerifyFailed, F::BadCertificate},
        {r::kClientCertRequired, F::CertificateRequired},
        {r::kClientNotAllowed, F::NotAllowed},
        {r::kPlainHttpToServer, F::PlainHttp},
        {r::kNotTlsFromClient, F::NotTls},
        {r::kPeerClosedDuringHandshake, F::PeerClosed},
        {r::kClosedDuringHandshake, F::PeerClosed},
        {r::kMalformedHandshake, F::Malformed},
        {r::kMalformed, F::Malformed},
        {r::kUnexpectedHandshake, F::Malformed},
        {r::kUnexpected, F::Malformed},
        {r::kInvalidRecord, F::Malformed},
        {r::kBadMac, F::Malformed},
        {r::kUnsupportedExtension, F::Malformed},
    };
    for (const auto& [text, failure] : table) {
        if (reason == text) return failure;
    }
    return F::Other;
}

const char* closeReasonName(CloseReason r) {
    switch (r) {
        case CloseReason::Done: return "done";
        case CloseReason::ClientClosed: return "client_closed";
        case CloseReason::UpstreamClosed: return "upstream_closed";
        case CloseReason::IdleTimeout: return "idle_timeout";
        case CloseReason::HandshakeTimeout: return "handshake_timeout";
        case CloseReason::HandshakeFailed: return "handshake_failed";
        case CloseReason::HeaderTimeout: return "header_timeout";
        case CloseReason::UpstreamTimeout: return "upstream_timeout";
        case CloseReason::UpstreamFailed: return "upstream_failed";
        case CloseReason::Draining: return "draining";
        case CloseReason::FlushTimeout: return "flush_timeout";
        case CloseReason::Error:
        case CloseReason::Count: break;
    }
    return "error";
}

// The teardown reasons core passes to Connection::close and closeAfterFlush.
CloseReason classifyClose(std::string_view reason) {
    using C = CloseReason;
    static const std::pair<const char*, C> table[] = {
        {"client finished", C::Done},
        {"HTTP exchange ended the connection", C::Done},
        {"done", C::Done},
        {"flushed", C::Done},
        {"client closed", C::ClientClosed},
        {"client closed during the TLS handshake", C::ClientClosed},
        {"client read error", C::ClientClosed},
        {"client write error", C::ClientClosed},
        {"upstream closed", C::UpstreamClosed},
        {"upstream read error", C::UpstreamClosed},
        {"upstream write error", C::UpstreamClosed},
        {"idle timeout", C::IdleTimeout},
        {"handshake timeout", C::HandshakeTimeout},
        {"TLS handshake failed", C::HandshakeFailed},
        {"plain HTTP on a TLS port", C::HandshakeFailed},
        {"not TLS", C::HandshakeFailed},
        {"request header timeout", C::HeaderTimeout},
        {"upstream connect timeout", C::UpstreamTimeout},
        {"upstream response timeout", C::UpstreamTimeout},
        {"upstream connect failed", C::UpstreamFailed},
        {"upstream TLS handshake failed", C::UpstreamFailed},
        {"upstream name not resolved", C::UpstreamFailed},
        {"draining", C::Draining},
        {"drain timeout", C::Draining},
        {"forced stop", C::Draining},
        {"flush timeout", C::FlushTimeout},
    };
    for (const auto& [text, r] : table) {
        if (reason == text) return r;
    }
    return C::Error;
}

ListenerStats::ListenerStats()
    : handshake_seconds(kLatencyBounds),
      upstream_connect_seconds(kLatencyBounds),
      connection_seconds(kDurationBounds),
      request_seconds(kLatencyBounds),
      response_head_seconds(kLatencyBounds) {}

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
    // Series that only HTTP listeners can move.
    auto eachHttp = [&](const char* name, const char* type, const char* help, auto value) {
        header(out, name, type, help);
        for (const auto& [key, s] : listeners) {
            if (s->http) sample(out, name, listenerLabel(key), double(value(*s)));
        }
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
    eachHttp("sidecar_http_requests_rate_limited_total", "counter",
         "HTTP requests answered 429 by the request rate limit, never forwarded.",
         [](const ListenerStats& s) { return s.requests_rate_limited; });
    eachHttp("sidecar_http_requests_queued_total", "counter",
         "HTTP requests that waited for an upstream slot (limits.upstream_concurrency).",
         [](const ListenerStats& s) { return s.requests_queued; });
    eachHttp("sidecar_http_requests_overloaded_total", "counter",
         "HTTP requests answered 503 by limits.upstream_concurrency: queue full or wait timed out.",
         [](const ListenerStats& s) { return s.requests_overloaded; });
    eachHttp("sidecar_upstream_requests_in_flight", "gauge",
         "Client connections holding an upstream slot (limits.upstream_concurrency) now.",
         [](const ListenerStats& s) { return s.upstream_in_flight; });
    eachHttp("sidecar_upstream_requests_queued", "gauge",
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
        sample(out, "sidecar_tls_handshakes_total", l + ",version=\"\",result=\"failed\"", double(s->handshakesFailed()));
        sample(out, "sidecar_tls_handshakes_total", l + ",version=\"\",result=\"timeout\"", double(s->handshakeTimeouts()));
    }
    each("sidecar_tls_handshakes_waiting", "gauge",
         "TLS handshakes (with clients, and with the app when originating) waiting for their next step in the event loop now.",
         [](const ListenerStats& s) { return s.handshakes_waiting; });
    each("sidecar_tls_accept_pauses_total", "counter",
         "Times the listener stopped accepting while TLS handshakes were backlogged.",
         [](const ListenerStats& s) { return s.accept_pauses; });
    header(out, "sidecar_tls_handshake_failures_total", "counter",
           "Failed or timed-out TLS handshakes with clients, by reason.");
    for (const auto& [key, s] : listeners) {
        for (size_t f = 0; f < s->handshake_failures.size(); ++f) {
            sample(out, "sidecar_tls_handshake_failures_total",
                   listenerLabel(key) + ",reason=\"" + handshakeFailureName(HandshakeFailure(f)) + "\"",
                   double(s->handshake_failures[f]));
        }
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
           "HTTP requests answered, by status code and class (codes seen so far; none: no status).");
    for (const auto& [key, s] : listeners) {
        if (!s->http) continue;
        for (const auto& [code, count] : s->http_requests) {
            std::string c = code == 0 ? "none" : std::to_string(code);
            std::string cls = code == 0 ? "none" : std::to_string(code / 100) + "xx";
            sample(out, "sidecar_http_requests_total",
                   listenerLabel(key) + ",code=\"" + c + "\",class=\"" + cls + "\"", double(count));
        }
    }
    eachHttp("sidecar_http_local_responses_total", "counter",
         "HTTP error responses generated by the proxy itself (400, 408, 431, 502, 503, 504...).",
         [](const ListenerStats& s) { return s.http_local_responses; });
    header(out, "sidecar_http_request_duration_seconds", "histogram",
           "Time from a complete request head to the end of its response (HTTP listeners).");
    for (const auto& [key, s] : listeners) {
        if (s->http) s->request_seconds.render(out, "sidecar_http_request_duration_seconds", listenerLabel(key));
    }
    header(out, "sidecar_http_response_head_seconds", "histogram",
           "Time from a complete request head to its response head (the app's time to first byte).");
    for (const auto& [key, s] : listeners) {
        if (s->http) {
            s->response_head_seconds.render(out, "sidecar_http_response_head_seconds", listenerLabel(key));
        }
    }
    header(out, "sidecar_upstream_connect_seconds", "histogram",
           "Time to open a connection to the app, TLS origination included.");
    for (const auto& [key, s] : listeners)
        s->upstream_connect_seconds.render(out, "sidecar_upstream_connect_seconds", listenerLabel(key));
    header(out, "sidecar_connection_duration_seconds", "histogram",
           "Lifetime of the client connections that were served, accept to close.");
    for (const auto& [key, s] : listeners)
        s->connection_seconds.render(out, "sidecar_connection_duration_seconds", listenerLabel(key));
    header(out, "sidecar_connections_closed_total", "counter",
           "Client connections that were served, by how they ended.");
    for (const auto& [key, s] : listeners) {
        for (size_t r = 0; r < s->closes.size(); ++r) {
            sample(out, "sidecar_connections_closed_total",
                   listenerLabel(key) + ",reason=\"" + closeReasonName(CloseReason(r)) + "\"",
                   double(s->closes[r]));
        }
    }

    header(out, "sidecar_upstream_resolutions_total", "counter",
           "Resolutions of upstream names (hosts file, then DNS), by result.");
    for (const auto& [key, s] : upstream_names) {
        for (size_t r = 0; r < s->resolutions.size(); ++r) {
            sample(out, "sidecar_upstream_resolutions_total",
                   "upstream=\"" + escapeLabel(key) + "\",result=\"" +
                       resolveResultName(ResolveResult(r)) + "\"",
                   double(s->resolutions[r]));
        }
    }
    header(out, "sidecar_upstream_addresses", "gauge",
           "Addresses an upstream name resolves to now (the last good answer while DNS fails).");
    for (const auto& [key, s] : upstream_names)
        sample(out, "sidecar_upstream_addresses", "upstream=\"" + escapeLabel(key) + "\"",
               double(s->addresses));

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
    header(out, "sidecar_build_info", "gauge", "Always 1: the version and TLS backends of this binary.");
    sample(out, "sidecar_build_info",
           "version=\"" + escapeLabel(version) + "\",tls_backend=\"" + escapeLabel(tls_backend) +
               "\",tls_backends=\"" + escapeLabel(tls_backends) + "\"",
           1);
    const ProcessFacts p = processFacts();
    header(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
    sample(out, "process_cpu_seconds_total", "", p.cpu_seconds);
    header(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    sample(out, "process_resident_memory_bytes", "", p.resident_bytes);
    header(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    sample(out, "process_virtual_memory_bytes", "", p.virtual_bytes);
    header(out, "process_open_fds", "gauge", "Open file descriptors.");
    sample(out, "process_open_fds", "", p.open_fds);
    header(out, "process_max_fds", "gauge", "The limit on open file descriptors.");
    sample(out, "process_max_fds", "", p.max_fds);
    header(out, "process_start_time_seconds", "gauge", "Start time of the process since the epoch, in seconds.");
    sample(out, "process_start_time_seconds", "", double(start_time));
    return out;
}

}  // namespace sidecar::core
