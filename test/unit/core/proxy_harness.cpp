#include "test/unit/core/proxy_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch_test_macros.hpp>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace sidecar::core::test {

namespace {

sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int socketOption(int fd, int option) {
    int value = 0;
    socklen_t len = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, option, &value, &len) != 0) return 0;
    return value;
}

}  // namespace

size_t kernelQueues(int fd) {
    int in = 0, out = 0;
    if (ioctl(fd, SIOCINQ, &in) != 0) in = 0;
    if (ioctl(fd, SIOCOUTQ, &out) != 0) out = 0;
    return size_t(in) + size_t(out);
}

namespace {

struct TempDir {
    TempDir() {
        char pattern[] = "/tmp/sidecar-unit-core-XXXXXX";
        if (mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
        path = pattern;
    }
    ~TempDir() {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    std::string path;
};

}  // namespace

// ---- Peer ----

struct Peer::Watch {
    uv_poll_t poll;
    int fd = -1;
    Peer* owner = nullptr;
    int events = 0;
};

Peer::Peer(uv_loop_t* loop, int fd) : watch_(new Watch) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    watch_->fd = fd;
    watch_->owner = this;
    watch_->poll.data = watch_;
    if (int r = uv_poll_init_socket(loop, &watch_->poll, fd); r != 0) {
        ::close(fd);
        delete watch_;
        watch_ = nullptr;
        reset = true;
        FAIL_CHECK("uv_poll_init_socket: " << uv_strerror(r));
        return;
    }
    updateEvents();
}

Peer::~Peer() { closeNow(); }

std::unique_ptr<Peer> Peer::connectTo(uv_loop_t* loop, uint16_t port, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return nullptr;
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a = loopback(port);
    // Loopback: the kernel completes the handshake without the proxy's loop running.
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return nullptr;
    }
    return std::make_unique<Peer>(loop, fd);
}

int Peer::fd() const { return watch_ ? watch_->fd : -1; }

void Peer::closeNow() {
    if (!watch_) return;
    // uv_close stops polling at once, so the descriptor can be closed right after it, and the
    // other end sees the close without waiting for the loop.
    watch_->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&watch_->poll),
             [](uv_handle_t* h) noexcept { delete static_cast<Watch*>(h->data); });
    ::close(watch_->fd);
    watch_ = nullptr;
}

void Peer::write(std::string_view bytes) {
    out_.append(bytes);
    flush();
    updateEvents();
}

void Peer::writeFiller(size_t n) {
    filler_ += n;
    flush();
    updateEvents();
}

void Peer::shutdownWrite() {
    shut_pending_ = true;
    flush();
    updateEvents();
}

void Peer::pauseReading() {
    reading_ = false;
    updateEvents();
}

void Peer::resumeReading() {
    reading_ = true;
    readAvailable();
    updateEvents();
}

void Peer::updateEvents() {
    if (!watch_) return;
    int events = 0;
    if (reading_ && !closed()) events |= UV_READABLE;
    if (!reset && (unsent() > 0 || shut_pending_)) events |= UV_WRITABLE;
    if (events == watch_->events) return;
    watch_->events = events;
    if (events == 0) {
        uv_poll_stop(&watch_->poll);
        return;
    }
    int r = uv_poll_start(&watch_->poll, events, onPoll);
    if (r != 0) {
        reset = true;
        FAIL_CHECK("uv_poll_start: " << uv_strerror(r));
    }
}

void Peer::onPoll(uv_poll_t* h, int status, int events) noexcept {
    Peer* p = static_cast<Watch*>(h->data)->owner;
    if (!p) return;
    if (status < 0) {
        p->reset = true;
    } else {
        if (events & UV_WRITABLE) p->flush();
        if (events & UV_READABLE) p->readAvailable();
    }
    p->updateEvents();
}

void Peer::readAvailable() {
    if (!watch_ || !reading_) return;
    char buf[64 * 1024];
    bool got = false;
    while (!closed()) {
        ssize_t n = recv(watch_->fd, buf, sizeof buf, 0);
        if (n > 0) {
            if (keep_input_) in.append(buf, size_t(n));
            received += size_t(n);
            got = true;
            continue;
        }
        if (n == 0) {
            eof = true;
            got = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            reset = true;
            got = true;
        }
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    if (got && on_data) on_data();
}

void Peer::flush() {
    if (!watch_ || reset) return;
    static const std::string kFiller(64 * 1024, 'x');
    while (unsent() > 0) {
        const char* p;
        size_t n;
        if (out_off_ < out_.size()) {
            p = out_.data() + out_off_;
            n = out_.size() - out_off_;
        } else {
            p = kFiller.data();
            n = std::min(filler_, kFiller.size());
        }
        ssize_t w = send(watch_->fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) reset = true;
            return;
        }
        sent += size_t(w);
        if (out_off_ < out_.size()) {
            out_off_ += size_t(w);
            if (out_off_ == out_.size()) {
                out_.clear();
                out_off_ = 0;
            }
        } else {
            filler_ -= size_t(w);
        }
    }
    if (shut_pending_) {
        shut_pending_ = false;
        ::shutdown(watch_->fd, SHUT_WR);
    }
}

// ---- App ----

struct App::Watch {
    uv_poll_t poll;
    App* owner = nullptr;
};

App::App(uv_loop_t* loop, int backlog, bool accepting) : loop_(loop) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a = loopback(0);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    REQUIRE(getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    // backlog < 0: bound but not listening, so that connecting is refused.
    if (backlog < 0) return;
    REQUIRE(listen(fd_, backlog) == 0);
    if (!accepting) return;
    watch_ = new Watch;
    watch_->owner = this;
    watch_->poll.data = watch_;
    REQUIRE(uv_poll_init_socket(loop, &watch_->poll, fd_) == 0);
    REQUIRE(uv_poll_start(&watch_->poll, UV_READABLE, onPoll) == 0);
}

App::~App() {
    peers_.clear();
    if (watch_) {
        watch_->owner = nullptr;
        uv_close(reinterpret_cast<uv_handle_t*>(&watch_->poll),
                 [](uv_handle_t* h) noexcept { delete static_cast<Watch*>(h->data); });
    }
    if (fd_ >= 0) ::close(fd_);
}

int App::fd() const { return fd_; }

void App::onPoll(uv_poll_t* h, int status, int) noexcept {
    App* app = static_cast<Watch*>(h->data)->owner;
    if (!app || status < 0) return;
    for (;;) {
        int fd = accept4(app->fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (app->sndbuf > 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &app->sndbuf, sizeof app->sndbuf);
        app->peers_.push_back(std::make_unique<Peer>(app->loop_, fd));
    }
}

// ---- configuration ----

const TestCertificate& testCertificate() {
    static TempDir dir;
    static const TestCertificate cert = [] {
        std::unique_ptr<tls::Backend> backend = tls::makeBackend("");
        std::string pem, key, error;
        if (!backend->selfSigned({"localhost", "127.0.0.1"}, 2, &pem, &key, &error))
            throw std::runtime_error("selfSigned: " + error);
        TestCertificate c{dir.path + "/tls.crt", dir.path + "/tls.key"};
        std::ofstream(c.cert_path) << pem;
        std::ofstream(c.key_path) << key;
        return c;
    }();
    return cert;
}

std::string configYaml(const ListenerSpec& spec) {
    std::string y;
    y += "listeners:\n";
    y += "  - name: web\n";
    y += "    listen: 127.0.0.1:1\n";
    y += "    protocol: " + spec.protocol + "\n";
    if (spec.tls) {
        const TestCertificate& c = testCertificate();
        y += "    tls:\n";
        y += "      certificate: " + c.cert_path + "\n";
        y += "      private_key: " + c.key_path + "\n";
    }
    y += "    upstream:\n";
    y += "      address: 127.0.0.1:" + std::to_string(spec.upstream_port) + "\n";
    y += "      connect_timeout: " + spec.connect_timeout + "\n";
    y += "    timeouts:\n";
    y += "      handshake: " + spec.handshake + "\n";
    y += "      idle: " + spec.idle + "\n";
    y += "      header: " + spec.header + "\n";
    y += "      upstream_response: " + spec.upstream_response + "\n";
    if (spec.protocol == "http") y += "    http: { access_log: false }\n";
    y += "admin:\n";
    y += "  enabled: false\n";
    y += "log:\n";
    y += "  level: error\n";
    y += "drain_timeout: " + spec.drain_timeout + "\n";
    return y;
}

// ---- Harness ----

Harness::Harness() {
    signal(SIGPIPE,
           SIG_IGN);  // as main() does: a write to a reset socket is an error, not a signal
    REQUIRE(uv_loop_init(&loop_) == 0);
    uv_timer_init(&loop_, &guard_);
    uv_unref(reinterpret_cast<uv_handle_t*>(&guard_));
    backend_ = tls::makeBackend("");
}

Harness::~Harness() {
    // The proxy sees its peers go away, then drains; its handles must all close.
    clients_.clear();
    apps_.clear();
    if (server_) server_->beginDrain("test finished");
    bool ended = runUntil([&] { return !uv_loop_alive(&loop_); }, 10000);
    CHECK(ended);
    if (!ended) {
        // Leaked on purpose: freeing the server with handles still open would crash the run.
        (void)server_.release();
        return;
    }
    server_.reset();
    uv_close(reinterpret_cast<uv_handle_t*>(&guard_), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&loop_) == 0);
}

App& Harness::app(int backlog, bool accepting) {
    apps_.push_back(std::make_unique<App>(&loop_, backlog, accepting));
    return *apps_.back();
}

void Harness::start(const ListenerSpec& spec) {
    const std::string yaml = configYaml(spec);
    config::LoadResult res = config::loadString(yaml, "test.yaml");
    INFO(yaml);
    for (const config::Error& e : res.errors) INFO(e.toString());
    REQUIRE(res.errors.empty());
    config::Config cfg = *res.config;
    cfg.listeners.at(0).listen.port = 0;
    log_.configure(cfg.log);
    server_ = std::make_unique<Server>(&loop_, log_, *backend_, metrics_);
    REQUIRE(server_->start(cfg));
    // Before any connection, the only TCP handle on the loop is the listener.
    std::vector<uint16_t> ports;
    uv_walk(
        &loop_,
        [](uv_handle_t* h, void* arg) noexcept {
            if (h->type != UV_TCP) return;
            sockaddr_storage ss;
            int len = sizeof ss;
            if (uv_tcp_getsockname(reinterpret_cast<uv_tcp_t*>(h), reinterpret_cast<sockaddr*>(&ss),
                                   &len) != 0)
                return;
            static_cast<std::vector<uint16_t>*>(arg)->push_back(
                ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port));
        },
        &ports);
    REQUIRE(ports.size() == 1);
    port_ = ports[0];
}

Peer& Harness::connect(int rcvbuf) {
    std::unique_ptr<Peer> p = Peer::connectTo(&loop_, port_, rcvbuf);
    REQUIRE(p);
    clients_.push_back(std::move(p));
    return *clients_.back();
}

bool Harness::runUntil(const std::function<bool()>& done, int timeout_ms) {
    using Clock = std::chrono::steady_clock;
    const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!done()) {
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return done();
        // The guard wakes the loop at the deadline at the latest; it keeps nothing alive.
        uv_timer_start(
            &guard_, [](uv_timer_t*) noexcept {}, uint64_t(left), 0);
        uv_run(&loop_, UV_RUN_ONCE);
    }
    uv_timer_stop(&guard_);
    return true;
}

void Harness::runFor(int ms) {
    runUntil([] { return false; }, ms);
}

size_t Harness::proxyKernelQueues() {
    size_t total = 0;
    uv_walk(
        &loop_,
        [](uv_handle_t* h, void* arg) noexcept {
            if (h->type != UV_TCP || uv_is_closing(h)) return;
            uv_os_fd_t fd;
            if (uv_fileno(h, &fd) != 0 || socketOption(fd, SO_ACCEPTCONN) != 0) return;
            *static_cast<size_t*>(arg) += kernelQueues(fd);
        },
        &total);
    return total;
}

// ---- TlsClient ----

TlsClient::TlsClient(Peer& peer, tls::Context& context)
    : peer_(peer), session_(context.newSession()) {}

void TlsClient::start(bool follow) {
    if (follow) peer_.on_data = [this] { advance(); };
    tls::Result r = session_->handshake();
    if (r == tls::Result::Error) failed_ = true;
    flush();
}

void TlsClient::advance() {
    if (fed_ < peer_.in.size()) {
        session_->feedCiphertext(reinterpret_cast<const uint8_t*>(peer_.in.data()) + fed_,
                                 peer_.in.size() - fed_);
        fed_ = peer_.in.size();
    }
    if (!done_ && !failed_) {
        tls::Result r = session_->handshake();
        if (r == tls::Result::Ok) done_ = true;
        if (r == tls::Result::Error || r == tls::Result::Eof) failed_ = true;
    }
    if (done_) {
        uint8_t buf[16384];
        for (;;) {
            size_t n = 0;
            tls::Result r = session_->readPlain(buf, sizeof buf, &n);
            if (r != tls::Result::Ok) break;
            plain.append(reinterpret_cast<const char*>(buf), n);
        }
    }
    flush();
}

void TlsClient::write(std::string_view bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
        size_t n = 0;
        tls::Result r = session_->writePlain(reinterpret_cast<const uint8_t*>(bytes.data()) + off,
                                             bytes.size() - off, &n);
        off += n;
        flush();
        if (r == tls::Result::Error || (n == 0 && r != tls::Result::WantWrite)) {
            failed_ = true;
            return;
        }
    }
}

void TlsClient::flush() {
    if (!session_->hasCiphertext()) return;
    std::vector<uint8_t> out;
    session_->takeCiphertext(out);
    peer_.write(std::string_view(reinterpret_cast<const char*>(out.data()), out.size()));
}

}  // namespace sidecar::core::test
