#pragma once
// Typed, validated configuration. Produced by config::load() from one YAML file; every other
// module reads these structs and never sees YAML. Field names follow the YAML keys.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace sidecar::config {

using Duration = std::chrono::milliseconds;

// Where a value came from, for error messages and cross-reference checks.
struct Mark {
    int line = 0;    // 1-based; 0 = not from the file (a default)
    int column = 0;  // 1-based
};

struct Error {
    std::string file;
    Mark mark;
    std::string message;
    // "file:line:col: message" (or "file: message" without a position)
    std::string toString() const;
};

// host:port as written; host is an IP literal (IPv6 without brackets) or "localhost", and for an
// upstream also a DNS name, resolved at run time.
struct SocketAddress {
    std::string host;
    uint16_t port = 0;
    bool ipv6() const { return host.find(':') != std::string::npos; }
    // A DNS name rather than an IP literal or "localhost".
    bool isName() const;
    std::string toString() const;  // "1.2.3.4:80", "[::1]:80"
};

struct CertKeyPair {
    std::string certificate;  // PEM file path
    std::string private_key;  // PEM file path
    Mark mark;                // position of the certificate key, for errors
    // In-memory PEM instead of files (the embedded default's ephemeral certificate).
    std::string certificate_pem;
    std::string private_key_pem;
};

struct SniEntry {
    std::vector<std::string> server_names;  // exact names or "*.example.com"
    CertKeyPair pair;
};

enum class ClientAuth { None, Optional, Required };

struct AllowList {
    std::vector<std::string> san_uri;  // e.g. spiffe://cluster.local/ns/default/sa/web
    std::vector<std::string> san_dns;
    std::vector<std::string> cn;
    bool empty() const { return san_uri.empty() && san_dns.empty() && cn.empty(); }
};

struct SessionTickets {
    bool enabled = true;
    Duration rotate = std::chrono::hours(1);  // ticket key lifetime
};

// Cipher suites, groups and the key log of one side's TLS. An empty list means the defaults;
// a list narrows or reorders them, it cannot add anything weaker.
struct TlsPolicy {
    std::vector<std::string> cipher_suites;        // TLS 1.2, e.g. ECDHE-ECDSA-AES128-GCM-SHA256
    std::vector<std::string> tls13_cipher_suites;  // e.g. TLS_AES_128_GCM_SHA256
    std::vector<std::string> groups;               // key exchange groups, e.g. x25519, secp256r1
    std::string key_log;  // NSS key log file (SSLKEYLOGFILE format) for debugging; empty = off
};

// TLS on the accepting side of a listener (termination).
struct ServerTls {
    CertKeyPair pair;                         // default certificate
    std::string min_version = "1.2";          // "1.2" | "1.3"
    std::string max_version = "1.3";          // "1.2" | "1.3", at least min_version
    TlsPolicy policy;
    std::vector<std::string> alpn;            // empty = derived from protocol
    std::vector<SniEntry> sni;                // extra certificates chosen by server name
    ClientAuth client_auth = ClientAuth::None;
    std::string client_ca;                    // PEM bundle, required unless client_auth none
    std::string client_crl;                   // CRLs of client_ca's CAs (PEM or DER); empty = none
    AllowList allow;                          // empty = any verified client
    SessionTickets session_tickets;
};

// TLS on the upstream side (origination, ambassador mode).
struct UpstreamTls {
    std::string ca;           // PEM bundle; empty = system bundle
    std::string server_name;  // SNI and the name verified; empty = upstream host
    std::string certificate;  // optional client certificate (mTLS to the remote)
    std::string private_key;
    std::string min_version = "1.2";
    std::string max_version = "1.3";
    std::vector<std::string> alpn;
    TlsPolicy policy;
};

struct Upstream {
    SocketAddress address;
    Duration connect_timeout = std::chrono::seconds(1);
    bool http2 = false;              // upstream speaks h2c: offer h2 in ALPN and tunnel it
    int proxy_protocol = 0;          // 0 = off, 1 or 2 (TCP mode)
    std::optional<UpstreamTls> tls;  // absent = plain TCP to the upstream
};

struct Timeouts {
    Duration handshake = std::chrono::seconds(10);
    Duration idle = std::chrono::seconds(60);
    Duration header = std::chrono::seconds(10);             // HTTP request head
    Duration upstream_response = std::chrono::seconds(60);  // HTTP: request sent -> response head
};

// A token bucket: `count` tokens every `period_ms`, holding at most `burst`. count 0 = off.
struct RateLimit {
    uint32_t count = 0;
    uint32_t period_ms = 1000;
    uint32_t burst = 0;
    bool enabled() const { return count > 0; }
};

// Limits per client IP address, checked when a connection is accepted.
struct ClientLimits {
    uint32_t max_connections = 0;  // open connections per client; 0 = no limit
    RateLimit connection_rate;     // new connections per client
    uint32_t table_size = 10000;   // clients remembered; the least recently seen is forgotten
    bool enabled() const { return max_connections > 0 || connection_rate.enabled(); }
};

enum class RequestKey { Listener, Client, Header };

// HTTP requests admitted per listener, per client IP, or per value of a request header; for
// the paths starting with path_prefix (empty: every path).
struct RequestRate {
    RateLimit rate;
    RequestKey key = RequestKey::Listener;
    std::string header;  // RequestKey::Header: the header's name (requests without it: by IP)
    uint32_t table_size = 10000;
    std::string path_prefix;
};

// HTTP mode: requests in flight to the app at once, counted per client connection with a request
// forwarded and not yet answered (each has its own connection to the app). Beyond `max`, a
// request waits its turn in a queue of at most `queue` requests for at most `queue_timeout`,
// then is answered 503 with Retry-After.
struct UpstreamConcurrency {
    uint32_t max = 0;  // 0 = no limit
    uint32_t queue = 0;
    Duration queue_timeout = std::chrono::seconds(5);
    bool enabled() const { return max > 0; }
};

struct Limits {
    uint32_t max_connections = 10000;
    uint32_t max_header_bytes = 32768;
    uint32_t max_headers = 100;
    RateLimit connection_rate;  // new connections on the listener, before any TLS work
    ClientLimits per_client;
    // HTTP mode: one rule, or an ordered list where a request takes the first rule whose
    // path_prefix matches its path (none matching: not limited).
    std::vector<RequestRate> request_rate;
    UpstreamConcurrency upstream_concurrency;  // HTTP mode
};

enum class Protocol { Tcp, Http };
enum class ForwardedMode { XForwarded, Forwarded, None };

// HTTP/2 terminated on a TLS HTTP listener: ALPN offers h2, and each stream goes to the app as
// an HTTP/1.1 request with every guarantee of HTTP/1.1 mode.
struct Http2 {
    bool enabled = false;
    uint32_t max_concurrent_streams = 100;
    uint32_t initial_window = 65535;  // per-stream receive window, bytes
    uint32_t upstream_pool = 16;      // idle keep-alive app connections kept per client connection
};

struct HttpOptions {
    ForwardedMode forwarded = ForwardedMode::XForwarded;
    bool access_log = true;
    bool client_cert_header = true;  // X-Forwarded-Client-Cert when a client certificate verified
    bool request_id = false;  // give requests without X-Request-Id one (forwarded and logged)
    Http2 http2;
};

struct Listener {
    std::string name;
    Mark mark;  // position of the list entry
    SocketAddress listen;
    Protocol protocol = Protocol::Tcp;
    std::optional<ServerTls> tls;  // absent = plain listener
    Upstream upstream;
    Timeouts timeouts;
    Limits limits;
    HttpOptions http;
};

struct Admin {
    SocketAddress listen{"127.0.0.1", 9901};
    bool enabled = true;
};

struct InboundRedirect {
    uint16_t port = 0;     // the app's port, as clients dial it
    std::string listener;  // name of the listener that receives it
    Mark mark;
};

struct Redirect {
    std::vector<InboundRedirect> inbound;
    std::vector<uint16_t> exclude_ports;
    std::vector<std::string> exclude_cidrs;  // source CIDRs never redirected
    std::vector<std::string> interfaces;     // empty = any interface
    bool ipv6 = true;                        // also render ip6tables rules
};

enum class LogLevel { Debug, Info, Warn, Error };
enum class LogFormat { Text, Json };

struct Log {
    LogLevel level = LogLevel::Info;
    LogFormat format = LogFormat::Text;
    // Bytes held per stream (stdout, stderr) while it is not writable; past that, whole lines
    // are dropped and counted, so a reader that stops never stalls the proxy.
    uint64_t queue_bytes = 1024 * 1024;
};

// Name resolution for upstream addresses that are DNS names. Record TTLs are clamped to
// [min_ttl, max_ttl]; an address whose connect failed is tried last for failure_backoff.
struct Dns {
    std::string resolv_conf = "/etc/resolv.conf";  // nameservers, search, ndots, timeout, attempts
    std::string hosts = "/etc/hosts";              // consulted before DNS
    Duration min_ttl = std::chrono::seconds(5);
    Duration max_ttl = std::chrono::minutes(5);
    Duration failure_backoff = std::chrono::seconds(5);
};

struct Config {
    std::string source;  // file path, or "<embedded default>"
    std::vector<Listener> listeners;
    Admin admin;
    Redirect redirect;
    Log log;
    Duration drain_timeout = std::chrono::seconds(20);
    Duration cert_poll_interval = Duration::zero();  // 0 = no polling (file watch + SIGHUP only)
    std::string tls_backend;  // "mbedtls" | "openssl"; empty = the build's default (mbedtls)
    Dns dns;

    const Listener* findListener(const std::string& name) const;
};

// Checks that a certificate/key pair loads and matches; returns an error message or nothing.
// Injected by the caller so that config/ does not depend on tls/.
using PairValidator = std::function<std::optional<std::string>(const std::string& certificate,
                                                                const std::string& private_key)>;
// Checks that a CA bundle file loads.
using CaValidator = std::function<std::optional<std::string>(const std::string& ca)>;
// Checks that a CRL file loads and is issued by a CA of the bundle.
using CrlValidator =
    std::function<std::optional<std::string>(const std::string& crl, const std::string& ca)>;

// Checks that the named TLS backend ("" = the default) is compiled into this build; called
// once per load, before the certificate checks, which the caller may then run with that backend.
using BackendValidator = std::function<std::optional<std::string>(const std::string& name)>;

struct Validators {
    PairValidator pair;
    CaValidator ca;
    CrlValidator crl;
    BackendValidator backend;
};

struct LoadResult {
    std::optional<Config> config;  // set when errors is empty
    std::vector<Error> errors;     // all errors found, in file order
};

// Loads and validates a config file. Never throws.
LoadResult loadFile(const std::string& path, const Validators& validators = {});
// Same for text already in memory; `name` is used in error messages.
LoadResult loadString(const std::string& text, const std::string& name,
                      const Validators& validators = {});

// Parses "10s", "250ms", "1m", "2h", "1.5s"; nullopt on error.
std::optional<Duration> parseDuration(const std::string& text);
// Parses "host:port", "[v6]:port"; nullopt on error. With allowName the host may also be a DNS
// name (upstream addresses).
std::optional<SocketAddress> parseSocketAddress(const std::string& text, bool allowName = false);

}  // namespace sidecar::config
