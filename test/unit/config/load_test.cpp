// Loading valid files: defaults, every field, positions, files on disk, certificate validators.

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "helpers.h"

using namespace std::chrono_literals;
using namespace sidecar::config;
using namespace sidecar::config::test;

namespace {

// A file in a fresh temporary directory, removed at the end of the test.
class TempFile {
public:
    explicit TempFile(const std::string& contents) {
        static std::atomic<int> counter{0};
        dir_ =
            std::filesystem::temp_directory_path() /
            ("sidecar-config-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
        std::filesystem::create_directories(dir_);
        path_ = dir_ / "sidecar.yaml";
        std::ofstream(path_, std::ios::binary) << contents;
    }
    ~TempFile() {
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }
    std::string path() const { return path_.string(); }
    std::string dir() const { return dir_.string(); }

private:
    std::filesystem::path dir_;
    std::filesystem::path path_;
};

const std::string kFull = R"(# every setting, none at its default
listeners:
  - name: web
    listen: "[::]:8443"
    protocol: http
    tls:
      certificate: /tls/web.crt
      private_key: /tls/web.key
      min_version: "1.3"
      alpn: [h2, http/1.1]
      sni:
        - server_names: [a.example, "*.b.example"]
          certificate: /tls/a.crt
          private_key: /tls/a.key
        - server_names: [c.example]
          certificate: /tls/c.crt
          private_key: /tls/c.key
      client_auth: optional
      client_ca: /tls/ca.crt
      allow:
        san_uri: [spiffe://cluster.local/ns/a/sa/b]
        san_dns: [client.example]
        cn: [client]
      session_tickets: { enabled: false, rotate: 30m }
    upstream:
      address: 127.0.0.1:8080
      connect_timeout: 250ms
      http2: true
      proxy_protocol: 0
      tls:
        ca: /tls/upstream-ca.crt
        server_name: app.internal
        certificate: /tls/client.crt
        private_key: /tls/client.key
        min_version: "1.3"
        alpn: [h2]
    timeouts: { handshake: 5s, idle: 2m, header: 1.5s, upstream_response: 1h }
    limits: { max_connections: 10, max_header_bytes: 4096, max_headers: 20 }
    http: { forwarded: none, access_log: false, client_cert_header: false }  # as h2 requires
  - name: db
    listen: 10.0.0.5:5433
    protocol: tcp
    upstream:
      address: localhost:5432
      proxy_protocol: 2
    http: { forwarded: forwarded }
admin:
  listen: "[::1]:9000"
  enabled: false
redirect:
  inbound:
    - port: 443
      listener: web
    - port: 5432
      listener: db
  exclude_ports: [22, 9100]
  exclude_cidrs: [10.0.0.0/8, "fd00::/8", 192.168.1.1/32]
  interfaces: [eth0, "veth+"]
  ipv6: false
log: { level: debug, format: json }
drain_timeout: 0
cert_poll_interval: 30s
)";

}  // namespace

TEST_CASE("a minimal config gets every default from config.h", "[load]") {
    Config config = loadValid(kMinimal);
    CHECK(config.source == "test.yaml");
    REQUIRE(config.listeners.size() == 1);
    const Listener& web = config.listeners[0];
    CHECK(web.name == "web");
    CHECK(web.listen.host == "0.0.0.0");
    CHECK(web.listen.port == 8080);
    CHECK(web.protocol == Protocol::Tcp);
    CHECK_FALSE(web.tls.has_value());
    CHECK(web.upstream.address.host == "127.0.0.1");
    CHECK(web.upstream.address.port == 80);
    CHECK(web.upstream.connect_timeout == 1s);
    CHECK_FALSE(web.upstream.http2);
    CHECK(web.upstream.proxy_protocol == 0);
    CHECK_FALSE(web.upstream.tls.has_value());
    CHECK(web.timeouts.handshake == 10s);
    CHECK(web.timeouts.idle == 60s);
    CHECK(web.timeouts.header == 10s);
    CHECK(web.timeouts.upstream_response == 60s);
    CHECK(web.limits.max_connections == 10000);
    CHECK(web.limits.max_header_bytes == 32768);
    CHECK(web.limits.max_headers == 100);
    CHECK(web.http.forwarded == ForwardedMode::XForwarded);
    CHECK(web.http.access_log);
    CHECK(web.http.client_cert_header);
    CHECK(config.admin.listen.host == "127.0.0.1");
    CHECK(config.admin.listen.port == 9901);
    CHECK(config.admin.enabled);
    CHECK(config.redirect.inbound.empty());
    CHECK(config.redirect.exclude_ports.empty());
    CHECK(config.redirect.exclude_cidrs.empty());
    CHECK(config.redirect.interfaces.empty());
    CHECK(config.redirect.ipv6);
    CHECK(config.log.level == LogLevel::Info);
    CHECK(config.log.format == LogFormat::Text);
    CHECK(config.drain_timeout == 20s);
    CHECK(config.cert_poll_interval == 0s);
}

TEST_CASE("a TLS section with only the certificate gets the TLS defaults", "[load]") {
    Config config = loadValid(kMinimal +
                              "    tls:\n"
                              "      certificate: /tls/tls.crt\n"
                              "      private_key: /tls/tls.key\n");
    const ServerTls& tls = config.listeners.at(0).tls.value();
    CHECK(tls.pair.certificate == "/tls/tls.crt");
    CHECK(tls.pair.private_key == "/tls/tls.key");
    CHECK(tls.pair.certificate_pem.empty());
    CHECK(tls.pair.private_key_pem.empty());
    CHECK(tls.min_version == "1.2");
    CHECK(tls.alpn.empty());
    CHECK(tls.sni.empty());
    CHECK(tls.client_auth == ClientAuth::None);
    CHECK(tls.client_ca.empty());
    CHECK(tls.allow.empty());
    CHECK(tls.session_tickets.enabled);
    CHECK(tls.session_tickets.rotate == 1h);
}

TEST_CASE("an upstream TLS section with nothing in it gets the defaults", "[load]") {
    Config config = loadValid(kMinimal + "      tls: {}\n");
    const UpstreamTls& tls = config.listeners.at(0).upstream.tls.value();
    CHECK(tls.ca.empty());
    CHECK(tls.server_name.empty());
    CHECK(tls.certificate.empty());
    CHECK(tls.private_key.empty());
    CHECK(tls.min_version == "1.2");
    CHECK(tls.alpn.empty());
}

TEST_CASE("empty sections mean their defaults", "[load]") {
    Config config = loadValid(kMinimal +
                              "    timeouts:\n"
                              "    limits: {}\n"
                              "admin:\n"
                              "redirect:\n"
                              "  inbound: []\n"
                              "  exclude_ports:\n"
                              "log: {}\n");
    CHECK(config.listeners[0].timeouts.idle == 60s);
    CHECK(config.listeners[0].limits.max_headers == 100);
    CHECK(config.admin.listen.port == 9901);
    CHECK(config.redirect.inbound.empty());
    CHECK(config.log.level == LogLevel::Info);
}

TEST_CASE("every field of a full config is read", "[load]") {
    Config config = loadValid(kFull);
    REQUIRE(config.listeners.size() == 2);

    const Listener& web = config.listeners[0];
    CHECK(web.name == "web");
    CHECK(web.listen.host == "::");
    CHECK(web.listen.port == 8443);
    CHECK(web.listen.ipv6());
    CHECK(web.protocol == Protocol::Http);
    REQUIRE(web.tls.has_value());
    const ServerTls& tls = *web.tls;
    CHECK(tls.pair.certificate == "/tls/web.crt");
    CHECK(tls.pair.private_key == "/tls/web.key");
    CHECK(tls.min_version == "1.3");
    CHECK(tls.alpn == std::vector<std::string>{"h2", "http/1.1"});
    REQUIRE(tls.sni.size() == 2);
    CHECK(tls.sni[0].server_names == std::vector<std::string>{"a.example", "*.b.example"});
    CHECK(tls.sni[0].pair.certificate == "/tls/a.crt");
    CHECK(tls.sni[0].pair.private_key == "/tls/a.key");
    CHECK(tls.sni[1].server_names == std::vector<std::string>{"c.example"});
    CHECK(tls.sni[1].pair.certificate == "/tls/c.crt");
    CHECK(tls.sni[1].pair.private_key == "/tls/c.key");
    CHECK(tls.client_auth == ClientAuth::Optional);
    CHECK(tls.client_ca == "/tls/ca.crt");
    CHECK(tls.allow.san_uri == std::vector<std::string>{"spiffe://cluster.local/ns/a/sa/b"});
    CHECK(tls.allow.san_dns == std::vector<std::string>{"client.example"});
    CHECK(tls.allow.cn == std::vector<std::string>{"client"});
    CHECK_FALSE(tls.session_tickets.enabled);
    CHECK(tls.session_tickets.rotate == 30min);

    CHECK(web.upstream.address.toString() == "127.0.0.1:8080");
    CHECK(web.upstream.connect_timeout == 250ms);
    CHECK(web.upstream.http2);
    CHECK(web.upstream.proxy_protocol == 0);
    REQUIRE(web.upstream.tls.has_value());
    const UpstreamTls& origination = *web.upstream.tls;
    CHECK(origination.ca == "/tls/upstream-ca.crt");
    CHECK(origination.server_name == "app.internal");
    CHECK(origination.certificate == "/tls/client.crt");
    CHECK(origination.private_key == "/tls/client.key");
    CHECK(origination.min_version == "1.3");
    CHECK(origination.alpn == std::vector<std::string>{"h2"});

    CHECK(web.timeouts.handshake == 5s);
    CHECK(web.timeouts.idle == 2min);
    CHECK(web.timeouts.header == 1500ms);
    CHECK(web.timeouts.upstream_response == 1h);
    CHECK(web.limits.max_connections == 10);
    CHECK(web.limits.max_header_bytes == 4096);
    CHECK(web.limits.max_headers == 20);
    CHECK(web.http.forwarded == ForwardedMode::None);
    CHECK_FALSE(web.http.access_log);
    CHECK_FALSE(web.http.client_cert_header);

    const Listener& db = config.listeners[1];
    CHECK(db.name == "db");
    CHECK(db.listen.toString() == "10.0.0.5:5433");
    CHECK(db.protocol == Protocol::Tcp);
    CHECK_FALSE(db.tls.has_value());
    CHECK(db.upstream.address.host == "localhost");
    CHECK(db.upstream.address.port == 5432);
    CHECK(db.upstream.proxy_protocol == 2);
    CHECK(db.http.forwarded == ForwardedMode::Forwarded);

    CHECK(config.admin.listen.toString() == "[::1]:9000");
    CHECK_FALSE(config.admin.enabled);
    REQUIRE(config.redirect.inbound.size() == 2);
    CHECK(config.redirect.inbound[0].port == 443);
    CHECK(config.redirect.inbound[0].listener == "web");
    CHECK(config.redirect.inbound[1].port == 5432);
    CHECK(config.redirect.inbound[1].listener == "db");
    CHECK(config.redirect.exclude_ports == std::vector<uint16_t>{22, 9100});
    CHECK(config.redirect.exclude_cidrs ==
          std::vector<std::string>{"10.0.0.0/8", "fd00::/8", "192.168.1.1/32"});
    CHECK(config.redirect.interfaces == std::vector<std::string>{"eth0", "veth+"});
    CHECK_FALSE(config.redirect.ipv6);
    CHECK(config.log.level == LogLevel::Debug);
    CHECK(config.log.format == LogFormat::Json);
    CHECK(config.drain_timeout == 0s);
    CHECK(config.cert_poll_interval == 30s);
}

TEST_CASE("entries remember where they are written", "[load]") {
    Config config = loadValid(kFull);
    // "  - name: web" on line 3: the entry starts at its first key.
    CHECK(config.listeners[0].mark.line == 3);
    CHECK(config.listeners[0].mark.column == 5);
    CHECK(config.listeners[1].mark.line == 40);
    CHECK(config.listeners[1].mark.column == 5);
    // The pair's position is that of its certificate key.
    CHECK(config.listeners[0].tls->pair.mark.line == 7);
    CHECK(config.listeners[0].tls->pair.mark.column == 7);
    CHECK(config.listeners[0].tls->sni[0].pair.mark.line == 13);
    CHECK(config.listeners[0].tls->sni[0].pair.mark.column == 11);
    CHECK(config.listeners[0].tls->sni[1].pair.mark.line == 16);
    CHECK(config.redirect.inbound[0].mark.line == 52);
    CHECK(config.redirect.inbound[0].mark.column == 7);
    CHECK(config.redirect.inbound[1].mark.line == 54);
}

TEST_CASE("findListener finds listeners by name", "[load]") {
    Config config = loadValid(kFull);
    REQUIRE(config.findListener("db") != nullptr);
    CHECK(config.findListener("db")->listen.port == 5433);
    CHECK(config.findListener("web") == &config.listeners[0]);
    CHECK(config.findListener("nope") == nullptr);
    CHECK(config.findListener("") == nullptr);
}

TEST_CASE("anchors and aliases share settings between listeners", "[load]") {
    Config config = loadValid(R"(listeners:
  - name: a
    listen: 0.0.0.0:8080
    upstream: { address: 127.0.0.1:80 }
    timeouts: &slow { handshake: 30s, idle: 10m }
  - name: b
    listen: 0.0.0.0:8081
    upstream: { address: 127.0.0.1:81 }
    timeouts: *slow
)");
    CHECK(config.listeners[1].timeouts.handshake == 30s);
    CHECK(config.listeners[1].timeouts.idle == 10min);
}

TEST_CASE("YAML spellings of the same values", "[load]") {
    Config config = loadValid(R"(---
listeners:
- name: "web"
  listen: '0.0.0.0:8080'
  protocol: "http"
  upstream:
    address: 127.0.0.1:80
    http2: True
  http: {forwarded: 'none', client_cert_header: False}
  limits: {max_connections: 1, max_headers: 4294967295}
log: {level: 'warn'}
drain_timeout: "1.5s"
...
)");
    CHECK(config.listeners[0].name == "web");
    CHECK(config.listeners[0].protocol == Protocol::Http);
    CHECK(config.listeners[0].upstream.http2);
    CHECK(config.listeners[0].http.forwarded == ForwardedMode::None);
    CHECK_FALSE(config.listeners[0].http.client_cert_header);
    CHECK(config.listeners[0].limits.max_connections == 1);
    CHECK(config.listeners[0].limits.max_headers == 4294967295u);
    CHECK(config.log.level == LogLevel::Warn);
    CHECK(config.drain_timeout == 1500ms);
}

TEST_CASE("Windows line endings and a byte order mark are accepted", "[load]") {
    std::string crlf;
    for (char c : kFull) {
        if (c == '\n') crlf += '\r';
        crlf += c;
    }
    Config config = loadValid("\xef\xbb\xbf" + crlf);
    CHECK(config.listeners[1].name == "db");
    CHECK(config.redirect.interfaces == std::vector<std::string>{"eth0", "veth+"});
    LoadResult result = load("listeners: []\r\nbogus: 1\r\n");
    CHECK(messages(result) ==
          std::vector<std::string>{
              "test.yaml:1:12: listeners: at least one listener is required",
              "test.yaml:2:1: unknown key \"bogus\" (accepted keys: listeners, "
              "admin, redirect, log, drain_timeout, cert_poll_interval, tls_backend, dns)",
          });
}

TEST_CASE("loadFile reads a file and names it in errors", "[load][file]") {
    TempFile file(kMinimal);
    LoadResult result = loadFile(file.path());
    CAPTURE(messages(result));
    REQUIRE(result.errors.empty());
    REQUIRE(result.config.has_value());
    CHECK(result.config->source == file.path());

    TempFile bad(kMinimal + "bogus: 1\n");
    result = loadFile(bad.path());
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].toString() ==
          bad.path() +
              ":6:1: unknown key \"bogus\" (accepted keys: listeners, admin, redirect, "
              "log, drain_timeout, cert_poll_interval, tls_backend, dns)");
}

TEST_CASE("loadFile reports a file it cannot read", "[load][file]") {
    TempFile file(kMinimal);
    std::string missing = file.dir() + "/missing.yaml";
    LoadResult result = loadFile(missing);
    REQUIRE(result.errors.size() == 1);
    CHECK_FALSE(result.config.has_value());
    CHECK(result.errors[0].toString() ==
          missing + ": cannot open the config file: No such file or directory");

    result = loadFile(file.dir());
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].toString() ==
          file.dir() + ": cannot read the config file: Is a directory");

    if (geteuid() != 0) {  // root reads anything
        std::filesystem::permissions(file.path(), std::filesystem::perms::none);
        result = loadFile(file.path());
        REQUIRE(result.errors.size() == 1);
        CHECK_THAT(result.errors[0].toString(), ContainsSubstring("Permission denied"));
    }
}

TEST_CASE("a file over 1 MiB is rejected", "[load][file]") {
    // Valid YAML: the limit applies before parsing.
    std::string big = kMinimal + std::string(1024 * 1024, '#');
    TempFile file(big);
    LoadResult result = loadFile(file.path());
    REQUIRE(result.errors.size() == 1);
    CHECK_FALSE(result.config.has_value());
    CHECK(result.errors[0].toString() ==
          file.path() + ": the file is larger than 1 MiB, the limit for a config file");

    result = loadString(big, "big.yaml");
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].toString() ==
          "big.yaml: the file is larger than 1 MiB, the limit for a config file");

    // Exactly 1 MiB is still accepted.
    std::string limit = kMinimal + std::string(1024 * 1024 - kMinimal.size(), '#');
    REQUIRE(limit.size() == 1024 * 1024);
    loadValid(limit);
}

TEST_CASE("validators see every certificate pair and CA bundle", "[load][validators]") {
    std::vector<std::pair<std::string, std::string>> pairs;
    std::vector<std::string> cas;
    Validators validators;
    validators.pair = [&](const std::string& certificate, const std::string& key) {
        pairs.emplace_back(certificate, key);
        return std::optional<std::string>{};
    };
    validators.ca = [&](const std::string& ca) {
        cas.push_back(ca);
        return std::optional<std::string>{};
    };
    loadValid(kFull, validators);
    CHECK(pairs == std::vector<std::pair<std::string, std::string>>{
                       {"/tls/web.crt", "/tls/web.key"},
                       {"/tls/a.crt", "/tls/a.key"},
                       {"/tls/c.crt", "/tls/c.key"},
                       {"/tls/client.crt", "/tls/client.key"},
                   });
    CHECK(cas == std::vector<std::string>{"/tls/ca.crt", "/tls/upstream-ca.crt"});
}

TEST_CASE("validator messages are errors at the certificate or CA key", "[load][validators]") {
    Validators validators;
    validators.pair = [](const std::string& certificate,
                         const std::string&) -> std::optional<std::string> {
        if (certificate == "/tls/a.crt") return "the key does not match the certificate";
        if (certificate == "/tls/client.crt") return "cannot read /tls/client.crt";
        return std::nullopt;
    };
    validators.ca = [](const std::string& ca) -> std::optional<std::string> {
        if (ca == "/tls/upstream-ca.crt") return "no certificates in /tls/upstream-ca.crt";
        return std::nullopt;
    };
    LoadResult result = load(kFull, validators);
    CHECK_FALSE(result.config.has_value());
    CHECK(messages(result) ==
          std::vector<std::string>{
              "test.yaml:13:11: listeners[0].tls.sni[0].certificate: the key does not match the "
              "certificate",
              "test.yaml:31:9: listeners[0].upstream.tls.ca: no certificates in "
              "/tls/upstream-ca.crt",
              "test.yaml:33:9: listeners[0].upstream.tls.certificate: cannot read "
              "/tls/client.crt",
          });

    validators.ca = [](const std::string&) -> std::optional<std::string> { return "bad CA"; };
    result = load(kFull, validators);
    CHECK_THAT(messages(result).at(1),
               StartsWith("test.yaml:19:7: listeners[0].tls.client_ca: bad CA"));
}

TEST_CASE("a validator that throws becomes an error", "[load][validators]") {
    Validators validators;
    validators.pair = [](const std::string&, const std::string&) -> std::optional<std::string> {
        throw std::runtime_error("out of file handles");
    };
    CHECK(onlyError(kMinimal + "    tls:\n"
                               "      certificate: /tls/tls.crt\n"
                               "      private_key: /tls/tls.key\n",
                    validators) ==
          "test.yaml:7:7: listeners[0].tls.certificate: out of file handles");
}

TEST_CASE("validators are not called for an incomplete pair", "[load][validators]") {
    int calls = 0;
    Validators validators;
    validators.pair = [&](const std::string&, const std::string&) {
        ++calls;
        return std::optional<std::string>{};
    };
    onlyError(kMinimal +
                  "    tls:\n"
                  "      certificate: /tls/tls.crt\n",
              validators);
    CHECK(calls == 0);
}

TEST_CASE("tls_backend: a known name, checked by the backend validator first",
          "[load][tls_backend]") {
    std::vector<std::string> asked;
    Validators validators;
    validators.backend = [&](const std::string& name) -> std::optional<std::string> {
        asked.push_back(name);
        if (name == "openssl") return "\"openssl\" is not compiled into this build";
        return std::nullopt;
    };
    validators.pair = [&](const std::string&, const std::string&) {
        asked.push_back("pair");
        return std::optional<std::string>{};
    };
    CHECK(loadValid(kMinimal, validators).tls_backend.empty());  // the default
    CHECK(loadValid("tls_backend: mbedtls\n" + kMinimal, validators).tls_backend == "mbedtls");
    CHECK(asked == std::vector<std::string>{"", "mbedtls"});

    asked.clear();
    CHECK(onlyError(kMinimal + "    tls:\n"
                               "      certificate: /tls/tls.crt\n"
                               "      private_key: /tls/tls.key\n"
                               "tls_backend: openssl\n",
                    validators) ==
          "test.yaml:9:14: tls_backend: \"openssl\" is not compiled into this build");
    CHECK(asked == std::vector<std::string>{"openssl", "pair"});
    CHECK(onlyError("tls_backend: gnutls\n" + kMinimal) ==
          "test.yaml:1:14: tls_backend: \"gnutls\" is not one of the accepted values: mbedtls, "
          "openssl");
}

TEST_CASE("an upstream may be a DNS name; dns settings", "[load][dns]") {
    std::string yaml = kMinimal;
    yaml.replace(kMinimal.find("127.0.0.1:80"), 12, "api.default.svc.cluster.local.:8443");
    Config config = loadValid(yaml + "dns:\n  resolv_conf: /run/resolv.conf\n  hosts: /run/hosts\n"
                                     "  min_ttl: 1s\n  max_ttl: 10m\n  failure_backoff: 30s\n");
    const SocketAddress& upstream = config.listeners[0].upstream.address;
    CHECK(upstream.host == "api.default.svc.cluster.local.");
    CHECK(upstream.port == 8443);
    CHECK(upstream.isName());
    CHECK(config.dns.resolv_conf == "/run/resolv.conf");
    CHECK(config.dns.hosts == "/run/hosts");
    CHECK(config.dns.min_ttl == std::chrono::seconds(1));
    CHECK(config.dns.max_ttl == std::chrono::minutes(10));
    CHECK(config.dns.failure_backoff == std::chrono::seconds(30));

    const Config defaults = loadValid(kMinimal);
    CHECK_FALSE(defaults.listeners[0].upstream.address.isName());
    CHECK(defaults.dns.resolv_conf == "/etc/resolv.conf");
    CHECK(defaults.dns.hosts == "/etc/hosts");
    CHECK(defaults.dns.min_ttl == std::chrono::seconds(5));
    CHECK(defaults.dns.max_ttl == std::chrono::minutes(5));

    CHECK(parseSocketAddress("backend:80", true)->isName());
    CHECK_FALSE(parseSocketAddress("backend:80").has_value());
    CHECK_FALSE(parseSocketAddress("localhost:80", true)->isName());
}
