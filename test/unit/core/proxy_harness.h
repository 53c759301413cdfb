#pragma once

// Runs a real core::Server on a real uv loop inside the test process. Everything the test plays
// (clients, the app behind the proxy) is a plain non-blocking loopback socket watched by a
// uv_poll_t on the same loop, so the loop wakes for their bytes as it does for the proxy's own,
// and a test waits with runUntil(predicate) instead of sleeping.
//
//     Harness h;
//     App& app = h.app();
//     h.start(listenerYaml({.upstream_port = app.port()}));
//     Peer& c = h.connect();
//     c.write("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
//     REQUIRE(h.runUntil([&] { return app.accepted() == 1; }));

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/server.h"
#include "tls/backend.h"
#include "tls/factory.h"

namespace sidecar::core::test {

// One end of a loopback TCP connection played by the test.
class Peer {
public:
    Peer(uv_loop_t* loop, int fd);
    ~Peer();  // closes the socket (the watcher is freed in its close callback)
    Peer(const Peer&) = delete;
    Peer& operator=(const Peer&) = delete;

    // Connects to 127.0.0.1:port. A receive buffer size > 0 is set before connecting.
    static std::unique_ptr<Peer> connectTo(uv_loop_t* loop, uint16_t port, int rcvbuf = 0);

    // Queues bytes; what the socket does not take at once leaves when it becomes writable.
    void write(std::string_view bytes);
    // Queues n filler bytes without holding them in memory.
    void writeFiller(size_t n);
    void shutdownWrite();
    // A paused peer leaves what arrives in its kernel receive buffer.
    void pauseReading();
    void resumeReading();
    // Counts received bytes without keeping them (large transfers).
    void discardInput() { keep_input_ = false; }
    void closeNow();  // closes the socket; later calls do nothing
    int fd() const;

    std::string in;       // bytes received (unless discarding)
    size_t received = 0;  // bytes received, kept or not
    size_t sent = 0;      // bytes the kernel took
    bool eof = false;     // the other end finished sending
    bool reset = false;   // the connection was reset or failed
    bool closed() const { return eof || reset; }
    size_t unsent() const { return out_.size() - out_off_ + filler_; }
    std::function<void()> on_data;  // called after new bytes were appended to `in`

private:
    struct Watch;
    static void onPoll(uv_poll_t* h, int status, int events) noexcept;
    void readAvailable();
    void flush();
    void updateEvents();

    Watch* watch_ = nullptr;  // null once closed
    std::string out_;
    size_t out_off_ = 0;
    size_t filler_ = 0;
    bool reading_ = true;
    bool keep_input_ = true;
    bool shut_pending_ = false;
};

// The app behind the proxy: a listening socket on 127.0.0.1, port chosen by the kernel.
class App {
public:
    // backlog < 0: never accepts (connections wait in the kernel's queue).
    App(uv_loop_t* loop, int backlog, bool accepting);
    ~App();
    uint16_t port() const { return port_; }
    size_t accepted() const { return peers_.size(); }
    Peer& peer(size_t i) { return *peers_.at(i); }
    int fd() const;
    // Send buffer size set on each accepted socket (0 = kernel default).
    int sndbuf = 0;

private:
    struct Watch;
    static void onPoll(uv_poll_t* h, int status, int events) noexcept;
    uv_loop_t* loop_;
    Watch* watch_ = nullptr;
    int fd_ = -1;
    uint16_t port_ = 0;
    std::vector<std::unique_ptr<Peer>> peers_;
};

// The listener entry the tests vary; the rest of the config is fixed.
struct ListenerSpec {
    std::string protocol = "http";
    uint16_t upstream_port = 0;
    std::string connect_timeout = "1s";
    std::string handshake = "2s";
    std::string idle = "2s";
    std::string header = "2s";
    std::string upstream_response = "2s";
    bool tls = false;
    std::string drain_timeout = "3s";
};

// Certificate and key files of a self-signed certificate for localhost, made once per run.
struct TestCertificate {
    std::string cert_path;
    std::string key_path;
};
const TestCertificate& testCertificate();

// The YAML of a config with one listener "web" on 127.0.0.1 (its port is replaced by 0 when
// the server starts: the config accepts ports 1-65535 only).
std::string configYaml(const ListenerSpec& spec);

class Harness {
public:
    Harness();
    ~Harness();  // closes the test's sockets, drains the server, checks that the loop ends empty
    Harness(const Harness&) = delete;
    Harness& operator=(const Harness&) = delete;

    uv_loop_t* loop() { return &loop_; }
    App& app(int backlog = 128, bool accepting = true);
    // Loads the config, binds the listener on a port chosen by the kernel and starts serving.
    void start(const ListenerSpec& spec);
    uint16_t port() const { return port_; }
    Server& server() { return *server_; }
    Metrics& metrics() { return metrics_; }
    ListenerStats& stats() { return metrics_.listener("web"); }
    tls::Backend& backend() { return *backend_; }

    Peer& connect(int rcvbuf = 0);

    // Runs the loop until `done` holds or `timeout_ms` has passed; returns `done()`.
    bool runUntil(const std::function<bool()>& done, int timeout_ms = 3000);
    // Runs the loop for a while: for behaviour that is about time passing.
    void runFor(int ms);

    // Bytes waiting in the kernel queues (received, not read; written, not acknowledged) of
    // the proxy's connected sockets.
    size_t proxyKernelQueues();

private:
    uv_loop_t loop_;
    uv_timer_t guard_;
    Logger log_;
    Metrics metrics_;
    std::unique_ptr<tls::Backend> backend_;
    std::unique_ptr<Server> server_;
    std::vector<std::unique_ptr<App>> apps_;
    std::vector<std::unique_ptr<Peer>> clients_;
    uint16_t port_ = 0;
    int listen_fd_ = -1;
};

// Bytes in a socket's kernel queues: received and not read, plus sent and not acknowledged.
size_t kernelQueues(int fd);

// Milliseconds since construction, on the monotonic clock.
class Stopwatch {
public:
    int64_t ms() const {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - start_)
            .count();
    }

private:
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// A TLS client session driven over a Peer: the handshake and reads advance as bytes arrive.
class TlsClient {
public:
    TlsClient(Peer& peer, tls::Context& context);
    // Sends the ClientHello. With follow = false the client never answers the server's flight.
    void start(bool follow = true);
    void write(std::string_view plain);
    bool handshakeDone() const { return done_; }
    bool failed() const { return failed_; }
    std::string plain;  // decrypted bytes received

private:
    void advance();
    void flush();
    Peer& peer_;
    std::unique_ptr<tls::Session> session_;
    size_t fed_ = 0;
    bool done_ = false;
    bool failed_ = false;
};

// HTTP requests answered with a status of class `cls` (2 for 2xx...).
inline uint64_t requestsOfClass(const ListenerStats& s, int cls) {
    uint64_t n = 0;
    for (const auto& [code, count] : s.http_requests) {
        if (code / 100 == cls) n += count;
    }
    return n;
}

}  // namespace sidecar::core::test
