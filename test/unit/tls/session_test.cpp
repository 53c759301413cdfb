// Sessions handshaking with each other in memory: versions, data in both directions, ALPN,
// SNI, server verification by the client, close_notify and non-TLS input.

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "harness.h"

namespace sidecar::tls::test {
namespace {

struct Pair {
    std::shared_ptr<Context> server_ctx;
    std::shared_ptr<Context> client_ctx;
    std::unique_ptr<Session> server;
    std::unique_ptr<Session> client;
};

Pair makePair(Backend& backend, const ServerOptions& so, const ClientOptions& co) {
    Pair p;
    std::string error;
    p.server_ctx = backend.serverContext(so, &error);
    INFO(error);
    REQUIRE(p.server_ctx);
    p.client_ctx = backend.clientContext(co, &error);
    INFO(error);
    REQUIRE(p.client_ctx);
    p.server = p.server_ctx->newSession();
    p.client = p.client_ctx->newSession();
    return p;
}

std::string pattern(size_t n, uint32_t seed) {
    std::string s(n, '\0');
    uint32_t x = seed;
    for (char& c : s) {
        x = x * 1664525u + 1013904223u;
        c = char(x >> 24);
    }
    return s;
}

// Writes `data` in awkward pieces and feeds the ciphertext across in other awkward pieces,
// reading with a buffer that never matches a record size.
std::string transfer(Session& from, Session& to, const std::string& data) {
    static const size_t writeSizes[] = {1, 7, 1000, 4096, 16383, 16384, 16385, 65537, 3};
    static const size_t feedSizes[] = {1, 13, 577, 3000, 17000, 5, 16389};
    std::string got;
    size_t off = 0, w = 0, f = 0;
    std::vector<uint8_t> cipher;
    std::vector<uint8_t> buf(4097);
    while (off < data.size()) {
        size_t n = std::min(writeSizes[w++ % std::size(writeSizes)], data.size() - off);
        size_t written = 0;
        REQUIRE(from.writePlain(reinterpret_cast<const uint8_t*>(data.data()) + off, n, &written) ==
                Result::Ok);
        REQUIRE(written == n);
        off += n;
        cipher.clear();
        from.takeCiphertext(cipher);
        for (size_t c = 0; c < cipher.size();) {
            size_t piece = std::min(feedSizes[f++ % std::size(feedSizes)], cipher.size() - c);
            to.feedCiphertext(cipher.data() + c, piece);
            c += piece;
            for (;;) {
                size_t r = 0;
                Result res = to.readPlain(buf.data(), buf.size(), &r);
                if (res != Result::Ok) {
                    REQUIRE(res == Result::WantRead);
                    break;
                }
                got.append(reinterpret_cast<const char*>(buf.data()), r);
            }
        }
    }
    CHECK_FALSE(to.hasBufferedInput());
    return got;
}

TEST_CASE("handshake, 1 MiB each way and close_notify", "[tls][session]") {
    SIDECAR_BACKEND(backend);
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    // 1.3: the server's floor forces it; 1.2: the client's ceiling does.
    Pair p = makePair(*backend, serverOptions(version), clientOptions("localhost", version));
    REQUIRE(handshake(*p.client, *p.server).ok());
    CHECK(p.client->handshakeComplete());
    CHECK(p.server->handshakeComplete());

    for (Session* s : {p.client.get(), p.server.get()}) {
        CHECK(s->info().version == "TLSv" + version);
        CHECK_FALSE(s->info().resumed);
        CHECK(s->info().alpn.empty());
        CHECK(s->info().cipher.rfind("TLS_", 0) == 0);
    }
    if (version == "1.3") CHECK(p.server->info().cipher == "TLS_AES_128_GCM_SHA256");
    if (version == "1.2")
        CHECK(p.server->info().cipher == "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
    CHECK(p.server->info().sni == "localhost");
    CHECK_FALSE(p.server->info().peer.presented);
    const PeerIdentity& server = p.client->info().peer;
    CHECK(server.presented);
    CHECK(server.verified);
    CHECK(server.cn == "localhost");
    CHECK(server.subject == "CN=localhost,O=sidecar tests");
    std::vector<std::string> dns = server.san_dns;
    std::sort(dns.begin(), dns.end());
    CHECK(dns == std::vector<std::string>{"localhost", "www.example.com"});
    CHECK(server.sha256_hex == sha256Hex(pemToDer(fixture().server.cert_pem)));

    CHECK(send(*p.client, *p.server, "ping") == "ping");
    CHECK(send(*p.server, *p.client, "pong") == "pong");

    const std::string up = pattern(1 << 20, 1);
    const std::string down = pattern(1 << 20, 2);
    CHECK(transfer(*p.client, *p.server, up) == up);
    CHECK(transfer(*p.server, *p.client, down) == down);

    p.client->shutdown();
    move(*p.client, *p.server);
    Result last = Result::Ok;
    CHECK(readAvailable(*p.server, &last).empty());
    CHECK(last == Result::Eof);
    size_t n = 1;
    uint8_t b[16];
    CHECK(p.server->readPlain(b, sizeof b, &n) == Result::Eof);  // stays at Eof
    CHECK(n == 0);
    // The other direction is still open until the server closes it too.
    CHECK(send(*p.server, *p.client, "last words") == "last words");
    p.server->shutdown();
    move(*p.server, *p.client);
    readAvailable(*p.client, &last);
    CHECK(last == Result::Eof);
}

TEST_CASE("plaintext buffered inside the session is reported and drained", "[tls][session]") {
    SIDECAR_BACKEND(backend);
    Pair p = makePair(*backend, serverOptions(), clientOptions());
    REQUIRE(handshake(*p.client, *p.server).ok());
    readAvailable(*p.client);  // session tickets, if any

    const std::string a = pattern(3000, 3), b = pattern(5000, 4);
    size_t n = 0;
    REQUIRE(p.client->writePlain(reinterpret_cast<const uint8_t*>(a.data()), a.size(), &n) ==
            Result::Ok);
    REQUIRE(p.client->writePlain(reinterpret_cast<const uint8_t*>(b.data()), b.size(), &n) ==
            Result::Ok);
    CHECK_FALSE(p.server->hasBufferedInput());
    move(*p.client, *p.server);
    CHECK(p.server->hasBufferedInput());

    // A reader paused after 100 bytes must find the rest without new input.
    std::string got;
    uint8_t buf[100];
    REQUIRE(p.server->readPlain(buf, sizeof buf, &n) == Result::Ok);
    got.append(reinterpret_cast<char*>(buf), n);
    while (p.server->hasBufferedInput()) {
        Result r = p.server->readPlain(buf, sizeof buf, &n);
        if (r == Result::WantRead) break;
        REQUIRE(r == Result::Ok);
        got.append(reinterpret_cast<char*>(buf), n);
    }
    CHECK(got == a + b);
    CHECK(p.server->readPlain(buf, sizeof buf, &n) == Result::WantRead);
}

TEST_CASE("takeCiphertext hands storage back and forth without reallocating", "[tls][session]") {
    SIDECAR_BACKEND(backend);
    Pair p = makePair(*backend, serverOptions(), clientOptions());
    REQUIRE(handshake(*p.client, *p.server).ok());
    readAvailable(*p.client);

    std::vector<uint8_t> spare;
    spare.reserve(64 * 1024);
    const uint8_t* storage = spare.data();
    std::vector<uint8_t> first;
    send(*p.client, *p.server, "x");  // leaves the session's output empty
    p.client->takeCiphertext(spare);  // session takes `spare`'s storage
    size_t n = 0;
    const std::string data(1000, 'y');
    REQUIRE(p.client->writePlain(reinterpret_cast<const uint8_t*>(data.data()), data.size(), &n) ==
            Result::Ok);
    REQUIRE(p.client->hasCiphertext());
    p.client->takeCiphertext(first);
    CHECK(first.data() == storage);  // the records were written into the donated capacity
    CHECK(first.size() > data.size());
    CHECK_FALSE(p.client->hasCiphertext());
}

TEST_CASE("ALPN: server preference, no overlap fails, absent means none", "[tls][session][alpn]") {
    SIDECAR_BACKEND(backend);
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    ServerOptions so = serverOptions(version);
    so.alpn = {"h2", "http/1.1"};

    SECTION("one common protocol") {
        ClientOptions co = clientOptions("localhost", version);
        co.alpn = {"http/1.1"};
        Pair p = makePair(*backend, so, co);
        REQUIRE(handshake(*p.client, *p.server).ok());
        CHECK(p.server->info().alpn == "http/1.1");
        CHECK(p.client->info().alpn == "http/1.1");
    }
    SECTION("the server's order wins") {
        ClientOptions co = clientOptions("localhost", version);
        co.alpn = {"http/1.1", "h2"};
        Pair p = makePair(*backend, so, co);
        REQUIRE(handshake(*p.client, *p.server).ok());
        CHECK(p.server->info().alpn == "h2");
        CHECK(p.client->info().alpn == "h2");
    }
    SECTION("no overlap") {
        ClientOptions co = clientOptions("localhost", version);
        co.alpn = {"spdy/3"};
        Pair p = makePair(*backend, so, co);
        HandshakeResult r = handshake(*p.client, *p.server);
        CHECK(r.server == Result::Error);
        CHECK(std::string(p.server->error()).find("ALPN") != std::string::npos);
        CHECK(r.client == Result::Error);
        CHECK(std::string(p.client->error()) == "peer sent an alert: no_application_protocol");
    }
    SECTION("client offers none") {
        Pair p = makePair(*backend, so, clientOptions("localhost", version));
        REQUIRE(handshake(*p.client, *p.server).ok());
        CHECK(p.server->info().alpn.empty());
    }
}

TEST_CASE("SNI selects the certificate", "[tls][session][sni]") {
    SIDECAR_BACKEND(backend);
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    const Fixture& f = fixture();
    ServerOptions so = serverOptions(version);
    so.sni.push_back({{"a.example.com"}, pemPair(f.server_a)});
    so.sni.push_back({{"*.wild.example.com"}, pemPair(f.server_wild)});
    so.sni.push_back({{}, pemPair(f.server_rsa)});  // names taken from the certificate

    struct Case {
        std::string name;
        std::string expect_cn;
    };
    const Case cases[] = {
        {"a.example.com", "a.example.com"},
        {"A.Example.COM", "a.example.com"},
        {"x.wild.example.com", "*.wild.example.com"},
        {"rsa.example.com", "rsa.example.com"},
        {"www.example.com", "localhost"},  // no entry: the default pair
        {"localhost", "localhost"},
    };
    for (const Case& c : cases) {
        INFO("server_name " << c.name);
        Pair p = makePair(*backend, so, clientOptions(c.name, version));
        HandshakeResult r = handshake(*p.client, *p.server);
        INFO(p.client->error() << " / " << p.server->error());
        REQUIRE(r.ok());
        CHECK(p.client->info().peer.cn == c.expect_cn);
        CHECK(p.server->info().sni == c.name);
        if (c.expect_cn == "rsa.example.com" && version == "1.2")
            CHECK(p.client->info().cipher.find("ECDHE_RSA") != std::string::npos);
    }

    SECTION("a wildcard covers exactly one label") {
        Pair p = makePair(*backend, so, clientOptions("x.y.wild.example.com", version));
        HandshakeResult r = handshake(*p.client, *p.server);
        // The default certificate is served, and it is not valid for that name.
        CHECK(r.client == Result::Error);
        CHECK(std::string(p.client->error()) ==
              "handshake failed: certificate does not match the server name");
        CHECK(p.server->info().sni == "x.y.wild.example.com");
    }
    std::string error;
    CHECK(backend->serverContext(so, &error)->certificates().size() == 4);
}

TEST_CASE("the client verifies the server", "[tls][session][verify]") {
    SIDECAR_BACKEND(backend);
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);

    SECTION("hostname mismatch") {
        Pair p =
            makePair(*backend, serverOptions(version), clientOptions("other.example.org", version));
        HandshakeResult r = handshake(*p.client, *p.server);
        CHECK(r.client == Result::Error);
        CHECK(std::string(p.client->error()) ==
              "handshake failed: certificate does not match the server name");
        CHECK(r.server == Result::Error);
        CHECK(std::string(p.server->error()) == "peer sent an alert: bad_certificate");
    }
    SECTION("IP address SAN") {
        Pair p = makePair(*backend, serverOptions(version), clientOptions("127.0.0.1", version));
        CHECK(handshake(*p.client, *p.server).ok());
    }
    SECTION("unknown CA") {
        ClientOptions co = clientOptions("localhost", version);
        co.ca_path = fixture().other_ca_path;
        Pair p = makePair(*backend, serverOptions(version), co);
        HandshakeResult r = handshake(*p.client, *p.server);
        CHECK(r.client == Result::Error);
        CHECK(std::string(p.client->error()).find("certificate verify failed") !=
              std::string::npos);
        CHECK(std::string(p.server->error()) == "peer sent an alert: unknown_ca");
    }
    SECTION("bad client options") {
        std::string error;
        ClientOptions co = clientOptions("");
        CHECK_FALSE(backend->clientContext(co, &error));
        CHECK(error.find("server_name") != std::string::npos);
        co = clientOptions();
        co.ca_path = "/nonexistent/ca.pem";
        CHECK_FALSE(backend->clientContext(co, &error));
        CHECK(error == "cannot read /nonexistent/ca.pem: No such file or directory");
        co = clientOptions();
        co.min_version = "1.1";
        CHECK_FALSE(backend->clientContext(co, &error));
        CHECK(error.find("1.1") != std::string::npos);
    }
}

// Calls handshake(budget) until it needs input or ends; counts the calls that stopped early.
Result handshakeInPieces(Session& s, uint64_t budget_ns, int* early_stops) {
    for (;;) {
        Result r = s.handshake(budget_ns);
        if (r != Result::WantWrite) return r;
        ++*early_stops;
    }
}

TEST_CASE("a handshake with a budget stops between states and completes the same", "[tls][session]") {
    SIDECAR_BACKEND(backend);
    const std::string version = GENERATE(as<std::string>{}, "1.2", "1.3");
    INFO("TLS " << version);
    Pair p = makePair(*backend, serverOptions(version), clientOptions("localhost", version));
    int client_stops = 0, server_stops = 0;
    Result rc = Result::WantRead, rs = Result::WantRead;
    for (int round = 0; round < 10 && !(rc == Result::Ok && rs == Result::Ok); ++round) {
        if (rc != Result::Ok) rc = handshakeInPieces(*p.client, 0, &client_stops);
        move(*p.client, *p.server);
        if (rs != Result::Ok) rs = handshakeInPieces(*p.server, 0, &server_stops);
        move(*p.server, *p.client);
        REQUIRE(rc != Result::Error);
        REQUIRE(rs != Result::Error);
    }
    REQUIRE(rc == Result::Ok);
    REQUIRE(rs == Result::Ok);
    if (backend->name() == std::string("mbedtls")) {
        // Each state is a piece: the server's flight alone is several.
        CHECK(server_stops >= 3);
        CHECK(client_stops >= 3);
    } else {
        // OpenSSL writes a flight in one call.
        CHECK(server_stops == 0);
        CHECK(client_stops == 0);
    }
    CHECK(p.server->info().version == "TLSv" + version);
    CHECK(p.client->info().peer.verified);
    CHECK(send(*p.client, *p.server, "ping") == "ping");
    CHECK(send(*p.server, *p.client, "pong") == "pong");
}

TEST_CASE("versions: a floor of 1.3 refuses a 1.2-only client", "[tls][session]") {
    SIDECAR_BACKEND(backend);
    Pair p = makePair(*backend, serverOptions("1.3"), clientOptions("localhost", "1.2"));
    HandshakeResult r = handshake(*p.client, *p.server);
    CHECK(r.server == Result::Error);
    CHECK(std::string(p.server->error()) == "handshake failed: no common TLS version");
    CHECK(r.client == Result::Error);
    CHECK(std::string(p.client->error()) == "peer sent an alert: protocol_version");

    std::string error;
    CHECK_FALSE(backend->serverContext(serverOptions("1.0"), &error));
    CHECK(error.find("\"1.0\"") != std::string::npos);
}

TEST_CASE("plain HTTP instead of TLS is named as such", "[tls][session]") {
    SIDECAR_BACKEND(backend);
    std::string error;
    auto ctx = backend->serverContext(serverOptions(), &error);
    REQUIRE(ctx);

    auto s = ctx->newSession();
    const char request[] = "GET / HTTP/1.1\r\n";
    s->feedCiphertext(reinterpret_cast<const uint8_t*>(request), std::strlen(request));
    CHECK(s->handshake() == Result::Error);
    CHECK(std::string(s->error()) == "client sent plain HTTP to a TLS port");
    CHECK(s->handshake() == Result::Error);  // stays failed

    auto g = ctx->newSession();
    const uint8_t junk[] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07};
    g->feedCiphertext(junk, sizeof junk);
    CHECK(g->handshake() == Result::Error);
    CHECK(std::string(g->error()) == "not a TLS handshake");

    // The other way round: a client session talking to a plain HTTP server.
    auto cctx = backend->clientContext(clientOptions(), &error);
    REQUIRE(cctx);
    auto c = cctx->newSession();
    CHECK(c->handshake() == Result::WantRead);
    CHECK(c->hasCiphertext());  // the ClientHello
    const char response[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
    c->feedCiphertext(reinterpret_cast<const uint8_t*>(response), std::strlen(response));
    CHECK(c->handshake() == Result::Error);
    CHECK(std::string(c->error()) == "server answered with plain HTTP, not TLS");

    auto w = ctx->newSession();
    w->feedCiphertext(reinterpret_cast<const uint8_t*>(request), 3);  // not even a record header
    CHECK(w->handshake() == Result::WantRead);
}

TEST_CASE("sessions outlive their context and backend", "[tls][session]") {
    SIDECAR_BACKEND(backend);
    std::string error;
    auto sctx = backend->serverContext(serverOptions(), &error);
    auto cctx = backend->clientContext(clientOptions(), &error);
    REQUIRE(sctx);
    REQUIRE(cctx);
    auto server = sctx->newSession();
    auto client = cctx->newSession();
    sctx.reset();
    cctx.reset();
    backend.reset();
    REQUIRE(handshake(*client, *server).ok());
    CHECK(send(*client, *server, "still here") == "still here");
}

}  // namespace
}  // namespace sidecar::tls::test
