#include "initnet/command.h"

#include <array>
#include <optional>
#include <sstream>

#include "initnet/plan.h"
#include "initnet/process.h"
#include "initnet/render.h"

namespace sidecar::initnet {
namespace {

constexpr std::array<Family, 2> kFamilies = {Family::V4, Family::V6};

struct Options {
    std::string action;  // "apply" | "clean"
    bool dry_run = false;
    bool help = false;
};

// What one iptables variant holds now, as its save tools printed it.
struct Snapshot {
    Variant variant = Variant::Plain;
    ProcessResult save[2];  // by Family

    const ProcessResult& saved(Family family) const { return save[family == Family::V4 ? 0 : 1]; }
};

// One restore run: `text` fed to the restore tool of `variant` for `family`.
struct Job {
    Family family = Family::V4;
    Variant variant = Variant::Plain;
    std::string text;
    bool removes = false;  // a clean (as opposed to an install)
};

std::optional<Options> parseArgs(const std::vector<std::string>& args, std::ostream& err) {
    Options options;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (arg == "-h" || arg == "--help") {
            options.help = true;
        } else if (arg == "--dry-run") {
            options.dry_run = true;
        } else if (arg == "-c" || arg == "--config") {
            if (++i == args.size()) {
                err << "init-net: " << arg << " needs a file name\n";
                return std::nullopt;
            }
        } else if (arg.rfind("--config=", 0) == 0) {
            // read by the caller
        } else if (!arg.empty() && arg[0] == '-') {
            err << "init-net: unknown option " << arg << " (see sidecar init-net --help)\n";
            return std::nullopt;
        } else if (options.action.empty()) {
            options.action = arg;
        } else {
            err << "init-net: unexpected argument " << arg << " (see sidecar init-net --help)\n";
            return std::nullopt;
        }
    }
    if (options.help) return options;
    if (options.action != "apply" && options.action != "clean") {
        err << (options.action.empty() ? std::string("init-net: missing command")
                                       : "init-net: unknown command " + options.action)
            << ": expected apply or clean (see sidecar init-net --help)\n";
        return std::nullopt;
    }
    return options;
}

// Reads the rules of every installed variant. Plain tools are tried only when neither suffixed
// variant exists.
std::vector<Snapshot> readSnapshots(Runner& runner) {
    std::vector<Snapshot> snapshots;
    for (Variant variant : {Variant::Nft, Variant::Legacy, Variant::Plain}) {
        if (variant == Variant::Plain && !snapshots.empty()) break;
        Snapshot snapshot;
        snapshot.variant = variant;
        snapshot.save[0] = runner.run(saveArgv(variant, Family::V4), "");
        if (snapshot.save[0].outcome == ProcessResult::Outcome::NotFound) continue;
        snapshot.save[1] = runner.run(saveArgv(variant, Family::V6), "");
        snapshots.push_back(std::move(snapshot));
    }
    return snapshots;
}

// The first failure to report when no variant could be read: a permission problem explains the
// others, so it comes first.
int reportUnreadable(const std::vector<Snapshot>& snapshots, std::ostream& err) {
    if (snapshots.empty()) {
        err << "init-net: iptables-save not found: install iptables\n";
        return kExitMissingTools;
    }
    const Snapshot* worst = &snapshots.front();
    for (const Snapshot& snapshot : snapshots) {
        if (exitCodeFor(snapshot.saved(Family::V4)) == kExitPermission) {
            worst = &snapshot;
            break;
        }
    }
    const ProcessResult& result = worst->saved(Family::V4);
    err << "init-net: " << describeFailure(toolsFor(worst->variant, Family::V4).save, result)
        << "\n";
    return exitCodeFor(result);
}

int nonDefaultRules(const Snapshot& snapshot) {
    int count = 0;
    for (Family family : kFamilies) {
        if (snapshot.saved(family).ok()) count += countNonDefault(snapshot.saved(family).out);
    }
    return count;
}

const Snapshot* chooseSnapshot(const std::vector<Snapshot>& snapshots, Runner& runner) {
    std::vector<const Snapshot*> usable;
    for (const Snapshot& snapshot : snapshots) {
        if (snapshot.saved(Family::V4).ok()) usable.push_back(&snapshot);
    }
    if (usable.empty()) return nullptr;
    if (usable.size() == 1) return usable.front();
    const Snapshot* nft = nullptr;
    const Snapshot* legacy = nullptr;
    for (const Snapshot* snapshot : usable) {
        (snapshot->variant == Variant::Nft ? nft : legacy) = snapshot;
    }
    const int nft_rules = nonDefaultRules(*nft);
    const int legacy_rules = nonDefaultRules(*legacy);
    std::string version;
    if (nft_rules == legacy_rules) {
        const ProcessResult result = runner.run({"iptables", "--version"}, "");
        if (result.ok()) version = result.out;
    }
    return chooseVariant(nft_rules, legacy_rules, version) == Variant::Nft ? nft : legacy;
}

std::string commandLine(const std::vector<std::string>& argv) {
    std::string line;
    for (const std::string& arg : argv) line += (line.empty() ? "" : " ") + arg;
    return line;
}

void printDryRun(const std::vector<Job>& jobs, std::ostream& out) {
    if (jobs.empty()) {
        out << "# nothing to remove: no sidecar rules are installed\n";
        return;
    }
    bool first = true;
    for (const Job& job : jobs) {
        if (!first) out << "\n";
        first = false;
        out << "### " << familyName(job.family) << ": input for `"
            << commandLine(restoreArgv(job.variant, job.family)) << "`\n"
            << job.text;
    }
}

int runJobs(const std::vector<Job>& jobs, Runner& runner, std::ostream& out, std::ostream& err) {
    std::vector<std::string> done;
    for (const Job& job : jobs) {
        const std::vector<std::string> argv = restoreArgv(job.variant, job.family);
        const ProcessResult result = runner.run(argv, job.text);
        if (!result.ok()) {
            err << "init-net: " << describeFailure(argv[0], result) << "\n";
            if (!done.empty()) {
                err << "init-net: already done: " << done.front()
                    << "; rerunning after a fix converges\n";
            }
            return exitCodeFor(result);
        }
        const std::string what = std::string(job.removes ? "removed " : "installed ") +
                                 std::string(familyName(job.family)) + " inbound capture with " +
                                 argv[0];
        out << "init-net: " << what << "\n";
        done.push_back(what);
    }
    return kExitOk;
}

int apply(const Options& options, const config::Config& cfg, Runner& runner, std::ostream& out,
          std::ostream& err) {
    PlanResult planned = buildPlan(cfg);
    if (!planned.plan) {
        for (const std::string& error : planned.errors) err << "init-net: " << error << "\n";
        return kExitConfig;
    }
    const RedirectPlan& plan = *planned.plan;
    for (const std::string& warning : plan.warnings)
        err << "init-net: warning: " << warning << "\n";

    const std::vector<Snapshot> snapshots = readSnapshots(runner);
    const Snapshot* chosen = chooseSnapshot(snapshots, runner);
    Snapshot unread;  // stands in for the current state when a dry run cannot read it
    if (chosen == nullptr) {
        if (!options.dry_run) return reportUnreadable(snapshots, err);
        std::ostringstream reason;
        reportUnreadable(snapshots, reason);
        err << reason.str() << "init-net: showing the rules for an empty nat table\n";
        unread.variant = snapshots.empty() ? Variant::Plain : snapshots.front().variant;
        chosen = &unread;
    }

    std::vector<Job> jobs;
    jobs.push_back({Family::V4, chosen->variant,
                    renderApply(plan, Family::V4, parseNatState(chosen->saved(Family::V4).out))});
    const ProcessResult& saved6 = chosen->saved(Family::V6);
    if (plan.ipv6) {
        if (!saved6.ok()) {
            err << "init-net: "
                << describeFailure(toolsFor(chosen->variant, Family::V6).save, saved6) << "\n";
            if (!options.dry_run) {
                err << "init-net: set redirect.ipv6: false to install the IPv4 rules only\n";
                return exitCodeFor(saved6);
            }
            err << "init-net: showing the IPv6 rules for an empty nat table\n";
        }
        jobs.push_back({Family::V6, chosen->variant,
                        renderApply(plan, Family::V6, parseNatState(saved6.out))});
    } else if (saved6.ok()) {
        // IPv6 was switched off since an earlier apply: what that apply installed must go.
        if (auto text = renderClean(parseNatState(saved6.out), Family::V6)) {
            err << "init-net: redirect.ipv6 is off: removing the IPv6 rules installed earlier\n";
            jobs.push_back({Family::V6, chosen->variant, std::move(*text), true});
        }
    }

    if (options.dry_run) {
        printDryRun(jobs, out);
        return kExitOk;
    }
    return runJobs(jobs, runner, out, err);
}

int clean(const Options& options, Runner& runner, std::ostream& out, std::ostream& err) {
    const std::vector<Snapshot> snapshots = readSnapshots(runner);
    std::vector<Job> jobs;
    bool any_readable = false;
    for (const Snapshot& snapshot : snapshots) {
        for (Family family : kFamilies) {
            const ProcessResult& saved = snapshot.saved(family);
            if (!saved.ok()) {
                // A variant the kernel cannot serve holds nothing of ours; a permission problem
                // though means we cannot know.
                if (exitCodeFor(saved) == kExitPermission && !options.dry_run) {
                    err << "init-net: "
                        << describeFailure(toolsFor(snapshot.variant, family).save, saved) << "\n";
                    return kExitPermission;
                }
                continue;
            }
            any_readable = true;
            if (auto text = renderClean(parseNatState(saved.out), family)) {
                jobs.push_back({family, snapshot.variant, std::move(*text), true});
            }
        }
    }
    if (!any_readable) {
        if (!options.dry_run) return reportUnreadable(snapshots, err);
        reportUnreadable(snapshots, err);
    }

    if (options.dry_run) {
        printDryRun(jobs, out);
        return kExitOk;
    }
    if (jobs.empty()) {
        out << "init-net: nothing to clean: no sidecar rules are installed\n";
        return kExitOk;
    }
    return runJobs(jobs, runner, out, err);
}

}  // namespace

std::string helpText() {
    return R"(usage: sidecar init-net apply [FILE | -c FILE] [--dry-run]
       sidecar init-net clean [FILE | -c FILE] [--dry-run]

Installs or removes the nat rules that send connections for the application's ports to the
sidecar's listeners, as configured under `redirect:`. Meant for an init container of the Pod;
needs root or the NET_ADMIN capability (not with --dry-run).

  apply       for each redirect.inbound entry, REDIRECT TCP to its port to the port its listener
              listens on. Never redirected: traffic arriving on loopback, redirect.exclude_ports
              and the admin port, sources in redirect.exclude_cidrs. Only traffic arriving on
              redirect.interfaces when that is set. IPv6 too unless redirect.ipv6 is false.
              Rerunning is harmless, and repairs a partial install.
  clean       remove the SIDECAR_INBOUND chain and every jump to it; other rules are untouched;
              harmless when nothing is installed
  --dry-run   print the iptables-restore input, per address family, instead of running it
  -c, --config FILE
              the sidecar config file (wins over a FILE argument); without one,
              $SIDECAR_CONFIG, else /etc/sidecar/sidecar.yaml
  -h, --help  this text

Rules go to the iptables variant (nft or legacy) that already holds rules, else to the one the
`iptables` command uses, through `iptables-restore --noflush` (and `ip6tables-restore`).

Exit status: 0 ok, 1 config error, 2 usage error, 3 permission denied (run as root / with
NET_ADMIN), 4 other iptables failure (its message is printed), 5 iptables not installed.
)";
}

int runCommand(const std::vector<std::string>& args, const config::Config& cfg, std::ostream& out,
               std::ostream& err, Runner& runner) {
    const std::optional<Options> options = parseArgs(args, err);
    if (!options) return kExitUsage;
    if (options->help) {
        out << helpText();
        return kExitOk;
    }
    if (options->action == "apply") return apply(*options, cfg, runner, out, err);
    return clean(*options, runner, out, err);
}

int runCommand(const std::vector<std::string>& args, const config::Config& cfg, std::ostream& out,
               std::ostream& err) {
    SystemRunner runner;
    return runCommand(args, cfg, out, err, runner);
}

}  // namespace sidecar::initnet
