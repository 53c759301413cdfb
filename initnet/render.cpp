#include "initnet/render.h"

#include <algorithm>

namespace sidecar::initnet {
namespace {

struct Token {
    std::string text;
    bool quoted = false;  // a quoted token is always a value, even when it starts with '-'
};

// Splits a rule the way iptables-restore does: whitespace separates, double quotes group, and a
// backslash inside quotes escapes the next character (iptables-save escapes '"', '\' and '\'').
std::vector<Token> tokenize(std::string_view line) {
    std::vector<Token> tokens;
    size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
        if (i >= line.size()) break;
        Token token;
        if (line[i] == '"') {
            token.quoted = true;
            ++i;
            while (i < line.size() && line[i] != '"') {
                if (line[i] == '\\' && i + 1 < line.size()) ++i;
                token.text += line[i++];
            }
            ++i;  // closing quote
        } else {
            while (i < line.size() && line[i] != ' ' && line[i] != '\t') token.text += line[i++];
        }
        tokens.push_back(std::move(token));
    }
    return tokens;
}

bool isOption(const Token& token) {
    return !token.quoted && token.text.size() > 1 && token.text[0] == '-';
}

// A rule as a sorted list of option groups ("-p tcp", "! -s 10.0.0.0/8", "--comment x"), so that
// the order iptables-save prints them in does not matter.
std::vector<std::vector<std::string>> normalize(std::string_view spec) {
    std::vector<std::vector<std::string>> groups;
    bool negate_next = false;
    for (const Token& token : tokenize(spec)) {
        if (!token.quoted && token.text == "!") {
            negate_next = true;
            continue;
        }
        if (isOption(token) || groups.empty()) {
            groups.emplace_back();
            if (negate_next) groups.back().push_back("!");
            negate_next = false;
        }
        groups.back().push_back(token.text);
    }
    std::erase_if(groups, [](const std::vector<std::string>& group) {
        return group.size() == 2 && group[0] == "-m" && (group[1] == "tcp" || group[1] == "udp");
    });
    std::sort(groups.begin(), groups.end());
    return groups;
}

bool targetsChain(const std::vector<Token>& tokens) {
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
        if (!tokens[i].quoted &&
            (tokens[i].text == "-j" || tokens[i].text == "-g" || tokens[i].text == "--jump" ||
             tokens[i].text == "--goto") &&
            tokens[i + 1].text == kChain) {
            return true;
        }
    }
    return false;
}

// Comment text is rendered inside double quotes; characters that would need escaping are replaced
// rather than escaped, and the kernel's 256-byte limit is respected.
std::string commentArg(std::string_view text) {
    std::string clean;
    for (char c : text.substr(0, 250)) {
        const bool unsafe = c == '"' || c == '\\' || c == '\'' ||
                            static_cast<unsigned char>(c) < ' ' ||
                            static_cast<unsigned char>(c) >= 127;
        clean += unsafe ? '_' : c;
    }
    return "-m comment --comment \"sidecar: " + clean + "\"";
}

void addChainRule(std::string& out, const std::string& body, std::string_view comment) {
    out += "-A ";
    out += kChain;
    out += " " + body + " " + commentArg(comment) + "\n";
}

std::string_view familyTitle(Family family) { return family == Family::V4 ? "IPv4" : "IPv6"; }

}  // namespace

std::string_view familyName(Family family) { return family == Family::V4 ? "ipv4" : "ipv6"; }

NatState parseNatState(std::string_view save_text) {
    NatState state;
    bool in_nat = false;
    size_t start = 0;
    while (start < save_text.size()) {
        size_t end = save_text.find('\n', start);
        if (end == std::string_view::npos) end = save_text.size();
        std::string_view line = save_text.substr(start, end - start);
        start = end + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

        if (!line.empty() && line[0] == '*') {
            in_nat = line == "*nat";
            continue;
        }
        if (!in_nat) continue;
        if (line == "COMMIT") {
            in_nat = false;
        } else if (line.size() > 1 && line[0] == ':') {
            const std::string_view name = line.substr(1, line.find(' ') - 1);
            if (name == kChain) state.chain_exists = true;
        } else if (line.rfind("-A ", 0) == 0) {
            const std::string_view rest = line.substr(3);
            const size_t space = rest.find(' ');
            if (space == std::string_view::npos) continue;
            SavedRule rule{std::string(rest.substr(0, space)), std::string(rest.substr(space + 1))};
            if (rule.chain == kChain) {
                state.chain_rules.push_back(rule.spec);
            } else if (targetsChain(tokenize(rule.spec))) {
                state.jumps.push_back(std::move(rule));
            }
        }
    }
    return state;
}

bool hasSidecarRules(const NatState& state) { return state.chain_exists || !state.jumps.empty(); }

bool sameRule(std::string_view a, std::string_view b) { return normalize(a) == normalize(b); }

std::vector<std::string> jumpRepairLines(const NatState& current) {
    std::vector<std::string> lines;
    bool kept = false;
    for (const SavedRule& jump : current.jumps) {
        if (jump.chain != "PREROUTING") continue;  // apply only ever installs the PREROUTING jump
        if (!kept && sameRule(jump.spec, kJumpSpec)) {
            kept = true;
            continue;
        }
        lines.push_back("-D PREROUTING " + jump.spec);
    }
    if (!kept) lines.push_back("-A PREROUTING " + std::string(kJumpSpec));
    return lines;
}

std::string renderApply(const RedirectPlan& plan, Family family, const NatState& current) {
    const bool v6 = family == Family::V6;
    std::string out;
    out += "# sidecar init-net: " + std::string(familyTitle(family)) +
           " inbound capture (nat table)\n";
    if (v6) {
        out +=
            "# REDIRECT hands each IPv6 connection to the listener's port on a local IPv6 "
            "address:\n"
            "# a listener must listen on [::] to receive it.\n";
    }
    out += "*nat\n";
    out += ":" + std::string(kChain) + " - [0:0]\n";

    addChainRule(out, "-i lo -j RETURN", "loopback is never redirected");
    for (const PortExclusion& exclusion : plan.excluded_ports) {
        const std::string port = std::to_string(exclusion.port);
        addChainRule(out, "-p tcp --dport " + port + " -j RETURN",
                     exclusion.reason == ExclusionReason::AdminPort ? "exclude admin port"
                                                                    : "exclude port " + port);
    }
    for (const std::string& cidr : v6 ? plan.excluded_sources_v6 : plan.excluded_sources_v4) {
        addChainRule(out, "-s " + cidr + " -j RETURN", "exclude source " + cidr);
    }

    for (const PortRedirect& redirect : plan.redirects) {
        const std::string port = std::to_string(redirect.port);
        const std::string to_port = std::to_string(redirect.to_port);
        if (v6 && !redirect.listener_accepts_ipv6) {
            out += "# listener " + redirect.listener + " listens on " + redirect.listener_address +
                   " (IPv4 only): it will not receive what the next rule redirects\n";
        }
        const std::string target = "-p tcp --dport " + port + " -j REDIRECT --to-ports " + to_port;
        if (plan.interfaces.empty()) {
            addChainRule(out, target, "port " + port + " -> listener " + redirect.listener);
        }
        for (const std::string& interface : plan.interfaces) {
            addChainRule(out, "-i " + interface + " " + target,
                         "port " + port + " on " + interface + " -> listener " + redirect.listener);
        }
    }

    for (const std::string& line : jumpRepairLines(current)) out += line + "\n";
    out += "COMMIT\n";
    return out;
}

std::optional<std::string> renderClean(const NatState& current, Family family) {
    if (!hasSidecarRules(current)) return std::nullopt;
    std::string out;
    out += "# sidecar init-net: remove " + std::string(familyTitle(family)) +
           " inbound capture (nat table)\n";
    out += "*nat\n";
    // Declaring the chain flushes it (or creates it, so that -X below cannot fail); the jumps must
    // go before the chain can be deleted.
    out += ":" + std::string(kChain) + " - [0:0]\n";
    for (const SavedRule& jump : current.jumps) out += "-D " + jump.chain + " " + jump.spec + "\n";
    out += "-X " + std::string(kChain) + "\n";
    out += "COMMIT\n";
    return out;
}

}  // namespace sidecar::initnet
