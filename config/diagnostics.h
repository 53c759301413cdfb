#pragma once
// The error list every stage of loading appends to.

#include <yaml-cpp/mark.h>

#include <string>
#include <utility>
#include <vector>

#include "config/config.h"

namespace sidecar::config::detail {

// yaml-cpp counts lines and columns from 0; messages count from 1.
inline Mark toMark(const YAML::Mark& mark) {
    if (mark.is_null() || mark.line < 0 || mark.column < 0) return {};
    return {mark.line + 1, mark.column + 1};
}

struct Diagnostics {
    std::string file;
    std::vector<Error> errors;

    void add(Mark mark, std::string message) {
        errors.push_back(Error{file, mark, std::move(message)});
    }
    void add(const YAML::Mark& mark, std::string message) { add(toMark(mark), std::move(message)); }
};

}  // namespace sidecar::config::detail
