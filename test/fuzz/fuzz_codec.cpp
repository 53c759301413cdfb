// Arbitrary request/response bytes, EOFs, local errors and drains through one HTTP codec.
#include "http/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    sidecar::http::fuzzCodec(data, size);
    return 0;
}
