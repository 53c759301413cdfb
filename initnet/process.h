#pragma once
// Runs the iptables tools for real: posix_spawn, no shell, stdin from memory, stdout and stderr
// captured.

#include <optional>
#include <string>

#include "initnet/iptables.h"

namespace sidecar::initnet {

// Finds an executable by name: on PATH first, then in /usr/local/sbin, /usr/sbin and /sbin, which
// hold the iptables tools but are often missing from a non-root or container PATH. A name with a
// '/' is taken as a path.
std::optional<std::string> findExecutable(const std::string& name);

class SystemRunner final : public Runner {
public:
    ProcessResult run(const std::vector<std::string>& argv, const std::string& input) override;
};

}  // namespace sidecar::initnet
