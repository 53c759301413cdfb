#pragma once
// One output stream of log lines (stdout or stderr) that never stalls the event loop.
//
// Until attach(), writes block, as a command-line tool's do. Once attached to a loop, writes are
// non-blocking: what the reader does not take at once waits in a bounded queue that drains when
// the fd becomes writable. A line that does not fit is dropped whole and counted, and one summary
// line takes the place of the dropped lines once there is room again. detach() (at exit) writes
// what is queued, waiting for the reader no longer than a deadline.

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace sidecar::core {

class LogStream {
public:
    using Clock = std::chrono::steady_clock;
    // Makes the line that stands for `dropped` lines that were lost.
    using SummaryLine = std::function<std::string(uint64_t dropped)>;

    // `fd` stays the caller's: it is neither closed nor switched to non-blocking mode.
    LogStream(int fd, SummaryLine summary);
    ~LogStream();
    LogStream(const LogStream&) = delete;
    LogStream& operator=(const LogStream&) = delete;

    // Writes whole lines, each ending in '\n'. A line is never split: it is written in full,
    // queued in full, or dropped.
    void write(std::string_view lines);

    // From now on writes never block. Returns why the stream has to stay blocking, if it does.
    std::optional<std::string> attach(uv_loop_t* loop);
    // Stops watching the fd (the loop may close after this) and writes what is queued, waiting
    // for the reader until `deadline` at most; later writes wait no longer than that either.
    void detach(Clock::time_point deadline);

    void setQueueLimit(size_t bytes) { limit_ = bytes; }
    size_t queued() const { return queue_.size() - head_; }
    uint64_t droppedLines() const { return dropped_; }
    // Whether writes are queued (a pipe, FIFO, terminal or socket) rather than plain writes
    // (a regular file or /dev/null, which never make a writer wait for a reader).
    bool queues() const { return writer_ != Writer::Plain; }

private:
    enum class Mode { Blocking, Queued, Closing };
    enum class Writer { Plain, Reopened, Socket };

    // Bytes written, 0 when the fd is full, -errno on a failure.
    ssize_t writeSome(const char* p, size_t n);
    void enqueue(std::string_view lines);
    // Writes from the queue until it is empty or the fd is full.
    void drain();
    // Closing: drains, waiting for the fd with poll(2) until deadline_.
    void drainUntilDeadline();
    void dropQueued();
    void watch(bool on);
    // Watches own_fd_ on `loop` and switches to queued writes.
    std::optional<std::string> watchWith(uv_loop_t* loop);
    static void onWritable(uv_poll_t* h, int status, int events) noexcept;
    void closeWatcher();

    int fd_;
    int own_fd_ = -1;  // the reopened pipe/terminal, or the epoll set that watches a socket
    SummaryLine summary_;
    Mode mode_ = Mode::Blocking;
    Writer writer_ = Writer::Plain;
    uv_poll_t* poll_ = nullptr;  // freed in its close callback
    bool watching_ = false;
    bool broken_ = false;  // a write failed for good (the reader is gone): lines are dropped
    std::string queue_;
    size_t head_ = 0;  // bytes of queue_ already written
    size_t limit_ = 1024 * 1024;
    uint64_t dropped_ = 0;
    uint64_t unreported_ = 0;  // dropped lines that no summary line has stood for yet
    Clock::time_point deadline_{};
};

}  // namespace sidecar::core
