#include "tls/policy.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "tls/common.h"

namespace sidecar::tls {
namespace {

// IANA names of the TLS 1.2 suites, for the hint when a config uses them.
struct IanaAlias {
    const char* iana_name;
    const char* name;
};
const IanaAlias kTls12IanaNames[] = {
    {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"},
    {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"},
    {"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"},
    {"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"},
    {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"},
};

bool inTable(const std::vector<PolicyName>& table, const std::string& name) {
    for (const PolicyName& n : table)
        if (name == n.name) return true;
    return false;
}

std::string names(const std::vector<PolicyName>& table) {
    std::string out;
    for (const PolicyName& n : table) out += (out.empty() ? "" : ", ") + std::string(n.name);
    return out;
}

}  // namespace

const std::vector<PolicyName>& tls12CipherSuites() {
    // AEAD with forward secrecy only: ECDHE with AES-GCM or ChaCha20-Poly1305, for ECDSA and RSA
    // certificates.
    static const std::vector<PolicyName> table = {
        {"ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02B}, {"ECDHE-RSA-AES128-GCM-SHA256", 0xC02F},
        {"ECDHE-ECDSA-AES256-GCM-SHA384", 0xC02C}, {"ECDHE-RSA-AES256-GCM-SHA384", 0xC030},
        {"ECDHE-ECDSA-CHACHA20-POLY1305", 0xCCA9}, {"ECDHE-RSA-CHACHA20-POLY1305", 0xCCA8},
    };
    return table;
}

const std::vector<PolicyName>& tls13CipherSuites() {
    static const std::vector<PolicyName> table = {
        {"TLS_AES_128_GCM_SHA256", 0x1301},
        {"TLS_AES_256_GCM_SHA384", 0x1302},
        {"TLS_CHACHA20_POLY1305_SHA256", 0x1303},
    };
    return table;
}

const std::vector<PolicyName>& keyExchangeGroups() {
    static const std::vector<PolicyName> table = {
        {"x25519", 0x001D},
        {"secp256r1", 0x0017},
        {"secp384r1", 0x0018},
        {"secp521r1", 0x0019},
    };
    return table;
}

std::string unknownPolicyName(const std::string& setting, const std::string& name) {
    const bool groups = setting == "groups" || setting.ends_with(".groups");
    const bool tls13 =
        setting == "tls13_cipher_suites" || setting.ends_with(".tls13_cipher_suites");
    const std::vector<PolicyName>& table = groups  ? keyExchangeGroups()
                                           : tls13 ? tls13CipherSuites()
                                                   : tls12CipherSuites();
    const char* kind = groups  ? "key exchange group"
                       : tls13 ? "TLS 1.3 cipher suite"
                               : "TLS 1.2 cipher suite";
    std::string hint;
    if (!groups && !tls13 && inTable(tls13CipherSuites(), name)) {
        hint = "; TLS 1.3 suites go in tls13_cipher_suites";
    } else if (!groups && tls13 && inTable(tls12CipherSuites(), name)) {
        hint = "; TLS 1.2 suites go in cipher_suites";
    } else if (!groups && !tls13) {
        for (const IanaAlias& a : kTls12IanaNames)
            if (name == a.iana_name) hint = std::string("; write it as ") + a.name;
    } else if (groups) {
        for (const PolicyName& n : table)
            if (lowerAscii(name) == n.name) hint = std::string("; write it as ") + n.name;
        if (lowerAscii(name) == "p-256" || lowerAscii(name) == "prime256v1")
            hint = "; write it as secp256r1";
        if (lowerAscii(name) == "p-384") hint = "; write it as secp384r1";
        if (lowerAscii(name) == "p-521") hint = "; write it as secp521r1";
    }
    return setting + ": \"" + name + "\" is not a supported " + kind +
           " (supported: " + names(table) + ")" + hint;
}

namespace crl_text {

std::string noCrl(const std::string& path) {
    return path + " holds no certificate revocation list (expected PEM \"X509 CRL\" blocks or DER)";
}

std::string notFromBundle(const std::string& path, const std::string& issuer) {
    return "the CRL in " + path + " is issued by \"" + issuer +
           "\", which is not a CA of the client_ca bundle";
}

std::string badSignature(const std::string& path, const std::string& issuer) {
    return "the CRL in " + path + " (issuer \"" + issuer +
           "\") has a signature that its CA does not verify";
}

std::string expired(const std::string& path, const std::string& issuer, int64_t next_update) {
    time_t t = time_t(next_update);
    struct tm tm {};
    gmtime_r(&t, &tm);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return "the CRL in " + path + " (issuer \"" + issuer + "\") is out of date since " + when +
           " (its next update); every client certificate of that CA would be refused";
}

}  // namespace crl_text

std::shared_ptr<KeyLog> KeyLog::open(const std::string& path, std::string* error) {
    // Never world-readable: whoever reads it can decrypt the traffic.
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        *error = "cannot open key_log file " + path + ": " + std::strerror(errno);
        return nullptr;
    }
    return std::shared_ptr<KeyLog>(new KeyLog(fd, path));
}

KeyLog::~KeyLog() { ::close(fd_); }

void KeyLog::writeLine(std::string_view line) noexcept {
    char buf[512];
    if (line.size() + 1 > sizeof buf) return;
    std::memcpy(buf, line.data(), line.size());
    buf[line.size()] = '\n';
    ssize_t n;
    do {
        n = ::write(fd_, buf, line.size() + 1);
    } while (n < 0 && errno == EINTR);
}

void KeyLog::write(const char* label, const unsigned char* client_random,
                   const unsigned char* secret, size_t secret_len) noexcept {
    static const char kHex[] = "0123456789abcdef";
    char buf[512];
    size_t label_len = std::strlen(label);
    if (label_len + 1 + 64 + 1 + 2 * secret_len > sizeof buf) return;
    size_t at = 0;
    std::memcpy(buf, label, label_len);
    at += label_len;
    buf[at++] = ' ';
    for (size_t i = 0; i < 32; ++i) {
        buf[at++] = kHex[client_random[i] >> 4];
        buf[at++] = kHex[client_random[i] & 15];
    }
    buf[at++] = ' ';
    for (size_t i = 0; i < secret_len; ++i) {
        buf[at++] = kHex[secret[i] >> 4];
        buf[at++] = kHex[secret[i] & 15];
    }
    writeLine(std::string_view(buf, at));
}

}  // namespace sidecar::tls
