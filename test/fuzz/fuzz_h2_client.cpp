// Arbitrary app bytes (after a valid server SETTINGS frame half of the time) through one HTTP/2
// client connection that carries a GET and a chunked POST with trailers.
#include "test/fuzz/h2_client_driver.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    sidecar::http::fuzz::fuzzH2Client(data, size);
    return 0;
}
