#include "core/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
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

void writeLine(int fd, const std::string& line) {
    // One write per line (or per batch of whole lines) keeps lines whole on a shared stream.
    size_t off = 0;
    while (off < line.size()) {
        ssize_t n = ::write(fd, line.data() + off, line.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // nowhere to report a failing log stream
        off += static_cast<size_t>(n);
    }
}

bool needsQuotes(std::string_view s) {
    if (s.empty()) return true;
    for (char c : s) {
        if (c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x20) return true;
    }
    return false;
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

}  // namespace

void appendJsonEscaped(std::string& out, std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    out += "\\u00";
                    out += hex[c >> 4];
                    out += hex[c & 15];
                } else {
                    out += static_cast<char>(c);
                }
        }
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

void Logger::write(config::LogLevel level, std::string_view msg,
                   std::initializer_list<Field> fields) const {
    if (!enabled(level)) return;
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
        line += msg;
        for (const Field& f : fields) {
            line += ' ';
            line += f.key;
            line += '=';
            if (f.is_number) {
                line += std::to_string(f.number);
            } else if (needsQuotes(f.text)) {
                line += '"';
                appendJsonEscaped(line, f.text);
                line += '"';
            } else {
                line += f.text;
            }
        }
        line += '\n';
    }
    writeLine(STDERR_FILENO, line);
}

void Logger::access(std::initializer_list<Field> fields) {
    std::string& line = access_buf_;
    if (line.capacity() == 0) line.reserve(buffer_access_ ? kAccessBufferBytes + 1024 : 256);
    line += "{\"time\":\"";
    line += timestampNow();
    line += "\",\"type\":\"access\"";
    appendJsonFields(line, fields);
    line += "}\n";
    if (!buffer_access_ || line.size() >= kAccessBufferBytes) flushAccess();
}

void Logger::bufferAccess(bool on) {
    buffer_access_ = on;
    if (!on) flushAccess();
}

void Logger::flushAccess() {
    if (access_buf_.empty()) return;
    writeLine(STDOUT_FILENO, access_buf_);
    access_buf_.clear();
}

}  // namespace sidecar::core
