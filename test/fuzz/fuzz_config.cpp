// Arbitrary text as a config file: the loader must answer with a config or errors, never crash.
#include <cstdlib>
#include <string>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string text(reinterpret_cast<const char*>(data), size);
    sidecar::config::Validators accept_all;
    accept_all.pair = [](const std::string&, const std::string&) { return std::optional<std::string>(); };
    accept_all.ca = [](const std::string&) { return std::optional<std::string>(); };
    sidecar::config::LoadResult r = sidecar::config::loadString(text, "fuzz.yaml", accept_all);
    if (r.config.has_value() == !r.errors.empty()) abort();  // exactly one of the two
    return 0;
}
