// Checks that compare settings across sections of the file, and the certificate checks.

#include <algorithm>
#include <exception>
#include <vector>

#include "config/schema.h"
#include "config/values.h"

namespace sidecar::config::detail {
namespace {

std::string lineOf(Mark mark) {
    return mark.line > 0 ? " (line " + std::to_string(mark.line) + ")" : "";
}

std::string indexed(const char* list, size_t index) {
    return std::string(list) + "[" + std::to_string(index) + "]";
}

void checkListeners(Reader& reader, const Config& config, const Positions& positions) {
    const auto& listeners = config.listeners;
    for (size_t i = 0; i < listeners.size(); ++i) {
        const auto& at = positions.listeners[i];
        for (size_t j = 0; j < i; ++j) {
            const auto& earlier = positions.listeners[j];
            if (at.name.line > 0 && earlier.name.line > 0 &&
                listeners[i].name == listeners[j].name) {
                reader.error(at.name, indexed("listeners", i) + ".name",
                             "the name " + quote(listeners[i].name) +
                                 " is already used by listeners[" + std::to_string(j) + "]" +
                                 lineOf(earlier.name));
            }
            if (at.listen.line > 0 && earlier.listen.line > 0 &&
                listenAddressesOverlap(listeners[i].listen, listeners[j].listen)) {
                const auto& mine = listeners[i].listen;
                const auto& theirs = listeners[j].listen;
                reader.error(
                    at.listen, indexed("listeners", i) + ".listen",
                    mine.toString() +
                        (mine.host == theirs.host ? " is already used by"
                                                  : " overlaps " + theirs.toString() + " of") +
                        " listeners[" + std::to_string(j) + "]" + lineOf(earlier.listen));
            }
        }
    }
}

// An upstream on this host at the listener's own port would be the listener itself.
void checkUpstreams(Reader& reader, const Config& config, const Positions& positions) {
    for (size_t i = 0; i < config.listeners.size(); ++i) {
        const auto& at = positions.listeners[i];
        const Listener& listener = config.listeners[i];
        const SocketAddress& upstream = listener.upstream.address;
        if (at.listen.line == 0 || at.upstream.line == 0) continue;
        bool local =
            isLoopbackHost(upstream.host) || upstream.host == "0.0.0.0" || upstream.host == "::";
        if (local && listenAddressesOverlap(listener.listen, upstream)) {
            reader.error(at.upstream, indexed("listeners", i) + ".upstream.address",
                         upstream.toString() + " is this listener's own address (" +
                             listener.listen.toString() +
                             "); connections would loop back into the proxy");
        }
    }
}

void checkAdmin(Reader& reader, const Config& config, const Positions& positions) {
    if (!config.admin.enabled || !positions.adminListenValid) return;
    const SocketAddress& admin = config.admin.listen;
    for (size_t i = 0; i < config.listeners.size(); ++i) {
        const auto& at = positions.listeners[i];
        if (at.listen.line == 0 || !listenAddressesOverlap(admin, config.listeners[i].listen)) {
            continue;
        }
        if (positions.adminListen.line > 0) {
            reader.error(positions.adminListen, "admin.listen",
                         admin.toString() + " collides with the address of listeners[" +
                             std::to_string(i) + "]" + lineOf(at.listen));
        } else {
            reader.error(at.listen, indexed("listeners", i) + ".listen",
                         config.listeners[i].listen.toString() +
                             " collides with the admin endpoint's default address " +
                             admin.toString() + "; set admin.listen to another address");
        }
    }
}

void checkRedirect(Reader& reader, const Config& config, const Positions& positions) {
    const auto& inbound = config.redirect.inbound;
    const bool admin = config.admin.enabled && positions.adminListenValid;
    for (size_t i = 0; i < inbound.size(); ++i) {
        const auto& rule = inbound[i];
        const auto& at = positions.inbound[i];
        const std::string path = indexed("redirect.inbound", i);
        if (at.port.line > 0) {
            for (size_t j = 0; j < i; ++j) {
                if (positions.inbound[j].port.line > 0 && inbound[j].port == rule.port) {
                    reader.error(at.port, path + ".port",
                                 "port " + std::to_string(rule.port) +
                                     " is already redirected by redirect.inbound[" +
                                     std::to_string(j) + "]" + lineOf(positions.inbound[j].port));
                }
            }
            for (size_t j = 0; j < config.listeners.size(); ++j) {
                if (positions.listeners[j].listen.line > 0 &&
                    config.listeners[j].listen.port == rule.port) {
                    reader.error(at.port, path + ".port",
                                 "port " + std::to_string(rule.port) + " is the port listeners[" +
                                     std::to_string(j) + "] listens on" +
                                     lineOf(positions.listeners[j].listen) +
                                     "; redirecting it would loop the proxy's traffic back to "
                                     "itself");
                }
            }
            if (admin && config.admin.listen.port == rule.port) {
                reader.error(at.port, path + ".port",
                             "port " + std::to_string(rule.port) +
                                 " is the admin endpoint's port, which is never redirected");
            }
        }
        if (at.listener.line > 0) {
            const Listener* target = config.findListener(rule.listener);
            if (!target) {
                std::vector<std::string> known;
                std::string names;
                for (const auto& listener : config.listeners) {
                    if (listener.name.empty() ||
                        std::find(known.begin(), known.end(), listener.name) != known.end()) {
                        continue;
                    }
                    known.push_back(listener.name);
                    names += names.empty() ? "" : ", ";
                    names += listener.name;
                }
                reader.error(at.listener, path + ".listener",
                             "no listener is named " + quote(rule.listener) +
                                 (names.empty() ? "" : " (listeners: " + names + ")"));
            } else if (!target->listen.host.empty() && isLoopbackHost(target->listen.host)) {
                reader.error(at.listener, path + ".listener",
                             "listener " + quote(rule.listener) + " listens on " +
                                 target->listen.toString() +
                                 ", a loopback address that redirected traffic never reaches; "
                                 "listen on 0.0.0.0 or [::]");
            }
        }
    }
    const auto& excluded = config.redirect.exclude_ports;
    for (size_t i = 0; i < excluded.size(); ++i) {
        const std::string path = indexed("redirect.exclude_ports", i);
        for (size_t j = 0; j < i; ++j) {
            if (excluded[j] == excluded[i]) {
                reader.error(positions.excludePorts[i], path,
                             "port " + std::to_string(excluded[i]) + " is listed twice");
            }
        }
        for (size_t j = 0; j < inbound.size(); ++j) {
            if (positions.inbound[j].port.line > 0 && inbound[j].port == excluded[i]) {
                reader.error(positions.excludePorts[i], path,
                             "port " + std::to_string(excluded[i]) +
                                 " is also redirected by redirect.inbound[" + std::to_string(j) +
                                 "]" + lineOf(positions.inbound[j].port));
            }
        }
    }
}

}  // namespace

void crossCheck(Reader& reader, const Config& config, const Positions& positions) {
    checkListeners(reader, config, positions);
    checkUpstreams(reader, config, positions);
    checkAdmin(reader, config, positions);
    checkRedirect(reader, config, positions);
}

void checkCertificates(Reader& reader, const Positions& positions, const Validators& validators) {
    std::vector<std::string> badCas;  // reported once, at the CA setting, not again for its CRL
    for (const auto& check : positions.certificates) {
        std::optional<std::string> problem;
        try {
            if (check.pair && validators.pair) {
                problem = validators.pair(check.file, check.privateKey);
            } else if (!check.pair && validators.ca) {
                problem = validators.ca(check.file);
            }
        } catch (const std::exception& e) {
            problem = e.what();
        } catch (...) {
            problem = "the certificate check failed";
        }
        if (problem && !check.pair) badCas.push_back(check.file);
        // A problem that names the key file and not the certificate is the key's: its line.
        const bool keyOnly = problem && check.pair && problem->find(check.privateKey) != std::string::npos &&
                             problem->find(check.file) == std::string::npos;
        if (problem) {
            reader.error(keyOnly ? check.keyMark : check.mark, keyOnly ? check.keyPath : check.path, *problem);
        }
    }
    for (const auto& check : positions.crls) {
        if (!validators.crl) break;
        if (std::find(badCas.begin(), badCas.end(), check.ca) != badCas.end()) continue;
        std::optional<std::string> problem;
        try {
            problem = validators.crl(check.file, check.ca);
        } catch (const std::exception& e) {
            problem = e.what();
        } catch (...) {
            problem = "the CRL check failed";
        }
        if (problem) reader.error(check.mark, check.path, *problem);
    }
}

}  // namespace sidecar::config::detail
