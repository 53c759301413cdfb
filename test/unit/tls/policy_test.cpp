// The TLS policy knobs on every backend and across backends: cipher suite, group and version
// limits refuse a client that offers nothing allowed; a client CRL refuses a revoked certificate
// once a context is built from it; the key log holds the secrets both peers derived.

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"
#include "tls/errors.h"

namespace sidecar::tls::test {
namespace {

struct Run {
    HandshakeResult result;
    std::string server_error;
    std::string client_error;
    SessionInfo client_info;
};

Run connect(Backend& client_backend, Backend& server_backend, const ServerOptions& so,
            const ClientOptions& co) {
    std::string error;
    auto sctx = server_backend.serverContext(so, &error);
    INFO(error);
    REQUIRE(sctx);
    auto cctx = client_backend.clientContext(co, &error);
    INFO(error);
    REQUIRE(cctx);
    auto server = sctx->newSession();
    auto client = cctx->newSession();
    Run r;
    r.result = handshake(*client, *server);
    r.server_error = server->error();
    if (r.result.ok()) {
        CHECK(send(*client, *server, "ping") == "ping");
        CHECK(send(*server, *client, "pong") == "pong");
        r.client_info = client->info();
    }
    r.client_error = r.result.client == Result::Error ? client->error() : peerError(*client);
    return r;
}

// Every ordered (client, server) pair of compiled backends, the same backend twice included.
struct Pairing {
    BackendFactory client, server;
};
std::vector<Pairing> allPairings() {
    std::vector<Pairing> out;
    for (const BackendFactory& c : backendFactories())
        for (const BackendFactory& s : backendFactories()) out.push_back({c, s});
    return out;
}

#define SIDECAR_PAIRING()                                                           \
    const Pairing& pairing_ = GENERATE(from_range(allPairings()));                  \
    INFO("client " << pairing_.client.name << ", server " << pairing_.server.name); \
    std::unique_ptr<Backend> client_backend = pairing_.client.make();               \
    std::unique_ptr<Backend> server_backend = pairing_.server.make()

ClientOptions versionedClient(const std::string& version) {
    ClientOptions co = clientOptions("localhost", version);
    co.min_version = version;
    return co;
}

TEST_CASE("a client offering only an excluded TLS 1.2 suite is refused", "[tls][policy]") {
    SIDECAR_PAIRING();
    ServerOptions so = serverOptions("1.2");
    so.policy.cipher_suites = {"ECDHE-ECDSA-AES256-GCM-SHA384"};
    ClientOptions co = versionedClient("1.2");

    SECTION("the allowed suite is negotiated") {
        co.policy.cipher_suites = {"ECDHE-ECDSA-AES128-GCM-SHA256",
                                   "ECDHE-ECDSA-AES256-GCM-SHA384"};
        Run r = connect(*client_backend, *server_backend, so, co);
        REQUIRE(r.result.ok());
        CHECK(r.client_info.cipher == "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384");
    }
    SECTION("only an excluded suite") {
        co.policy.cipher_suites = {"ECDHE-ECDSA-AES128-GCM-SHA256"};
        Run r = connect(*client_backend, *server_backend, so, co);
        CHECK(r.result.server == Result::Error);
        CHECK(r.server_error == reason::kNoCommonParameters);
        CHECK(r.client_error == "peer sent an alert: handshake_failure");
    }
}

TEST_CASE("a client offering only an excluded TLS 1.3 suite is refused", "[tls][policy]") {
    SIDECAR_PAIRING();
    ServerOptions so = serverOptions("1.3");
    so.policy.tls13_cipher_suites = {"TLS_CHACHA20_POLY1305_SHA256"};
    ClientOptions co = versionedClient("1.3");

    SECTION("the allowed suite is negotiated") {
        co.policy.tls13_cipher_suites = {"TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"};
        Run r = connect(*client_backend, *server_backend, so, co);
        REQUIRE(r.result.ok());
        CHECK(r.client_info.cipher == "TLS_CHACHA20_POLY1305_SHA256");
    }
    SECTION("only an excluded suite") {
        co.policy.tls13_cipher_suites = {"TLS_AES_256_GCM_SHA384"};
        Run r = connect(*client_backend, *server_backend, so, co);
        CHECK(r.result.server == Result::Error);
        CHECK(r.server_error == reason::kNoCommonParameters);
        CHECK(r.client_error == "peer sent an alert: handshake_failure");
    }
}

TEST_CASE("a client offering only an excluded group is refused", "[tls][policy]") {
    SIDECAR_PAIRING();
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    ServerOptions so = serverOptions(version);
    so.policy.groups = {"secp384r1"};
    ClientOptions co = versionedClient(version);

    SECTION("the allowed group works") {
        co.policy.groups = {"x25519", "secp384r1"};
        // In TLS 1.2 the groups also bound the curve of an ECDSA certificate (P-256 here).
        if (version == "1.2") co.policy.groups.push_back("secp256r1");
        CHECK(connect(*client_backend, *server_backend, so, co).result.ok());
    }
    SECTION("only an excluded group") {
        co.policy.groups = {"x25519"};
        Run r = connect(*client_backend, *server_backend, so, co);
        CHECK(r.result.server == Result::Error);
        CHECK(r.server_error == reason::kNoCommonParameters);
        CHECK(r.result.client != Result::Ok);
        // An mbedTLS 3.6 server ends a TLS 1.3 handshake without a shared group with no alert.
        if (version == "1.2" || pairing_.server.name != "mbedtls")
            CHECK(r.client_error == "peer sent an alert: handshake_failure");
    }
}

TEST_CASE("a server's max_version refuses a TLS 1.3-only client", "[tls][policy]") {
    SIDECAR_PAIRING();
    ServerOptions so = serverOptions("1.2");
    so.max_version = "1.2";
    Run r = connect(*client_backend, *server_backend, so, versionedClient("1.3"));
    CHECK(r.result.server == Result::Error);
    CHECK(r.result.client != Result::Ok);
    // An mbedTLS server limited to TLS 1.2 reads a TLS 1.3-only hello as a TLS 1.2 one whose
    // suites it does not know.
    CHECK(r.server_error ==
          (pairing_.server.name == "mbedtls" ? reason::kNoCommonParameters : reason::kNoVersion));

    Run ok = connect(*client_backend, *server_backend, so, clientOptions());
    REQUIRE(ok.result.ok());
    CHECK(ok.client_info.version == "TLSv1.2");
}

// The error a context reports for `policy`, server and client side alike.
std::string policyError(Backend& backend, const Policy& policy) {
    ServerOptions so = serverOptions();
    so.policy = policy;
    std::string server_error, client_error;
    CHECK_FALSE(backend.serverContext(so, &server_error));
    ClientOptions co = clientOptions();
    co.policy = policy;
    CHECK_FALSE(backend.clientContext(co, &client_error));
    CHECK(server_error == client_error);
    return server_error;
}

TEST_CASE("policy names are checked with the same messages by every backend", "[tls][policy]") {
    SIDECAR_BACKEND(backend);
    Policy p;
    p.cipher_suites = {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"};
    CHECK(policyError(*backend, p) ==
          "cipher_suites: \"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\" is not a supported TLS 1.2 "
          "cipher suite (supported: ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, "
          "ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, "
          "ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-CHACHA20-POLY1305); write it as "
          "ECDHE-ECDSA-AES128-GCM-SHA256");
    p = {};
    p.cipher_suites = {"AES128-SHA"};  // a suite the library has, but the policy never allows
    CHECK(policyError(*backend, p)
              .starts_with("cipher_suites: \"AES128-SHA\" is not a supported TLS 1.2 cipher suite "
                           "(supported: "));
    p = {};
    p.tls13_cipher_suites = {"TLS_AES_128_CCM_SHA256"};
    CHECK(policyError(*backend, p) ==
          "tls13_cipher_suites: \"TLS_AES_128_CCM_SHA256\" is not a supported TLS 1.3 cipher "
          "suite (supported: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, "
          "TLS_CHACHA20_POLY1305_SHA256)");
    p = {};
    p.groups = {"P-256"};
    CHECK(policyError(*backend, p) ==
          "groups: \"P-256\" is not a supported key exchange group (supported: x25519, secp256r1, "
          "secp384r1, secp521r1); write it as secp256r1");
    p = {};
    p.groups = {"x25519", "x25519"};
    CHECK(policyError(*backend, p) == "groups: \"x25519\" is listed twice");
}

// ---- client CRL ----

struct CrlFiles {
    std::string path;
    explicit CrlFiles(const std::string& name) : path(writeTempFile(name, "")) {}
    void write(const std::string& pem) { writeTempFile(path.substr(path.rfind('/') + 1), pem); }
};

ServerOptions withCrl(const std::string& version, const std::string& crl_path) {
    ServerOptions so = serverOptions(version);
    so.client_auth = ClientAuth::Required;
    so.client_ca_path = fixture().ca_path;
    so.client_crl_path = crl_path;
    return so;
}

ClientOptions withCertificate(const std::string& version, const Issued& cert) {
    ClientOptions co = clientOptions("localhost", version);
    co.pair = pemPair(cert);
    return co;
}

TEST_CASE("a client certificate revoked by a reloaded CRL is refused", "[tls][crl]") {
    SIDECAR_PAIRING();
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    const Fixture& f = fixture();
    CrlFiles crl("client-crl-" + pairing_.client.name + pairing_.server.name + version + ".pem");

    // First the CRL revokes another certificate only: the client is let in.
    crl.write(makeCrl(f.ca, {f.client_cn_only.cert_pem}));
    Run before = connect(*client_backend, *server_backend, withCrl(version, crl.path),
                         withCertificate(version, f.client));
    CHECK(before.result.ok());
    Run listed = connect(*client_backend, *server_backend, withCrl(version, crl.path),
                         withCertificate(version, f.client_cn_only));
    CHECK(listed.server_error == reason::kCertRevoked);
    CHECK(listed.client_error == "peer sent an alert: certificate_revoked");

    // The file changes; a context built from it (as a reload builds one) refuses the client.
    crl.write(makeCrl(f.ca, {f.client_cn_only.cert_pem, f.client.cert_pem}));
    Run after = connect(*client_backend, *server_backend, withCrl(version, crl.path),
                        withCertificate(version, f.client));
    CHECK(after.result.server == Result::Error);
    CHECK(after.server_error == reason::kCertRevoked);
    CHECK(after.client_error == "peer sent an alert: certificate_revoked");

    // A certificate from a CA without a CRL in the file is not affected by it.
    ServerOptions both = withCrl(version, crl.path);
    both.client_ca_path = writeTempFile("both-cas.pem", f.ca.cert_pem + f.other_ca.cert_pem);
    CHECK(
        connect(*client_backend, *server_backend, both, withCertificate(version, f.client_other_ca))
            .result.ok());
}

TEST_CASE("a bad CRL file is refused with the same message by every backend", "[tls][crl]") {
    SIDECAR_BACKEND(backend);
    const Fixture& f = fixture();
    auto refuse = [&](const std::string& name, const std::string& content) {
        std::string path = writeTempFile(name, content);
        std::string error;
        CHECK_FALSE(backend->serverContext(withCrl("1.2", path), &error));
        std::optional<std::string> checked = backend->checkCrl(path, f.ca_path);
        REQUIRE(checked);
        CHECK(*checked == error);
        return std::make_pair(path, error);
    };
    auto [garbage, garbageError] = refuse("crl-garbage.pem", "not a CRL\n");
    CHECK(garbageError == garbage +
                              " holds no certificate revocation list (expected PEM \"X509 CRL\" "
                              "blocks or DER)");
    auto [other, otherError] = refuse("crl-other.pem", makeCrl(f.other_ca, {}));
    CHECK(otherError == "the CRL in " + other +
                            " is issued by \"CN=Other CA,O=elsewhere\", which is not a "
                            "CA of the client_ca bundle");
    auto [stale, staleError] = refuse("crl-stale.pem", makeCrl(f.ca, {}, -60));
    CHECK(staleError.starts_with(
        "the CRL in " + stale +
        " (issuer \"CN=Sidecar Test CA,O=sidecar tests\") is out of date since "));
    std::string missing;
    CHECK_FALSE(backend->serverContext(withCrl("1.2", "/nonexistent/crl.pem"), &missing));
    CHECK(missing == "cannot read /nonexistent/crl.pem: No such file or directory");

    CHECK_FALSE(backend->checkCrl(writeTempFile("crl-good.pem", makeCrl(f.ca, {})), f.ca_path));
}

// ---- key log ----

std::vector<std::string> lines(const std::string& path) {
    std::ifstream in(path);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

// label -> "client_random secret", checking the line format on the way.
std::map<std::string, std::string> byLabel(const std::vector<std::string>& log) {
    std::map<std::string, std::string> out;
    for (const std::string& line : log) {
        std::istringstream in(line);
        std::string label, random, secret, extra;
        in >> label >> random >> secret;
        CHECK_FALSE(in >> extra);
        CHECK(random.size() == 64);
        CHECK(secret.size() >= 64);
        CHECK(secret.find_first_not_of("0123456789abcdef") == std::string::npos);
        out[label] = random + " " + secret;
    }
    return out;
}

TEST_CASE("the key log holds the secrets both peers derived", "[tls][keylog]") {
    SIDECAR_PAIRING();
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    const std::string tag = pairing_.client.name + "-" + pairing_.server.name + "-" + version;
    const std::string server_log = writeTempFile("server-" + tag + ".keys", "");
    const std::string client_log = writeTempFile("client-" + tag + ".keys", "");
    ServerOptions so = serverOptions(version);
    so.policy.key_log_path = server_log;
    ClientOptions co = versionedClient(version);
    co.policy.key_log_path = client_log;

    REQUIRE(connect(*client_backend, *server_backend, so, co).result.ok());
    std::map<std::string, std::string> server = byLabel(lines(server_log));
    std::map<std::string, std::string> client = byLabel(lines(client_log));
    const std::vector<std::string> labels =
        version == "1.2" ? std::vector<std::string>{"CLIENT_RANDOM"}
                         : std::vector<std::string>{
                               "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                               "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"};
    std::set<std::string> randoms;
    for (const std::string& label : labels) {
        INFO(label);
        REQUIRE(server.count(label) == 1);
        REQUIRE(client.count(label) == 1);
        // Both peers derive the same secret; a wrong one would not match the other library's.
        CHECK(server[label] == client[label]);
        randoms.insert(server[label].substr(0, 64));
    }
    CHECK(randoms.size() == 1);  // one connection, one client random

    // Appended, one line per secret: a second connection adds its own lines.
    const size_t first = lines(server_log).size();
    REQUIRE(connect(*client_backend, *server_backend, so, co).result.ok());
    CHECK(lines(server_log).size() >= first + labels.size());
}

TEST_CASE("a key log that cannot be opened fails the context", "[tls][keylog]") {
    SIDECAR_BACKEND(backend);
    ServerOptions so = serverOptions();
    so.policy.key_log_path = "/nonexistent/dir/keys.log";
    std::string error;
    CHECK_FALSE(backend->serverContext(so, &error));
    CHECK(error == "cannot open key_log file /nonexistent/dir/keys.log: No such file or directory");
}

}  // namespace
}  // namespace sidecar::tls::test
