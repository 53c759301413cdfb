// Loading: read the file, check the YAML structure, walk the schema, then the checks across
// sections and the certificate checks. Every stage adds to one error list.

#include "config/config.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <system_error>

#include "config/diagnostics.h"
#include "config/schema.h"
#include "config/yaml_scan.h"

namespace sidecar::config {
namespace {

constexpr size_t kMaxFileBytes = 1024 * 1024;

const char* const kTooLarge = "the file is larger than 1 MiB, the limit for a config file";

LoadResult failure(const std::string& file, std::string message) {
    LoadResult result;
    result.errors.push_back(Error{file, Mark{}, std::move(message)});
    return result;
}

LoadResult load(const std::string& text, const std::string& name, const Validators& validators) {
    detail::Diagnostics diagnostics{name, {}};
    LoadResult result;
    if (text.size() > kMaxFileBytes) return failure(name, kTooLarge);
    switch (detail::scanYaml(text, diagnostics)) {
        case detail::ScanResult::Unusable:
            break;
        case detail::ScanResult::Document: {
            YAML::Node root;
            try {
                root = YAML::Load(text);
            } catch (const YAML::Exception& e) {
                diagnostics.add(e.mark, "invalid YAML: " + e.msg);
                break;
            }
            Config config;
            config.source = name;
            detail::Positions positions;
            detail::Reader reader(diagnostics);
            detail::readConfig(reader, root, config, positions);
            detail::crossCheck(reader, config, positions);
            // The backend first: the certificate checks may run with the one the file names.
            if (validators.backend) {
                if (auto problem = validators.backend(config.tls_backend))
                    reader.error(positions.tlsBackend, "tls_backend", *problem);
            }
            detail::checkCertificates(reader, positions, validators);
            if (diagnostics.errors.empty()) result.config = std::move(config);
            break;
        }
    }
    // File order; errors without a position (about the whole file) first.
    std::stable_sort(
        diagnostics.errors.begin(), diagnostics.errors.end(), [](const Error& a, const Error& b) {
            return std::pair(a.mark.line, a.mark.column) < std::pair(b.mark.line, b.mark.column);
        });
    result.errors = std::move(diagnostics.errors);
    return result;
}

}  // namespace

LoadResult loadString(const std::string& text, const std::string& name,
                      const Validators& validators) {
    try {
        return load(text, name, validators);
    } catch (const std::exception& e) {
        return failure(name, std::string("cannot load the config: ") + e.what());
    } catch (...) {
        return failure(name, "cannot load the config");
    }
}

LoadResult loadFile(const std::string& path, const Validators& validators) {
    try {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return failure(
                path, "cannot open the config file: " + std::generic_category().message(errno));
        }
        // Read at most one byte past the limit: enough to tell that the file is too large,
        // whatever kind of file it is.
        std::string text;
        char buffer[64 * 1024];
        for (;;) {
            ssize_t n = ::read(fd, buffer, sizeof buffer);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                int error = errno;
                ::close(fd);
                return failure(
                    path, "cannot read the config file: " + std::generic_category().message(error));
            }
            if (n == 0) break;
            text.append(buffer, static_cast<size_t>(n));
            if (text.size() > kMaxFileBytes) {
                ::close(fd);
                return failure(path, kTooLarge);
            }
        }
        ::close(fd);
        return loadString(text, path, validators);
    } catch (const std::exception& e) {
        return failure(path, std::string("cannot load the config: ") + e.what());
    } catch (...) {
        return failure(path, "cannot load the config");
    }
}

const Listener* Config::findListener(const std::string& name) const {
    for (const auto& listener : listeners) {
        if (listener.name == name) return &listener;
    }
    return nullptr;
}

}  // namespace sidecar::config
