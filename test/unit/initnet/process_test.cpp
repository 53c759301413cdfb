// SystemRunner against ordinary programs: stdin from memory, both outputs captured, exit status.

#include "initnet/process.h"

#include <catch2/catch_test_macros.hpp>

namespace sidecar::initnet {
namespace {

TEST_CASE("SystemRunner feeds stdin and captures stdout", "[initnet][process]") {
    SystemRunner runner;
    const ProcessResult result = runner.run({"cat"}, "*nat\nCOMMIT\n");
    CHECK(result.ok());
    CHECK(result.out == "*nat\nCOMMIT\n");
    CHECK(result.err.empty());
}

TEST_CASE("SystemRunner does not deadlock on large input and output", "[initnet][process]") {
    SystemRunner runner;
    const std::string input(4 << 20, 'x');
    const ProcessResult result = runner.run({"cat"}, input);
    CHECK(result.ok());
    CHECK(result.out.size() == input.size());
}

TEST_CASE("SystemRunner reports exit status and stderr", "[initnet][process]") {
    SystemRunner runner;
    const ProcessResult result =
        runner.run({"sh", "-c",
                    "echo partial; echo 'Permission denied (you must be root)' >&2; "
                    "exit 3"},
                   "");
    CHECK(result.outcome == ProcessResult::Outcome::Exited);
    CHECK(result.exit_code == 3);
    CHECK(result.out == "partial\n");
    CHECK(result.err == "Permission denied (you must be root)\n");
    CHECK(exitCodeFor(result) == kExitPermission);
}

TEST_CASE("SystemRunner: a child that ignores its input", "[initnet][process]") {
    SystemRunner runner;
    const ProcessResult result = runner.run({"true"}, std::string(1 << 20, 'x'));
    CHECK(result.ok());
}

TEST_CASE("SystemRunner: a child killed by a signal", "[initnet][process]") {
    SystemRunner runner;
    const ProcessResult result = runner.run({"sh", "-c", "kill -9 $$"}, "");
    CHECK(result.outcome == ProcessResult::Outcome::Failed);
    CHECK(result.err.find("killed by signal 9") != std::string::npos);
    CHECK(exitCodeFor(result) == kExitFailed);
}

TEST_CASE("SystemRunner: missing programs", "[initnet][process]") {
    SystemRunner runner;
    const ProcessResult result = runner.run({"sidecar-no-such-tool-restore"}, "");
    CHECK(result.outcome == ProcessResult::Outcome::NotFound);
    CHECK(exitCodeFor(result) == kExitMissingTools);
    CHECK(runner.run({"/nonexistent/iptables-restore"}, "").outcome ==
          ProcessResult::Outcome::NotFound);
    CHECK_FALSE(findExecutable(""));
    CHECK(findExecutable("sh"));
}

}  // namespace
}  // namespace sidecar::initnet
