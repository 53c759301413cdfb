#pragma once
// Turns a RedirectPlan into iptables-restore input for the nat table, and reads back what is
// installed from iptables-save output. Everything here is a pure text transformation.
//
// Layout of what apply installs, per address family:
//   nat PREROUTING:       -p tcp -j SIDECAR_INBOUND   (exactly one copy)
//   nat SIDECAR_INBOUND:  RETURN for loopback, excluded ports, excluded sources;
//                         then one REDIRECT per captured port (per interface when restricted)
// The input is meant for `iptables-restore --noflush`: rules of other tools are never touched.
// Declaring the chain (":SIDECAR_INBOUND - [0:0]") creates it, or flushes it when it exists, so
// a rerun replaces the chain's contents; the PREROUTING jump is added or repaired only as needed,
// from the state read beforehand.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "initnet/plan.h"

namespace sidecar::initnet {

enum class Family { V4, V6 };

inline constexpr std::string_view kChain = "SIDECAR_INBOUND";
// Rule spec of the one PREROUTING jump apply installs (after "-A PREROUTING ").
inline constexpr std::string_view kJumpSpec =
    "-p tcp -j SIDECAR_INBOUND -m comment --comment \"sidecar: inbound capture\"";

std::string_view familyName(Family family);  // "ipv4" | "ipv6"

// One rule as iptables-save prints it: "-A <chain> <spec>".
struct SavedRule {
    std::string chain;
    std::string spec;  // verbatim, quoting included, so that "-D <chain> <spec>" deletes it
};

// What of ours is installed in one family's nat table.
struct NatState {
    bool chain_exists = false;     // SIDECAR_INBOUND is declared
    std::vector<SavedRule> jumps;  // rules in any other nat chain that jump/goto SIDECAR_INBOUND
    std::vector<std::string> chain_rules;  // specs of the rules inside SIDECAR_INBOUND
};

// Reads the *nat section of iptables-save output (other tables and comments are ignored). Empty or
// unrelated text gives an empty state.
NatState parseNatState(std::string_view save_text);

bool hasSidecarRules(const NatState& state);

// True when two rule specs are the same rule as iptables sees it: the same options with the same
// values, in any order ("-j X -m comment ..." equals "-m comment ... -j X"), ignoring the
// "-m tcp"/"-m udp" that iptables-save adds for --dport.
bool sameRule(std::string_view a, std::string_view b);

// Restore lines that bring PREROUTING to exactly one canonical jump: an existing canonical jump is
// kept in place (so rerunning changes nothing), extra copies and non-canonical jumps are deleted,
// and the jump is appended only when none is left.
std::vector<std::string> jumpRepairLines(const NatState& current);

// iptables-restore --noflush input that installs `plan` for `family`, given what is installed now
// (default: nothing, as in a fresh network namespace).
std::string renderApply(const RedirectPlan& plan, Family family, const NatState& current = {});

// iptables-restore --noflush input that removes every jump to SIDECAR_INBOUND and the chain itself,
// leaving all other rules alone; nullopt when nothing of ours is installed.
std::optional<std::string> renderClean(const NatState& current, Family family);

}  // namespace sidecar::initnet
