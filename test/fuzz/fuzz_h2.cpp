// Arbitrary client bytes (after a valid preface half of the time) through one HTTP/2 session
// whose streams are answered with canned HTTP/1.1 responses.
#include "test/fuzz/h2_driver.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    sidecar::http::fuzz::fuzzH2(data, size);
    return 0;
}
