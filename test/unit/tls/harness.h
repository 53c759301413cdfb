#pragma once
// Shared pieces of the TLS suite. Every test runs once per backend in backendFactories():
//
//     TEST_CASE("...") {
//         SIDECAR_BACKEND(backend);   // GENERATE over the factories
//         ...
//     }
//
// Sessions are paired in memory: what one side puts in takeCiphertext() is fed to the other.

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/generators/catch_generators_range.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pki.h"
#include "tls/backend.h"
#include "tls/factory.h"

namespace sidecar::tls::test {

struct BackendFactory {
    std::string name;
    std::function<std::unique_ptr<Backend>()> make;
};

// Every backend compiled into this build.
inline std::vector<BackendFactory> backendFactories() {
    std::vector<BackendFactory> out;
    for (const BackendInfo& b : compiledBackends())
        out.push_back({b.name, [name = b.name] { return makeBackend(name); }});
    return out;
}

// Declares `std::unique_ptr<Backend> var`, one run of the test case per backend.
#define SIDECAR_BACKEND(var)                                            \
    const ::sidecar::tls::test::BackendFactory& var##_factory =         \
        GENERATE(from_range(::sidecar::tls::test::backendFactories())); \
    INFO("backend: " << var##_factory.name);                            \
    std::unique_ptr<::sidecar::tls::Backend> var = var##_factory.make()

// Every ordered pair of two different compiled backends (client, server), for handshakes across
// libraries; empty in a build with one backend.
struct BackendPair {
    BackendFactory client;
    BackendFactory server;
};
inline std::vector<BackendPair> crossBackendPairs() {
    std::vector<BackendPair> out;
    for (const BackendFactory& c : backendFactories())
        for (const BackendFactory& s : backendFactories())
            if (c.name != s.name) out.push_back({c, s});
    return out;
}

// The alert a client reads when a server's allow list refuses its certificate. mbedTLS sends
// access_denied; OpenSSL can only refuse a certificate through its verification result, which it
// reports as handshake_failure.
inline std::string allowListRefusalAlert(const Backend& server) {
    return std::string(server.name()) == "openssl" ? "peer sent an alert: handshake_failure"
                                                   : "peer sent an alert: access_denied";
}

// Certificates shared by all tests (made once), and files for the options that take paths.
struct Fixture {
    std::string dir;  // temporary directory, removed at exit
    Issued ca, other_ca;
    std::string ca_path, other_ca_path;
    Issued server;             // CN=localhost; DNS localhost, www.example.com; IP 127.0.0.1
    Issued server_a;           // CN=a.example.com
    Issued server_wild;        // CN=*.wild.example.com
    Issued server_rsa;         // RSA, CN=rsa.example.com
    Issued client;             // CN=client-good; URI spiffe://example.org/ns/default/sa/web; DNS
                               // client.example.com
    Issued client_cn_only;     // CN=cn-only, no SAN
    Issued client_no_eku;      // CN=no-eku, no extKeyUsage at all
    Issued client_expired;     // validity ended yesterday
    Issued client_future;      // validity starts tomorrow
    Issued client_server_eku;  // extKeyUsage serverAuth only
    Issued client_other_ca;    // signed by other_ca
};
const Fixture& fixture();

std::string writeTempFile(const std::string& name, const std::string& content);

KeyPairSource pemPair(const Issued& issued);

ServerOptions serverOptions(const std::string& min_version = "1.2");
ClientOptions clientOptions(const std::string& server_name = "localhost",
                            const std::string& max_version = "1.3");

// Moves pending ciphertext from one session to the other, fed in pieces of at most `chunk`.
// Returns the number of bytes moved.
size_t move(Session& from, Session& to, size_t chunk = SIZE_MAX);

struct HandshakeResult {
    Result client;
    Result server;
    bool ok() const { return client == Result::Ok && server == Result::Ok; }
};
// Drives both handshakes until both finish, one fails, or nothing moves any more.
HandshakeResult handshake(Session& client, Session& server);

// Reads all plaintext available now. Stops at WantRead, Eof or Error (returned in *last).
std::string readAvailable(Session& s, Result* last = nullptr, size_t cap = 16384);

// Writes everything and moves it across; returns what the receiver read.
std::string send(Session& from, Session& to, const std::string& data);

// After a failed handshake, what the other side reports once it has seen everything sent.
const char* peerError(Session& s);

}  // namespace sidecar::tls::test
