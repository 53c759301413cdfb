// The TLS policy settings of a listener's tls block and an upstream's tls block: cipher suites,
// groups, the version range, the client CRL and the key log, and the errors check-config shows.

#include <optional>
#include <string>

#include "helpers.h"

namespace sidecar::config::test {
namespace {

// A listener whose tls block (from line 7) holds a certificate and `lines`.
std::string serverTls(const std::string& lines) {
    return kMinimal +
           "    tls:\n"
           "      certificate: /c\n"
           "      private_key: /k\n" +
           lines;
}

// An upstream tls block (from line 7) holding `lines`.
std::string upstreamTls(const std::string& lines) { return kMinimal + "      tls:\n" + lines; }

}  // namespace

TEST_CASE("TLS policy settings load, and stay at the defaults when left out", "[tls_policy]") {
    Config defaults = loadValid(serverTls(""));
    const ServerTls& d = *defaults.listeners[0].tls;
    CHECK(d.max_version == "1.3");
    CHECK(d.policy.cipher_suites.empty());
    CHECK(d.policy.tls13_cipher_suites.empty());
    CHECK(d.policy.groups.empty());
    CHECK(d.policy.key_log.empty());
    CHECK(d.client_crl.empty());

    Config c =
        loadValid(serverTls("      max_version: \"1.2\"\n"
                            "      cipher_suites: [ECDHE-ECDSA-AES256-GCM-SHA384]\n"
                            "      groups: [secp384r1, x25519]\n"
                            "      key_log: /tmp/keys.log\n"
                            "      client_auth: required\n"
                            "      client_ca: /ca.pem\n"
                            "      client_crl: /crl.pem\n"));
    const ServerTls& t = *c.listeners[0].tls;
    CHECK(t.max_version == "1.2");
    CHECK(t.policy.cipher_suites == std::vector<std::string>{"ECDHE-ECDSA-AES256-GCM-SHA384"});
    CHECK(t.policy.groups == std::vector<std::string>{"secp384r1", "x25519"});
    CHECK(t.policy.key_log == "/tmp/keys.log");
    CHECK(t.client_crl == "/crl.pem");

    Config u =
        loadValid(upstreamTls("        tls13_cipher_suites: [TLS_AES_256_GCM_SHA384]\n"
                              "        min_version: \"1.3\"\n"
                              "        key_log: /tmp/up.keys\n"));
    const UpstreamTls& ut = *u.listeners[0].upstream.tls;
    CHECK(ut.min_version == "1.3");
    CHECK(ut.max_version == "1.3");
    CHECK(ut.policy.tls13_cipher_suites == std::vector<std::string>{"TLS_AES_256_GCM_SHA384"});
    CHECK(ut.policy.key_log == "/tmp/up.keys");
}

TEST_CASE("unknown suite and group names list the accepted ones", "[tls_policy]") {
    CHECK(onlyError(serverTls("      cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256, RC4-SHA]\n")) ==
          "test.yaml:9:54: listeners[0].tls.cipher_suites[1]: \"RC4-SHA\" is not a supported "
          "TLS 1.2 cipher suite (supported: ECDHE-ECDSA-AES128-GCM-SHA256, "
          "ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES256-GCM-SHA384, "
          "ECDHE-RSA-AES256-GCM-SHA384, ECDHE-ECDSA-CHACHA20-POLY1305, "
          "ECDHE-RSA-CHACHA20-POLY1305)");
    CHECK_THAT(
        onlyError(serverTls("      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n")),
        ContainsSubstring("); write it as ECDHE-RSA-AES128-GCM-SHA256"));
    CHECK_THAT(onlyError(serverTls("      cipher_suites: [TLS_AES_128_GCM_SHA256]\n")),
               ContainsSubstring("); TLS 1.3 suites go in tls13_cipher_suites"));
    CHECK(onlyError(serverTls("      tls13_cipher_suites: [TLS_AES_128_CCM_SHA256]\n")) ==
          "test.yaml:9:29: listeners[0].tls.tls13_cipher_suites[0]: \"TLS_AES_128_CCM_SHA256\" is "
          "not a supported TLS 1.3 cipher suite (supported: TLS_AES_128_GCM_SHA256, "
          "TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256)");
    CHECK(onlyError(upstreamTls("        groups: [X25519]\n")) ==
          "test.yaml:7:18: listeners[0].upstream.tls.groups[0]: \"X25519\" is not a supported key "
          "exchange group (supported: x25519, secp256r1, secp384r1, secp521r1); write it as "
          "x25519");
    CHECK_THAT(onlyError(serverTls("      groups: [prime256v1]\n")),
               ContainsSubstring("; write it as secp256r1"));
    CHECK_THAT(onlyError(serverTls("      groups: []\n")),
               ContainsSubstring("listeners[0].tls.groups: list at least one name, or leave the "
                                 "setting out for the defaults (x25519, secp256r1"));
}

TEST_CASE("the version range must hold a version its suite lists apply to", "[tls_policy]") {
    CHECK(onlyError(serverTls("      min_version: \"1.3\"\n"
                              "      max_version: \"1.2\"\n")) ==
          "test.yaml:10:20: listeners[0].tls.max_version: max_version 1.2 is below min_version "
          "1.3; no TLS version would be left");
    CHECK(onlyError(serverTls("      max_version: \"1.4\"\n")) ==
          "test.yaml:9:20: listeners[0].tls.max_version: \"1.4\" is not one of the accepted "
          "values: 1.2, 1.3");
    CHECK(onlyError(serverTls("      max_version: \"1.2\"\n"
                              "      tls13_cipher_suites: [TLS_AES_128_GCM_SHA256]\n")) ==
          "test.yaml:10:7: listeners[0].tls.tls13_cipher_suites: tls13_cipher_suites has no "
          "effect with max_version 1.2 (TLS 1.3 is off)");
    CHECK(onlyError(upstreamTls("        min_version: \"1.3\"\n"
                                "        cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]\n")) ==
          "test.yaml:8:9: listeners[0].upstream.tls.cipher_suites: cipher_suites are TLS 1.2 "
          "suites, and min_version 1.3 turns TLS 1.2 off");
}

TEST_CASE("client_crl needs client certificates and is checked against client_ca", "[tls_policy]") {
    CHECK(onlyError(serverTls("      client_crl: /crl.pem\n")) ==
          "test.yaml:9:7: listeners[0].tls.client_crl: client_crl needs client_auth optional or "
          "required and client_ca: without client certificates nothing is checked against it");

    const std::string yaml = serverTls(
        "      client_auth: optional\n"
        "      client_ca: /ca.pem\n"
        "      client_crl: /crl.pem\n");
    std::string seenCrl, seenCa;
    Validators v;
    v.crl = [&](const std::string& crl, const std::string& ca) -> std::optional<std::string> {
        seenCrl = crl;
        seenCa = ca;
        return "the CRL in /crl.pem is issued by \"CN=x\", which is not a CA of the client_ca "
               "bundle";
    };
    CHECK(onlyError(yaml, v) ==
          "test.yaml:11:7: listeners[0].tls.client_crl: the CRL in /crl.pem is issued by "
          "\"CN=x\", which is not a CA of the client_ca bundle");
    CHECK(seenCrl == "/crl.pem");
    CHECK(seenCa == "/ca.pem");

    // A CA bundle that does not load is reported once, at client_ca.
    v.ca = [](const std::string&) -> std::optional<std::string> { return "cannot parse CA"; };
    CHECK(onlyError(yaml, v) == "test.yaml:10:7: listeners[0].tls.client_ca: cannot parse CA");
}

TEST_CASE("unknown keys in a tls block name the policy keys", "[tls_policy]") {
    CHECK_THAT(onlyError(serverTls("      ciphers: [x]\n")),
               ContainsSubstring("unknown key \"ciphers\""));
    CHECK_THAT(onlyError(upstreamTls("        keylog: /k\n")),
               ContainsSubstring("(did you mean \"key_log\"?)"));
}

}  // namespace sidecar::config::test
