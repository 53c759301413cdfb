#pragma once
// Reusable byte buffers and write requests. A write request owns its bytes until libuv's
// callback; both are recycled through free lists so the steady state allocates nothing.

#include <uv.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace sidecar::core {

class Connection;

using Bytes = std::vector<uint8_t>;

class BufferPool {
public:
    // Buffers larger than this are not kept (a burst must not pin memory forever), nor more than
    // kMaxKeptBytes of capacity in all.
    static constexpr size_t kMaxKeptCapacity = 64 * 1024;
    static constexpr size_t kMaxKeptBytes = 1024 * 1024;
    // Of the buffers under kSmallCapacity, at most kMaxKeptSmall are kept. Some writers hand
    // buffers in without taking any out (a TLS session's ciphertext vector goes to the socket
    // and then here): uncapped, a thousand handshakes would leave a thousand small vectors.
    static constexpr size_t kSmallCapacity = 4 * 1024;
    static constexpr size_t kMaxKeptSmall = 64;

    Bytes get() {
        if (free_.empty()) return {};
        Bytes b = std::move(free_.back());
        free_.pop_back();
        kept_bytes_ -= b.capacity();
        if (b.capacity() < kSmallCapacity) --kept_small_;
        return b;
    }
    void put(Bytes&& b) {
        size_t cap = b.capacity();
        bool small = cap < kSmallCapacity;
        if (cap == 0 || cap > kMaxKeptCapacity || kept_bytes_ + cap > kMaxKeptBytes ||
            (small && kept_small_ >= kMaxKeptSmall)) {
            Bytes().swap(b);
            return;
        }
        b.clear();
        kept_bytes_ += cap;
        if (small) ++kept_small_;
        free_.push_back(std::move(b));
    }
    size_t keptBytes() const { return kept_bytes_; }
    size_t keptBuffers() const { return free_.size(); }
    // Frees every kept buffer (the proxy is idle: give the memory back).
    void release() {
        std::vector<Bytes>().swap(free_);
        kept_bytes_ = 0;
        kept_small_ = 0;
    }

private:
    std::vector<Bytes> free_;
    size_t kept_bytes_ = 0;
    size_t kept_small_ = 0;
};

struct WriteReq {
    uv_write_t req;
    Bytes data;
    size_t size = 0;  // bytes handed to libuv (data[offset..])
    Connection* conn = nullptr;
    int side = 0;
    void* owner = nullptr;  // an HTTP/2 stream's app connection (core/h2_link), else null
};

class WriteReqPool {
public:
    static constexpr size_t kMaxKept = 1024;
    WriteReq* get() {
        if (free_.empty()) return new WriteReq();
        WriteReq* w = free_.back().release();
        free_.pop_back();
        return w;
    }
    void put(WriteReq* w, BufferPool& buffers) {
        buffers.put(std::move(w->data));
        w->conn = nullptr;
        if (free_.size() >= kMaxKept) {
            delete w;
            return;
        }
        free_.emplace_back(w);
    }

    void release() { std::vector<std::unique_ptr<WriteReq>>().swap(free_); }

private:
    std::vector<std::unique_ptr<WriteReq>> free_;
};

}  // namespace sidecar::core
