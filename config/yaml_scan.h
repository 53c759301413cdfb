#pragma once
// The checks that must happen before yaml-cpp builds a node tree: YAML syntax, nesting depth,
// size after alias expansion, duplicate keys (yaml-cpp keeps both), and a single document.

#include <string>

#include "config/diagnostics.h"

namespace sidecar::config::detail {

inline constexpr int kMaxNesting = 64;              // collections inside collections
inline constexpr uint64_t kMaxNodes = 100000;       // counting each alias as a copy of its target
inline constexpr size_t kMaxFlowBytes = 64 * 1024;  // one [...] or {...} collection

enum class ScanResult {
    Document,  // at most one document, to load (errors may still have been reported); an empty
               // file loads as a null root, which the schema reports
    Unusable,  // a fatal problem was reported; do not load the text
};

ScanResult scanYaml(const std::string& text, Diagnostics& diagnostics);

}  // namespace sidecar::config::detail
