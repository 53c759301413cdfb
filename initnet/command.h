#pragma once
// `sidecar init-net`: the command the init container runs.
//
//   sidecar init-net apply -c FILE [--dry-run]   install the redirect rules (idempotent)
//   sidecar init-net clean -c FILE [--dry-run]   remove them
//
// Exit codes: 0 ok, 1 config error, 2 usage error, 3 permission denied (not root / no
// NET_ADMIN), 4 any other iptables failure (its stderr is printed), 5 iptables binaries missing.

#include <ostream>
#include <string>
#include <vector>

#include "config/config.h"
#include "initnet/iptables.h"

namespace sidecar::initnet {

// The --help text.
std::string helpText();

// Runs init-net. `args` are the words after "init-net", e.g. {"apply", "--dry-run"}; `cfg` is the
// loaded, validated config (a "-c FILE" / "--config FILE" still present in `args` is accepted and
// ignored: the caller has read it). Results go to `out`, diagnostics to `err`. Returns an ExitCode.
int runCommand(const std::vector<std::string>& args, const config::Config& cfg, std::ostream& out,
               std::ostream& err);

// Same, running the iptables tools through `runner`.
int runCommand(const std::vector<std::string>& args, const config::Config& cfg, std::ostream& out,
               std::ostream& err, Runner& runner);

}  // namespace sidecar::initnet
