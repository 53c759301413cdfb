#include "core/log.h"

#include <sys/time.h>

#include <cstdio>
#include <ctime>

namespace sidecar::core {

namespace {

const char* levelName(config::LogLevel level) {
    switch (level) {
        case config::LogLevel::Debug: return "debug";
        case config::LogLevel::Info: return "info";
        case config::LogLevel::Warn: return "warn";
        case config::LogLevel::Error: return "error";
    }
    return "info";
}

// Length (2 to 4) of the valid UTF-8 sequence at the start of `s`, with its code point; 0 when
// there is none: overlong forms, surrogates and values past U+10FFFF are not valid.
size_t utf8Sequence(std::string_view s, uint32_t* cp) {
    const auto lead = static_cast<unsigned char>(s[0]);
    size_t len = 0;
    uint32_t value = 0;
    if (lead >= 0xc2 && lead <= 0xdf) {
        len = 2;
        value = lead & 0x1fu;
    } else if (lead >= 0xe0 && lead <= 0xef) {
        len = 3;
        value = lead & 0x0fu;
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        len = 4;
        value = lead & 0x07u;
    } else {
        return 0;
    }
    if (s.size() < len) return 0;
    for (size_t i = 1; i < len; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if ((c & 0xc0u) != 0x80u) return 0;
        value = (value << 6) | (c & 0x3fu);
    }
    if (len == 3 && (value < 0x800 || (value >= 0xd800 && value <= 0xdfff))) return 0;
    if (len == 4 && (value < 0x10000 || value > 0x10ffff)) return 0;
    *cp = value;
    return len;
}

void appendUnicodeEscape(std::string& out, uint32_t cp) {
    static const char hex[] = "0123456789abcdef";
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += hex[(cp >> shift) & 15];
}

// ,"key":value for each field.
void appendJsonFields(std::string& line, std::initializer_list<Field> fields) {
    for (const Field& f : fields) {
        line += ",\"";
        appendJsonEscaped(line, f.key);
        line += "\":";
        if (f.is_number) {
            line += std::to_string(f.number);
        } else {
            line += '"';
            appendJsonEscaped(line, f.text);
            line += '"';
        }
    }
}

// key=value for each field, each after a space.
void appendTextFields(std::string& line, std::initializer_list<Field> fields) {
    for (const Field& f : fields) {
        line += ' ';
        appendJsonEscaped(line, f.key);
        line += '=';
        if (f.is_number) {
            line += std::to_string(f.number);
        } else {
            appendTextValue(line, f.text);
        }
    }
}

std::string droppedMessage(uint64_t n) {
    return std::to_string(n) + " log lines dropped: stream was not writable";
}

}  // namespace

void appendJsonEscaped(std::string& out, std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            uint32_t cp = 0;
            const size_t len = utf8Sequence(s.substr(i), &cp);
            if (len == 0) {
                appendUnicodeEscape(out, c);  // not UTF-8: the byte itself, as U+00XX
                ++i;
            } else if (cp <= 0x9f || cp == 0x2028 || cp == 0x2029) {
                appendUnicodeEscape(out, cp);
                i += len;
            } else {
                out.append(s.substr(i, len));
                i += len;
            }
            continue;
        }
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    appendUnicodeEscape(out, c);
                } else {
                    out += static_cast<char>(c);
                }
        }
        ++i;
    }
}

void appendTextValue(std::string& out, std::string_view s) {
    const size_t start = out.size();
    out += '"';
    appendJsonEscaped(out, s);
    const std::string_view escaped = std::string_view(out).substr(start + 1);
    if (!s.empty() && escaped == s && s.find_first_of(" =") == std::string_view::npos) {
        out.erase(start, 1);
    } else {
        out += '"';
    }
}

std::string timestampNow() {
    struct timeval tv;
    gettimeofday(&tv, nullptr);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char buf[64];
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             static_cast<int>(tv.tv_usec / 1000));
    return buf;
}

std::string rfc3339(int64_t unix_seconds) {
    const time_t t = time_t(unix_seconds);
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[64];
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

Logger::Logger(int log_fd, int access_fd)
    : log_stream_(log_fd,
                  [this](uint64_t n) {
                      return formatLine(config::LogLevel::Warn, droppedMessage(n),
                                        {{"stream", "log"}, {"dropped", n}});
                  }),
      access_stream_(access_fd, [](uint64_t n) {
          // Access streams are JSON whatever log.format says; no "type" keeps it apart from
          // the access records.
          std::string line = "{\"time\":\"" + timestampNow() + "\",\"level\":\"warn\",\"msg\":\"";
          line += droppedMessage(n);
          line += "\",\"stream\":\"access\",\"dropped\":" + std::to_string(n) + "}\n";
          return line;
      }) {}

Logger::~Logger() { flushAccess(); }

void Logger::configure(const config::Log& log) {
    level_ = log.level;
    format_ = log.format;
    log_stream_.setQueueLimit(size_t(log.queue_bytes));
    access_stream_.setQueueLimit(size_t(log.queue_bytes));
}

std::string Logger::formatLine(config::LogLevel level, std::string_view msg,
                               std::initializer_list<Field> fields) const {
    std::string line;
    line.reserve(160);
    if (format_ == config::LogFormat::Json) {
        line += "{\"time\":\"";
        line += timestampNow();
        line += "\",\"level\":\"";
        line += levelName(level);
        line += "\",\"msg\":\"";
        appendJsonEscaped(line, msg);
        line += '"';
        appendJsonFields(line, fields);
        line += "}\n";
    } else {
        line += timestampNow();
        line += ' ';
        line += levelName(level);
        line += ' ';
        appendJsonEscaped(line, msg);  // a message is never quoted, but stays on its line
        appendTextFields(line, fields);
        line += '\n';
    }
    return line;
}

void Logger::write(config::LogLevel level, std::string_view msg,
                   std::initializer_list<Field> fields) const {
    if (!enabled(level)) return;
    log_stream_.write(formatLine(level, msg, fields));
}

void Logger::access(std::initializer_list<Field> fields) {
    std::string& line = access_buf_;
    if (line.capacity() == 0) line.reserve(buffer_access_ ? kAccessBufferBytes + 1024 : 256);
    if (format_ == config::LogFormat::Json) {
        line += "{\"time\":\"";
        line += timestampNow();
        line += "\",\"type\":\"access\"";
        appendJsonFields(line, fields);
        line += "}\n";
    } else {
        line += timestampNow();
        line += " access";
        appendTextFields(line, fields);
        line += '\n';
    }
    if (!buffer_access_ || line.size() >= kAccessBufferBytes) flushAccess();
}

void Logger::flushAccess() {
    if (access_buf_.empty()) return;
    access_stream_.write(access_buf_);
    access_buf_.clear();
}

void Logger::attach(uv_loop_t* loop) {
    buffer_access_ = true;
    if (auto why = log_stream_.attach(loop)) {
        warn("log lines may block the proxy: stderr stays in blocking mode", {{"error", *why}});
    }
    if (auto why = access_stream_.attach(loop)) {
        warn("access lines may block the proxy: stdout stays in blocking mode", {{"error", *why}});
    }
}

void Logger::detach() {
    buffer_access_ = false;
    flushAccess();
    const auto deadline = LogStream::Clock::now() + kExitFlushTimeout;
    access_stream_.detach(deadline);
    log_stream_.detach(deadline);
}

}  // namespace sidecar::core
