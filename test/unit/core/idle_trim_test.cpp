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

TEST_CASE("buffer pool: small buffers handed in without being taken out stay bounded") {
    BufferPool pool;
    // A thousand handshakes each hand in the vector their first flight went out in.
    for (int i = 0; i < 1000; ++i) pool.put(sidecar::core::Bytes(800));
    CHECK(pool.keptBuffers() == BufferPool::kMaxKeptSmall);
    CHECK(pool.keptBytes() == BufferPool::kMaxKeptSmall * 800);
    // Larger buffers are still kept beside them, up to the byte cap.
    pool.put(sidecar::core::Bytes(BufferPool::kSmallCapacity));
    CHECK(pool.keptBuffers() == BufferPool::kMaxKeptSmall + 1);
    // Taking a small one out makes room for another.
    (void)pool.get();  // the large one, put last
    CHECK(pool.get().capacity() == 800);
    pool.put(sidecar::core::Bytes(100));
    CHECK(pool.keptBuffers() == BufferPool::kMaxKeptSmall);
    pool.put(sidecar::core::Bytes(100));
    CHECK(pool.keptBuffers() == BufferPool::kMaxKeptSmall);
    pool.release();
    pool.put(sidecar::core::Bytes(100));
    CHECK(pool.keptBuffers() == 1);  // release resets the small count too
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
