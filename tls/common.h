#pragma once
// Pieces every backend shares, so that files, names and allow lists are read the same way
// whichever library runs: file loading with operator-facing messages, the allow list, the
// server-name rules for SNI certificates, and the text forms of certificate facts.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tls/backend.h"

namespace sidecar::tls {

constexpr const char* kSystemCaBundle = "/etc/ssl/certs/ca-certificates.crt";

// Reads a whole (small) file. On failure: "cannot read PATH: REASON".
bool readFile(const std::string& path, std::string* out, std::string* error);

// Certificate data and a name for messages, from PEM in memory or a file.
bool sourceData(const std::string& pem, const std::string& path, const char* what,
                std::string* data, std::string* name, std::string* error);

// An empty list allows everyone; otherwise any one matching entry suffices.
bool allowListMatches(const AllowList& allow, const PeerIdentity& identity);

std::string lowerAscii(std::string_view s);
bool equalsIgnoreCase(std::string_view a, std::string_view b);
std::string hexLower(const unsigned char* p, size_t n);

// RFC 4514 section 2.4 escaping of an attribute value.
std::string escapeNameValue(const unsigned char* p, size_t n);

// "www.example.com." and "WWW.Example.com" name the same host.
std::string normalizeServerName(std::string_view name);
// An exact name, or a wildcard first label ("*.example.com").
bool validServerNamePattern(const std::string& name);

// SNI certificate selection, the same for every backend: entries with an exact name equal to
// the requested one win; failing those, entries with a wildcard covering its first label. Calls
// select(entry) for every entry of the winning kind (several may serve one name, e.g. an ECDSA
// and an RSA certificate) and returns whether there was one. `Entry::names` holds normalized
// patterns. Allocates nothing, for use inside a library callback.
template <typename Entry, typename Select>
bool selectServerNameEntries(const std::vector<Entry>& entries, std::string_view requested,
                             Select&& select) noexcept {
    if (entries.empty() || requested.empty() || requested.size() > 255) return false;
    char buf[256];
    size_t n = requested.size();
    if (requested[n - 1] == '.') --n;
    for (size_t i = 0; i < n; ++i) {
        char c = requested[i];
        buf[i] = c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
    }
    std::string_view name(buf, n);
    size_t dot = name.find('.');
    std::string_view parent =
        dot == std::string_view::npos || dot == 0 ? std::string_view() : name.substr(dot);
    for (int pass = 0; pass < 2; ++pass) {
        bool found = false;
        for (const Entry& e : entries) {
            for (const std::string& pattern : e.names) {
                bool match = pass == 0 ? pattern == name
                                       : !parent.empty() && pattern[0] == '*' &&
                                             std::string_view(pattern).substr(1) == parent;
                if (!match) continue;
                select(e);
                found = true;
                break;
            }
        }
        if (found) return true;
    }
    return false;
}

// The ciphertext a session holds outside its library: what the peer sent and the library has
// not read yet, what the library wrote and core has not taken yet, and the peer's first bytes
// (to name a peer that does not speak TLS). Both backends reach it through their I/O callbacks.
class CiphertextBuffers {
public:
    void feed(const uint8_t* data, size_t len);
    // Up to len received bytes for the library; 0 when none is buffered.
    size_t read(uint8_t* out, size_t len) noexcept;
    // Ciphertext the library produced; false when memory ran out.
    bool write(const uint8_t* data, size_t len) noexcept;
    bool hasOutput() const { return !out_.empty(); }
    // Swaps the output into `out`: the caller's vector (and its capacity) comes back as ours.
    void take(std::vector<uint8_t>& out);
    bool hasInput() const { return in_pos_ < in_.size(); }
    // Bytes handed to the library so far: a progress mark across calls.
    uint64_t readTotal() const { return read_total_; }
    // Waiting for the peer with nothing buffered: both vectors give their capacity back, so an
    // idle session holds only its library's state.
    void releaseIdle();
    const uint8_t* first() const { return first_; }
    size_t firstLength() const { return first_len_; }

private:
    static constexpr size_t kKeepInputCapacity = 64 * 1024;
    std::vector<uint8_t> in_;  // in_[in_pos_..] not yet read by the library
    size_t in_pos_ = 0;
    uint64_t read_total_ = 0;
    std::vector<uint8_t> out_;
    uint8_t first_[8] = {};
    size_t first_len_ = 0;
};

// Days since 1970-01-01 of a proleptic Gregorian calendar date.
int64_t daysFromCivil(int64_t y, unsigned m, unsigned d);

}  // namespace sidecar::tls
