#include "initnet/iptables.h"

#include <array>

namespace sidecar::initnet {
namespace {

bool isBuiltinChain(std::string_view name) {
    static constexpr std::array<std::string_view, 5> kBuiltin = {"PREROUTING", "INPUT", "FORWARD",
                                                                 "OUTPUT", "POSTROUTING"};
    for (std::string_view builtin : kBuiltin) {
        if (name == builtin) return true;
    }
    return false;
}

bool contains(std::string_view haystack, std::string_view needle) {
    return haystack.find(needle) != std::string_view::npos;
}

std::string trimmed(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
        text.pop_back();
    }
    return text;
}

}  // namespace

std::string_view variantName(Variant variant) {
    switch (variant) {
        case Variant::Nft:
            return "nft";
        case Variant::Legacy:
            return "legacy";
        case Variant::Plain:
            break;
    }
    return "default";
}

Tools toolsFor(Variant variant, Family family) {
    std::string base = family == Family::V4 ? "iptables" : "ip6tables";
    if (variant == Variant::Nft) base += "-nft";
    if (variant == Variant::Legacy) base += "-legacy";
    return {base + "-save", base + "-restore"};
}

std::vector<std::string> restoreArgv(Variant variant, Family family) {
    return {toolsFor(variant, family).restore, "--noflush"};
}

std::vector<std::string> saveArgv(Variant variant, Family family) {
    return {toolsFor(variant, family).save};
}

int countNonDefault(std::string_view save_text) {
    int count = 0;
    size_t start = 0;
    while (start < save_text.size()) {
        size_t end = save_text.find('\n', start);
        if (end == std::string_view::npos) end = save_text.size();
        const std::string_view line = save_text.substr(start, end - start);
        start = end + 1;
        if (line.rfind("-A ", 0) == 0) {
            ++count;
        } else if (line.size() > 1 && line[0] == ':') {
            // ":NAME POLICY [packets:bytes]"
            const size_t space = line.find(' ');
            const std::string_view name = line.substr(1, space - 1);
            const std::string_view policy =
                space == std::string_view::npos
                    ? ""
                    : line.substr(space + 1, line.find(' ', space + 1) - space - 1);
            if (!isBuiltinChain(name) || policy != "ACCEPT") ++count;
        }
    }
    return count;
}

Variant chooseVariant(int nft_rules, int legacy_rules, std::string_view iptables_version) {
    if (nft_rules != legacy_rules) return nft_rules > legacy_rules ? Variant::Nft : Variant::Legacy;
    // iptables older than 1.8 has no suffix and is always legacy.
    if (!iptables_version.empty() && !contains(iptables_version, "nf_tables")) {
        return Variant::Legacy;
    }
    return Variant::Nft;
}

ExitCode exitCodeFor(const ProcessResult& result) {
    if (result.ok()) return kExitOk;
    if (result.outcome == ProcessResult::Outcome::NotFound) return kExitMissingTools;
    const std::string_view err = result.err;
    if (contains(err, "Permission denied") || contains(err, "Operation not permitted") ||
        contains(err, "you must be root")) {
        return kExitPermission;
    }
    return kExitFailed;
}

std::string describeFailure(const std::string& tool, const ProcessResult& result) {
    switch (exitCodeFor(result)) {
        case kExitOk:
            return tool + " succeeded";
        case kExitMissingTools:
            return tool + " not found: install iptables";
        case kExitPermission:
            return tool + ": permission denied: run as root with the NET_ADMIN capability (" +
                   trimmed(result.err) + ")";
        default:
            break;
    }
    if (result.outcome == ProcessResult::Outcome::Failed) return tool + ": " + trimmed(result.err);
    std::string text = tool + " failed (exit status " + std::to_string(result.exit_code) + ")";
    const std::string err = trimmed(result.err);
    if (!err.empty()) text += ":\n" + err;
    return text;
}

}  // namespace sidecar::initnet
