// Logging: escaping of hostile bytes (every line parses as JSON, text lines stay one line), and
// the bounded non-blocking queue in front of a real pipe or socket whose reader stops and resumes.

#include "core/log.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <chrono>
#include <csignal>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "core/log_stream.h"
#include "core/metrics.h"

using namespace sidecar;
using namespace sidecar::core;

namespace {

std::string escaped(std::string_view s) {
    std::string out;
    appendJsonEscaped(out, s);
    return out;
}

// A strict UTF-8 check written from RFC 3629's table, independent of the code under test.
bool validUtf8(std::string_view s) {
    size_t i = 0;
    auto in = [&](size_t k, unsigned lo, unsigned hi) {
        return i + k < s.size() && static_cast<unsigned char>(s[i + k]) >= lo &&
               static_cast<unsigned char>(s[i + k]) <= hi;
    };
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c <= 0x7f) {
            i += 1;
        } else if (c >= 0xc2 && c <= 0xdf && in(1, 0x80, 0xbf)) {
            i += 2;
        } else if (c == 0xe0 && in(1, 0xa0, 0xbf) && in(2, 0x80, 0xbf)) {
            i += 3;
        } else if (((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) && in(1, 0x80, 0xbf) &&
                   in(2, 0x80, 0xbf)) {
            i += 3;
        } else if (c == 0xed && in(1, 0x80, 0x9f) && in(2, 0x80, 0xbf)) {
            i += 3;
        } else if (c == 0xf0 && in(1, 0x90, 0xbf) && in(2, 0x80, 0xbf) && in(3, 0x80, 0xbf)) {
            i += 4;
        } else if (c >= 0xf1 && c <= 0xf3 && in(1, 0x80, 0xbf) && in(2, 0x80, 0xbf) &&
                   in(3, 0x80, 0xbf)) {
            i += 4;
        } else if (c == 0xf4 && in(1, 0x80, 0x8f) && in(2, 0x80, 0xbf) && in(3, 0x80, 0xbf)) {
            i += 4;
        } else {
            return false;
        }
    }
    return true;
}

// What a JSON parser accepts between the quotes of a string (RFC 8259 section 7).
bool validJsonStringBody(std::string_view s) {
    if (!validUtf8(s)) return false;
    for (size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == '"') return false;
        if (c != '\\') continue;
        if (++i >= s.size()) return false;
        const char e = s[i];
        if (e == 'u') {
            for (int k = 1; k <= 4; ++k) {
                if (i + size_t(k) >= s.size() ||
                    !std::isxdigit(static_cast<unsigned char>(s[i + k])))
                    return false;
            }
            i += 4;
        } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
            return false;
        }
    }
    return true;
}

void setNonBlocking(int fd) { REQUIRE(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0); }

// Everything readable from a non-blocking fd right now.
std::string readAvailable(int fd) {
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, size_t(n));
    }
    return out;
}

std::vector<std::string> splitLines(const std::string& text) {
    std::vector<std::string> lines;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t end = text.find('\n', pos);
        REQUIRE(end != std::string::npos);  // the stream ends on a whole line
        lines.push_back(text.substr(pos, end - pos));
        pos = end + 1;
    }
    return lines;
}

// A real loop plus a reader on the other end of a pipe or socket pair. The reader starts paused;
// resume() lets it read whatever arrives, through a uv_poll_t on the same loop.
class Rig {
public:
    explicit Rig(bool socket) {
        REQUIRE(uv_loop_init(&loop_) == 0);
        int fds[2];
        if (socket) {
            REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
            int small = 4096;
            REQUIRE(setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
            REQUIRE(setsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
        } else {
            REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
            REQUIRE(fcntl(fds[1], F_SETPIPE_SZ, 4096) >= 0);
        }
        reader_ = fds[0];
        writer = fds[1];
        setNonBlocking(reader_);
        REQUIRE(uv_poll_init(&loop_, &poll_, reader_) == 0);
        poll_.data = this;
        REQUIRE(uv_timer_init(&loop_, &guard_) == 0);
    }
    ~Rig() {
        uv_close(reinterpret_cast<uv_handle_t*>(&poll_), nullptr);
        uv_close(reinterpret_cast<uv_handle_t*>(&guard_), nullptr);
        uv_run(&loop_, UV_RUN_DEFAULT);
        CHECK(uv_loop_close(&loop_) == 0);
        ::close(reader_);
        if (writer >= 0) ::close(writer);
    }

    uv_loop_t* loop() { return &loop_; }
    int readerFd() const { return reader_; }

    void resume() {
        REQUIRE(uv_poll_start(&poll_, UV_READABLE, [](uv_poll_t* h, int, int) noexcept {
                    auto* rig = static_cast<Rig*>(h->data);
                    rig->received += readAvailable(rig->reader_);
                }) == 0);
    }
    void pause() { REQUIRE(uv_poll_stop(&poll_) == 0); }

    // Runs the loop until `done` holds or two seconds have passed.
    bool runUntil(const std::function<bool()>& done) {
        bool expired = false;
        guard_.data = &expired;
        REQUIRE(uv_timer_start(
                    &guard_, [](uv_timer_t* t) noexcept { *static_cast<bool*>(t->data) = true; },
                    2000, 0) == 0);
        while (!done() && !expired) uv_run(&loop_, UV_RUN_ONCE);
        REQUIRE(uv_timer_stop(&guard_) == 0);
        return done();
    }

    int writer = -1;
    std::string received;

private:
    uv_loop_t loop_;
    uv_poll_t poll_;
    uv_timer_t guard_;
    int reader_ = -1;
};

std::string numberedLine(int i) {
    std::string line = "line " + std::to_string(i) + " ";
    line.resize(99, 'x');
    return line + "\n";
}

std::string summaryOf(uint64_t n) { return "dropped " + std::to_string(n) + "\n"; }

}  // namespace

TEST_CASE("escaping: quotes, backslashes and control characters", "[log]") {
    CHECK(escaped("plain text") == "plain text");
    CHECK(escaped("a\"b\\c") == "a\\\"b\\\\c");
    CHECK(escaped("\n\r\t") == "\\n\\r\\t");
    CHECK(escaped(std::string_view("\x00\x01\x1b[31m\x7f", 8)) ==
          "\\u0000\\u0001\\u001b[31m\\u007f");
}

TEST_CASE("escaping: valid UTF-8 passes, invalid bytes become \\u00XX", "[log]") {
    CHECK(escaped("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92") ==
          "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x92");
    CHECK(escaped("\xff\xfe") == "\\u00ff\\u00fe");
    CHECK(escaped("caf\xe9") == "caf\\u00e9");                             // Latin-1, not UTF-8
    CHECK(escaped("\xc3") == "\\u00c3");                                   // truncated sequence
    CHECK(escaped("\xc3(") == "\\u00c3(");                                 // bad continuation
    CHECK(escaped("\xc0\xaf") == "\\u00c0\\u00af");                        // overlong '/'
    CHECK(escaped("\xe0\x80\xaf") == "\\u00e0\\u0080\\u00af");             // overlong, 3 bytes
    CHECK(escaped("\xed\xa0\x80") == "\\u00ed\\u00a0\\u0080");             // a surrogate
    CHECK(escaped("\xf4\x90\x80\x80") == "\\u00f4\\u0090\\u0080\\u0080");  // past U+10FFFF
    CHECK(escaped("\x80") == "\\u0080");                                   // lone continuation
    // C1 controls (a terminal reads U+009B as CSI) and the JavaScript line separators.
    CHECK(escaped("\xc2\x9b"
                  "31m") == "\\u009b31m");
    CHECK(escaped("a\xe2\x80\xa8"
                  "b\xe2\x80\xa9") == "a\\u2028b\\u2029");
}

TEST_CASE("escaping: any bytes give a valid JSON string on one line", "[log]") {
    std::mt19937 rng(7);
    std::vector<std::string> inputs;
    for (int b = 0; b < 256; ++b) inputs.emplace_back(1, char(b));
    for (int i = 0; i < 2000; ++i) {
        std::string s(size_t(rng() % 12), '\0');
        for (char& c : s) c = char(rng() % 256);
        inputs.push_back(s);
    }
    for (const std::string& in : inputs) {
        const std::string out = escaped(in);
        INFO("input bytes: " << in.size());
        CHECK(validJsonStringBody(out));
        CHECK(out.find('\n') == std::string::npos);
    }
}

TEST_CASE("text values: bare when harmless, quoted and escaped otherwise", "[log]") {
    auto text = [](std::string_view s) {
        std::string out;
        appendTextValue(out, s);
        return out;
    };
    CHECK(text("web") == "web");
    CHECK(text("") == "\"\"");
    CHECK(text("a b") == "\"a b\"");
    CHECK(text("k=v") == "\"k=v\"");
    CHECK(text("x\ny") == "\"x\\ny\"");
    CHECK(text("caf\xe9") == "\"caf\\u00e9\"");
    CHECK(text("back\\slash") == "\"back\\\\slash\"");
    CHECK(text("caf\xc3\xa9") == "caf\xc3\xa9");
}

TEST_CASE("log lines with hostile fields: JSON parses, text stays one line", "[log]") {
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    setNonBlocking(fds[0]);
    const std::string hostile = "evil\xff\xfe\n\r\x01\x1b[2J\"\\ name";
    {
        Logger log(fds[1], fds[1]);
        config::Log cfg;
        cfg.format = config::LogFormat::Json;
        log.configure(cfg);
        log.warn("handshake \xc0 failed\n", {{"sni", hostile}, {"n", 3}});
        log.access({{"method", "G\xe9T"}, {"path", "/\x80x"}, {"sni", hostile}});
        cfg.format = config::LogFormat::Text;
        log.configure(cfg);
        log.warn("handshake \xc0 failed\n", {{"sni", hostile}, {"alpn", ""}});
    }
    ::close(fds[1]);
    const std::vector<std::string> lines = splitLines(readAvailable(fds[0]));
    ::close(fds[0]);
    REQUIRE(lines.size() == 3);
    const std::string sni = "evil\\u00ff\\u00fe\\n\\r\\u0001\\u001b[2J\\\"\\\\ name";
    CHECK(lines[0].find("\"msg\":\"handshake \\u00c0 failed\\n\"") != std::string::npos);
    CHECK(lines[0].find("\"sni\":\"" + sni + "\",\"n\":3}") != std::string::npos);
    CHECK(lines[1].find("\"method\":\"G\\u00e9T\",\"path\":\"/\\u0080x\"") != std::string::npos);
    CHECK(lines[2].find(" warn handshake \\u00c0 failed\\n sni=\"" + sni + "\" alpn=\"\"") !=
          std::string::npos);
    for (const std::string& line : lines) CHECK(validUtf8(line));
}

TEST_CASE("a stopped reader never blocks the writer: bounded queue, whole lines, summary",
          "[log]") {
    const bool socket = GENERATE(false, true);
    INFO((socket ? "socket pair" : "pipe"));
    Rig rig(socket);
    const int flags_before = fcntl(rig.writer, F_GETFL);
    LogStream stream(rig.writer, summaryOf);
    stream.setQueueLimit(64 * 1024);
    REQUIRE_FALSE(stream.attach(rig.loop()).has_value());
    REQUIRE(stream.queues());
    // The inherited description keeps its flags: whoever shares it still writes blocking.
    CHECK(fcntl(rig.writer, F_GETFL) == flags_before);

    // Far more than the fd buffer plus the queue; none of these writes may wait for the reader.
    const int total = 3000;
    for (int i = 0; i < total; ++i) {
        stream.write(numberedLine(i));
        REQUIRE(stream.queued() <= 64 * 1024);
    }
    const uint64_t dropped = stream.droppedLines();
    CHECK(dropped > 0);
    CHECK(dropped < uint64_t(total));

    // The reader comes back: what was kept arrives in order, then the summary line.
    rig.resume();
    const std::string summary = summaryOf(dropped);
    REQUIRE(rig.runUntil(
        [&] { return stream.queued() == 0 && rig.received.find(summary) != std::string::npos; }));
    stream.write(numberedLine(total));
    REQUIRE(
        rig.runUntil([&] { return rig.received.find(numberedLine(total)) != std::string::npos; }));

    std::vector<std::string> lines = splitLines(rig.received);
    const size_t kept = size_t(total) - size_t(dropped);
    REQUIRE(lines.size() == kept + 2);
    for (size_t i = 0; i < kept; ++i) REQUIRE(lines[i] + "\n" == numberedLine(int(i)));
    CHECK(lines[kept] + "\n" == summary);
    CHECK(lines[kept + 1] + "\n" == numberedLine(total));
    CHECK(stream.droppedLines() == dropped);
    stream.detach(LogStream::Clock::now());
}

TEST_CASE("lines written while lines are being dropped get the summary in front of them", "[log]") {
    Rig rig(false);
    LogStream stream(rig.writer, summaryOf);
    stream.setQueueLimit(64 * 1024);
    REQUIRE_FALSE(stream.attach(rig.loop()).has_value());
    int next = 0;
    while (stream.droppedLines() < 5) stream.write(numberedLine(next++));
    // The reader takes some, so the queue has room; the next line follows the summary of five.
    rig.resume();
    REQUIRE(rig.runUntil([&] { return stream.queued() < 32 * 1024; }));
    rig.pause();
    stream.write("after\n");
    rig.resume();
    REQUIRE(rig.runUntil([&] { return rig.received.find("after\n") != std::string::npos; }));
    CHECK(rig.received.find(summaryOf(5) + "after\n") != std::string::npos);
    CHECK(stream.droppedLines() == 5);
    stream.detach(LogStream::Clock::now());
}

TEST_CASE("detach waits for a stopped reader only until the deadline", "[log]") {
    Rig rig(false);
    LogStream stream(rig.writer, summaryOf);
    REQUIRE_FALSE(stream.attach(rig.loop()).has_value());
    for (int i = 0; i < 200; ++i) stream.write(numberedLine(i));
    REQUIRE(stream.queued() > 0);
    const auto started = LogStream::Clock::now();
    stream.detach(started + std::chrono::milliseconds(200));
    const auto waited = LogStream::Clock::now() - started;
    CHECK(waited >= std::chrono::milliseconds(190));
    CHECK(waited < std::chrono::seconds(2));
    CHECK(stream.queued() > 0);
    // Later lines do not wait either once the deadline is behind.
    stream.write(numberedLine(1000));
    CHECK(LogStream::Clock::now() - started < std::chrono::seconds(2));
}

TEST_CASE("detach writes what is queued when the reader keeps up", "[log]") {
    Rig rig(false);
    LogStream stream(rig.writer, summaryOf);
    REQUIRE_FALSE(stream.attach(rig.loop()).has_value());
    for (int i = 0; i < 100; ++i) stream.write(numberedLine(i));
    REQUIRE(stream.queued() > 0);
    // A thread stands in for the process that reads the pipe while the proxy exits.
    std::string got;
    std::thread reader([&] {
        while (std::count(got.begin(), got.end(), '\n') < 100) {
            pollfd p{rig.readerFd(), POLLIN, 0};
            if (::poll(&p, 1, 5000) <= 0) return;
            got += readAvailable(rig.readerFd());
        }
    });
    const auto started = LogStream::Clock::now();
    stream.detach(started + std::chrono::seconds(10));
    reader.join();
    CHECK(stream.queued() == 0);
    CHECK(LogStream::Clock::now() - started < std::chrono::seconds(5));
    REQUIRE(splitLines(got).size() == 100);
    CHECK(got.substr(got.size() - 100) == numberedLine(99));
}

TEST_CASE("a reader that goes away costs counted lines, not an error", "[log]") {
    signal(SIGPIPE, SIG_IGN);  // as main() does
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    {
        LogStream stream(fds[1], summaryOf);
        REQUIRE_FALSE(stream.attach(&loop).has_value());
        ::close(fds[0]);
        stream.write("one\n");
        stream.write("two\nthree\n");
        CHECK(stream.droppedLines() == 3);
        CHECK(stream.queued() == 0);
        stream.detach(LogStream::Clock::now());
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    ::close(fds[1]);
}

TEST_CASE("the logger's summary lines and the dropped-lines metric", "[log]") {
    Rig rig(false);
    Logger log(rig.writer, rig.writer);
    config::Log cfg;
    cfg.format = config::LogFormat::Json;
    cfg.queue_bytes = 64 * 1024;
    log.configure(cfg);
    log.attach(rig.loop());
    while (log.droppedLogLines() < 3) log.info("filler", {{"pad", std::string(200, 'p')}});
    const uint64_t dropped = log.droppedLogLines();
    rig.resume();
    const std::string msg = "\"msg\":\"" + std::to_string(dropped) + " log lines dropped";
    REQUIRE(rig.runUntil([&] { return rig.received.find(msg) != std::string::npos; }));
    const std::vector<std::string> lines = splitLines(rig.received);
    CHECK(lines.back().find("\"level\":\"warn\"") != std::string::npos);
    CHECK(lines.back().find("\"stream\":\"log\",\"dropped\":" + std::to_string(dropped) + "}") !=
          std::string::npos);

    Metrics metrics;
    metrics.log_lines_dropped = {log.droppedAccessLines(), log.droppedLogLines()};
    const std::string text = metrics.render();
    CHECK(text.find("sidecar_log_lines_dropped_total{stream=\"log\"} " + std::to_string(dropped) +
                    "\n") != std::string::npos);
    CHECK(text.find("sidecar_log_lines_dropped_total{stream=\"access\"} 0\n") != std::string::npos);
    log.detach();
}

TEST_CASE("log.queue_bytes: default, value, and errors with file:line:col", "[log][config]") {
    const std::string base =
        "listeners:\n"
        "  - name: web\n"
        "    listen: 127.0.0.1:8080\n"
        "    upstream:\n"
        "      address: 127.0.0.1:80\n";
    config::LoadResult def = config::loadString(base, "t.yaml");
    REQUIRE(def.errors.empty());
    CHECK(def.config->log.queue_bytes == 1024 * 1024);

    config::LoadResult set = config::loadString(base + "log:\n  queue_bytes: 262144\n", "t.yaml");
    REQUIRE(set.errors.empty());
    CHECK(set.config->log.queue_bytes == 262144);

    config::LoadResult small = config::loadString(base + "log:\n  queue_bytes: 1000\n", "t.yaml");
    REQUIRE(small.errors.size() == 1);
    CHECK(small.errors[0].toString() ==
          "t.yaml:7:16: log.queue_bytes: 1000 is out of range: expected a number from 65536 to "
          "1073741824");
    config::LoadResult text = config::loadString(base + "log:\n  queue_bytes: 1MiB\n", "t.yaml");
    REQUIRE(text.errors.size() == 1);
    CHECK(text.errors[0].toString().rfind("t.yaml:7:16: log.queue_bytes: expected a number", 0) ==
          0);
}

TEST_CASE("a detached stream attaches again and still never blocks", "[log]") {
    Rig rig(false);
    LogStream stream(rig.writer, summaryOf);
    stream.setQueueLimit(64 * 1024);
    REQUIRE_FALSE(stream.attach(rig.loop()).has_value());
    stream.detach(LogStream::Clock::now());
    REQUIRE_FALSE(stream.attach(rig.loop()).has_value());
    for (int i = 0; i < 2000; ++i) stream.write(numberedLine(i));
    CHECK(stream.droppedLines() > 0);
    rig.resume();
    REQUIRE(rig.runUntil([&] { return rig.received.find("dropped ") != std::string::npos; }));
    stream.detach(LogStream::Clock::now());
}
