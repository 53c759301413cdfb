#pragma once
// Structured logging: one line per event, text or JSON, to stderr. Access logs go to stdout so
// that they can be shipped separately. A Logger is passed in; there is no global logger.
//
// Every string is escaped, so that a JSON line always parses and a text line stays one line,
// whatever bytes a client put into its server name, method or path.

#include <unistd.h>
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "config/config.h"
#include "core/log_stream.h"

namespace sidecar::core {

// A key and a value for one log line. Numbers are rendered unquoted in JSON.
struct Field {
    std::string_view key;
    std::string_view text;
    int64_t number = 0;
    bool is_number = false;
    Field(std::string_view k, std::string_view v) : key(k), text(v) {}
    Field(std::string_view k, const std::string& v) : key(k), text(v) {}
    Field(std::string_view k, const char* v) : key(k), text(v ? v : "") {}
    Field(std::string_view k, int64_t v) : key(k), number(v), is_number(true) {}
    Field(std::string_view k, uint64_t v) : key(k), number(static_cast<int64_t>(v)), is_number(true) {}
    Field(std::string_view k, int v) : key(k), number(v), is_number(true) {}
    Field(std::string_view k, unsigned v) : key(k), number(v), is_number(true) {}
};

class Logger {
public:
    // Events go to log_fd and access records to access_fd; both stay open after the Logger.
    explicit Logger(int log_fd = STDERR_FILENO, int access_fd = STDOUT_FILENO);
    ~Logger();
    Logger(const Logger&) = delete;
    Logger& operator=(const Logger&) = delete;
    void configure(const config::Log& log);
    bool enabled(config::LogLevel level) const { return level >= level_; }

    void debug(std::string_view msg, std::initializer_list<Field> fields = {}) const {
        write(config::LogLevel::Debug, msg, fields);
    }
    void info(std::string_view msg, std::initializer_list<Field> fields = {}) const {
        write(config::LogLevel::Info, msg, fields);
    }
    void warn(std::string_view msg, std::initializer_list<Field> fields = {}) const {
        write(config::LogLevel::Warn, msg, fields);
    }
    void error(std::string_view msg, std::initializer_list<Field> fields = {}) const {
        write(config::LogLevel::Error, msg, fields);
    }
    // One access-log record, to stdout in log.format (JSON, or text: "time access key=value...").
    // Once attached, records collect until flushAccess() (the server calls it once per event-loop
    // iteration, so a burst of requests costs one write) or until kAccessBufferBytes have
    // collected; lines are never split.
    void access(std::initializer_list<Field> fields);
    void flushAccess();
    static constexpr size_t kAccessBufferBytes = 16 * 1024;

    // From now on nothing blocks the loop: each stream that is a pipe, terminal or socket gets a
    // queue of log.queue_bytes; lines that do not fit are dropped whole and counted.
    void attach(uv_loop_t* loop);
    // Writes what is buffered and queued, waiting for slow readers no longer than
    // kExitFlushTimeout in all, and lets go of the loop (call it before the loop is closed).
    void detach();
    static constexpr std::chrono::milliseconds kExitFlushTimeout{1000};

    uint64_t droppedLogLines() const { return log_stream_.droppedLines(); }
    uint64_t droppedAccessLines() const { return access_stream_.droppedLines(); }

    void write(config::LogLevel level, std::string_view msg, std::initializer_list<Field> fields) const;
    // The line write() would write, whatever the level.
    std::string formatLine(config::LogLevel level, std::string_view msg,
                           std::initializer_list<Field> fields) const;

private:
    config::LogLevel level_ = config::LogLevel::Info;
    config::LogFormat format_ = config::LogFormat::Text;
    std::string access_buf_;
    bool buffer_access_ = false;
    // Logging does not change what a const caller sees, but it does move bytes along.
    mutable LogStream log_stream_;
    LogStream access_stream_;
};

// Appends `s` to `out` as the inside of a JSON string. Valid UTF-8 is kept as it is, except the
// C1 controls (U+0080..U+009F) and U+2028/U+2029, which are escaped like the C0 controls and DEL.
// Each byte of a sequence that is not valid UTF-8 becomes \u00XX with that byte's value (so a
// stray 0xE9 reads back as U+00E9): the line stays valid JSON and the byte stays visible.
void appendJsonEscaped(std::string& out, std::string_view s);
// Appends a text-format value: as it is when it needs no escaping and has no space, '"' or '=';
// otherwise quoted and escaped as JSON escapes it.
void appendTextValue(std::string& out, std::string_view s);
// Current time as RFC 3339 UTC with milliseconds.
std::string timestampNow();
// A Unix time as RFC 3339 UTC, seconds precision (certificate validity in logs and messages).
std::string rfc3339(int64_t unix_seconds);

}  // namespace sidecar::core
