// Handshakes across libraries: a client session of one backend with a server session of
// another, both ways round, for each feature. Skipped in a build with a single backend.

#include <algorithm>
#include <string>
#include <vector>

#include "harness.h"

namespace sidecar::tls::test {
namespace {

// Declares `client_backend` and `server_backend`, one run per ordered pair of backends.
#define SIDECAR_BACKEND_PAIR()                                                    \
    if (crossBackendPairs().empty()) SKIP("this build has a single TLS backend"); \
    const BackendPair& pair_ = GENERATE(from_range(crossBackendPairs()));         \
    INFO("client " << pair_.client.name << ", server " << pair_.server.name);     \
    std::unique_ptr<Backend> client_backend = pair_.client.make();                \
    std::unique_ptr<Backend> server_backend = pair_.server.make()

struct Pair {
    std::shared_ptr<Context> server_ctx;
    std::shared_ptr<Context> client_ctx;
    std::unique_ptr<Session> server;
    std::unique_ptr<Session> client;
};

Pair makePair(Backend& client_backend, Backend& server_backend, const ServerOptions& so,
              const ClientOptions& co) {
    Pair p;
    std::string error;
    p.server_ctx = server_backend.serverContext(so, &error);
    INFO(error);
    REQUIRE(p.server_ctx);
    p.client_ctx = client_backend.clientContext(co, &error);
    INFO(error);
    REQUIRE(p.client_ctx);
    p.server = p.server_ctx->newSession();
    p.client = p.client_ctx->newSession();
    return p;
}

// A fresh pair of sessions from existing contexts.
void renew(Pair& p) {
    p.server = p.server_ctx->newSession();
    p.client = p.client_ctx->newSession();
}

ServerOptions mtls(const std::string& version, AllowList allow = {}) {
    ServerOptions so = serverOptions(version);
    so.client_auth = ClientAuth::Required;
    so.client_ca_path = fixture().ca_path;
    so.allow = std::move(allow);
    return so;
}

std::string clientError(Session& client, const HandshakeResult& r) {
    return r.client == Result::Error ? client.error() : peerError(client);
}

TEST_CASE("across backends: handshake, data both ways, close_notify", "[tls][cross]") {
    SIDECAR_BACKEND_PAIR();
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    Pair p = makePair(*client_backend, *server_backend, serverOptions(version),
                      clientOptions("localhost", version));
    HandshakeResult r = handshake(*p.client, *p.server);
    INFO(p.client->error() << " / " << p.server->error());
    REQUIRE(r.ok());
    CHECK(p.client->info().version == "TLSv" + version);
    CHECK(p.server->info().version == "TLSv" + version);
    CHECK(p.client->info().cipher == p.server->info().cipher);
    CHECK(p.server->info().sni == "localhost");
    const PeerIdentity& id = p.client->info().peer;
    CHECK(id.verified);
    CHECK(id.subject == "CN=localhost,O=sidecar tests");
    CHECK(id.sha256_hex == sha256Hex(pemToDer(fixture().server.cert_pem)));

    CHECK(send(*p.client, *p.server, "ping") == "ping");
    CHECK(send(*p.server, *p.client, "pong") == "pong");
    const std::string big(100000, 'z');
    CHECK(send(*p.client, *p.server, big) == big);
    CHECK(send(*p.server, *p.client, big) == big);

    p.client->shutdown();
    move(*p.client, *p.server);
    Result last = Result::Ok;
    readAvailable(*p.server, &last);
    CHECK(last == Result::Eof);
    p.server->shutdown();
    move(*p.server, *p.client);
    readAvailable(*p.client, &last);
    CHECK(last == Result::Eof);
}

TEST_CASE("across backends: ALPN", "[tls][cross][alpn]") {
    SIDECAR_BACKEND_PAIR();
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    ServerOptions so = serverOptions(version);
    so.alpn = {"h2", "http/1.1"};
    ClientOptions co = clientOptions("localhost", version);

    SECTION("the server's order wins") {
        co.alpn = {"http/1.1", "h2"};
        Pair p = makePair(*client_backend, *server_backend, so, co);
        REQUIRE(handshake(*p.client, *p.server).ok());
        CHECK(p.server->info().alpn == "h2");
        CHECK(p.client->info().alpn == "h2");
    }
    SECTION("no overlap") {
        co.alpn = {"spdy/3"};
        Pair p = makePair(*client_backend, *server_backend, so, co);
        HandshakeResult r = handshake(*p.client, *p.server);
        CHECK(r.server == Result::Error);
        CHECK(std::string(p.server->error()) == "handshake failed: no common ALPN protocol");
        CHECK(clientError(*p.client, r) == "peer sent an alert: no_application_protocol");
    }
}

TEST_CASE("across backends: SNI selects the certificate", "[tls][cross][sni]") {
    SIDECAR_BACKEND_PAIR();
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    const Fixture& f = fixture();
    ServerOptions so = serverOptions(version);
    so.sni.push_back({{"a.example.com"}, pemPair(f.server_a)});
    so.sni.push_back({{"*.wild.example.com"}, pemPair(f.server_wild)});
    so.sni.push_back({{}, pemPair(f.server_rsa)});
    const std::pair<std::string, std::string> cases[] = {
        {"A.example.com", "a.example.com"},
        {"x.wild.example.com", "*.wild.example.com"},
        {"rsa.example.com", "rsa.example.com"},
        {"www.example.com", "localhost"},
    };
    for (const auto& [name, cn] : cases) {
        INFO("server_name " << name);
        Pair p = makePair(*client_backend, *server_backend, so, clientOptions(name, version));
        HandshakeResult r = handshake(*p.client, *p.server);
        INFO(p.client->error() << " / " << p.server->error());
        REQUIRE(r.ok());
        CHECK(p.client->info().peer.cn == cn);
        CHECK(p.server->info().sni == name);
    }
}

TEST_CASE("across backends: client certificates and the allow list", "[tls][cross][mtls]") {
    SIDECAR_BACKEND_PAIR();
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    const Fixture& f = fixture();
    ClientOptions co = clientOptions("localhost", version);
    co.pair = pemPair(f.client);

    SECTION("allowed by SAN URI, identity as the server's backend reports it") {
        AllowList allow;
        allow.san_uri = {"spiffe://example.org/ns/default/sa/web"};
        Pair p = makePair(*client_backend, *server_backend, mtls(version, allow), co);
        REQUIRE(handshake(*p.client, *p.server).ok());
        CHECK(send(*p.client, *p.server, "hello") == "hello");
        const PeerIdentity& id = p.server->info().peer;
        CHECK(id.presented);
        CHECK(id.verified);
        CHECK(id.subject == "CN=client-good,O=acme");
        CHECK(id.cn == "client-good");
        CHECK(id.san_uri == std::vector<std::string>{"spiffe://example.org/ns/default/sa/web"});
        CHECK(id.san_dns == std::vector<std::string>{"client.example.com"});
        CHECK(id.sha256_hex == sha256Hex(pemToDer(f.client.cert_pem)));
    }
    SECTION("not on the allow list") {
        AllowList allow;
        allow.cn = {"someone-else"};
        Pair p = makePair(*client_backend, *server_backend, mtls(version, allow), co);
        HandshakeResult r = handshake(*p.client, *p.server);
        CHECK(r.server == Result::Error);
        CHECK(std::string(p.server->error()) == "client certificate not allowed");
        CHECK(clientError(*p.client, r) == allowListRefusalAlert(*server_backend));
    }
}

TEST_CASE("across backends: resumption keeps the client's identity", "[tls][cross][resumption]") {
    SIDECAR_BACKEND_PAIR();
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    AllowList allow;
    allow.san_uri = {"spiffe://example.org/ns/default/sa/web"};
    ClientOptions co = clientOptions("localhost", version);
    co.pair = pemPair(fixture().client);
    Pair p = makePair(*client_backend, *server_backend, mtls(version, allow), co);
    for (int i = 0; i < 3; ++i) {
        INFO("connection " << i);
        if (i > 0) renew(p);
        HandshakeResult r = handshake(*p.client, *p.server);
        INFO(p.client->error() << " / " << p.server->error());
        REQUIRE(r.ok());
        CHECK(send(*p.server, *p.client, "hello") == "hello");  // a TLS 1.3 ticket arrives
        CHECK(send(*p.client, *p.server, "hi") == "hi");
        CHECK(p.server->info().resumed == (i > 0));
        CHECK(p.client->info().resumed == (i > 0));
        CHECK(p.server->info().peer.cn == "client-good");
        CHECK(p.server->info().peer.verified);
    }
}

TEST_CASE("across backends: verification failures read the same", "[tls][cross][verify]") {
    SIDECAR_BACKEND_PAIR();
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    const Fixture& f = fixture();

    SECTION("server certificate for another name") {
        Pair p = makePair(*client_backend, *server_backend, serverOptions(version),
                          clientOptions("other.example.org", version));
        HandshakeResult r = handshake(*p.client, *p.server);
        CHECK(r.client == Result::Error);
        CHECK(std::string(p.client->error()) ==
              "handshake failed: certificate does not match the server name");
        CHECK(std::string(p.server->error()) == "peer sent an alert: bad_certificate");
    }
    SECTION("server certificate from an unknown CA") {
        ClientOptions co = clientOptions("localhost", version);
        co.ca_path = f.other_ca_path;
        Pair p = makePair(*client_backend, *server_backend, serverOptions(version), co);
        HandshakeResult r = handshake(*p.client, *p.server);
        CHECK(r.client == Result::Error);
        CHECK(std::string(p.client->error()) ==
              "handshake failed: certificate verify failed (unknown CA)");
        CHECK(std::string(p.server->error()) == "peer sent an alert: unknown_ca");
    }
    SECTION("no client certificate") {
        Pair p = makePair(*client_backend, *server_backend, mtls(version),
                          clientOptions("localhost", version));
        HandshakeResult r = handshake(*p.client, *p.server);
        CHECK(r.server == Result::Error);
        CHECK(std::string(p.server->error()) == "handshake failed: client certificate required");
        CHECK(clientError(*p.client, r) == (version == "1.3"
                                                ? "peer sent an alert: certificate_required"
                                                : "peer sent an alert: handshake_failure"));
    }
    SECTION("expired client certificate") {
        ClientOptions co = clientOptions("localhost", version);
        co.pair = pemPair(f.client_expired);
        Pair p = makePair(*client_backend, *server_backend, mtls(version), co);
        HandshakeResult r = handshake(*p.client, *p.server);
        CHECK(r.server == Result::Error);
        CHECK(std::string(p.server->error()) == "handshake failed: certificate expired");
        CHECK(clientError(*p.client, r) == "peer sent an alert: certificate_expired");
    }
    SECTION("client certificate from another CA") {
        ClientOptions co = clientOptions("localhost", version);
        co.pair = pemPair(f.client_other_ca);
        Pair p = makePair(*client_backend, *server_backend, mtls(version), co);
        HandshakeResult r = handshake(*p.client, *p.server);
        CHECK(r.server == Result::Error);
        CHECK(std::string(p.server->error()) ==
              "handshake failed: certificate verify failed (unknown CA)");
        CHECK(clientError(*p.client, r) == "peer sent an alert: unknown_ca");
    }
}

}  // namespace
}  // namespace sidecar::tls::test
