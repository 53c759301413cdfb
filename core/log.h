#pragma once
// Structured logging: one line per event, text or JSON, to stderr. Access logs go to stdout so
// that they can be shipped separately. A Logger is passed in; there is no global logger.

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "config/config.h"

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
    Logger() = default;
    ~Logger() { flushAccess(); }
    Logger(const Logger&) = delete;
    Logger& operator=(const Logger&) = delete;
    void configure(const config::Log& log) { level_ = log.level; format_ = log.format; }
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
    // One access-log record (always JSON, to stdout). With buffering on, records collect until
    // flushAccess() (the server calls it once per event-loop iteration, so a burst of requests
    // costs one write) or until kAccessBufferBytes have collected; lines are never split.
    void access(std::initializer_list<Field> fields);
    void bufferAccess(bool on);
    void flushAccess();
    static constexpr size_t kAccessBufferBytes = 16 * 1024;

    void write(config::LogLevel level, std::string_view msg, std::initializer_list<Field> fields) const;

private:
    config::LogLevel level_ = config::LogLevel::Info;
    config::LogFormat format_ = config::LogFormat::Text;
    std::string access_buf_;
    bool buffer_access_ = false;
};

// Appends `s` to `out` as the inside of a JSON string.
void appendJsonEscaped(std::string& out, std::string_view s);
// Current time as RFC 3339 UTC with milliseconds.
std::string timestampNow();

}  // namespace sidecar::core
