// Session tickets: a client context resumes with the server context that issued its ticket,
// for TLS 1.2 and 1.3, with the client's identity intact; a new server context (as after a
// certificate reload) does not accept older tickets.

#include <chrono>
#include <ctime>
#include <string>
#include <thread>
#include <utility>

#include "harness.h"

namespace sidecar::tls::test {
namespace {

struct Run {
    SessionInfo server;
    SessionInfo client;
};

Run connectOnce(Context& server_ctx, Context& client_ctx) {
    auto server = server_ctx.newSession();
    auto client = client_ctx.newSession();
    HandshakeResult r = handshake(*client, *server);
    INFO(client->error() << " / " << server->error());
    REQUIRE(r.ok());
    // The client reads, which is when a TLS 1.3 client takes in its ticket.
    CHECK(send(*server, *client, "hello") == "hello");
    CHECK(send(*client, *server, "hi") == "hi");
    client->shutdown();
    move(*client, *server);
    return {server->info(), client->info()};
}

TEST_CASE("session tickets resume on the issuing context only", "[tls][resumption]") {
    SIDECAR_BACKEND(backend);
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    const bool mtls = GENERATE(false, true);
    INFO("client certificate: " << mtls);

    ServerOptions so = serverOptions(version);
    ClientOptions co = clientOptions("localhost", version);
    if (mtls) {
        so.client_auth = ClientAuth::Required;
        so.client_ca_path = fixture().ca_path;
        so.allow.san_uri = {"spiffe://example.org/ns/default/sa/web"};
        co.pair = pemPair(fixture().client);
    }
    std::string error;
    auto sctx = backend->serverContext(so, &error);
    auto cctx = backend->clientContext(co, &error);
    REQUIRE(sctx);
    REQUIRE(cctx);

    Run first = connectOnce(*sctx, *cctx);
    CHECK_FALSE(first.server.resumed);
    CHECK_FALSE(first.client.resumed);

    for (int i = 0; i < 2; ++i) {  // a resumed session hands out a fresh ticket
        INFO("resumption " << i);
        Run again = connectOnce(*sctx, *cctx);
        CHECK(again.server.resumed);
        CHECK(again.client.resumed);
        CHECK(again.server.version == "TLSv" + version);
        CHECK(again.server.sni == "localhost");
        CHECK(again.client.peer.cn == "localhost");
        if (mtls) {
            const PeerIdentity& id = again.server.peer;
            CHECK(id.presented);
            CHECK(id.verified);
            CHECK(id.cn == "client-good");
            CHECK(id.san_uri == first.server.peer.san_uri);
            CHECK(id.sha256_hex == first.server.peer.sha256_hex);
            CHECK(id.subject == first.server.peer.subject);
        } else {
            CHECK_FALSE(again.server.peer.presented);
        }
    }

    // Same options, new context: new ticket keys, so a full handshake.
    auto reloaded = backend->serverContext(so, &error);
    REQUIRE(reloaded);
    Run fresh = connectOnce(*reloaded, *cctx);
    CHECK_FALSE(fresh.server.resumed);
    CHECK_FALSE(fresh.client.resumed);
    if (mtls) CHECK(fresh.server.peer.cn == "client-good");
    // ... after which the client holds a ticket for the new context.
    CHECK(connectOnce(*reloaded, *cctx).server.resumed);
}

TEST_CASE("a resumed session is refused once the client certificate has expired",
          "[tls][resumption][mtls]") {
    SIDECAR_BACKEND(backend);
    CertSpec spec;
    spec.subject = "CN=short-lived";
    spec.uris = {"spiffe://example.org/ns/default/sa/web"};
    spec.eku = {"clientAuth"};
    spec.not_after = 2;
    const Issued shortLived = issue(spec, fixture().ca);
    const time_t expiry = std::time(nullptr) + 2;

    ServerOptions so = serverOptions();
    so.client_auth = ClientAuth::Required;
    so.client_ca_path = fixture().ca_path;
    std::string error;
    auto sctx = backend->serverContext(so, &error);
    REQUIRE(sctx);
    std::vector<std::shared_ptr<Context>> clients;
    for (const char* version : {"1.2", "1.3"}) {
        ClientOptions co = clientOptions("localhost", version);
        co.pair = pemPair(shortLived);
        clients.push_back(backend->clientContext(co, &error));
        REQUIRE(clients.back());
        CHECK_FALSE(connectOnce(*sctx, *clients.back()).server.resumed);  // issues a ticket
        CHECK(connectOnce(*sctx, *clients.back()).server.resumed);        // and it works
    }
    // X.509 validity has a resolution of seconds; wait until the certificate is past it.
    while (std::time(nullptr) <= expiry)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (const auto& cctx : clients) {
        auto server = sctx->newSession();
        auto client = cctx->newSession();
        HandshakeResult r = handshake(*client, *server);
        CHECK(r.server == Result::Error);
        CHECK(std::string(server->error()) == "handshake failed: certificate expired");
        CHECK(std::string(peerError(*client)) == "peer sent an alert: certificate_expired");
    }
}

TEST_CASE("no resumption with tickets switched off", "[tls][resumption]") {
    SIDECAR_BACKEND(backend);
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    ServerOptions so = serverOptions(version);
    so.session_tickets = false;
    std::string error;
    auto sctx = backend->serverContext(so, &error);
    auto cctx = backend->clientContext(clientOptions("localhost", version), &error);
    REQUIRE(sctx);
    REQUIRE(cctx);
    connectOnce(*sctx, *cctx);
    Run again = connectOnce(*sctx, *cctx);
    CHECK_FALSE(again.server.resumed);
    CHECK_FALSE(again.client.resumed);
}

}  // namespace
}  // namespace sidecar::tls::test
