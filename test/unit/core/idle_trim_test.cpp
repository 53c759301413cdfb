#include "core/idle_trim.h"

#include <catch2/catch_test_macros.hpp>

#include "core/buffer.h"

using sidecar::core::BufferPool;
using sidecar::core::IdleTrim;

namespace {

// Runs the loop until `ms` have passed (IdleTrim's own timer never keeps the loop alive).
void runFor(uv_loop_t* loop, uint64_t ms) {
    uv_timer_t stop;
    uv_timer_init(loop, &stop);
    uv_timer_start(
        &stop, [](uv_timer_t*) noexcept {}, ms, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close(reinterpret_cast<uv_handle_t*>(&stop), nullptr);
    uv_run(loop, UV_RUN_DEFAULT);
}

struct Loop {
    uv_loop_t loop;
    Loop() { uv_loop_init(&loop); }
    ~Loop() { REQUIRE(uv_loop_close(&loop) == 0); }
};

}  // namespace

TEST_CASE("buffer pool: release frees every kept buffer") {
    BufferPool pool;
    for (int i = 0; i < 4; ++i) pool.put(sidecar::core::Bytes(4096));
    REQUIRE(pool.keptBytes() == 4 * 4096);
    pool.release();
    CHECK(pool.keptBytes() == 0);
    CHECK(pool.get().capacity() == 0);
}

TEST_CASE("idle trim: releases once the delay has passed with nothing to serve") {
    Loop l;
    bool idle = true;
    int released = 0;
    IdleTrim trim(
        &l.loop, [&] { return idle; }, [&] { ++released; }, 20);
    runFor(&l.loop, 40);
    CHECK(released == 0);  // never armed: nothing to give back

    trim.arm();
    runFor(&l.loop, 60);
    CHECK(released == 1);

    idle = false;  // traffic came back before the timer fired
    trim.arm();
    runFor(&l.loop, 60);
    CHECK(released == 1);

    trim.close();
    idle = true;
    trim.arm();  // after close: a no-op, and the loop closes cleanly
    runFor(&l.loop, 40);
    CHECK(released == 1);
}
