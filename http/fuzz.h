#pragma once

// Entry point for a libFuzzer target: drives one Codec with arbitrary input and aborts if the
// codec breaks its own contract. Never throws.

#include <cstddef>
#include <cstdint>

namespace sidecar::http {

// Input layout: byte 0 picks options (forwarded mode, small or default limits); then records
// of [op][len][len bytes]: op % 6 = request bytes, response bytes, request EOF, response EOF,
// local error, draining.
void fuzzCodec(const uint8_t* data, size_t size) noexcept;

}  // namespace sidecar::http
