// Rendered rules for a table of configs, compared byte for byte with golden/<case>.v4 and .v6.
// SIDECAR_UPDATE_GOLDEN=1 rewrites the files instead; review the diff before checking it in.

#include <catch2/catch_test_macros.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "initnet/plan.h"
#include "initnet/render.h"
#include "test_configs.h"

namespace sidecar::initnet {
namespace {

using test::makeInbound;
using test::makeListener;
using test::walkthroughConfig;

struct GoldenCase {
    const char* name;
    std::function<config::Config()> make;
};

const std::vector<GoldenCase>& goldenCases() {
    static const std::vector<GoldenCase> cases = {
        {"walkthrough", [] { return walkthroughConfig(); }},
        {"single_port_ipv4_only",
         [] {
             config::Config cfg = walkthroughConfig();
             cfg.redirect.ipv6 = false;
             return cfg;
         }},
        {"several_ports",
         [] {
             config::Config cfg = walkthroughConfig();
             cfg.listeners.push_back(makeListener("grpc", "::", 8443));
             cfg.redirect.inbound.push_back(makeInbound(443, "grpc"));
             cfg.redirect.inbound.push_back(makeInbound(8081, "web"));
             return cfg;
         }},
        {"exclusions",
         [] {
             config::Config cfg = walkthroughConfig();
             cfg.listeners[0].listen = {"::", 8080};
             cfg.redirect.exclude_ports = {22, 9901, 15020};
             cfg.redirect.exclude_cidrs = {"10.0.0.0/8", "192.168.1.7", "fd00::/8",
                                           "2001:db8::1/128"};
             return cfg;
         }},
        {"interfaces",
         [] {
             config::Config cfg = walkthroughConfig();
             cfg.listeners[0].listen = {"::", 8080};
             cfg.redirect.inbound.push_back(makeInbound(8000, "web"));
             cfg.redirect.interfaces = {"eth0", "net1"};
             return cfg;
         }},
        {"admin_disabled",
         [] {
             config::Config cfg = walkthroughConfig();
             cfg.admin.enabled = false;
             cfg.redirect.ipv6 = false;
             return cfg;
         }},
    };
    return cases;
}

std::filesystem::path goldenPath(const std::string& name, Family family) {
    return std::filesystem::path(SIDECAR_INITNET_GOLDEN_DIR) /
           (name + (family == Family::V4 ? ".v4" : ".v6"));
}

std::optional<std::string> readFile(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

bool updating() {
    const char* value = std::getenv("SIDECAR_UPDATE_GOLDEN");
    return value != nullptr && std::string(value) == "1";
}

void checkGolden(const std::string& name, Family family, const std::optional<std::string>& text) {
    const std::filesystem::path path = goldenPath(name, family);
    if (updating()) {
        if (text) {
            std::ofstream(path, std::ios::binary | std::ios::trunc) << *text;
        } else {
            std::filesystem::remove(path);
        }
        return;
    }
    const std::optional<std::string> expected = readFile(path);
    INFO("golden file " << path.string() << " (SIDECAR_UPDATE_GOLDEN=1 regenerates it)");
    if (!text) {
        CHECK_FALSE(expected.has_value());
        return;
    }
    REQUIRE(expected.has_value());
    CHECK(*text == *expected);
}

TEST_CASE("rendered rules match the golden files", "[initnet][golden]") {
    for (const GoldenCase& golden : goldenCases()) {
        DYNAMIC_SECTION(golden.name) {
            const PlanResult result = buildPlan(golden.make());
            REQUIRE(result.errors.empty());
            const RedirectPlan& plan = *result.plan;
            checkGolden(golden.name, Family::V4, renderApply(plan, Family::V4));
            checkGolden(golden.name, Family::V6,
                        plan.ipv6 ? std::optional(renderApply(plan, Family::V6)) : std::nullopt);
        }
    }
}

TEST_CASE("every golden file belongs to a case", "[initnet][golden]") {
    for (const auto& entry : std::filesystem::directory_iterator(SIDECAR_INITNET_GOLDEN_DIR)) {
        const std::string stem = entry.path().stem().string();
        bool known = false;
        for (const GoldenCase& golden : goldenCases()) known = known || stem == golden.name;
        INFO(entry.path().string());
        CHECK(known);
    }
}

}  // namespace
}  // namespace sidecar::initnet
