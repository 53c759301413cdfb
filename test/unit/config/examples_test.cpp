// Every example config in examples/ loads without errors, so that users can start from any.

#include <algorithm>
#include <filesystem>

#include "helpers.h"

using namespace sidecar::config;
using namespace sidecar::config::test;

namespace {

std::vector<std::filesystem::path> exampleFiles() {
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(
             std::filesystem::path(SIDECAR_SOURCE_DIR) / "examples")) {
        auto extension = entry.path().extension();
        if (entry.is_regular_file() && (extension == ".yaml" || extension == ".yml")) {
            files.push_back(entry.path());
        }
    }
    std::sort(files.begin(), files.end());
    return files;
}

}  // namespace

TEST_CASE("every example config loads without errors", "[examples]") {
    auto files = exampleFiles();
    for (const char* expected : {"sidecar.yaml", "tcp.yaml", "mtls.yaml", "ambassador.yaml"}) {
        CAPTURE(expected);
        CHECK(std::any_of(files.begin(), files.end(),
                          [&](const auto& path) { return path.filename() == expected; }));
    }
    for (const auto& file : files) {
        LoadResult result = loadFile(file.string());
        CAPTURE(file.string(), messages(result));
        CHECK(result.errors.empty());
        CHECK(result.config.has_value());
    }
}

TEST_CASE("the walkthrough example says what the walkthrough does", "[examples]") {
    LoadResult result = loadFile(std::string(SIDECAR_SOURCE_DIR) + "/examples/sidecar.yaml");
    REQUIRE(result.config.has_value());
    const Config& config = *result.config;
    const Listener* web = config.findListener("web");
    REQUIRE(web != nullptr);
    CHECK(web->listen.port == 8080);
    CHECK(web->protocol == Protocol::Http);
    CHECK(web->tls.has_value());
    CHECK(web->upstream.address.toString() == "127.0.0.1:80");
    REQUIRE(config.redirect.inbound.size() == 1);
    CHECK(config.redirect.inbound[0].port == 80);
    CHECK(config.redirect.inbound[0].listener == "web");
    CHECK(config.admin.enabled);
}
