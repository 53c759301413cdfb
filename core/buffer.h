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
    // Buffers larger than this are not kept (a burst must not pin memory forever).
    static constexpr size_t kMaxKeptCapacity = 64 * 1024;
    static constexpr size_t kMaxKept = 1024;

    Bytes get() {
        if (free_.empty()) return {};
        Bytes b = std::move(free_.back());
        free_.pop_back();
        return b;
    }
    void put(Bytes&& b) {
        if (b.capacity() == 0 || b.capacity() > kMaxKeptCapacity || free_.size() >= kMaxKept) {
            Bytes().swap(b);
            return;
        }
        b.clear();
        free_.push_back(std::move(b));
    }

private:
    std::vector<Bytes> free_;
};

struct WriteReq {
    uv_write_t req;
    Bytes data;
    size_t size = 0;  // bytes handed to libuv (data[offset..])
    Connection* conn = nullptr;
    int side = 0;
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

private:
    std::vector<std::unique_ptr<WriteReq>> free_;
};

}  // namespace sidecar::core
