#pragma once
// The config file's schema: a walk over the node tree that fills a Config, checks each setting
// on its own and within its listener, and remembers where the values that later checks compare
// across the file came from.

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "config/config.h"
#include "config/reader.h"

namespace sidecar::config::detail {

// Positions in the file of values compared across sections, parallel to the Config vectors.
struct Positions {
    struct ListenerPositions {
        Mark name;      // line 0 when the name is missing or invalid
        Mark listen;    // line 0 when the address is missing or invalid
        Mark upstream;  // upstream.address; line 0 when missing or invalid
    };
    struct InboundPositions {
        Mark port;      // line 0 when the port is missing or invalid
        Mark listener;  // line 0 when the name is missing or invalid
    };
    // A certificate/key pair or a CA bundle to hand to the injected validators.
    struct CertificateCheck {
        bool pair = false;       // certificate + private_key; otherwise a CA bundle
        std::string path;        // the setting, for the message: "listeners[0].tls.certificate"
        std::string file;        // certificate or CA file
        std::string privateKey;  // key file, for a pair
        Mark mark;
        std::string keyPath;  // for a pair: the private_key setting and its position, where a
        Mark keyMark;         // problem with the key file alone is reported
    };
    // A client CRL file, checked against its listener's CA bundle.
    struct CrlCheck {
        std::string path;  // "listeners[0].tls.client_crl"
        std::string file;
        std::string ca;
        Mark mark;
    };

    std::vector<ListenerPositions> listeners;
    Mark adminListen;  // line 0 when admin.listen is the default or invalid
    Mark tlsBackend;   // line 0 when tls_backend is not set
    bool adminListenValid = true;
    std::vector<InboundPositions> inbound;
    std::vector<Mark> excludePorts;
    std::vector<CertificateCheck> certificates;
    std::vector<CrlCheck> crls;
};

void readConfig(Reader& reader, const YAML::Node& root, Config& config, Positions& positions);

// Checks between sections: unique names and addresses, redirect targets, port conflicts.
void crossCheck(Reader& reader, const Config& config, const Positions& positions);

// Calls the validators for every certificate/key pair and CA bundle found by readConfig.
void checkCertificates(Reader& reader, const Positions& positions, const Validators& validators);

}  // namespace sidecar::config::detail
