#include "core/dns.h"

#include <arpa/inet.h>

#include <algorithm>
#include <numeric>

namespace sidecar::core::dns {

namespace {

constexpr size_t kMaxNameservers = 3;  // MAXNS
constexpr size_t kMaxSearch = 32;

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\r'; }

char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

std::vector<std::string_view> words(std::string_view line) {
    std::vector<std::string_view> out;
    size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && isSpace(line[i])) ++i;
        size_t start = i;
        while (i < line.size() && !isSpace(line[i])) ++i;
        if (i > start) out.push_back(line.substr(start, i - start));
    }
    return out;
}

// Calls `each` with every line, comments (# or ;) cut off.
template <typename F>
void eachLine(std::string_view text, F each) {
    size_t start = 0;
    while (start <= text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string_view::npos) end = text.size();
        std::string_view line = text.substr(start, end - start);
        size_t comment = line.find_first_of("#;");
        if (comment != std::string_view::npos) line = line.substr(0, comment);
        each(words(line));
        start = end + 1;
    }
}

std::optional<int> number(std::string_view text) {
    if (text.empty() || text.size() > 6) return std::nullopt;
    int value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + (c - '0');
    }
    return value;
}

bool sameName(std::string_view a, std::string_view b) {
    if (a.ends_with('.')) a.remove_suffix(1);
    if (b.ends_with('.')) b.remove_suffix(1);
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

}  // namespace

std::string Address::toString() const {
    char buffer[INET6_ADDRSTRLEN] = {};
    inet_ntop(family == 4 ? AF_INET : AF_INET6, bytes.data(), buffer, sizeof buffer);
    return buffer;
}

std::optional<Address> parseAddress(std::string_view text) {
    if (text.empty() || text.size() > 45) return std::nullopt;
    std::string copy(text);
    Address address;
    if (copy.find(':') != std::string::npos) {
        address.family = 6;
        if (inet_pton(AF_INET6, copy.c_str(), address.bytes.data()) != 1) return std::nullopt;
        return address;
    }
    // inet_pton's AF_INET form is the strict dotted quad.
    address.family = 4;
    if (inet_pton(AF_INET, copy.c_str(), address.bytes.data()) != 1) return std::nullopt;
    return address;
}

ResolvConf parseResolvConf(std::string_view text) {
    ResolvConf conf;
    eachLine(text, [&](const std::vector<std::string_view>& w) {
        if (w.empty()) return;
        if (w[0] == "nameserver" && w.size() >= 2) {
            // A zone ("fe80::1%eth0") names an interface this resolver does not bind to.
            auto address = parseAddress(w[1]);
            if (address && conf.nameservers.size() < kMaxNameservers &&
                std::find(conf.nameservers.begin(), conf.nameservers.end(), *address) ==
                    conf.nameservers.end()) {
                conf.nameservers.push_back(*address);
            }
        } else if (w[0] == "search" || w[0] == "domain") {
            // The last of either line wins; domain is a one-entry search list.
            conf.search.clear();
            for (size_t i = 1; i < w.size() && conf.search.size() < kMaxSearch; ++i) {
                std::string_view domain = w[i];
                if (domain.ends_with('.')) domain.remove_suffix(1);
                if (domain.empty()) continue;
                conf.search.emplace_back(domain);
                if (w[0] == "domain") break;
            }
        } else if (w[0] == "options") {
            for (size_t i = 1; i < w.size(); ++i) {
                std::string_view option = w[i];
                size_t colon = option.find(':');
                std::string_view key = option.substr(0, colon);
                std::optional<int> value;
                if (colon != std::string_view::npos) value = number(option.substr(colon + 1));
                if (key == "ndots" && value) conf.ndots = std::min(*value, 15);
                if (key == "timeout" && value) conf.timeout_s = std::clamp(*value, 1, 30);
                if (key == "attempts" && value) conf.attempts = std::clamp(*value, 1, 5);
                if (key == "rotate" && colon == std::string_view::npos) conf.rotate = true;
            }
        }
    });
    if (conf.nameservers.empty()) conf.nameservers.push_back(*parseAddress("127.0.0.1"));
    return conf;
}

std::vector<Address> lookupHosts(std::string_view text, std::string_view name) {
    std::vector<Address> out;
    eachLine(text, [&](const std::vector<std::string_view>& w) {
        if (w.size() < 2) return;
        auto address = parseAddress(w[0]);
        if (!address) return;
        for (size_t i = 1; i < w.size(); ++i) {
            if (!sameName(w[i], name)) continue;
            if (std::find(out.begin(), out.end(), *address) == out.end()) out.push_back(*address);
            break;
        }
    });
    return out;
}

uint64_t clampTtl(int64_t ttl_s, const Policy& policy) {
    const uint64_t ms = ttl_s <= 0 ? 0 : uint64_t(std::min<int64_t>(ttl_s, 1 << 30)) * 1000;
    return std::clamp(ms, policy.min_ttl_ms, std::max(policy.min_ttl_ms, policy.max_ttl_ms));
}

uint64_t retryDelay(uint32_t failures, const Policy& policy) {
    const uint64_t cap = std::max(policy.min_ttl_ms, std::min(policy.max_ttl_ms, kMaxRetryMs));
    uint64_t delay = policy.min_ttl_ms;
    for (uint32_t i = 1; i < failures && delay < cap; ++i) delay *= 2;
    return std::min(delay, cap);
}

bool NameState::resolved(std::vector<Address> addresses, int64_t ttl_s, uint64_t now,
                         const Policy& policy) {
    std::vector<Address> unique;
    for (const Address& a : addresses) {
        if (std::find(unique.begin(), unique.end(), a) == unique.end()) unique.push_back(a);
    }
    previous_ = health_;
    health_ = Health::Resolved;
    failures_ = 0;
    error_.clear();
    refresh_at_ = now + clampTtl(ttl_s, policy);
    // A DNS server that rotates its answers changes the order, not the set: the new order is
    // taken (it spreads connections the way the server meant) but is not a change.
    const bool same = unique.size() == addresses_.size() &&
                      std::is_permutation(unique.begin(), unique.end(), addresses_.begin());
    // An address that stays keeps its failure mark.
    std::vector<std::optional<uint64_t>> marks(unique.size());
    for (size_t i = 0; i < unique.size(); ++i) {
        auto it = std::find(addresses_.begin(), addresses_.end(), unique[i]);
        if (it != addresses_.end()) marks[i] = failed_at_[size_t(it - addresses_.begin())];
    }
    addresses_ = std::move(unique);
    failed_at_ = std::move(marks);
    return !same;
}

bool NameState::failed(std::string error, uint64_t now, const Policy& policy) {
    previous_ = health_;
    health_ = Health::Failing;
    ++failures_;
    error_ = std::move(error);
    refresh_at_ = now + retryDelay(failures_, policy);
    return previous_ != Health::Failing;
}

std::vector<Address> NameState::candidates(uint64_t now, const Policy& policy) const {
    std::vector<size_t> fresh;
    std::vector<size_t> backing_off;
    for (size_t i = 0; i < addresses_.size(); ++i) {
        const auto& at = failed_at_[i];
        if (at && now < *at + policy.failure_backoff_ms) {
            backing_off.push_back(i);
        } else {
            fresh.push_back(i);
        }
    }
    std::stable_sort(backing_off.begin(), backing_off.end(),
                     [&](size_t a, size_t b) { return *failed_at_[a] < *failed_at_[b]; });
    std::vector<Address> out;
    out.reserve(addresses_.size());
    for (size_t i : fresh) out.push_back(addresses_[i]);
    for (size_t i : backing_off) out.push_back(addresses_[i]);
    return out;
}

void NameState::connectFailed(const Address& address, uint64_t now) {
    auto it = std::find(addresses_.begin(), addresses_.end(), address);
    if (it != addresses_.end()) failed_at_[size_t(it - addresses_.begin())] = now;
}

void NameState::connectSucceeded(const Address& address) {
    auto it = std::find(addresses_.begin(), addresses_.end(), address);
    if (it != addresses_.end()) failed_at_[size_t(it - addresses_.begin())].reset();
}

const char* healthName(NameState::Health health) {
    switch (health) {
        case NameState::Health::Pending:
            return "pending";
        case NameState::Health::Resolved:
            return "resolved";
        case NameState::Health::Failing:
            return "failing";
    }
    return "?";
}

}  // namespace sidecar::core::dns
