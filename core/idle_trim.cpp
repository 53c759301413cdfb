#include "core/idle_trim.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace sidecar::core {

IdleTrim::IdleTrim(uv_loop_t* loop, std::function<bool()> idle, std::function<void()> release,
                   uint64_t delay_ms)
    : loop_(loop), idle_(std::move(idle)), release_(std::move(release)), delay_ms_(delay_ms) {}

IdleTrim::~IdleTrim() {
    // A timer still open here belongs to a loop that is being torn down without close().
    if (timer_) timer_->data = nullptr;
}

void IdleTrim::arm() {
    if (closed_) return;
    if (!timer_) {
        auto* t = new uv_timer_t;
        if (uv_timer_init(loop_, t) != 0) {
            delete t;
            return;
        }
        t->data = this;
        uv_unref(reinterpret_cast<uv_handle_t*>(t));  // never keeps the loop alive by itself
        timer_ = t;
    }
    uv_timer_start(timer_, onTimer, delay_ms_, 0);
}

void IdleTrim::close() {
    closed_ = true;
    if (!timer_) return;
    uv_close(reinterpret_cast<uv_handle_t*>(timer_),
             [](uv_handle_t* h) noexcept { delete reinterpret_cast<uv_timer_t*>(h); });
    timer_ = nullptr;
}

void IdleTrim::onTimer(uv_timer_t* t) noexcept {
    auto* self = static_cast<IdleTrim*>(t->data);
    if (!self || self->closed_ || !self->idle_()) return;
    self->release_();
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

}  // namespace sidecar::core
