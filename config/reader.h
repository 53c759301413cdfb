#pragma once
// Typed, strict reads from a yaml-cpp node tree. Every problem becomes an error with the position
// of the offending key or value and the dotted path of the setting; a read that fails returns
// nothing and the caller keeps its default.

#include <yaml-cpp/yaml.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/diagnostics.h"
#include "config/values.h"

namespace sidecar::config::detail {

// A value and where it came from: the key that introduced it (or the list item) and its path,
// such as "listeners[0].upstream.address".
struct Field {
    YAML::Node value;
    std::string path;
    Mark keyMark;

    // Where the value is written; the key's position when the value is empty, since yaml-cpp
    // places an empty value at the next token.
    Mark valueMark() const;
};

class Reader {
public:
    explicit Reader(Diagnostics& diagnostics) : diagnostics_(diagnostics) {}

    // "path: problem" at `mark`.
    void error(Mark mark, const std::string& path, const std::string& problem);

    std::optional<std::string> string(const Field& field);
    // A string that is not empty.
    std::optional<std::string> text(const Field& field);
    std::optional<bool> boolean(const Field& field);
    std::optional<uint64_t> integer(const Field& field, uint64_t min, uint64_t max);
    std::optional<Duration> duration(const Field& field, bool allowZero);
    // host:port; with allowName the host may be a DNS name (an upstream).
    std::optional<SocketAddress> address(const Field& field, bool allowName = false);
    std::optional<uint16_t> port(const Field& field);

    template <typename T>
    std::optional<T> choice(const Field& field,
                            std::initializer_list<std::pair<std::string_view, T>> options) {
        auto value = string(field);
        if (!value) return std::nullopt;
        std::string names;
        for (const auto& [name, result] : options) {
            if (*value == name) return result;
            names += names.empty() ? "" : ", ";
            names += name;
        }
        error(field.valueMark(), field.path,
              quote(*value) + " is not one of the accepted values: " + names);
        return std::nullopt;
    }

    // The items of a list; an empty value is an empty list. Reports anything else.
    std::optional<std::vector<Field>> list(const Field& field);
    // A list of non-empty strings; each duplicate is reported. `fields`, if given, receives the
    // items (for positions), one per returned value.
    std::optional<std::vector<std::string>> textList(const Field& field,
                                                     std::vector<Field>* fields = nullptr);

    Diagnostics& diagnostics() { return diagnostics_; }

private:
    bool scalar(const Field& field, const char* expected);

    Diagnostics& diagnostics_;
};

// The keys of one map. Construction reports a value that is not a map, keys that are not plain
// strings, and keys outside `known` (with a suggestion when one is close). An empty value counts
// as an empty map.
class MapReader {
public:
    MapReader(Reader& reader, const Field& field, std::initializer_list<std::string_view> known);

    bool isMap() const { return isMap_; }
    const std::string& path() const { return path_; }
    // Position of the map itself (its first key), or of the key that introduced it when empty.
    Mark mark() const { return mark_; }

    std::optional<Field> get(std::string_view key) const;
    // Like get(), but reports a missing (or empty) key.
    std::optional<Field> require(std::string_view key) const;

private:
    Reader& reader_;
    YAML::Node node_;
    std::string path_;
    Mark mark_;
    bool isMap_ = false;
};

}  // namespace sidecar::config::detail
