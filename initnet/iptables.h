#pragma once
// The iptables tools as init-net uses them: which variant (nft or legacy) to drive, the tool names
// per variant and family, how to run them, and what their failures mean for our exit code.

#include <string>
#include <string_view>
#include <vector>

#include "initnet/render.h"

namespace sidecar::initnet {

// Exit codes of `sidecar init-net` (documented in the --help text). 0, 1 and 2 mean what they
// mean for every sidecar command.
enum ExitCode : int {
    kExitOk = 0,
    kExitConfig = 1,        // an unusable config
    kExitUsage = 2,         // bad arguments
    kExitPermission = 3,    // not root / no NET_ADMIN capability
    kExitFailed = 4,        // any other iptables failure
    kExitMissingTools = 5,  // the iptables binaries are not installed
};

// What running one program gave.
struct ProcessResult {
    enum class Outcome {
        Exited,    // ran to completion; see exit_code
        NotFound,  // no such executable
        Failed,    // could not be started, or killed by a signal; see err
    };
    Outcome outcome = Outcome::Exited;
    int exit_code = 0;
    std::string out;
    std::string err;

    bool ok() const { return outcome == Outcome::Exited && exit_code == 0; }
};

// Runs a program without a shell: argv[0] is looked up on PATH (see process.h), `input` becomes its
// stdin. Tests substitute a fake to check what would be run against a scripted "current state".
class Runner {
public:
    virtual ~Runner() = default;
    virtual ProcessResult run(const std::vector<std::string>& argv, const std::string& input) = 0;
};

// Debian and most distributions ship both iptables variants; the kernel keeps their rules apart,
// and rules must go where the rest of the system's rules live. Plain is the unsuffixed
// iptables-save / iptables-restore, used only when neither suffixed variant is installed.
enum class Variant { Nft, Legacy, Plain };

std::string_view variantName(Variant variant);  // "nft" | "legacy" | "default"

struct Tools {
    std::string save;     // e.g. "ip6tables-legacy-save"
    std::string restore;  // e.g. "ip6tables-legacy-restore"
};
Tools toolsFor(Variant variant, Family family);

// argv that feeds restore input without flushing anything it does not name.
std::vector<std::string> restoreArgv(Variant variant, Family family);
// argv that prints the current rules of all tables.
std::vector<std::string> saveArgv(Variant variant, Family family);

// Number of rules and chains in iptables-save output beyond an untouched table's defaults (the
// built-in chains with an ACCEPT policy): the sign that a variant is the one in use.
int countNonDefault(std::string_view save_text);

// Picks the variant to install into. The one already holding more rules wins; on a tie (typically
// an empty network namespace) the variant `iptables` itself runs, from `iptables --version` output
// ("iptables v1.8.9 (nf_tables)" or "(legacy)"; empty when it could not be run: nft).
Variant chooseVariant(int nft_rules, int legacy_rules, std::string_view iptables_version);

// Maps a failed tool run to an exit code: missing binary, permission problem, or other.
ExitCode exitCodeFor(const ProcessResult& result);

// One line for the user: what failed, why, and what to do about it. `tool` is argv[0].
std::string describeFailure(const std::string& tool, const ProcessResult& result);

}  // namespace sidecar::initnet
