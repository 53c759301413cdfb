#pragma once
// Gives memory back once the proxy falls idle after traffic. A burst leaves the free lists full
// and the allocator's heap grown; a second after the last connection has closed, the owner's
// release callback empties its pools and malloc_trim returns free heap pages to the kernel, so
// idle RSS after a burst comes back to idle RSS at start.

#include <uv.h>

#include <cstdint>
#include <functional>

namespace sidecar::core {

class IdleTrim {
public:
    static constexpr uint64_t kDelayMs = 1000;

    // `idle` says whether there is still nothing to serve when the timer fires; `release` frees
    // what the owner keeps for reuse (pools). Neither is called after close().
    IdleTrim(uv_loop_t* loop, std::function<bool()> idle, std::function<void()> release,
             uint64_t delay_ms = kDelayMs);
    ~IdleTrim();
    IdleTrim(const IdleTrim&) = delete;
    IdleTrim& operator=(const IdleTrim&) = delete;

    // The last connection has closed: trim after the delay unless traffic comes back first.
    void arm();
    // Closes the timer (it frees itself in its close callback). Call before the loop closes.
    void close();

private:
    static void onTimer(uv_timer_t* t) noexcept;

    uv_loop_t* loop_;
    std::function<bool()> idle_;
    std::function<void()> release_;
    uint64_t delay_ms_;
    uv_timer_t* timer_ = nullptr;  // made on the first arm(): an idle proxy owns no extra handle
    bool closed_ = false;
};

}  // namespace sidecar::core
