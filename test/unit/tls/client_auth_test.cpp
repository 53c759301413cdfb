// Client certificates on server contexts: required/optional, verification failures and the
// alert each one sends, the allow list, and the identity reported for an accepted client.

#include <string>

#include "harness.h"

namespace sidecar::tls::test {
namespace {

struct Outcome {
    HandshakeResult result;
    std::string server_error;
    std::string client_error;
    SessionInfo server_info;
};

// One handshake between a server with `so` and a client presenting `cert` (or none).
Outcome connect(Backend& backend, const ServerOptions& so, const std::string& version,
                const Issued* cert) {
    std::string error;
    auto sctx = backend.serverContext(so, &error);
    INFO(error);
    REQUIRE(sctx);
    ClientOptions co = clientOptions("localhost", version);
    if (cert != nullptr) co.pair = pemPair(*cert);
    auto cctx = backend.clientContext(co, &error);
    INFO(error);
    REQUIRE(cctx);
    auto server = sctx->newSession();
    auto client = cctx->newSession();
    Outcome o;
    o.result = handshake(*client, *server);
    o.server_error = server->error();
    if (o.result.server == Result::Ok) {
        o.server_info = server->info();
        // Both sides talk, which also makes a client that finished first see a late alert.
        CHECK(send(*client, *server, "hello") == "hello");
    }
    // In TLS 1.3 the client finishes before the server has judged its certificate; the alert
    // reaches it as it reads.
    o.client_error = o.result.client == Result::Error ? client->error() : peerError(*client);
    return o;
}

ServerOptions mtls(const std::string& version, ClientAuth mode, AllowList allow = {}) {
    ServerOptions so = serverOptions(version);
    so.client_auth = mode;
    so.client_ca_path = fixture().ca_path;
    so.allow = std::move(allow);
    return so;
}

TEST_CASE("client certificate required", "[tls][mtls]") {
    SIDECAR_BACKEND(backend);
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    const Fixture& f = fixture();
    const ServerOptions so = mtls(version, ClientAuth::Required);

    SECTION("a good certificate is accepted and described") {
        Outcome o = connect(*backend, so, version, &f.client);
        REQUIRE(o.result.ok());
        const PeerIdentity& id = o.server_info.peer;
        CHECK(id.presented);
        CHECK(id.verified);
        CHECK(id.subject == "CN=client-good,O=acme");
        CHECK(id.cn == "client-good");
        CHECK(id.san_uri == std::vector<std::string>{"spiffe://example.org/ns/default/sa/web"});
        CHECK(id.san_dns == std::vector<std::string>{"client.example.com"});
        CHECK(id.sha256_hex == sha256Hex(pemToDer(f.client.cert_pem)));
        CHECK(o.client_error.empty());
    }
    SECTION("a certificate without extKeyUsage is fine") {
        CHECK(connect(*backend, so, version, &f.client_no_eku).result.ok());
    }
    SECTION("no certificate") {
        Outcome o = connect(*backend, so, version, nullptr);
        CHECK(o.result.server == Result::Error);
        CHECK(o.server_error == "handshake failed: client certificate required");
        CHECK(o.client_error == (version == "1.3" ? "peer sent an alert: certificate_required"
                                                  : "peer sent an alert: handshake_failure"));
    }
    SECTION("signed by another CA") {
        Outcome o = connect(*backend, so, version, &f.client_other_ca);
        CHECK(o.result.server == Result::Error);
        CHECK(o.server_error == "handshake failed: certificate verify failed (unknown CA)");
        CHECK(o.client_error == "peer sent an alert: unknown_ca");
    }
    SECTION("expired") {
        Outcome o = connect(*backend, so, version, &f.client_expired);
        CHECK(o.result.server == Result::Error);
        CHECK(o.server_error == "handshake failed: certificate expired");
        CHECK(o.client_error == "peer sent an alert: certificate_expired");
    }
    SECTION("not yet valid") {
        Outcome o = connect(*backend, so, version, &f.client_future);
        CHECK(o.result.server == Result::Error);
        CHECK(o.server_error == "handshake failed: certificate not yet valid");
        CHECK(o.client_error == "peer sent an alert: bad_certificate");
    }
    SECTION("extKeyUsage serverAuth only") {
        Outcome o = connect(*backend, so, version, &f.client_server_eku);
        CHECK(o.result.server == Result::Error);
        CHECK(o.server_error == "handshake failed: certificate key usage does not allow this use");
        CHECK(o.client_error == "peer sent an alert: unsupported_certificate");
    }
}

TEST_CASE("client certificate optional", "[tls][mtls]") {
    SIDECAR_BACKEND(backend);
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    const Fixture& f = fixture();
    const ServerOptions so = mtls(version, ClientAuth::Optional);

    SECTION("none presented") {
        Outcome o = connect(*backend, so, version, nullptr);
        REQUIRE(o.result.ok());
        CHECK_FALSE(o.server_info.peer.presented);
        CHECK_FALSE(o.server_info.peer.verified);
    }
    SECTION("a good one") {
        Outcome o = connect(*backend, so, version, &f.client);
        REQUIRE(o.result.ok());
        CHECK(o.server_info.peer.presented);
        CHECK(o.server_info.peer.verified);
    }
    SECTION("a bad one is still refused") {
        Outcome o = connect(*backend, so, version, &f.client_expired);
        CHECK(o.result.server == Result::Error);
        CHECK(o.server_error == "handshake failed: certificate expired");
    }
}

TEST_CASE("client allow list", "[tls][mtls][allow]") {
    SIDECAR_BACKEND(backend);
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    const Fixture& f = fixture();

    SECTION("SAN URI hit") {
        AllowList allow;
        allow.san_uri = {"spiffe://example.org/ns/other/sa/x",
                         "spiffe://example.org/ns/default/sa/web"};
        Outcome o =
            connect(*backend, mtls(version, ClientAuth::Required, allow), version, &f.client);
        REQUIRE(o.result.ok());
        CHECK(o.server_info.peer.san_uri.at(0) == "spiffe://example.org/ns/default/sa/web");
        CHECK(o.server_info.peer.verified);
    }
    SECTION("SAN DNS hit, case-insensitive") {
        AllowList allow;
        allow.san_dns = {"Client.Example.COM"};
        CHECK(connect(*backend, mtls(version, ClientAuth::Required, allow), version, &f.client)
                  .result.ok());
    }
    SECTION("CN hit") {
        AllowList allow;
        allow.cn = {"cn-only"};
        allow.san_uri = {"spiffe://example.org/ns/nobody"};
        Outcome o = connect(*backend, mtls(version, ClientAuth::Required, allow), version,
                            &f.client_cn_only);
        REQUIRE(o.result.ok());
        CHECK(o.server_info.peer.cn == "cn-only");
    }
    SECTION("miss") {
        AllowList allow;
        allow.san_uri = {"spiffe://example.org/ns/default/sa/db"};
        allow.san_dns = {"db.example.com"};
        allow.cn = {"client-good-but-not-quite"};
        Outcome o =
            connect(*backend, mtls(version, ClientAuth::Required, allow), version, &f.client);
        CHECK(o.result.server == Result::Error);
        CHECK(o.server_error == "client certificate not allowed");
        CHECK(o.client_error == allowListRefusalAlert(*backend));
    }
    SECTION("miss under optional") {
        AllowList allow;
        allow.cn = {"someone-else"};
        Outcome o =
            connect(*backend, mtls(version, ClientAuth::Optional, allow), version, &f.client);
        CHECK(o.result.server == Result::Error);
        CHECK(o.server_error == "client certificate not allowed");
        CHECK(o.client_error == allowListRefusalAlert(*backend));
    }
    SECTION("an untrusted certificate is reported as untrusted, not as not allowed") {
        AllowList allow;
        allow.cn = {"someone-else"};
        Outcome o = connect(*backend, mtls(version, ClientAuth::Required, allow), version,
                            &f.client_other_ca);
        CHECK(o.server_error == "handshake failed: certificate verify failed (unknown CA)");
    }
}

TEST_CASE("client auth needs a CA bundle", "[tls][mtls]") {
    SIDECAR_BACKEND(backend);
    std::string error;
    ServerOptions so = serverOptions();
    so.client_auth = ClientAuth::Required;
    CHECK_FALSE(backend->serverContext(so, &error));
    CHECK(error.find("client_ca") != std::string::npos);
    so.client_ca_path = "/nonexistent/ca.pem";
    CHECK_FALSE(backend->serverContext(so, &error));
    CHECK(error == "cannot read /nonexistent/ca.pem: No such file or directory");
}

}  // namespace
}  // namespace sidecar::tls::test
