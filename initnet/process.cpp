#include "initnet/process.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace sidecar::initnet {
namespace {

// Closes the descriptor when it goes out of scope.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    int* target() { return &fd_; }

private:
    int fd_ = -1;
};

std::string errnoText(const char* what, int error) {
    return std::string(what) + ": " + std::strerror(error);
}

ProcessResult failed(std::string message) {
    ProcessResult result;
    result.outcome = ProcessResult::Outcome::Failed;
    result.exit_code = -1;
    result.err = std::move(message);
    return result;
}

// The child's stdin: an anonymous in-memory file holding all of `input`, so that nothing has to be
// written while the child runs (no deadlock against its output, no SIGPIPE if it exits early).
int makeInputFd(const std::string& input) {
    int fd = memfd_create("sidecar-initnet-input", MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < input.size()) {
        const ssize_t n = ::write(fd, input.data() + done, input.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int saved = errno;
            ::close(fd);
            errno = saved;
            return -1;
        }
        done += static_cast<size_t>(n);
    }
    if (::lseek(fd, 0, SEEK_SET) != 0) {
        const int saved = errno;
        ::close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

bool isExecutableFile(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

}  // namespace

std::optional<std::string> findExecutable(const std::string& name) {
    if (name.empty()) return std::nullopt;
    if (name.find('/') != std::string::npos) {
        return isExecutableFile(name) ? std::optional<std::string>(name) : std::nullopt;
    }
    const char* path_env = std::getenv("PATH");
    std::string dirs = path_env != nullptr ? path_env : "";
    dirs += ":/usr/local/sbin:/usr/sbin:/sbin";
    size_t start = 0;
    while (start <= dirs.size()) {
        size_t end = dirs.find(':', start);
        if (end == std::string::npos) end = dirs.size();
        const std::string dir = dirs.substr(start, end - start);
        start = end + 1;
        if (dir.empty()) continue;  // an empty PATH entry would mean the working directory: skip it
        const std::string candidate = dir + "/" + name;
        if (isExecutableFile(candidate)) return candidate;
    }
    return std::nullopt;
}

ProcessResult SystemRunner::run(const std::vector<std::string>& argv, const std::string& input) {
    if (argv.empty()) return failed("no program to run");
    const std::optional<std::string> program = findExecutable(argv[0]);
    if (!program) {
        ProcessResult result;
        result.outcome = ProcessResult::Outcome::NotFound;
        result.exit_code = -1;
        result.err = argv[0] + ": not found";
        return result;
    }

    Fd in(makeInputFd(input));
    if (in.get() < 0) return failed(errnoText("memfd_create", errno));
    int out_pipe[2];
    int err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) return failed(errnoText("pipe2", errno));
    Fd out_read(out_pipe[0]);
    Fd out_write(out_pipe[1]);
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) return failed(errnoText("pipe2", errno));
    Fd err_read(err_pipe[0]);
    Fd err_write(err_pipe[1]);

    posix_spawn_file_actions_t actions;
    if (posix_spawn_file_actions_init(&actions) != 0)
        return failed("posix_spawn_file_actions_init");
    // dup2 onto 0/1/2 clears close-on-exec for the copies; everything else we opened is closed at
    // exec.
    int rc = posix_spawn_file_actions_adddup2(&actions, in.get(), STDIN_FILENO);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, out_write.get(), STDOUT_FILENO);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, err_write.get(), STDERR_FILENO);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return failed(errnoText("posix_spawn_file_actions_adddup2", rc));
    }

    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);

    pid_t pid = -1;
    rc = posix_spawn(&pid, program->c_str(), &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return failed(errnoText(argv[0].c_str(), rc));

    // Our copies of the write ends must close, or the reads below never see end-of-file.
    out_write.reset();
    err_write.reset();
    in.reset();

    ProcessResult result;
    std::string* sinks[2] = {&result.out, &result.err};
    pollfd fds[2] = {{out_read.get(), POLLIN, 0}, {err_read.get(), POLLIN, 0}};
    int open_count = 2;
    char buffer[4096];
    while (open_count > 0) {
        const int ready = ::poll(fds, 2, -1);
        if (ready < 0) {
            if (errno == EINTR) continue;
            result.err += errnoText("poll", errno);
            break;
        }
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || fds[i].revents == 0) continue;
            const ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
            if (n > 0) {
                sinks[i]->append(buffer, static_cast<size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                fds[i].fd = -1;  // end of file (or a read error): stop polling it
                --open_count;
            }
        }
    }

    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return failed(errnoText("waitpid", errno));
    }
    if (WIFEXITED(status)) {
        result.outcome = ProcessResult::Outcome::Exited;
        result.exit_code = WEXITSTATUS(status);
    } else {
        result.outcome = ProcessResult::Outcome::Failed;
        result.exit_code = -1;
        if (WIFSIGNALED(status)) {
            result.err += argv[0] + " killed by signal " + std::to_string(WTERMSIG(status));
        }
    }
    return result;
}

}  // namespace sidecar::initnet
