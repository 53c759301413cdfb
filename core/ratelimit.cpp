#include "core/ratelimit.h"

namespace sidecar::core {

TokenBucket::TokenBucket(const Rate& rate, uint64_t now_ms)
    : units_(uint64_t(rate.burst) * rate.period_ms), last_ms_(now_ms) {}

void TokenBucket::refill(const Rate& rate, uint64_t now_ms) {
    if (now_ms <= last_ms_) return;  // a clock that went backwards gives nothing
    const uint64_t elapsed = now_ms - last_ms_;
    last_ms_ = now_ms;
    const uint64_t capacity = uint64_t(rate.burst) * rate.period_ms;
    if (units_ >= capacity) {
        units_ = capacity;  // also when a reload shrank the burst
        return;
    }
    const uint64_t missing = capacity - units_;
    // Compared before multiplying so that a long gap cannot overflow.
    if (elapsed >= (missing + rate.count - 1) / rate.count) {
        units_ = capacity;
    } else {
        units_ += elapsed * rate.count;
    }
}

bool TokenBucket::take(const Rate& rate, uint64_t now_ms) {
    refill(rate, now_ms);
    if (units_ < rate.period_ms) return false;
    units_ -= rate.period_ms;
    return true;
}

uint64_t TokenBucket::waitMs(const Rate& rate, uint64_t now_ms) {
    refill(rate, now_ms);
    if (units_ >= rate.period_ms) return 0;
    const uint64_t need = rate.period_ms - units_;
    return (need + rate.count - 1) / rate.count;
}

uint64_t TokenBucket::available(const Rate& rate, uint64_t now_ms) {
    refill(rate, now_ms);
    return units_ / rate.period_ms;
}

uint32_t retryAfterSeconds(uint64_t wait_ms) {
    const uint64_t s = (wait_ms + 999) / 1000;
    return s == 0 ? 1 : uint32_t(s);
}

ClientTable::Entry& ClientTable::touch(std::string_view key, const Rate& rate, uint64_t now_ms) {
    if (auto it = index_.find(key); it != index_.end()) {
        order_.splice(order_.begin(), order_, it->second);
        return it->second->entry;
    }
    if (index_.size() >= max_entries_) {
        // Reuse the least recently used node: no allocation once the table is full.
        auto last = std::prev(order_.end());
        index_.erase(std::string_view(last->key));
        ++evictions_;
        last->key.assign(key);
        last->entry = Entry{TokenBucket(rate, now_ms), 0};
        order_.splice(order_.begin(), order_, last);
    } else {
        order_.push_front(Node{std::string(key), Entry{TokenBucket(rate, now_ms), 0}});
    }
    index_.emplace(std::string_view(order_.front().key), order_.begin());
    return order_.front().entry;
}

ClientTable::Entry* ClientTable::find(std::string_view key) {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &it->second->entry;
}

const char* ListenerLimiter::reasonName(Refusal r) {
    switch (r) {
        case Refusal::None: return "none";
        case Refusal::ConnectionRate: return "connection_rate";
        case Refusal::ClientConnections: return "client_connections";
        case Refusal::ClientConnectionRate: return "client_connection_rate";
    }
    return "?";
}

ClientTable& ListenerLimiter::table(std::unique_ptr<ClientTable>& t, uint32_t size) {
    if (!t || t->maxEntries() != size) t = std::make_unique<ClientTable>(size);
    return *t;
}

ListenerLimiter::Refusal ListenerLimiter::admitConnection(const config::Limits& limits,
                                                          std::string_view client,
                                                          uint64_t now_ms, bool* counted) {
    *counted = false;
    const config::ClientLimits& pc = limits.per_client;
    ClientTable::Entry* entry = nullptr;
    if (pc.enabled()) {
        entry = &table(clients_, pc.table_size).touch(client, pc.connection_rate, now_ms);
        if (pc.max_connections > 0 && entry->active >= pc.max_connections) {
            return Refusal::ClientConnections;
        }
    }
    // The listener's bucket first: a client refused by it spends none of its own tokens.
    if (limits.connection_rate.enabled()) {
        if (!connection_bucket_set_) {
            connection_bucket_ = TokenBucket(limits.connection_rate, now_ms);
            connection_bucket_set_ = true;
        }
        if (!connection_bucket_.take(limits.connection_rate, now_ms)) return Refusal::ConnectionRate;
    }
    if (entry && pc.connection_rate.enabled() && !entry->bucket.take(pc.connection_rate, now_ms)) {
        return Refusal::ClientConnectionRate;
    }
    if (entry && pc.max_connections > 0) {
        ++entry->active;
        *counted = true;
    }
    return Refusal::None;
}

ConcurrencyGate::Result ConcurrencyGate::acquire(uint32_t max, uint32_t queue_max, uintptr_t id) {
    // Nobody overtakes a waiter: with a queue, a free slot goes to the oldest one first.
    if (in_use_ < max && waiting_.empty()) {
        ++in_use_;
        return Result::Acquired;
    }
    if (waiting_.size() >= queue_max) return Result::Refused;
    waiting_.push_back(id);
    return Result::Queued;
}

void ConcurrencyGate::release() {
    if (in_use_ > 0) --in_use_;
}

uintptr_t ConcurrencyGate::grant(uint32_t max) {
    if (waiting_.empty() || in_use_ >= max) return 0;
    uintptr_t id = waiting_.front();
    waiting_.pop_front();
    ++in_use_;
    return id;
}

bool ConcurrencyGate::cancel(uintptr_t id) {
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
        if (*it == id) {
            waiting_.erase(it);
            return true;
        }
    }
    return false;
}

void ListenerLimiter::releaseConnection(std::string_view client) {
    // Absent when its entry was evicted meanwhile: the count went with it.
    if (!clients_) return;
    if (ClientTable::Entry* e = clients_->find(client); e && e->active > 0) --e->active;
}

uint64_t ListenerLimiter::admitRequest(const config::RequestRate& limit, size_t index,
                                       std::string_view key, uint64_t now_ms) {
    if (!limit.rate.enabled()) return 0;
    if (index >= request_rules_.size()) request_rules_.resize(index + 1);
    RuleState& rule = request_rules_[index];
    if (limit.key == config::RequestKey::Listener) {
        if (!rule.bucket_set) {
            rule.bucket = TokenBucket(limit.rate, now_ms);
            rule.bucket_set = true;
        }
        return rule.bucket.take(limit.rate, now_ms) ? 0 : rule.bucket.waitMs(limit.rate, now_ms);
    }
    TokenBucket& b = table(rule.keys, limit.table_size).touch(key, limit.rate, now_ms).bucket;
    return b.take(limit.rate, now_ms) ? 0 : b.waitMs(limit.rate, now_ms);
}

}  // namespace sidecar::core
