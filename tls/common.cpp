#include "tls/common.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sidecar::tls {
namespace {

constexpr long kMaxFileBytes = 10L << 20;  // certificates and keys are small; refuse /dev/zero

const char kHex[] = "0123456789abcdef";

}  // namespace

bool readFile(const std::string& path, std::string* out, std::string* error) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
        *error = "cannot read " + path + ": " + std::strerror(errno);
        return false;
    }
    out->clear();
    char buf[8192];
    for (;;) {
        size_t n = std::fread(buf, 1, sizeof buf, f);
        out->append(buf, n);
        if (long(out->size()) > kMaxFileBytes) {
            std::fclose(f);
            *error = "cannot read " + path + ": file is larger than 10 MiB";
            return false;
        }
        if (n < sizeof buf) break;
    }
    bool failed = std::ferror(f) != 0;
    int err = errno;
    std::fclose(f);
    if (failed) {
        *error = "cannot read " + path + ": " + std::strerror(err);
        return false;
    }
    if (out->empty()) {
        *error = "cannot read " + path + ": file is empty";
        return false;
    }
    return true;
}

bool sourceData(const std::string& pem, const std::string& path, const char* what,
                std::string* data, std::string* name, std::string* error) {
    if (!pem.empty()) {
        *data = pem;
        *name = "<memory>";
        return true;
    }
    if (path.empty()) {
        *error = std::string("no ") + what + " given";
        return false;
    }
    *name = path;
    return readFile(path, data, error);
}

bool allowListMatches(const AllowList& allow, const PeerIdentity& identity) {
    if (allow.empty()) return true;
    for (const std::string& want : allow.san_uri)
        for (const std::string& have : identity.san_uri)
            if (want == have) return true;
    for (const std::string& want : allow.san_dns)
        for (const std::string& have : identity.san_dns)
            if (equalsIgnoreCase(want, have)) return true;  // DNS names are case-insensitive
    for (const std::string& want : allow.cn)
        if (!identity.cn.empty() && want == identity.cn) return true;
    return false;
}

std::string lowerAscii(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return out;
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

std::string hexLower(const unsigned char* p, size_t n) {
    std::string s;
    s.reserve(n * 2);
    for (size_t i = 0; i < n; ++i) {
        s.push_back(kHex[p[i] >> 4]);
        s.push_back(kHex[p[i] & 15]);
    }
    return s;
}

std::string escapeNameValue(const unsigned char* p, size_t n) {
    std::string out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        unsigned char c = p[i];
        bool special = c == ',' || c == '+' || c == '"' || c == '\\' || c == '<' || c == '>' ||
                       c == ';' || (i == 0 && (c == '#' || c == ' ')) || (i + 1 == n && c == ' ');
        if (c < 0x20 || c == 0x7f) {
            out.push_back('\\');
            out.push_back(kHex[c >> 4]);
            out.push_back(kHex[c & 15]);
        } else {
            if (special) out.push_back('\\');
            out.push_back(char(c));
        }
    }
    return out;
}

std::string normalizeServerName(std::string_view name) {
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);
    return lowerAscii(name);
}

bool validServerNamePattern(const std::string& name) {
    if (name.empty()) return false;
    size_t star = name.find('*');
    if (star == std::string::npos) return true;
    return star == 0 && name.size() > 2 && name[1] == '.' && name.find('*', 1) == std::string::npos;
}

int64_t daysFromCivil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = unsigned(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + int64_t(doe) - 719468;
}

void CiphertextBuffers::feed(const uint8_t* data, size_t len) {
    if (len == 0) return;
    if (first_len_ < sizeof first_) {
        size_t n = std::min(len, sizeof first_ - first_len_);
        std::memcpy(first_ + first_len_, data, n);
        first_len_ += n;
    }
    if (in_pos_ == in_.size()) {
        if (in_.capacity() > kKeepInputCapacity && len <= kKeepInputCapacity)
            std::vector<uint8_t>().swap(in_);
        in_.clear();
        in_pos_ = 0;
    } else if (in_pos_ > 0 && (in_pos_ >= in_.size() / 2 || in_.size() + len > in_.capacity())) {
        // Compact rather than grow: records are read in order, the consumed prefix is dead.
        in_.erase(in_.begin(), in_.begin() + std::ptrdiff_t(in_pos_));
        in_pos_ = 0;
    }
    in_.insert(in_.end(), data, data + len);
}

size_t CiphertextBuffers::read(uint8_t* out, size_t len) noexcept {
    size_t n = std::min(len, in_.size() - in_pos_);
    if (n == 0) return 0;
    std::memcpy(out, in_.data() + in_pos_, n);
    in_pos_ += n;
    read_total_ += n;
    return n;
}

bool CiphertextBuffers::write(const uint8_t* data, size_t len) noexcept {
    try {
        out_.insert(out_.end(), data, data + len);
    } catch (...) {
        return false;
    }
    return true;
}

void CiphertextBuffers::take(std::vector<uint8_t>& out) {
    out.clear();
    out_.swap(out);
}

void CiphertextBuffers::releaseIdle() {
    if (in_pos_ == in_.size() && in_.capacity() != 0) {
        std::vector<uint8_t>().swap(in_);
        in_pos_ = 0;
    }
    if (out_.empty() && out_.capacity() != 0) std::vector<uint8_t>().swap(out_);
}

}  // namespace sidecar::tls
