// The sidecar command line: run, check-config, gen-cert, init-net, version.

#include <fcntl.h>
#include <getopt.h>
#include <llhttp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/resolver.h"
#include "core/server.h"
#include "http/h2.h"
#include "initnet/command.h"
#include "tls/backend.h"
#include "tls/factory.h"

#ifndef SIDECAR_VERSION
#define SIDECAR_VERSION "0.0.0"
#endif

namespace {

using namespace sidecar;

// Exit status of every command (initnet/iptables.h adds init-net's iptables outcomes above 2).
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  // the config is invalid, or something failed at run time
constexpr int kExitUsage = 2;    // bad command line

// Where the config file comes from when no FILE is given.
constexpr const char* kConfigEnv = "SIDECAR_CONFIG";
constexpr const char* kDefaultConfig = "/etc/sidecar/sidecar.yaml";

const char kUsage[] =
    "usage: sidecar <command> [options]\n"
    "       sidecar -v|--version\n"
    "\n"
    "A TLS sidecar proxy: terminates TLS (and mTLS) in front of an unmodified application,\n"
    "configured by one YAML file.\n"
    "\n"
    "commands:\n"
    "  run [FILE]                run the proxy\n"
    "  check-config [FILE]       validate a config file; every error with file:line:col\n"
    "  gen-cert --out DIR        write a certificate and key: self-signed, a CA (--ca), or\n"
    "                            signed by a CA (--sign-with), for a server or a client\n"
    "  init-net apply|clean [FILE] [--dry-run]\n"
    "                            install or remove the iptables redirect of the config\n"
    "  version                   print the version and the library versions\n"
    "\n"
    "FILE, or -c/--config FILE: the config file. Without one: $SIDECAR_CONFIG, else\n"
    "/etc/sidecar/sidecar.yaml (run: else the embedded default). Relative paths inside the file\n"
    "are taken from the working directory.\n"
    "\n"
    "Exit status: 0 ok, 1 invalid config or failure at run time, 2 usage error (init-net: see\n"
    "'sidecar init-net --help' for 3 and above).\n"
    "\n"
    "Run 'sidecar <command> --help' for the options of a command.\n";

const char kRunUsage[] =
    "usage: sidecar run [FILE | -c FILE]\n"
    "\n"
    "Runs the proxy on the config FILE. Without one: $SIDECAR_CONFIG, else\n"
    "/etc/sidecar/sidecar.yaml when it exists, else the embedded default: one listener on\n"
    "127.0.0.1:8443 terminating TLS with a self-signed certificate made in memory at start,\n"
    "forwarding HTTP to 127.0.0.1:8080, and the admin endpoint on 127.0.0.1:9901.\n"
    "\n"
    "  -c, --config FILE   the config file (wins over a FILE argument)\n"
    "  -h, --help          this text\n"
    "\n"
    "signals: SIGTERM/SIGINT drain and exit 0 (a second one closes everything at once);\n"
    "         SIGHUP reloads the config file and certificates; SIGUSR1 and SIGUSR2 are ignored.\n"
    "\n"
    "Exit status: 0 after a drain, 1 when the config is invalid or the proxy cannot start (the\n"
    "last log line says why), 2 usage error.\n";

const char kCheckUsage[] =
    "usage: sidecar check-config [FILE | -c FILE]\n"
    "\n"
    "Validates FILE (structure, values, cross-references, certificates and keys) and prints\n"
    "every error as file:line:col: message. Without FILE: $SIDECAR_CONFIG, else\n"
    "/etc/sidecar/sidecar.yaml.\n"
    "\n"
    "  -c, --config FILE   the config file (wins over a FILE argument)\n"
    "  -h, --help          this text\n"
    "\n"
    "Exit status: 0 valid, 1 invalid, 2 usage error.\n";

const char kGenCertUsage[] =
    "usage: sidecar gen-cert --out DIR [--host NAME]... [--days N] [--client]\n"
    "                        [--sign-with CADIR] [--force]\n"
    "       sidecar gen-cert --ca --out DIR [--name NAME] [--days N] [--force]\n"
    "\n"
    "Writes an ECDSA P-256 key (mode 0600) and a certificate for it:\n"
    "  DIR/tls.crt, DIR/tls.key   a server certificate (with --client: a client certificate)\n"
    "                             for the --host names (default: localhost, 127.0.0.1, ::1;\n"
    "                             --client: client), self-signed or signed by the CA in CADIR\n"
    "  DIR/ca.crt, DIR/ca.key     with --ca: a CA that can sign them (and that listeners name as\n"
    "                             tls.client_ca)\n"
    "\n"
    "  -o, --out DIR         where to write (created if missing)\n"
    "      --host NAME       a subject alternative name, repeatable: a DNS name, an IP address,\n"
    "                        or a URI such as spiffe://example.org/ns/default/sa/web; the first\n"
    "                        is the CN\n"
    "      --name NAME       the subject CN (default: the first --host; --ca: sidecar CA)\n"
    "      --days N          validity in days, 1 to 3650 (default 365)\n"
    "      --ca              make a CA (ca.crt, ca.key) instead\n"
    "      --sign-with CADIR sign with CADIR/ca.crt and CADIR/ca.key (made by --ca)\n"
    "      --client          a client certificate (extKeyUsage clientAuth), for mTLS\n"
    "      --force           replace files that exist (without it they are left alone)\n"
    "  -h, --help            this text\n"
    "\n"
    "Exit status: 0 written, 1 a file exists (without --force) or cannot be read or written,\n"
    "2 usage error.\n";

// A usage error: what is wrong, where to look, exit 2.
int usageError(const std::string& command, const std::string& message) {
    std::cerr << "sidecar " << command << ": " << message << "\n"
              << "see 'sidecar " << command << " --help'\n";
    return kExitUsage;
}

// Parses one command's options with getopt_long (GNU order: options and arguments may mix).
// `onOption(code, value)` takes each option and returns false to stop (it has printed why).
// Returns the remaining arguments, or nullopt after a usage error was printed.
std::optional<std::vector<std::string>> parseOptions(
    const std::string& command, std::vector<std::string> args, const char* shortOptions,
    const option* longOptions, const std::function<bool(int, const char*)>& onOption) {
    std::vector<char*> argv;
    std::string name = "sidecar " + command;
    argv.push_back(name.data());
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string optstring = std::string(":") + shortOptions;  // ':' reports a missing value
    opterr = 0;
    optind = 0;  // glibc: start afresh
    int code;
    while ((code = getopt_long(int(argv.size() - 1), argv.data(), optstring.c_str(), longOptions,
                               nullptr)) != -1) {
        if (code == '?') {
            std::string what = optopt != 0 ? std::string("-") + char(optopt)
                                           : std::string(argv[size_t(optind) - 1]);
            usageError(command, "unknown option '" + what + "'");
            return std::nullopt;
        }
        if (code == ':') {
            usageError(command,
                       "option '" + std::string(argv[size_t(optind) - 1]) + "' needs a value");
            return std::nullopt;
        }
        if (!onOption(code, optarg)) return std::nullopt;
    }
    std::vector<std::string> rest;
    for (size_t i = size_t(optind); i + 1 < argv.size(); ++i) rest.push_back(argv[i]);
    return rest;
}

// A whole decimal number in [min, max]: "10x", "", "+5", " 5" and overflow are refused.
std::optional<long> parseNumber(const char* text, long min, long max) {
    if (text == nullptr || !std::isdigit(static_cast<unsigned char>(text[0]))) return std::nullopt;
    errno = 0;
    char* end = nullptr;
    long value = std::strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || value < min || value > max) return std::nullopt;
    return value;
}

// The config file of run, check-config and init-net, by precedence: -c/--config, then the
// FILE argument, then $SIDECAR_CONFIG, then kDefaultConfig. `named` tells whether one of the
// first three gave it.
struct ConfigPath {
    std::string path;
    bool named = false;
};

std::optional<ConfigPath> chooseConfig(const std::string& command, const std::string& flag,
                                       const std::vector<std::string>& positional) {
    if (positional.size() > 1) {
        usageError(command, "unexpected argument '" + positional[1] + "'");
        return std::nullopt;
    }
    if (!flag.empty()) {
        if (!positional.empty() && positional[0] != flag)
            std::cerr << "sidecar " << command << ": using -c " << flag << ", not " << positional[0]
                      << "\n";
        return ConfigPath{flag, true};
    }
    if (!positional.empty()) return ConfigPath{positional[0], true};
    const char* env = std::getenv(kConfigEnv);
    if (env != nullptr && *env != '\0') return ConfigPath{env, true};
    return ConfigPath{kDefaultConfig, false};
}

bool exists(const std::string& path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
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
        v.crl = [this](const std::string& crl, const std::string& ca) {
            return checker().checkCrl(crl, ca);
        };
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
        "no config file given (no FILE, no -c, no SIDECAR_CONFIG, and no "
        "/etc/sidecar/sidecar.yaml): using the embedded default with an ephemeral self-signed "
        "certificate made in memory (clients must skip verification or pin it)",
        {{"listen", "127.0.0.1:8443"}, {"upstream", "127.0.0.1:8080"}});
    return cfg;
}

const option kConfigOptions[] = {
    {"config", required_argument, nullptr, 'c'},
    {"help", no_argument, nullptr, 'h'},
    {nullptr, 0, nullptr, 0},
};

// Reads -c/--config FILE and -h/--help; *help is set when help was asked for.
std::optional<std::vector<std::string>> parseConfigOptions(const std::string& command,
                                                           std::vector<std::string> args,
                                                           std::string* flag, bool* help) {
    return parseOptions(command, std::move(args), "c:h", kConfigOptions,
                        [&](int code, const char* value) {
                            if (code == 'c' && *value == '\0') {
                                usageError(command, "-c/--config needs a file name");
                                return false;
                            }
                            if (code == 'c') *flag = value;
                            if (code == 'h') *help = true;
                            return true;
                        });
}

int cmdRun(std::vector<std::string> args) {
    std::string flag;
    bool help = false;
    std::optional<std::vector<std::string>> rest =
        parseConfigOptions("run", std::move(args), &flag, &help);
    if (!rest) return kExitUsage;
    if (help) {
        std::cout << kRunUsage;
        return kExitOk;
    }
    std::optional<ConfigPath> chosen = chooseConfig("run", flag, *rest);
    if (!chosen) return kExitUsage;
    // Signals that would otherwise end the process and that the proxy has no use for.
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN);

    core::Logger log;
    Backends backends;
    std::optional<config::Config> cfg;
    if (!chosen->named && !exists(chosen->path)) {
        cfg = embeddedDefault(*backends.get(""), log);
        if (!cfg) return kExitFailure;
    } else {
        config::LoadResult res = config::loadFile(chosen->path, backends.validators());
        if (!res.errors.empty()) {
            printErrors(res.errors);
            std::cerr << "sidecar run: " << chosen->path << ": " << res.errors.size()
                      << " error(s); not started\n";
            return kExitFailure;
        }
        cfg = std::move(res.config);
    }
    log.configure(cfg->log);
    tls::Backend* backend = backends.get(cfg->tls_backend);  // the loader checked that it exists

    uv_loop_t loop;
    if (int r = uv_loop_init(&loop); r != 0) {
        log.error("sidecar did not start",
                  {{"error", std::string("event loop: ") + uv_strerror(r)}});
        return kExitFailure;
    }
    core::Metrics metrics;
    metrics.version = SIDECAR_VERSION;
    metrics.tls_backend = std::string(backend->name());
    for (const tls::BackendInfo& b : tls::compiledBackends()) {
        metrics.tls_backends += (metrics.tls_backends.empty() ? "" : ",") + b.name;
    }
    bool started = false;
    std::string whyNot;
    {
        core::Server server(&loop, log, *backend, metrics, backends.validators());
        started = server.start(*cfg);
        if (started) {
            log.info("sidecar started", {{"version", SIDECAR_VERSION},
                                         {"config", cfg->source},
                                         {"tls_backend", backend->name()}});
        }
        // After a failed start this only closes what was opened.
        uv_run(&loop, UV_RUN_DEFAULT);
        whyNot = server.startError();
    }
    // Everything is closed by now; run once more for any close callbacks, then free the loop.
    uv_run(&loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&loop) != 0) log.debug("event loop still had handles at exit");
    if (!started) {
        log.error("sidecar did not start", {{"error", whyNot}, {"config", cfg->source}});
        return kExitFailure;
    }
    return kExitOk;
}

// Certificates that have expired, are not yet valid, or expire within 30 days: warnings on
// stderr, with dates in RFC 3339. The file stays valid (a certificate is replaced in place).
void warnCertificateDates(const config::Config& cfg, tls::Backend& backend) {
    constexpr int64_t kSoonSeconds = 30 * 86400;
    const int64_t now = int64_t(time(nullptr));
    auto check = [&](const std::string& where, const config::CertKeyPair& pair) {
        if (pair.certificate.empty()) return;
        tls::ServerOptions o;
        o.pair.certificate_path = pair.certificate;
        o.pair.private_key_path = pair.private_key;
        o.session_tickets = false;
        std::string error;
        std::shared_ptr<tls::Context> ctx = backend.serverContext(o, &error);
        if (!ctx) return;  // the loader has reported it
        for (const tls::CertificateInfo& ci : ctx->certificates()) {
            std::string problem;
            if (ci.not_after != 0 && ci.not_after < now) {
                problem = "has EXPIRED (not after " + core::rfc3339(ci.not_after) + ")";
            } else if (ci.not_before > now) {
                problem = "is not valid yet (not before " + core::rfc3339(ci.not_before) + ")";
            } else if (ci.not_after != 0 && ci.not_after < now + kSoonSeconds) {
                problem = "expires within 30 days (not after " + core::rfc3339(ci.not_after) + ")";
            }
            if (!problem.empty()) {
                std::cerr << "warning: " << where << ": certificate " << pair.certificate << " ("
                          << ci.subject << ") " << problem << "\n";
            }
        }
    };
    for (const config::Listener& l : cfg.listeners) {
        if (l.tls) {
            check("listener " + l.name, l.tls->pair);
            for (const config::SniEntry& e : l.tls->sni) check("listener " + l.name + " sni", e.pair);
        }
        if (l.upstream.tls && !l.upstream.tls->certificate.empty()) {
            config::CertKeyPair client;
            client.certificate = l.upstream.tls->certificate;
            client.private_key = l.upstream.tls->private_key;
            check("listener " + l.name + " upstream client certificate", client);
        }
    }
}

int cmdCheckConfig(std::vector<std::string> args) {
    std::string flag;
    bool help = false;
    std::optional<std::vector<std::string>> rest =
        parseConfigOptions("check-config", std::move(args), &flag, &help);
    if (!rest) return kExitUsage;
    if (help) {
        std::cout << kCheckUsage;
        return kExitOk;
    }
    std::optional<ConfigPath> chosen = chooseConfig("check-config", flag, *rest);
    if (!chosen) return kExitUsage;
    if (!chosen->named && !exists(chosen->path))
        return usageError("check-config",
                          std::string("no config file: give FILE or -c FILE, or set ") +
                              kConfigEnv + " (the default " + kDefaultConfig + " does not exist)");
    const std::string& path = chosen->path;
    Backends backends;
    config::LoadResult res = config::loadFile(path, backends.validators());
    if (!res.errors.empty()) {
        printErrors(res.errors);
        std::cerr << path << ": " << res.errors.size() << " error(s)\n";
        return kExitFailure;
    }
    if (tls::Backend* backend = backends.get(res.config->tls_backend)) warnCertificateDates(*res.config, *backend);
    std::cout << path << ": ok (" << res.config->listeners.size() << " listener(s))\n";
    return kExitOk;
}

// Writes `data` to `path` with `mode`; without `replace` an existing file is an error.
bool writeFile(const std::string& path, const std::string& data, mode_t mode, bool replace,
               std::string* error) {
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (replace ? O_TRUNC : O_EXCL);
    int fd = ::open(path.c_str(), flags, mode);
    if (fd < 0) {
        *error = errno == EEXIST ? path + " exists; --force replaces it"
                                 : "cannot write " + path + ": " + std::strerror(errno);
        return false;
    }
    if (::fchmod(fd, mode) != 0) {
        *error = "cannot set the mode of " + path + ": " + std::strerror(errno);
        ::close(fd);
        return false;
    }
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

bool readFile(const std::string& path, std::string* out, std::string* error) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        *error = "cannot read " + path + ": " + std::strerror(errno);
        return false;
    }
    out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) {
        *error = "cannot read " + path;
        return false;
    }
    return true;
}

int cmdGenCert(std::vector<std::string> args) {
    enum : int { kHost = 256, kName, kDays, kCa, kSignWith, kClient, kForce };
    const option longOptions[] = {
        {"out", required_argument, nullptr, 'o'},
        {"host", required_argument, nullptr, kHost},
        {"name", required_argument, nullptr, kName},
        {"days", required_argument, nullptr, kDays},
        {"ca", no_argument, nullptr, kCa},
        {"sign-with", required_argument, nullptr, kSignWith},
        {"client", no_argument, nullptr, kClient},
        {"force", no_argument, nullptr, kForce},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    std::string out, name, signWith;
    std::vector<std::string> hosts;
    long days = 365;
    bool ca = false, client = false, force = false, help = false;
    std::optional<std::vector<std::string>> rest = parseOptions(
        "gen-cert", std::move(args), "o:h", longOptions, [&](int code, const char* value) {
            switch (code) {
                case 'o':
                    out = value;
                    break;
                case kHost:
                    hosts.push_back(value);
                    break;
                case kName:
                    name = value;
                    break;
                case kDays:
                    if (std::optional<long> n = parseNumber(value, 1, 3650)) {
                        days = *n;
                        break;
                    }
                    usageError("gen-cert", std::string("--days takes a whole number of days from "
                                                       "1 to 3650, not '") +
                                               value + "'");
                    return false;
                case kCa:
                    ca = true;
                    break;
                case kSignWith:
                    signWith = value;
                    break;
                case kClient:
                    client = true;
                    break;
                case kForce:
                    force = true;
                    break;
                case 'h':
                    help = true;
                    break;
            }
            return true;
        });
    if (!rest) return kExitUsage;
    if (help) {
        std::cout << kGenCertUsage;
        return kExitOk;
    }
    if (!rest->empty())
        return usageError("gen-cert", "unexpected argument '" + rest->front() + "'");
    if (out.empty()) return usageError("gen-cert", "--out DIR is required");
    if (ca && (client || !signWith.empty() || !hosts.empty()))
        return usageError("gen-cert",
                          "--ca makes a CA: it takes --name, not --host, --client or "
                          "--sign-with");
    for (const std::string& h : hosts)
        if (h.empty()) return usageError("gen-cert", "--host needs a non-empty name");

    tls::CertificateRequest request;
    request.profile = ca       ? tls::CertificateProfile::Authority
                      : client ? tls::CertificateProfile::Client
                               : tls::CertificateProfile::Server;
    request.names = hosts;
    if (request.names.empty() && !ca)
        request.names = client ? std::vector<std::string>{"client"}
                               : std::vector<std::string>{"localhost", "127.0.0.1", "::1"};
    request.common_name = !name.empty() ? name : ca ? "sidecar CA" : "";
    request.days = int(days);
    std::string error;
    if (!signWith.empty()) {
        if (!readFile(signWith + "/ca.crt", &request.issuer_certificate_pem, &error) ||
            !readFile(signWith + "/ca.key", &request.issuer_private_key_pem, &error)) {
            std::cerr << "gen-cert: " << error << " (--sign-with takes a directory made by "
                      << "gen-cert --ca)\n";
            return kExitFailure;
        }
    }

    const std::string certPath = out + (ca ? "/ca.crt" : "/tls.crt");
    const std::string keyPath = out + (ca ? "/ca.key" : "/tls.key");
    // Like mkdir -p.
    for (size_t slash = out.find('/', 1);; slash = out.find('/', slash + 1)) {
        const std::string dir = out.substr(0, slash);
        if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
            std::cerr << "gen-cert: cannot create " << dir << ": " << std::strerror(errno) << "\n";
            return kExitFailure;
        }
        if (slash == std::string::npos) break;
    }
    if (!force) {
        for (const std::string& path : {certPath, keyPath}) {
            if (exists(path)) {
                std::cerr << "gen-cert: " << path << " exists; --force replaces it\n";
                return kExitFailure;
            }
        }
    }
    Backends backends;
    std::string cert, key;
    if (!backends.get("")->issueCertificate(request, &cert, &key, &error)) {
        std::cerr << "gen-cert: " << error << "\n";
        return kExitFailure;
    }
    if (!writeFile(keyPath, key, 0600, force, &error) ||
        !writeFile(certPath, cert, 0644, force, &error)) {
        std::cerr << "gen-cert: " << error << "\n";
        return kExitFailure;
    }
    const char* what = ca ? "CA" : client ? "client certificate" : "server certificate";
    std::cout << "wrote " << certPath << " and " << keyPath << " (" << what << ", ECDSA P-256, "
              << days << " days, "
              << (signWith.empty() ? std::string("self-signed")
                                   : "signed by " + signWith + "/ca.crt");
    if (ca) std::cout << ", CN=" << request.common_name;
    if (!ca) {
        std::cout << ", names:";
        for (const std::string& h : request.names) std::cout << " " << h;
    }
    std::cout << ")\n";
    return kExitOk;
}

int cmdInitNet(std::vector<std::string> args) {
    enum : int { kDryRun = 256 };
    const option longOptions[] = {
        {"config", required_argument, nullptr, 'c'},
        {"dry-run", no_argument, nullptr, kDryRun},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    std::string flag;
    bool dryRun = false, help = false;
    std::optional<std::vector<std::string>> rest = parseOptions(
        "init-net", std::move(args), "c:h", longOptions, [&](int code, const char* value) {
            if (code == 'c' && *value == '\0') {
                usageError("init-net", "-c/--config needs a file name");
                return false;
            }
            if (code == 'c') flag = value;
            if (code == kDryRun) dryRun = true;
            if (code == 'h') help = true;
            return true;
        });
    if (!rest) return kExitUsage;
    if (help) {
        std::cout << initnet::helpText();
        return kExitOk;
    }
    if (rest->empty()) return usageError("init-net", "missing command: apply or clean");
    const std::string action = rest->front();
    if (action != "apply" && action != "clean")
        return usageError("init-net", "unknown command '" + action + "': expected apply or clean");
    rest->erase(rest->begin());
    std::optional<ConfigPath> chosen = chooseConfig("init-net", flag, *rest);
    if (!chosen) return kExitUsage;
    if (!chosen->named && !exists(chosen->path))
        return usageError("init-net", std::string("no config file: give FILE or -c FILE, or set ") +
                                          kConfigEnv + " (the default " + kDefaultConfig +
                                          " does not exist)");
    config::LoadResult res = config::loadFile(chosen->path);
    if (!res.errors.empty()) {
        printErrors(res.errors);
        return kExitFailure;
    }
    std::vector<std::string> initArgs = {action};
    if (dryRun) initArgs.push_back("--dry-run");
    return initnet::runCommand(initArgs, *res.config, std::cout, std::cerr);
}

int cmdVersion() {
    std::cout << "sidecar " << SIDECAR_VERSION << " (libuv " << uv_version_string() << ", llhttp "
              << LLHTTP_VERSION_MAJOR << "." << LLHTTP_VERSION_MINOR << "." << LLHTTP_VERSION_PATCH
              << ", nghttp2 " << http::nghttp2Version() << ", c-ares " << core::caresVersion() << ")\n";
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
        return kExitUsage;
    }
    std::string cmd = argv[1];
    std::vector<std::string> args(argv + 2, argv + argc);
    if (cmd == "run") return cmdRun(std::move(args));
    if (cmd == "check-config") return cmdCheckConfig(std::move(args));
    if (cmd == "gen-cert") return cmdGenCert(std::move(args));
    if (cmd == "init-net") return cmdInitNet(std::move(args));
    if (cmd == "version" || cmd == "--version" || cmd == "-v") {
        if (!args.empty()) return usageError(cmd, "takes no arguments");
        return cmdVersion();
    }
    if (cmd == "help" || cmd == "--help" || cmd == "-h") {
        std::cout << kUsage;
        return kExitOk;
    }
    std::cerr << "sidecar: unknown command '" << cmd << "'\n\n" << kUsage;
    return kExitUsage;
}
