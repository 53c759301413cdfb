#include "core/log_stream.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sidecar::core {

namespace {

// Written bytes are moved out of the queue once they are this many and half of it.
constexpr size_t kCompactBytes = 64 * 1024;

size_t countLines(std::string_view bytes) {
    return size_t(std::count(bytes.begin(), bytes.end(), '\n'));
}

void writeBlocking(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        ssize_t n = ::write(fd, bytes.data(), bytes.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // nowhere to report a failing log stream
        bytes.remove_prefix(size_t(n));
    }
}

}  // namespace

LogStream::LogStream(int fd, SummaryLine summary) : fd_(fd), summary_(std::move(summary)) {}

LogStream::~LogStream() {
    closeWatcher();
    if (own_fd_ >= 0) ::close(own_fd_);
}

std::optional<std::string> LogStream::attach(uv_loop_t* loop) {
    if (mode_ == Mode::Queued) return std::nullopt;
    if (mode_ == Mode::Closing) return watchWith(loop);  // attached before: the fd is ready
    struct stat st;
    if (::fstat(fd_, &st) != 0) return std::string("fstat: ") + std::strerror(errno);
    if (S_ISFIFO(st.st_mode) || (S_ISCHR(st.st_mode) && ::isatty(fd_))) {
        // O_NONBLOCK on fd_ itself would be set on the open file description that this process
        // shares with whoever started it (a shell's terminal, the container runtime's pipe) and
        // break their blocking writes. Opening the fd's /proc entry makes a new description of
        // the same pipe or terminal, whose flags are this process's own.
        const std::string path = "/proc/self/fd/" + std::to_string(fd_);
        int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) return "cannot open " + path + ": " + std::strerror(errno);
        struct stat again;
        if (::fstat(fd, &again) != 0 || again.st_dev != st.st_dev || again.st_ino != st.st_ino) {
            ::close(fd);
            return path + " is not the same file";
        }
        own_fd_ = fd;
        writer_ = Writer::Reopened;
    } else if (S_ISSOCK(st.st_mode)) {
        // A socket cannot be reopened, but send(MSG_DONTWAIT) is non-blocking for one call.
        // uv_poll_init() would set O_NONBLOCK on the shared socket, so an epoll set of our own
        // watches it instead, and the loop watches the set: readable while the socket is writable.
        int ep = ::epoll_create1(EPOLL_CLOEXEC);
        if (ep < 0) return std::string("epoll_create1: ") + std::strerror(errno);
        epoll_event ev{};
        ev.events = EPOLLOUT;
        if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd_, &ev) != 0) {
            std::string error = std::string("epoll_ctl: ") + std::strerror(errno);
            ::close(ep);
            return error;
        }
        own_fd_ = ep;
        writer_ = Writer::Socket;
    } else {
        // A regular file or /dev/null: a write never waits for a reader.
        return std::nullopt;
    }
    return watchWith(loop);
}

std::optional<std::string> LogStream::watchWith(uv_loop_t* loop) {
    poll_ = new uv_poll_t;
    if (int r = uv_poll_init(loop, poll_, own_fd_); r != 0) {
        delete poll_;
        poll_ = nullptr;
        ::close(own_fd_);
        own_fd_ = -1;
        writer_ = Writer::Plain;
        mode_ = Mode::Blocking;
        writeBlocking(fd_, std::string_view(queue_).substr(head_));
        queue_.clear();
        head_ = 0;
        return std::string("cannot watch the stream: ") + uv_strerror(r);
    }
    poll_->data = this;
    // Pending log lines alone do not keep the loop running; detach() writes them at exit.
    uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    mode_ = Mode::Queued;
    if (queued() > 0) drain();
    return std::nullopt;
}

void LogStream::detach(Clock::time_point deadline) {
    closeWatcher();
    if (mode_ == Mode::Blocking) return;
    mode_ = Mode::Closing;
    deadline_ = deadline;
    drainUntilDeadline();
}

void LogStream::write(std::string_view lines) {
    if (lines.empty()) return;
    if (mode_ == Mode::Blocking) {
        writeBlocking(fd_, lines);
        return;
    }
    if (broken_) {
        dropped_ += countLines(lines);
        return;
    }
    enqueue(lines);
    if (mode_ == Mode::Closing) {
        drainUntilDeadline();
    } else if (!watching_) {
        drain();  // otherwise the fd is full: the poll callback drains
    }
}

void LogStream::enqueue(std::string_view lines) {
    size_t pos = 0;
    while (pos < lines.size()) {
        size_t end = lines.find('\n', pos);
        end = end == std::string_view::npos ? lines.size() : end + 1;
        std::string_view line = lines.substr(pos, end - pos);
        pos = end;
        if (queued() + line.size() > limit_) {
            ++dropped_;
            ++unreported_;
            continue;
        }
        if (unreported_ > 0) {
            // The summary goes where the dropped lines would have been.
            std::string summary = summary_(unreported_);
            if (queued() + summary.size() + line.size() > limit_) {
                ++dropped_;
                ++unreported_;
                continue;
            }
            queue_ += summary;
            unreported_ = 0;
        }
        queue_.append(line);
    }
}

ssize_t LogStream::writeSome(const char* p, size_t n) {
    for (;;) {
        ssize_t r = writer_ == Writer::Socket ? ::send(fd_, p, n, MSG_DONTWAIT | MSG_NOSIGNAL)
                                              : ::write(own_fd_, p, n);
        if (r >= 0) return r;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return -errno;
    }
}

void LogStream::drain() {
    bool summarized = false;
    for (;;) {
        while (queued() > 0) {
            ssize_t n = writeSome(queue_.data() + head_, queued());
            if (n > 0) {
                head_ += size_t(n);
            } else if (n == 0) {
                break;
            } else {
                // EPIPE and the like: the reader is gone and will not come back.
                broken_ = true;
                dropQueued();
                watch(false);
                return;
            }
        }
        if (queued() > 0) break;
        queue_.clear();
        head_ = 0;
        if (unreported_ == 0 || summarized) break;
        // Writing resumed after lines were dropped: say so where they are missing.
        queue_ = summary_(unreported_);
        unreported_ = 0;
        summarized = true;
    }
    if (head_ >= kCompactBytes && head_ * 2 >= queue_.size()) {
        queue_.erase(0, head_);
        head_ = 0;
    }
    watch(queued() > 0);
}

void LogStream::drainUntilDeadline() {
    while (!broken_) {
        drain();
        if (queued() == 0) return;
        auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ - Clock::now());
        if (left.count() <= 0) return;
        pollfd p{writer_ == Writer::Socket ? fd_ : own_fd_, POLLOUT, 0};
        if (::poll(&p, 1, int(std::min<int64_t>(left.count(), 60000))) < 0 && errno != EINTR) {
            return;
        }
    }
}

void LogStream::dropQueued() {
    // A line written in part counts as dropped too: its end never arrives.
    const size_t lost = countLines(std::string_view(queue_).substr(head_));
    dropped_ += lost;
    queue_.clear();
    head_ = 0;
}

void LogStream::watch(bool on) {
    if (poll_ == nullptr || on == watching_) return;
    int r =
        on ? uv_poll_start(poll_, writer_ == Writer::Socket ? UV_READABLE : UV_WRITABLE, onWritable)
           : uv_poll_stop(poll_);
    // Should starting fail, the queue still drains at the next write.
    if (r == 0) watching_ = on;
}

void LogStream::onWritable(uv_poll_t* h, int status, int) noexcept {
    auto* s = static_cast<LogStream*>(h->data);
    // On an error (the reader closed the pipe) libuv has stopped the handle; the write in drain()
    // then reports what happened.
    if (status < 0) s->watching_ = false;
    s->drain();
}

void LogStream::closeWatcher() {
    if (poll_ == nullptr) return;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_),
             [](uv_handle_t* h) noexcept { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
    watching_ = false;
}

}  // namespace sidecar::core
