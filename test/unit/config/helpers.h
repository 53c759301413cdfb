#pragma once
// Shared helpers for the config tests: load YAML text under the name "test.yaml" and look at
// the errors as a user sees them ("test.yaml:3:13: listeners[0].listen: ...").

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <string>
#include <vector>

#include "config/config.h"

namespace sidecar::config::test {

using Catch::Matchers::ContainsSubstring;
using Catch::Matchers::StartsWith;

inline LoadResult load(const std::string& yaml, const Validators& validators = {}) {
    return loadString(yaml, "test.yaml", validators);
}

inline std::vector<std::string> messages(const LoadResult& result) {
    std::vector<std::string> out;
    for (const auto& error : result.errors) out.push_back(error.toString());
    return out;
}

// The one error that loading `yaml` reports, as "test.yaml:line:col: message".
inline std::string onlyError(const std::string& yaml, const Validators& validators = {}) {
    LoadResult result = load(yaml, validators);
    INFO(yaml);
    CAPTURE(messages(result));
    REQUIRE(result.errors.size() == 1);
    CHECK_FALSE(result.config.has_value());
    return result.errors[0].toString();
}

// A config that loads: fails the test with the errors otherwise.
inline Config loadValid(const std::string& yaml, const Validators& validators = {}) {
    LoadResult result = load(yaml, validators);
    INFO(yaml);
    CAPTURE(messages(result));
    REQUIRE(result.errors.empty());
    REQUIRE(result.config.has_value());
    return *result.config;
}

// The smallest valid config, used as a base by many tests:
//   line 1 listeners:
//   line 2   - name: web             (name value at column 11)
//   line 3     listen: 0.0.0.0:8080  (listen value at column 13)
//   line 4     upstream:
//   line 5       address: 127.0.0.1:80
inline const std::string kMinimal =
    "listeners:\n"
    "  - name: web\n"
    "    listen: 0.0.0.0:8080\n"
    "    upstream:\n"
    "      address: 127.0.0.1:80\n";

}  // namespace sidecar::config::test
