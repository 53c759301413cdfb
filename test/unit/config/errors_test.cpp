// Invalid files: every class of error, with the position a user is pointed to and the message.

#include <string>

#include "helpers.h"

using namespace sidecar::config;
using namespace sidecar::config::test;

namespace {

// kMinimal with one more listener line (line 6, inside listeners[0]).
std::string withListenerLine(const std::string& line) { return kMinimal + "    " + line + "\n"; }

// kMinimal with one upstream line (line 6, inside listeners[0].upstream).
std::string withUpstreamLine(const std::string& line) { return kMinimal + "      " + line + "\n"; }

// A listener whose tls section (line 6) holds `lines`, each indented under tls.
std::string withTls(const std::string& lines) { return kMinimal + "    tls:\n" + lines; }

}  // namespace

TEST_CASE("YAML syntax errors have a position", "[errors][syntax]") {
    CHECK(onlyError("listeners: [a, b\n") ==
          "test.yaml:2:1: invalid YAML: end of sequence flow not found");
    CHECK(onlyError("listeners:\n  - name: a: b\n") ==
          "test.yaml:2:12: invalid YAML: illegal map value");
    CHECK(onlyError("listeners: [a}\n") == "test.yaml:1:14: invalid YAML: illegal flow end");
    CHECK(onlyError("listeners:\n  - a\n b: c\n") ==
          "test.yaml:3:2: invalid YAML: end of map not found");
    CHECK(onlyError("listeners:\n\t- a\n") == "test.yaml:2:2: invalid YAML: illegal block entry");
    CHECK(onlyError("a: *nowhere\n") ==
          "test.yaml:1:4: invalid YAML: the referenced anchor is not defined");
}

TEST_CASE("an IPv6 address without quotes gets a hint", "[errors][syntax]") {
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: [::1]\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:3:13: listeners[0].listen: expected an address such as 0.0.0.0:8080, got a "
          "list (put an IPv6 address in quotes: \"[::1]:8080\")");
}

TEST_CASE("unknown keys are errors at the key, at any level", "[errors][keys]") {
    CHECK(onlyError(kMinimal + "listner: x\n") ==
          "test.yaml:6:1: unknown key \"listner\" (did you mean \"listeners\"?)");
    CHECK(onlyError(withListenerLine("lisen: 0.0.0.0:1")) ==
          "test.yaml:6:5: listeners[0]: unknown key \"lisen\" (did you mean \"listen\"?)");
    CHECK(onlyError(withUpstreamLine("retries: 3")) ==
          "test.yaml:6:7: listeners[0].upstream: unknown key \"retries\" (accepted keys: address, "
          "connect_timeout, http2, proxy_protocol, tls)");
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      session_tickets: { enabled: true, rotation: 1h }\n")) ==
          "test.yaml:9:41: listeners[0].tls.session_tickets: unknown key \"rotation\" (did you "
          "mean \"rotate\"?)");
    CHECK(
        onlyError(kMinimal + "redirect:\n  inbound:\n    - { port: 80, listener: web, x: 1 }\n") ==
        "test.yaml:8:34: redirect.inbound[0]: unknown key \"x\" (accepted keys: port, listener)");
}

TEST_CASE("keys must be plain strings", "[errors][keys]") {
    CHECK(onlyError(kMinimal + "? [a, b]\n: 1\n") ==
          "test.yaml:6:3: a key must be a plain string, not a list");
}

TEST_CASE("duplicate keys are errors at the second key, at any level", "[errors][keys]") {
    CHECK(onlyError(kMinimal + "drain_timeout: 1s\ndrain_timeout: 2s\n") ==
          "test.yaml:7:1: duplicate key \"drain_timeout\" (first given at line 6, column 1)");
    CHECK(onlyError(withListenerLine("name: other")) ==
          "test.yaml:6:5: duplicate key \"name\" (first given at line 2, column 5)");
    CHECK(onlyError(withUpstreamLine("\"address\": 127.0.0.1:81")) ==
          "test.yaml:6:7: duplicate key \"address\" (first given at line 5, column 7)");
    CHECK(onlyError(kMinimal + "log: { level: info, level: debug }\n") ==
          "test.yaml:6:21: duplicate key \"level\" (first given at line 6, column 8)");
    // Also inside parts of the document that are otherwise wrong or ignored.
    LoadResult result = load(kMinimal + "extra: { a: { b: [ { c: 1, c: 2 } ] } }\n");
    CHECK(messages(result) ==
          std::vector<std::string>{
              "test.yaml:6:1: unknown key \"extra\" (accepted keys: listeners, admin, redirect, "
              "log, drain_timeout, cert_poll_interval, tls_backend, dns)",
              "test.yaml:6:28: duplicate key \"c\" (first given at line 6, column 22)",
          });
}

TEST_CASE("values of the wrong type", "[errors][types]") {
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: { host: 0.0.0.0, port: 8080 }\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:3:13: listeners[0].listen: expected an address such as 0.0.0.0:8080, got a "
          "map");
    CHECK(onlyError(withListenerLine("limits: { max_connections: abc }")) ==
          "test.yaml:6:32: listeners[0].limits.max_connections: expected a number from 1 to "
          "4294967295, got \"abc\"");
    CHECK(onlyError(withListenerLine("limits: { max_headers: \"100\" }")) ==
          "test.yaml:6:28: listeners[0].limits.max_headers: expected a number from 1 to "
          "4294967295, got the string \"100\"");
    CHECK(onlyError(withListenerLine("limits: { max_headers: 1.5 }")) ==
          "test.yaml:6:28: listeners[0].limits.max_headers: expected a number from 1 to "
          "4294967295, got \"1.5\"");
    CHECK(onlyError(withListenerLine("limits: { max_headers: -1 }")) ==
          "test.yaml:6:28: listeners[0].limits.max_headers: expected a number from 1 to "
          "4294967295, got \"-1\"");
    CHECK(onlyError(withListenerLine("limits: { max_headers: 4294967296 }")) ==
          "test.yaml:6:28: listeners[0].limits.max_headers: 4294967296 is out of range: expected "
          "a number from 1 to 4294967295");
    CHECK(onlyError(withListenerLine("tls: [a]")) ==
          "test.yaml:6:10: listeners[0].tls: expected a map, got a list");
    CHECK(onlyError(withListenerLine("timeouts: 10s")) ==
          "test.yaml:6:15: listeners[0].timeouts: expected a map, got \"10s\"");
    CHECK(onlyError(withUpstreamLine("http2: yes")) ==
          "test.yaml:6:14: listeners[0].upstream.http2: expected true or false, got \"yes\"");
    CHECK(onlyError(withUpstreamLine("http2: \"true\"")) ==
          "test.yaml:6:14: listeners[0].upstream.http2: expected true or false, got the string "
          "\"true\"");
    CHECK(onlyError("listeners:\n"
                    "  - name: { a: 1 }\n"
                    "    listen: 0.0.0.0:8080\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:2:11: listeners[0].name: expected a string, got a map");
    CHECK(onlyError(kMinimal + "listeners: {}\n").find("duplicate key") != std::string::npos);
    CHECK(onlyError("listeners: { name: web }\n") ==
          "test.yaml:1:12: listeners: expected a list, got a map");
    CHECK(onlyError("listeners:\n  - web\n") ==
          "test.yaml:2:5: listeners[0]: expected a map, got \"web\"");
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      alpn: h2\n")) ==
          "test.yaml:9:13: listeners[0].tls.alpn: expected a list, got \"h2\"");
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      alpn: [h2, [x]]\n")) ==
          "test.yaml:9:18: listeners[0].tls.alpn[1]: expected a string, got a list");
}

TEST_CASE("empty values where a value is required", "[errors][types]") {
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen:\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:3:5: listeners[0].listen: a value is required (an address such as "
          "0.0.0.0:8080)");
    CHECK(onlyError(withUpstreamLine("connect_timeout: ~")) ==
          "test.yaml:6:7: listeners[0].upstream.connect_timeout: a value is required (a duration "
          "such as \"10s\")");
    CHECK(onlyError(withTls("      certificate: \"\"\n"
                            "      private_key: /k\n")) ==
          "test.yaml:7:20: listeners[0].tls.certificate: must not be empty");
    CHECK(onlyError(withTls("      certificate: \"/a\\nb\"\n"
                            "      private_key: /k\n")) ==
          "test.yaml:7:20: listeners[0].tls.certificate: control characters are not allowed");
}

TEST_CASE("bad ports", "[errors][ports]") {
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: 0.0.0.0:0\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:3:13: listeners[0].listen: invalid address \"0.0.0.0:0\": the port must be a "
          "number from 1 to 65535");
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: 0.0.0.0:65536\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:3:13: listeners[0].listen: invalid address \"0.0.0.0:65536\": the port must "
          "be a number from 1 to 65535");
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: 0.0.0.0:https\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:3:13: listeners[0].listen: invalid address \"0.0.0.0:https\": the port "
          "\"https\" is not a number");
    CHECK(onlyError(kMinimal + "redirect:\n  inbound: [ { port: 0, listener: web } ]\n") ==
          "test.yaml:7:22: redirect.inbound[0].port: 0 is out of range: expected a number from 1 "
          "to 65535");
    CHECK(onlyError(kMinimal + "redirect:\n  exclude_ports: [22, 70000]\n") ==
          "test.yaml:7:23: redirect.exclude_ports[1]: 70000 is out of range: expected a number "
          "from 1 to 65535");
    CHECK(onlyError(kMinimal + "redirect:\n  exclude_ports: [ssh]\n") ==
          "test.yaml:7:19: redirect.exclude_ports[0]: expected a number from 1 to 65535, got "
          "\"ssh\"");
}

TEST_CASE("bad addresses", "[errors][addresses]") {
    CHECK(onlyError(kMinimal + "admin: { listen: \"metrics.local:9901\" }\n") ==
          "test.yaml:6:18: admin.listen: invalid address \"metrics.local:9901\": the host "
          "\"metrics.local\" is not an IP address or localhost (host names are not resolved)");
    std::string upstream = kMinimal;
    CHECK(onlyError(upstream.replace(kMinimal.find("127.0.0.1:80"), 12, "-bad.example:80")) ==
          "test.yaml:5:16: listeners[0].upstream.address: invalid address \"-bad.example:80\": "
          "the host \"-bad.example\" is not an IP address, localhost or a DNS name");
    upstream = kMinimal;
    CHECK(onlyError(upstream.replace(kMinimal.find("127.0.0.1:80"), 12, "10.0.0.300:80")) ==
          "test.yaml:5:16: listeners[0].upstream.address: invalid address \"10.0.0.300:80\": "
          "the host \"10.0.0.300\" is not an IP address, localhost or a DNS name");
    CHECK(onlyError(kMinimal + "admin: { listen: \"::1:9901\" }\n") ==
          "test.yaml:6:18: admin.listen: invalid address \"::1:9901\": an IPv6 address needs "
          "brackets, as in [::1]:8080");
    CHECK(onlyError(kMinimal + "admin: { listen: 127.0.0.1 }\n") ==
          "test.yaml:6:18: admin.listen: invalid address \"127.0.0.1\": expected host:port, such "
          "as 0.0.0.0:8080 or [::]:8080");
    CHECK(onlyError(kMinimal + "admin: { listen: 127.0.0.256:1 }\n") ==
          "test.yaml:6:18: admin.listen: invalid address \"127.0.0.256:1\": the host "
          "\"127.0.0.256\" is not an IP address or localhost (host names are not resolved)");
    CHECK(onlyError(kMinimal + "admin: { listen: \"[::1:9901\" }\n") ==
          "test.yaml:6:18: admin.listen: invalid address \"[::1:9901\": the closing ']' is "
          "missing");
    CHECK(onlyError(kMinimal + "admin: { listen: \"[::x]:9901\" }\n") ==
          "test.yaml:6:18: admin.listen: invalid address \"[::x]:9901\": \"::x\" is not an IPv6 "
          "address");
    CHECK(onlyError(kMinimal + "admin: { listen: \":9901\" }\n") ==
          "test.yaml:6:18: admin.listen: invalid address \":9901\": the host is missing (0.0.0.0 "
          "means every IPv4 address)");
}

TEST_CASE("bad durations", "[errors][durations]") {
    CHECK(onlyError(kMinimal + "drain_timeout: -5s\n") ==
          "test.yaml:6:16: drain_timeout: invalid duration \"-5s\": a duration cannot be negative");
    CHECK(onlyError(kMinimal + "drain_timeout: 20\n") ==
          "test.yaml:6:16: drain_timeout: invalid duration \"20\": the unit is missing (ms, s, m "
          "or h), as in \"20s\"");
    CHECK(onlyError(kMinimal + "drain_timeout: soon\n") ==
          "test.yaml:6:16: drain_timeout: invalid duration \"soon\": expected a number and a unit "
          "(ms, s, m or h), such as \"10s\", \"250ms\" or \"1.5m\"");
    CHECK(onlyError(kMinimal + "drain_timeout: 10000000000000000h\n") ==
          "test.yaml:6:16: drain_timeout: invalid duration \"10000000000000000h\": the duration "
          "is too large");
    CHECK(onlyError(kMinimal + "drain_timeout: 0.0005s\n") ==
          "test.yaml:6:16: drain_timeout: invalid duration \"0.0005s\": durations are counted in "
          "whole milliseconds");
    CHECK(onlyError(withListenerLine("timeouts: { idle: 0s }")) ==
          "test.yaml:6:23: listeners[0].timeouts.idle: must be longer than 0");
    CHECK(onlyError(withUpstreamLine("connect_timeout: 0")) ==
          "test.yaml:6:24: listeners[0].upstream.connect_timeout: must be longer than 0");
    // 0 is a valid value where it means "immediately" or "off".
    loadValid(kMinimal + "drain_timeout: 0\ncert_poll_interval: 0s\n");
}

TEST_CASE("bad enum values", "[errors][enums]") {
    CHECK(onlyError(withListenerLine("protocol: udp")) ==
          "test.yaml:6:15: listeners[0].protocol: \"udp\" is not one of the accepted values: "
          "http, tcp");
    CHECK(onlyError(withListenerLine("protocol: HTTP")) ==
          "test.yaml:6:15: listeners[0].protocol: \"HTTP\" is not one of the accepted values: "
          "http, tcp");
    CHECK(onlyError(withListenerLine("http: { forwarded: x-forwarded-for }")) ==
          "test.yaml:6:24: listeners[0].http.forwarded: \"x-forwarded-for\" is not one of the "
          "accepted values: x-forwarded, forwarded, none");
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      client_auth: always\n")) ==
          "test.yaml:9:20: listeners[0].tls.client_auth: \"always\" is not one of the accepted "
          "values: none, optional, required");
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      min_version: \"1.1\"\n")) ==
          "test.yaml:9:20: listeners[0].tls.min_version: \"1.1\" is not one of the accepted "
          "values: 1.2, 1.3");
    CHECK(onlyError(withUpstreamLine("tls: { min_version: 1.0 }")) ==
          "test.yaml:6:27: listeners[0].upstream.tls.min_version: \"1.0\" is not one of the "
          "accepted values: 1.2, 1.3");
    CHECK(onlyError(kMinimal + "log: { level: verbose }\n") ==
          "test.yaml:6:15: log.level: \"verbose\" is not one of the accepted values: debug, info, "
          "warn, error");
    CHECK(onlyError(kMinimal + "log: { format: yaml }\n") ==
          "test.yaml:6:16: log.format: \"yaml\" is not one of the accepted values: text, json");
    CHECK(onlyError(withUpstreamLine("proxy_protocol: 3")) ==
          "test.yaml:6:23: listeners[0].upstream.proxy_protocol: 3 is out of range: expected a "
          "number from 0 to 2");
}

TEST_CASE("listener names: required, valid, unique", "[errors][names]") {
    CHECK(onlyError("listeners:\n"
                    "  - listen: 0.0.0.0:8080\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:2:5: listeners[0]: the required key \"name\" is missing");
    CHECK(onlyError("listeners:\n"
                    "  - name: \"\"\n"
                    "    listen: 0.0.0.0:8080\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:2:11: listeners[0].name: must not be empty");
    CHECK(onlyError("listeners:\n"
                    "  - name: my web\n"
                    "    listen: 0.0.0.0:8080\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:2:11: listeners[0].name: \"my web\" is not a valid name: use up to 63 "
          "letters, digits, '.', '_' or '-'");
    CHECK(onlyError(kMinimal + "  - name: web\n"
                               "    listen: 0.0.0.0:8081\n"
                               "    upstream: { address: 127.0.0.1:81 }\n") ==
          "test.yaml:6:11: listeners[1].name: the name \"web\" is already used by listeners[0] "
          "(line 2)");
}

TEST_CASE("listen addresses must not collide", "[errors][addresses]") {
    CHECK(onlyError(kMinimal + "  - name: other\n"
                               "    listen: 0.0.0.0:8080\n"
                               "    upstream: { address: 127.0.0.1:81 }\n") ==
          "test.yaml:7:13: listeners[1].listen: 0.0.0.0:8080 is already used by listeners[0] "
          "(line 3)");
    CHECK(onlyError(kMinimal + "  - name: other\n"
                               "    listen: 127.0.0.1:8080\n"
                               "    upstream: { address: 127.0.0.1:81 }\n") ==
          "test.yaml:7:13: listeners[1].listen: 127.0.0.1:8080 overlaps 0.0.0.0:8080 of "
          "listeners[0] (line 3)");
    CHECK(onlyError(kMinimal + "  - name: other\n"
                               "    listen: \"[::]:8080\"\n"
                               "    upstream: { address: 127.0.0.1:81 }\n") ==
          "test.yaml:7:13: listeners[1].listen: [::]:8080 overlaps 0.0.0.0:8080 of listeners[0] "
          "(line 3)");
    // Different ports, or different specific addresses, are fine.
    loadValid(kMinimal +
              "  - name: b\n"
              "    listen: 0.0.0.0:8081\n"
              "    upstream: { address: 127.0.0.1:80 }\n"
              "  - name: c\n"
              "    listen: 127.0.0.1:9000\n"
              "    upstream: { address: 127.0.0.1:80 }\n"
              "  - name: d\n"
              "    listen: 127.0.0.2:9000\n"
              "    upstream: { address: 127.0.0.1:80 }\n");
}

TEST_CASE("the admin endpoint must not collide with a listener", "[errors][addresses]") {
    CHECK(onlyError(kMinimal + "admin:\n  listen: 0.0.0.0:8080\n") ==
          "test.yaml:7:11: admin.listen: 0.0.0.0:8080 collides with the address of listeners[0] "
          "(line 3)");
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: 0.0.0.0:9901\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:3:13: listeners[0].listen: 0.0.0.0:9901 collides with the admin endpoint's "
          "default address 127.0.0.1:9901; set admin.listen to another address");
    // A disabled admin endpoint opens no socket.
    loadValid(
        "listeners:\n"
        "  - name: web\n"
        "    listen: 0.0.0.0:9901\n"
        "    upstream: { address: 127.0.0.1:80 }\n"
        "admin: { enabled: false }\n");
}

TEST_CASE("required keys", "[errors][required]") {
    CHECK(onlyError("admin: {}\n") == "test.yaml:1:1: the required key \"listeners\" is missing");
    CHECK(onlyError("listeners: []\n") ==
          "test.yaml:1:12: listeners: at least one listener is required");
    CHECK(onlyError("listeners:\n") ==
          "test.yaml:1:1: listeners: at least one listener is required");
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    upstream: { address: 127.0.0.1:80 }\n") ==
          "test.yaml:2:5: listeners[0]: the required key \"listen\" is missing");
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: 0.0.0.0:8080\n") ==
          "test.yaml:2:5: listeners[0]: the required key \"upstream\" is missing");
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: 0.0.0.0:8080\n"
                    "    upstream:\n"
                    "      connect_timeout: 1s\n") ==
          "test.yaml:5:7: listeners[0].upstream: the required key \"address\" is missing");
    CHECK(onlyError(withTls("      private_key: /k\n")) ==
          "test.yaml:7:7: listeners[0].tls: the required key \"certificate\" is missing");
    CHECK(onlyError(withTls("      certificate: /c\n")) ==
          "test.yaml:7:7: listeners[0].tls: the required key \"private_key\" is missing");
    CHECK(messages(load(kMinimal + "    tls:\n")) ==
          std::vector<std::string>{
              "test.yaml:6:5: listeners[0].tls: the required key \"certificate\" is missing",
              "test.yaml:6:5: listeners[0].tls: the required key \"private_key\" is missing",
          });
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      sni:\n"
                            "        - server_names: [a.example]\n"
                            "          certificate: /a\n")) ==
          "test.yaml:10:11: listeners[0].tls.sni[0]: the required key \"private_key\" is missing");
    CHECK(onlyError(kMinimal + "redirect:\n  inbound:\n    - port: 80\n") ==
          "test.yaml:8:7: redirect.inbound[0]: the required key \"listener\" is missing");
}

TEST_CASE("the whole file", "[errors][file]") {
    CHECK(onlyError("") ==
          "test.yaml: the file has no settings; it needs at least a \"listeners\" list");
    CHECK(onlyError("# nothing yet\n") ==
          "test.yaml: the file has no settings; it needs at least a \"listeners\" list");
    CHECK(onlyError("~\n") ==
          "test.yaml: the file has no settings; it needs at least a \"listeners\" list");
    CHECK(onlyError("- a\n- b\n") ==
          "test.yaml:1:1: the top level must be a map of settings (listeners, admin, redirect, "
          "log, ...), not a list");
    CHECK(onlyError("hello\n") ==
          "test.yaml:1:1: the top level must be a map of settings (listeners, admin, redirect, "
          "log, ...), not a single value");
    CHECK(onlyError(kMinimal + "---\nlisteners: []\n") ==
          "test.yaml:6:1: a config file holds one YAML document; remove the second one (or its "
          "\"---\" line)");
    loadValid("---\n" + kMinimal + "...\n");
}

TEST_CASE("TLS: client_auth needs client_ca", "[errors][tls]") {
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      client_auth: required\n")) ==
          "test.yaml:9:20: listeners[0].tls.client_auth: client_auth required needs client_ca, "
          "the CA bundle that client certificates are verified against");
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      client_auth: optional\n")) ==
          "test.yaml:9:20: listeners[0].tls.client_auth: client_auth optional needs client_ca, "
          "the CA bundle that client certificates are verified against");
    loadValid(
        withTls("      certificate: /c\n"
                "      private_key: /k\n"
                "      client_auth: none\n"
                "      client_ca: /ca\n"));
}

TEST_CASE("TLS: an allow list needs client certificates", "[errors][tls]") {
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      allow: { cn: [client] }\n")) ==
          "test.yaml:9:7: listeners[0].tls.allow: an allow list needs client_auth optional or "
          "required: without client certificates there is nothing to match");
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      client_auth: none\n"
                            "      allow: { san_uri: [spiffe://a/b] }\n")) ==
          "test.yaml:10:7: listeners[0].tls.allow: an allow list needs client_auth optional or "
          "required: without client certificates there is nothing to match");
    // Empty lists allow any verified client, and are fine without client_auth.
    loadValid(
        withTls("      certificate: /c\n"
                "      private_key: /k\n"
                "      allow: { san_uri: [], san_dns: [], cn: [] }\n"));
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      client_auth: required\n"
                            "      client_ca: /ca\n"
                            "      allow: { cn: [a, b, a] }\n")) ==
          "test.yaml:11:27: listeners[0].tls.allow.cn[2]: \"a\" is listed twice");
}

TEST_CASE("TLS: ALPN names", "[errors][tls]") {
    CHECK(onlyError(withTls("      certificate: /c\n"
                            "      private_key: /k\n"
                            "      alpn: [h2, " +
                            std::string(256, 'a') + "]\n")) ==
          "test.yaml:9:18: listeners[0].tls.alpn[1]: an ALPN protocol name is at most 255 bytes "
          "long");
    CHECK(onlyError(withUpstreamLine("tls: { alpn: [h2, h2] }")) ==
          "test.yaml:6:25: listeners[0].upstream.tls.alpn[1]: \"h2\" is listed twice");
}

TEST_CASE("TLS: SNI entries", "[errors][tls]") {
    const std::string head = withTls(
        "      certificate: /c\n"
        "      private_key: /k\n"
        "      sni:\n");
    CHECK(onlyError(head + "        - server_names: [a.example, \"bad name\"]\n"
                           "          certificate: /a\n"
                           "          private_key: /a.key\n") ==
          "test.yaml:10:37: listeners[0].tls.sni[0].server_names[1]: \"bad name\" is not a DNS "
          "name or a wildcard such as \"*.example.com\"");
    CHECK(onlyError(head + "        - server_names: [a.example]\n"
                           "          certificate: /a\n"
                           "          private_key: /a.key\n"
                           "        - server_names: [A.Example]\n"
                           "          certificate: /b\n"
                           "          private_key: /b.key\n") ==
          "test.yaml:13:26: listeners[0].tls.sni[1].server_names[0]: \"A.Example\" is already "
          "listed in another sni entry");
    CHECK(onlyError(head + "        - server_names: []\n"
                           "          certificate: /a\n"
                           "          private_key: /a.key\n") ==
          "test.yaml:10:25: listeners[0].tls.sni[0].server_names: list at least one server name");
}

TEST_CASE("proxy_protocol only with protocol tcp", "[errors][upstream]") {
    CHECK(onlyError(kMinimal + "      proxy_protocol: 1\n"
                               "    protocol: http\n") ==
          "test.yaml:6:23: listeners[0].upstream.proxy_protocol: the PROXY protocol header is "
          "only sent with protocol tcp; an http listener passes the client address in forwarding "
          "headers");
    loadValid(withUpstreamLine("proxy_protocol: 2"));
    loadValid(withUpstreamLine("proxy_protocol: 0") + "    protocol: http\n");
}

TEST_CASE("h2 only on http listeners that inject no headers", "[errors][upstream]") {
    const std::string why =
        "h2 is tunneled to the app unparsed, so this listener's header rewriting does not apply "
        "to it and a client's forged X-Forwarded-For, Forwarded or X-Forwarded-Client-Cert would "
        "reach the app; set ";
    const std::string http2 = kMinimal + "      http2: true\n    protocol: http\n";
    CHECK(onlyError(http2) == "test.yaml:6:14: listeners[0].upstream.http2: " + why +
                                  "http.forwarded: none and http.client_cert_header: false, or "
                                  "leave http2 off");
    CHECK(onlyError(http2 + "    http: { forwarded: x-forwarded, client_cert_header: false }\n") ==
          "test.yaml:6:14: listeners[0].upstream.http2: " + why +
              "http.forwarded: none, or leave http2 off");
    CHECK(onlyError(http2 + "    http: { forwarded: none }\n") ==
          "test.yaml:6:14: listeners[0].upstream.http2: " + why +
              "http.client_cert_header: false, or leave http2 off");
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: 0.0.0.0:8080\n"
                    "    protocol: http\n"
                    "    upstream: { address: 127.0.0.1:80, http2: true }\n"
                    "    http: { forwarded: forwarded, client_cert_header: false }\n") ==
          "test.yaml:5:47: listeners[0].upstream.http2: " + why +
              "http.forwarded: none, or leave http2 off");

    // An explicit ALPN list offering h2 is the same tunnel, with or without http2.
    const std::string alpn = withTls(
                                 "      certificate: /c\n"
                                 "      private_key: /k\n"
                                 "      alpn: [http/1.1, h2]\n") +
                             "    protocol: http\n";
    CHECK(onlyError(alpn) == "test.yaml:9:24: listeners[0].tls.alpn[1]: " + why +
                                 "http.forwarded: none and http.client_cert_header: false, set "
                                 "http.http2: true to terminate h2 here, or remove h2 from the list");
    const Config both =
        loadValid(alpn + "    http: { forwarded: none, client_cert_header: false }\n");
    CHECK(both.listeners[0].tls->alpn == std::vector<std::string>{"http/1.1", "h2"});

    // Allowed: nothing injected, http2 off, or a tcp listener (no headers are edited there).
    const Config allowed =
        loadValid(http2 + "    http: { forwarded: none, client_cert_header: false }\n");
    CHECK(allowed.listeners[0].upstream.http2);
    loadValid(withUpstreamLine("http2: false") + "    protocol: http\n");
    loadValid(withUpstreamLine("http2: true"));
    loadValid(withUpstreamLine("http2: true") +
              "    protocol: tcp\n    http: { forwarded: x-forwarded }\n");
    loadValid(
        withTls("      certificate: /c\n"
                "      private_key: /k\n"
                "      alpn: [h2]\n"));
}

TEST_CASE("http.http2 terminates h2 on TLS http listeners", "[errors][http2]") {
    const std::string tls = withTls(
                                "      certificate: /c\n"
                                "      private_key: /k\n") +
                            "    protocol: http\n";
    // Terminated h2 is parsed per stream: header injection stays on, and so may an h2 ALPN.
    const Config on = loadValid(tls + "    http: { http2: true }\n");
    CHECK(on.listeners[0].http.http2.enabled);
    CHECK(on.listeners[0].http.forwarded == ForwardedMode::XForwarded);
    CHECK(on.listeners[0].http.http2.max_concurrent_streams == 100);
    const Config tuned = loadValid(tls +
                                   "    http:\n"
                                   "      http2: { max_concurrent_streams: 16, initial_window: 32768, "
                                   "upstream_pool: 2 }\n");
    CHECK(tuned.listeners[0].http.http2.enabled);
    CHECK(tuned.listeners[0].http.http2.max_concurrent_streams == 16);
    CHECK(tuned.listeners[0].http.http2.initial_window == 32768);
    CHECK(tuned.listeners[0].http.http2.upstream_pool == 2);
    CHECK_FALSE(loadValid(tls + "    http: { http2: { enabled: false } }\n").listeners[0].http.http2.enabled);
    loadValid(withTls(
                  "      certificate: /c\n"
                  "      private_key: /k\n"
                  "      alpn: [h2, http/1.1]\n") +
              "    protocol: http\n    http: { http2: true }\n");

    CHECK(onlyError(kMinimal + "    protocol: http\n    http: { http2: true }\n") ==
          "test.yaml:7:20: listeners[0].http.http2: http2 needs a TLS listener: clients choose h2 "
          "by ALPN in the TLS handshake");
    CHECK(onlyError(kMinimal + "    http: { http2: true }\n") ==
          "test.yaml:6:20: listeners[0].http.http2: http2 needs protocol: http (a tcp listener "
          "relays bytes, whatever the protocol)");
    CHECK(onlyError(tls + "    http: { http2: { initial_window: 10 } }\n").find(
              "listeners[0].http.http2.initial_window") != std::string::npos);
    CHECK(onlyError(tls + "    http: { http2: { max_concurrent_streams: 0 } }\n").find(
              "listeners[0].http.http2.max_concurrent_streams") != std::string::npos);
    CHECK(onlyError(tls + "    http: { http2: { streams: 5 } }\n").find("streams") != std::string::npos);

    // An h2c app is fine; what terminated h2 cannot reach the app with yet is refused.
    const auto h2 = [](const std::string& upstream) {
        return "listeners:\n"
               "  - name: web\n"
               "    listen: 0.0.0.0:8080\n"
               "    protocol: http\n"
               "    tls: { certificate: /c, private_key: /k }\n"
               "    http: { http2: true }\n"
               "    upstream: " + upstream + "\n";
    };
    CHECK(loadValid(h2("{ address: 127.0.0.1:81, http2: true }")).listeners[0].upstream.http2);
    CHECK(onlyError(h2("{ address: 127.0.0.1:81, tls: { ca: /ca } }")).find(
              "upstream.tls and upstream.proxy_protocol are not supported with it") != std::string::npos);
    CHECK(onlyError(h2("{ address: 127.0.0.1:81 }") + "    limits: { upstream_concurrency: { max: 4 } }\n") ==
          "test.yaml:8:37: listeners[0].limits.upstream_concurrency: upstream_concurrency does not "
          "apply to HTTP/2 streams; it cannot be combined with http.http2");
}

TEST_CASE("upstream TLS: client certificate and key go together", "[errors][upstream]") {
    CHECK(onlyError(withUpstreamLine("tls:") + "        certificate: /c\n") ==
          "test.yaml:7:9: listeners[0].upstream.tls.certificate: a client certificate needs its "
          "private_key too");
    CHECK(onlyError(withUpstreamLine("tls:") + "        private_key: /k\n") ==
          "test.yaml:7:9: listeners[0].upstream.tls.private_key: a private_key needs its client "
          "certificate too");
    CHECK(onlyError(withUpstreamLine("tls: { server_name: \"not a name\" }")) ==
          "test.yaml:6:27: listeners[0].upstream.tls.server_name: \"not a name\" is not a DNS "
          "name or an IP address");
    loadValid(withUpstreamLine("tls: { server_name: 10.0.0.1, ca: /ca }"));
}

TEST_CASE("an upstream must not be the listener itself", "[errors][upstream]") {
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: 0.0.0.0:8080\n"
                    "    upstream: { address: 127.0.0.1:8080 }\n") ==
          "test.yaml:4:26: listeners[0].upstream.address: 127.0.0.1:8080 is this listener's own "
          "address (0.0.0.0:8080); connections would loop back into the proxy");
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: localhost:8080\n"
                    "    upstream: { address: \"[::1]:8080\" }\n") ==
          "test.yaml:4:26: listeners[0].upstream.address: [::1]:8080 is this listener's own "
          "address (localhost:8080); connections would loop back into the proxy");
    // A remote host on the same port, or another listener of this proxy, is fine.
    loadValid(
        "listeners:\n"
        "  - name: web\n"
        "    listen: 0.0.0.0:8080\n"
        "    upstream: { address: 10.96.0.10:8080 }\n"
        "  - name: chained\n"
        "    listen: 127.0.0.1:9000\n"
        "    upstream: { address: 127.0.0.1:8080 }\n");
}

TEST_CASE("redirect rules", "[errors][redirect]") {
    CHECK(onlyError(kMinimal + "redirect:\n  inbound:\n    - { port: 80, listener: api }\n") ==
          "test.yaml:8:29: redirect.inbound[0].listener: no listener is named \"api\" "
          "(listeners: web)");
    CHECK(onlyError(kMinimal + "redirect:\n  inbound:\n    - { port: 8080, listener: web }\n") ==
          "test.yaml:8:15: redirect.inbound[0].port: port 8080 is the port listeners[0] listens "
          "on (line 3); redirecting it would loop the proxy's traffic back to itself");
    CHECK(onlyError(kMinimal + "redirect:\n"
                               "  inbound:\n"
                               "    - { port: 80, listener: web }\n"
                               "    - { port: 80, listener: web }\n") ==
          "test.yaml:9:15: redirect.inbound[1].port: port 80 is already redirected by "
          "redirect.inbound[0] (line 8)");
    CHECK(onlyError(kMinimal + "redirect:\n  inbound:\n    - { port: 9901, listener: web }\n") ==
          "test.yaml:8:15: redirect.inbound[0].port: port 9901 is the admin endpoint's port, "
          "which is never redirected");
    CHECK(onlyError(kMinimal + "redirect:\n"
                               "  inbound: [ { port: 80, listener: web } ]\n"
                               "  exclude_ports: [22, 80]\n") ==
          "test.yaml:8:23: redirect.exclude_ports[1]: port 80 is also redirected by "
          "redirect.inbound[0] (line 7)");
    CHECK(onlyError(kMinimal + "redirect:\n  exclude_ports: [22, 22]\n") ==
          "test.yaml:7:23: redirect.exclude_ports[1]: port 22 is listed twice");
    CHECK(onlyError("listeners:\n"
                    "  - name: web\n"
                    "    listen: 127.0.0.1:8080\n"
                    "    upstream: { address: 127.0.0.1:80 }\n"
                    "redirect:\n"
                    "  inbound: [ { port: 80, listener: web } ]\n") ==
          "test.yaml:6:36: redirect.inbound[0].listener: listener \"web\" listens on "
          "127.0.0.1:8080, a loopback address that redirected traffic never reaches; listen on "
          "0.0.0.0 or [::]");
}

TEST_CASE("redirect exclusions and interfaces", "[errors][redirect]") {
    CHECK(onlyError(kMinimal + "redirect:\n  exclude_cidrs: [10.0.0.0/8, 10.1.0.0/8]\n") ==
          "test.yaml:7:31: redirect.exclude_cidrs[1]: invalid CIDR \"10.1.0.0/8\": bits are set "
          "past the /8 prefix (did you mean 10.0.0.0/8?)");
    CHECK(onlyError(kMinimal + "redirect:\n  exclude_cidrs: [10.0.0.0/33]\n") ==
          "test.yaml:7:19: redirect.exclude_cidrs[0]: invalid CIDR \"10.0.0.0/33\": the prefix "
          "length must be a number from 0 to 32");
    CHECK(onlyError(kMinimal + "redirect:\n  exclude_cidrs: [\"fd00::1/8\"]\n") ==
          "test.yaml:7:19: redirect.exclude_cidrs[0]: invalid CIDR \"fd00::1/8\": bits are set "
          "past the /8 prefix (did you mean fd00::/8?)");
    CHECK(onlyError(kMinimal + "redirect:\n  exclude_cidrs: [10.0.0.300/32]\n") ==
          "test.yaml:7:19: redirect.exclude_cidrs[0]: invalid CIDR \"10.0.0.300/32\": "
          "\"10.0.0.300\" is not an IP address");
    CHECK(onlyError(kMinimal + "redirect:\n  exclude_cidrs: [10.0.0.1]\n") ==
          "test.yaml:7:19: redirect.exclude_cidrs[0]: invalid CIDR \"10.0.0.1\": expected "
          "address/prefix-length, such as 10.0.0.0/8 or fd00::/8");
    CHECK(onlyError(kMinimal + "redirect:\n  exclude_cidrs: [::/0, ::/0]\n") ==
          "test.yaml:7:25: redirect.exclude_cidrs[1]: \"::/0\" is listed twice");
    CHECK(onlyError(kMinimal + "redirect:\n  interfaces: [eth0, a-very-long-interface-name]\n") ==
          "test.yaml:7:22: redirect.interfaces[1]: \"a-very-long-interface-name\" is not an "
          "interface name (up to 15 letters, digits, '.', '_' or '-', optionally ending in '+')");
}

TEST_CASE("all errors are reported, in file order", "[errors]") {
    LoadResult result = load(R"(listeners:
  - name: web
    listen: 0.0.0.0:99999
    protocol: udp
    upstream:
      address: 127.0.0.1:80
      connect_timeout: soon
)");
    CHECK_FALSE(result.config.has_value());
    CHECK(messages(result) ==
          std::vector<std::string>{
              "test.yaml:3:13: listeners[0].listen: invalid address \"0.0.0.0:99999\": the port "
              "must be a number from 1 to 65535",
              "test.yaml:4:15: listeners[0].protocol: \"udp\" is not one of the accepted values: "
              "http, tcp",
              "test.yaml:7:24: listeners[0].upstream.connect_timeout: invalid duration \"soon\": "
              "expected a number and a unit (ms, s, m or h), such as \"10s\", \"250ms\" or "
              "\"1.5m\"",
          });
}

TEST_CASE("errors from every stage come out in file order", "[errors]") {
    // A duplicate key (found while scanning), a cross-check and a field error, written in
    // the opposite order from the order they are found in.
    LoadResult result = load(R"(drain_timeout: forever
listeners:
  - name: web
    listen: 0.0.0.0:8080
    upstream: { address: 127.0.0.1:80 }
redirect:
  inbound: [ { port: 80, listener: nope } ]
log: { level: info, level: info }
)");
    CHECK(messages(result) ==
          std::vector<std::string>{
              "test.yaml:1:16: drain_timeout: invalid duration \"forever\": expected a number and "
              "a unit (ms, s, m or h), such as \"10s\", \"250ms\" or \"1.5m\"",
              "test.yaml:7:36: redirect.inbound[0].listener: no listener is named \"nope\" "
              "(listeners: web)",
              "test.yaml:8:21: duplicate key \"level\" (first given at line 8, column 8)",
          });
}

TEST_CASE("deeply nested documents are rejected without recursing", "[errors][limits]") {
    CHECK(onlyError(std::string(100000, '[')) ==
          "test.yaml:1:65: the document is nested more than 64 levels deep");
    CHECK(onlyError("a: " + std::string(1024 * 1024 - 3, '{')) ==
          "test.yaml:1:68: the document is nested more than 64 levels deep");
    std::string flowInBlock = kMinimal + "extra:\n";
    for (int i = 0; i < 100; ++i) flowInBlock += "  - [";
    CHECK_THAT(onlyError(flowInBlock), ContainsSubstring("nested more than 64 levels deep"));

    std::string block;
    for (int i = 0; i < 100; ++i) block += std::string(static_cast<size_t>(i), ' ') + "- \n";
    CHECK(onlyError(block) == "test.yaml:65:65: the document is nested more than 64 levels deep");

    std::string maps;
    for (int i = 0; i < 200; ++i) maps += std::string(static_cast<size_t>(i) * 2, ' ') + "k:\n";
    CHECK(onlyError(maps) == "test.yaml:65:129: the document is nested more than 64 levels deep");

    // Shallower nesting is only an unknown key.
    std::string shallow = kMinimal + "extra: " + std::string(60, '[') + std::string(60, ']') + "\n";
    CHECK_THAT(onlyError(shallow), StartsWith("test.yaml:6:1: unknown key \"extra\""));
    // Brackets inside strings, comments and plain text do not count.
    std::string text = kMinimal + "# " + std::string(100, '[') + "\n";
    text += "drain_timeout: \"" + std::string(100, '[') + "\"\n";
    CHECK_THAT(onlyError(text), StartsWith("test.yaml:7:16: drain_timeout: invalid duration"));
}

TEST_CASE("documents that expand to too many nodes are rejected", "[errors][limits]") {
    // Each level doubles the size through aliases: 2^30 nodes from a few hundred bytes.
    std::string laughs = "a0: &a0 [x, x]\n";
    for (int i = 1; i <= 30; ++i) {
        laughs += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [*a" +
                  std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + "]\n";
    }
    CHECK(onlyError(laughs) ==
          "test.yaml:15:18: the document has more than 100000 nodes (counting each alias as a copy "
          "of "
          "its target)");

    CHECK(onlyError("a: &x [1, *x]\n") ==
          "test.yaml:1:11: the alias *x refers to a node that contains it; recursive aliases are "
          "not supported");

    std::string longFlow = "a: [" + std::string(70000, 'x') + "]\n";
    CHECK(onlyError(longFlow) ==
          "test.yaml:1:4: a [...] or {...} collection is longer than 64 KiB; write long lists in "
          "block style (\"- item\")");
}

TEST_CASE("long values are shortened in messages", "[errors]") {
    std::string name(200, 'x');
    CHECK(onlyError(withListenerLine("protocol: " + name)) ==
          "test.yaml:6:15: listeners[0].protocol: \"" + std::string(77, 'x') +
              "...\" is not one of the accepted values: http, tcp");
    CHECK(onlyError(withListenerLine("limits: { max_headers: 123456789012345678901234567890 }")) ==
          "test.yaml:6:28: listeners[0].limits.max_headers: 123456789012345678901234567890 is out "
          "of range: expected a number from 1 to 4294967295");
}

TEST_CASE("brackets in plain text are not collections", "[errors][limits]") {
    // Unbalanced brackets inside plain scalars followed by more than 64 KiB of text.
    std::string text = kMinimal + "    tls:\n      certificate: /a-[b\n      private_key: /k{[\n";
    text += "drain_timeout: x-[y\n";
    for (int i = 0; i < 3000; ++i) text += "# " + std::string(30, '[') + "\n";
    CHECK(onlyError(text) ==
          "test.yaml:9:16: drain_timeout: invalid duration \"x-[y\": expected a number and a unit "
          "(ms, s, m or h), such as \"10s\", \"250ms\" or \"1.5m\"");
}

TEST_CASE("hostile input never crashes and always gives errors", "[errors][limits]") {
    const std::string inputs[] = {
        std::string(1024 * 1024, '['),
        std::string(1024 * 1024, '{'),
        std::string(1024 * 1024, '-'),
        std::string(1024 * 1024, ' '),
        std::string(1024 * 1024, '\n'),
        std::string(100000, '"'),
        std::string("\0\0\0", 3),
        "\xff\xfe\x00\x00",
        "\xef\xbb\xbf",
        "listeners: !!binary AAAA\n",
        "%YAML 1.2\n%TAG ! tag:x,2000:\n--- !foo\n",
        "&a\n",
        "*a\n",
        "? ? ? ? ? ? ?\n",
        "- - - - - - - - - - - - - - - - - - - - - -\n",
        "[a, b]: c\n",
        ": :\n",
        "listeners:\n  - &l { name: a }\n  - *l\n  - *l\n",
    };
    for (const auto& input : inputs) {
        LoadResult result = load(input);
        CHECK_FALSE(result.config.has_value());
        CHECK_FALSE(result.errors.empty());
    }
}

TEST_CASE("dns settings are checked", "[errors][dns]") {
    CHECK(onlyError(kMinimal + "dns: { min_ttl: 50ms }\n") ==
          "test.yaml:6:17: dns.min_ttl: must be from 100ms to 24h");
    CHECK(onlyError(kMinimal + "dns: { min_ttl: 10m, max_ttl: 1m }\n") ==
          "test.yaml:6:31: dns.max_ttl: max_ttl is below min_ttl");
    CHECK(onlyError(kMinimal + "dns: { failure_backoff: 0 }\n") ==
          "test.yaml:6:25: dns.failure_backoff: must be longer than 0");
    CHECK_THAT(onlyError(kMinimal + "dns: { resolv: /etc/resolv.conf }\n"),
               StartsWith("test.yaml:6:8: dns: unknown key \"resolv\""));
}
