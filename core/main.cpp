// The sidecar command line: run, check-config, gen-cert, init-net, version.

#include <fcntl.h>
#include <llhttp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/server.h"
#include "initnet/command.h"
#include "tls/backend.h"
#include "tls/factory.h"

#ifndef SIDECAR_VERSION
#define SIDECAR_VERSION "0.0.0"
#endif

namespace {

using namespace sidecar;

const char kUsage[] =
    "usage: sidecar <command> [options]\n"
    "\n"
    "A TLS sidecar proxy: terminates TLS (and mTLS) in front of an unmodified application,\n"
    "configured by one YAML file.\n"
    "\n"
    "commands:\n"
    "  run [-c FILE]             run the proxy (without -c: the embedded default, TLS on\n"
    "                            127.0.0.1:8443 to 127.0.0.1:8080 with an ephemeral certificate)\n"
    "  check-config -c FILE      validate a config file; every error with file:line:col\n"
    "  gen-cert --out DIR        write a self-signed ECDSA P-256 tls.crt and tls.key\n"
    "  init-net <apply|clean> -c FILE [--dry-run]\n"
    "                            install or remove the iptables redirect of the config\n"
    "  version                   print the version and the library versions\n"
    "\n"
    "Run 'sidecar <command> --help' for the options of a command.\n";

const char kRunUsage[] =
    "usage: sidecar run [-c FILE]\n"
    "\n"
    "Runs the proxy. Without -c it uses the embedded default: one listener on 127.0.0.1:8443\n"
    "terminating TLS with a self-signed certificate made in memory at start, forwarding HTTP to\n"
    "127.0.0.1:8080, and the admin endpoint on 127.0.0.1:9901.\n"
    "\n"
    "signals: SIGTERM/SIGINT drain and exit 0 (a second one closes everything at once);\n"
    "         SIGHUP reloads the config file and certificates.\n";

const char kCheckUsage[] =
    "usage: sidecar check-config -c FILE\n"
    "\n"
    "Validates FILE (structure, values, cross-references, certificates and keys) and prints\n"
    "every error as file:line:col: message. Exit status 0 when valid, 1 otherwise.\n";

const char kGenCertUsage[] =
    "usage: sidecar gen-cert --out DIR [--host NAME]... [--days N]\n"
    "\n"
    "Writes DIR/tls.crt and DIR/tls.key (mode 0600): a self-signed ECDSA P-256 certificate for\n"
    "the given names (default: localhost, 127.0.0.1, ::1), valid for N days (default 365).\n";

bool wantsHelp(const std::vector<std::string>& args) {
    for (const std::string& a : args)
        if (a == "--help" || a == "-h") return true;
    return false;
}

// TLS backends by name, made on first use and kept for the life of the command: the config
// loader checks certificates with the backend the file names (tls_backend), and the running
// proxy holds a reference to one of them.
class Backends {
public:
    // nullptr when `name` is not compiled in; "" is the default backend.
    tls::Backend* get(std::string_view name) {
        if (name.empty()) name = tls::defaultBackendName();
        for (const auto& b : made_)
            if (name == b->name()) return b.get();
        std::unique_ptr<tls::Backend> b = tls::makeBackend(name);
        if (!b) return nullptr;
        made_.push_back(std::move(b));
        return made_.back().get();
    }

    config::Validators validators() {
        config::Validators v;
        v.backend = [this](const std::string& name) -> std::optional<std::string> {
            checking_ = get(name);
            if (checking_ != nullptr) return std::nullopt;
            std::string compiled;
            for (const tls::BackendInfo& b : tls::compiledBackends())
                compiled += (compiled.empty() ? "" : ", ") + b.name;
            return "\"" + name + "\" is not compiled into this build (it has: " + compiled + ")";
        };
        v.pair = [this](const std::string& cert, const std::string& key) {
            return checker().checkKeyPair(cert, key);
        };
        v.ca = [this](const std::string& ca) { return checker().checkCaBundle(ca); };
        return v;
    }

private:
    tls::Backend& checker() {
        if (checking_ == nullptr) checking_ = get("");
        return *checking_;
    }

    std::vector<std::unique_ptr<tls::Backend>> made_;
    tls::Backend* checking_ = nullptr;  // the backend the file being loaded names
};

void printErrors(const std::vector<config::Error>& errors) {
    for (const config::Error& e : errors) std::cerr << e.toString() << "\n";
}

// Reads -c FILE / --config FILE / --config=FILE out of args. Returns false on a usage error.
bool takeConfigFlag(std::vector<std::string>& args, std::string* path) {
    for (size_t i = 0; i < args.size(); ++i) {
        if (args[i] == "-c" || args[i] == "--config") {
            if (i + 1 >= args.size()) return false;
            *path = args[i + 1];
            args.erase(args.begin() + long(i), args.begin() + long(i) + 2);
            return true;
        }
        if (args[i].rfind("--config=", 0) == 0) {
            *path = args[i].substr(9);
            args.erase(args.begin() + long(i));
            return true;
        }
    }
    return true;
}

std::optional<config::Config> embeddedDefault(tls::Backend& backend, core::Logger& log) {
    config::Config cfg;
    cfg.source = "<embedded default>";
    config::Listener l;
    l.name = "default";
    l.listen = {"127.0.0.1", 8443};
    l.protocol = config::Protocol::Http;
    l.upstream.address = {"127.0.0.1", 8080};
    config::ServerTls t;
    std::string error;
    if (!backend.selfSigned({"localhost", "127.0.0.1", "::1"}, 30, &t.pair.certificate_pem,
                            &t.pair.private_key_pem, &error)) {
        log.error("cannot make the ephemeral certificate", {{"error", error}});
        return std::nullopt;
    }
    l.tls = t;
    cfg.listeners.push_back(l);
    log.warn(
        "no config file given: using the embedded default with an ephemeral self-signed "
        "certificate made in memory (clients must skip verification or pin it); use -c FILE",
        {{"listen", "127.0.0.1:8443"}, {"upstream", "127.0.0.1:8080"}});
    return cfg;
}

int cmdRun(std::vector<std::string> args) {
    if (wantsHelp(args)) {
        std::cout << kRunUsage;
        return 0;
    }
    std::string path;
    if (!takeConfigFlag(args, &path) || !args.empty()) {
        std::cerr << kRunUsage;
        return 2;
    }
    core::Logger log;
    Backends backends;
    std::optional<config::Config> cfg;
    if (path.empty()) {
        cfg = embeddedDefault(*backends.get(""), log);
        if (!cfg) return 1;
    } else {
        config::LoadResult res = config::loadFile(path, backends.validators());
        if (!res.errors.empty()) {
            printErrors(res.errors);
            return 1;
        }
        cfg = std::move(res.config);
    }
    log.configure(cfg->log);
    tls::Backend* backend = backends.get(cfg->tls_backend);  // the loader checked that it exists

    uv_loop_t loop;
    if (int r = uv_loop_init(&loop); r != 0) {
        log.error("cannot start the event loop", {{"error", uv_strerror(r)}});
        return 1;
    }
    core::Metrics metrics;
    int rc = 0;
    {
        core::Server server(&loop, log, *backend, metrics, backends.validators());
        if (!server.start(*cfg)) rc = 1;
        log.info("sidecar started", {{"version", SIDECAR_VERSION},
                                     {"config", cfg->source},
                                     {"tls_backend", backend->name()}});
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    // Everything is closed by now; run once more for any close callbacks, then free the loop.
    uv_run(&loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&loop) != 0) log.debug("event loop still had handles at exit");
    return rc;
}

int cmdCheckConfig(std::vector<std::string> args) {
    if (wantsHelp(args)) {
        std::cout << kCheckUsage;
        return 0;
    }
    std::string path;
    if (!takeConfigFlag(args, &path) || path.empty() || !args.empty()) {
        std::cerr << kCheckUsage;
        return 2;
    }
    Backends backends;
    config::LoadResult res = config::loadFile(path, backends.validators());
    if (!res.errors.empty()) {
        printErrors(res.errors);
        std::cerr << path << ": " << res.errors.size() << " error(s)\n";
        return 1;
    }
    std::cout << path << ": ok (" << res.config->listeners.size() << " listener(s))\n";
    return 0;
}

bool writeFile(const std::string& path, const std::string& data, mode_t mode, std::string* error) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        *error = "cannot write " + path + ": " + std::strerror(errno);
        return false;
    }
    fchmod(fd, mode);
    size_t off = 0;
    while (off < data.size()) {
        ssize_t n = ::write(fd, data.data() + off, data.size() - off);
        if (n <= 0) {
            *error = "cannot write " + path + ": " + std::strerror(errno);
            ::close(fd);
            return false;
        }
        off += size_t(n);
    }
    if (::close(fd) != 0) {
        *error = "cannot write " + path + ": " + std::strerror(errno);
        return false;
    }
    return true;
}

int cmdGenCert(const std::vector<std::string>& args) {
    if (wantsHelp(args)) {
        std::cout << kGenCertUsage;
        return 0;
    }
    std::string out;
    std::vector<std::string> hosts;
    int days = 365;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        bool has_value = i + 1 < args.size();
        if (a == "--out" && has_value) {
            out = args[++i];
        } else if (a == "--host" && has_value) {
            hosts.push_back(args[++i]);
        } else if (a == "--days" && has_value) {
            days = std::atoi(args[++i].c_str());
            if (days <= 0 || days > 3650) {
                std::cerr << "gen-cert: --days must be between 1 and 3650\n";
                return 2;
            }
        } else {
            std::cerr << kGenCertUsage;
            return 2;
        }
    }
    if (out.empty()) {
        std::cerr << kGenCertUsage;
        return 2;
    }
    if (hosts.empty()) hosts = {"localhost", "127.0.0.1", "::1"};
    if (::mkdir(out.c_str(), 0755) != 0 && errno != EEXIST) {
        std::cerr << "gen-cert: cannot create " << out << ": " << std::strerror(errno) << "\n";
        return 1;
    }
    Backends backends;
    std::string cert, key, error;
    if (!backends.get("")->selfSigned(hosts, days, &cert, &key, &error)) {
        std::cerr << "gen-cert: " << error << "\n";
        return 1;
    }
    if (!writeFile(out + "/tls.key", key, 0600, &error) || !writeFile(out + "/tls.crt", cert, 0644, &error)) {
        std::cerr << "gen-cert: " << error << "\n";
        return 1;
    }
    std::cout << "wrote " << out << "/tls.crt and " << out << "/tls.key (ECDSA P-256, " << days
              << " days, names:";
    for (const std::string& h : hosts) std::cout << " " << h;
    std::cout << ")\n";
    return 0;
}

int cmdInitNet(std::vector<std::string> args) {
    if (wantsHelp(args)) {
        std::cout << initnet::helpText();
        return 0;
    }
    std::string path;
    if (!takeConfigFlag(args, &path)) {
        std::cerr << "init-net: -c needs a file\n";
        return 1;
    }
    if (path.empty()) {
        std::cerr << "init-net: -c FILE is required\n\n" << initnet::helpText();
        return 1;
    }
    config::LoadResult res = config::loadFile(path);
    if (!res.errors.empty()) {
        printErrors(res.errors);
        return 1;
    }
    return initnet::runCommand(args, *res.config, std::cout, std::cerr);
}

int cmdVersion() {
    std::cout << "sidecar " << SIDECAR_VERSION << " (libuv " << uv_version_string() << ", llhttp "
              << LLHTTP_VERSION_MAJOR << "." << LLHTTP_VERSION_MINOR << "." << LLHTTP_VERSION_PATCH
              << ")\n";
    std::cout << "TLS backends (tls_backend):";
    for (const tls::BackendInfo& b : tls::compiledBackends()) {
        std::cout << " " << b.name << " (" << b.library
                  << (b.name == tls::defaultBackendName() ? ", default" : "") << ")";
    }
    std::cout << "\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        std::cerr << kUsage;
        return 2;
    }
    std::string cmd = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    if (cmd == "run") return cmdRun(std::move(args));
    if (cmd == "check-config") return cmdCheckConfig(std::move(args));
    if (cmd == "gen-cert") return cmdGenCert(args);
    if (cmd == "init-net") return cmdInitNet(std::move(args));
    if (cmd == "version" || cmd == "--version") return cmdVersion();
    if (cmd == "help" || cmd == "--help" || cmd == "-h") {
        std::cout << kUsage;
        return 0;
    }
    std::cerr << "sidecar: unknown command '" << cmd << "'\n\n" << kUsage;
    return 2;
}
