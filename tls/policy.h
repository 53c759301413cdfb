#pragma once
// The TLS policy knobs every backend reads the same way: cipher suite and group names (one naming
// for both libraries, checked against one table, with one set of messages), and the key log file.
// Library-free; each backend maps the IANA code points below to its own form.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tls/backend.h"

namespace sidecar::tls {

// A name the config may use and the IANA code point it stands for.
struct PolicyName {
    const char* name;
    uint16_t iana;
};

// TLS 1.2 suites by their OpenSSL names (ECDHE-ECDSA-AES128-GCM-SHA256), TLS 1.3 suites by their
// standard names (TLS_AES_128_GCM_SHA256), groups by their IANA names (x25519, secp256r1). Each
// table is in the default order of preference and holds exactly the default set: a policy can
// narrow or reorder the defaults, never widen them.
const std::vector<PolicyName>& tls12CipherSuites();
const std::vector<PolicyName>& tls13CipherSuites();
const std::vector<PolicyName>& keyExchangeGroups();

// The policy with names resolved to code points, each list in the configured order (the default
// list when none was configured).
struct ResolvedPolicy {
    std::vector<uint16_t> tls12_suites;
    std::vector<uint16_t> tls13_suites;
    std::vector<uint16_t> groups;
};

// Resolves `policy`; `supported(iana)` says whether this build's library has a suite (a build may
// leave one out). On failure: a message naming the setting, the name, and the accepted names.
template <typename Supported>
bool resolvePolicy(const Policy& policy, Supported&& supported, ResolvedPolicy* out,
                   std::string* error);

// The message for a name that is not in `table`, shared with the config checks' wording:
// `"NAME" is not a supported KIND (supported: A, B, C)`, with a hint when the name belongs to the
// other TLS version's list or is the IANA spelling of a TLS 1.2 suite.
std::string unknownPolicyName(const std::string& setting, const std::string& name);

// The NSS key log format ("SSLKEYLOGFILE"): one line per secret, "LABEL <client random hex>
// <secret hex>". Opened append-only when a context is made; shared by the context's sessions.
class KeyLog {
public:
    static std::shared_ptr<KeyLog> open(const std::string& path, std::string* error);
    ~KeyLog();
    KeyLog(const KeyLog&) = delete;
    KeyLog& operator=(const KeyLog&) = delete;

    const std::string& path() const { return path_; }
    // One complete line (without its newline), written with one append so that lines of
    // concurrent sessions never interleave. Failures are ignored: this is a debugging aid.
    void writeLine(std::string_view line) noexcept;
    void write(const char* label, const unsigned char* client_random, const unsigned char* secret,
               size_t secret_len) noexcept;

private:
    KeyLog(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
    int fd_;
    std::string path_;
};

// Messages about a CRL file, the same from every backend.
namespace crl_text {
std::string noCrl(const std::string& path);
std::string notFromBundle(const std::string& path, const std::string& issuer);
std::string badSignature(const std::string& path, const std::string& issuer);
std::string expired(const std::string& path, const std::string& issuer, int64_t next_update);
}  // namespace crl_text

// ---- implementation of the template above ----

namespace detail {
template <typename Supported>
bool resolveList(const std::vector<std::string>& names, const std::vector<PolicyName>& table,
                 const char* setting, Supported& supported, std::vector<uint16_t>* out,
                 std::string* error) {
    out->clear();
    if (names.empty()) {
        for (const PolicyName& n : table)
            if (supported(n.iana)) out->push_back(n.iana);
        return true;
    }
    for (const std::string& name : names) {
        const PolicyName* found = nullptr;
        for (const PolicyName& n : table)
            if (name == n.name) found = &n;
        if (found == nullptr) {
            *error = unknownPolicyName(setting, name);
            return false;
        }
        if (!supported(found->iana)) {
            std::string list;
            for (const PolicyName& n : table)
                if (supported(n.iana)) list += (list.empty() ? "" : ", ") + std::string(n.name);
            *error = std::string(setting) + ": \"" + name +
                     "\" is not supported by this build's TLS library (supported: " + list + ")";
            return false;
        }
        for (uint16_t have : *out) {
            if (have == found->iana) {
                *error = std::string(setting) + ": \"" + name + "\" is listed twice";
                return false;
            }
        }
        out->push_back(found->iana);
    }
    return true;
}
}  // namespace detail

template <typename Supported>
bool resolvePolicy(const Policy& policy, Supported&& supported, ResolvedPolicy* out,
                   std::string* error) {
    auto all = [](uint16_t) { return true; };
    return detail::resolveList(policy.cipher_suites, tls12CipherSuites(), "cipher_suites",
                               supported, &out->tls12_suites, error) &&
           detail::resolveList(policy.tls13_cipher_suites, tls13CipherSuites(),
                               "tls13_cipher_suites", supported, &out->tls13_suites, error) &&
           detail::resolveList(policy.groups, keyExchangeGroups(), "groups", all, &out->groups,
                               error);
}

}  // namespace sidecar::tls
