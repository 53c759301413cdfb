#include "config/reader.h"

#include <algorithm>
#include <unordered_set>

#include "config/values.h"

namespace sidecar::config::detail {
namespace {

std::string describe(const YAML::Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Map:
            return "a map";
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Scalar:
            return quote(node.Scalar());
        default:
            return "nothing";
    }
}

// Quoted scalars and ones tagged !!str are strings even when they look like numbers.
bool isQuoted(const YAML::Node& node) {
    return node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str";
}

size_t editDistance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
            diagonal = above;
        }
    }
    return row[b.size()];
}

std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
}

}  // namespace

Mark Field::valueMark() const {
    if (!value.IsDefined() || value.IsNull()) return keyMark;
    Mark mark = toMark(value.Mark());
    return mark.line > 0 ? mark : keyMark;
}

void Reader::error(Mark mark, const std::string& path, const std::string& problem) {
    diagnostics_.add(mark, path.empty() ? problem : path + ": " + problem);
}

bool Reader::scalar(const Field& field, const char* expected) {
    if (field.value.IsScalar()) return true;
    if (!field.value.IsDefined() || field.value.IsNull()) {
        error(field.keyMark, field.path, std::string("a value is required (") + expected + ")");
    } else {
        error(field.valueMark(), field.path,
              std::string("expected ") + expected + ", got " + describe(field.value));
    }
    return false;
}

std::optional<std::string> Reader::string(const Field& field) {
    if (!scalar(field, "a string")) return std::nullopt;
    const std::string& value = field.value.Scalar();
    for (unsigned char c : value) {
        if (c < 0x20 || c == 0x7f) {
            error(field.valueMark(), field.path, "control characters are not allowed");
            return std::nullopt;
        }
    }
    return value;
}

std::optional<std::string> Reader::text(const Field& field) {
    auto value = string(field);
    if (value && value->empty()) {
        error(field.valueMark(), field.path, "must not be empty");
        return std::nullopt;
    }
    return value;
}

std::optional<bool> Reader::boolean(const Field& field) {
    if (!scalar(field, "true or false")) return std::nullopt;
    const std::string& value = field.value.Scalar();
    if (!isQuoted(field.value)) {
        if (value == "true" || value == "True" || value == "TRUE") return true;
        if (value == "false" || value == "False" || value == "FALSE") return false;
    }
    error(field.valueMark(), field.path,
          "expected true or false, got " + std::string(isQuoted(field.value) ? "the string " : "") +
              describe(field.value));
    return std::nullopt;
}

std::optional<uint64_t> Reader::integer(const Field& field, uint64_t min, uint64_t max) {
    const std::string range = "a number from " + std::to_string(min) + " to " + std::to_string(max);
    if (!scalar(field, range.c_str())) return std::nullopt;
    const std::string& value = field.value.Scalar();
    if (isQuoted(field.value) || !detail::allDigits(value)) {
        error(field.valueMark(), field.path,
              "expected " + range + ", got " + (isQuoted(field.value) ? "the string " : "") +
                  describe(field.value));
        return std::nullopt;
    }
    // Past 19 digits the number is out of any range here (and of uint64_t).
    uint64_t number = value.size() > 19 ? UINT64_MAX : std::stoull(value);
    if (number < min || number > max) {
        error(field.valueMark(), field.path, value + " is out of range: expected " + range);
        return std::nullopt;
    }
    return number;
}

std::optional<Duration> Reader::duration(const Field& field, bool allowZero) {
    if (!scalar(field, "a duration such as \"10s\"")) return std::nullopt;
    const std::string& value = field.value.Scalar();
    std::string reason;
    auto result = detail::parseDuration(value, reason);
    if (!result) {
        error(field.valueMark(), field.path, "invalid duration " + quote(value) + ": " + reason);
        return std::nullopt;
    }
    if (!allowZero && *result == Duration::zero()) {
        error(field.valueMark(), field.path, "must be longer than 0");
        return std::nullopt;
    }
    return result;
}

std::optional<SocketAddress> Reader::address(const Field& field, bool allowName) {
    if (field.value.IsSequence()) {
        // [::1]:80 without quotes reads as a YAML list.
        error(field.valueMark(), field.path,
              "expected an address such as 0.0.0.0:8080, got a list (put an IPv6 address in "
              "quotes: \"[::1]:8080\")");
        return std::nullopt;
    }
    if (!scalar(field, "an address such as 0.0.0.0:8080")) return std::nullopt;
    const std::string& value = field.value.Scalar();
    std::string reason;
    auto result = detail::parseSocketAddress(value, reason, allowName);
    if (!result) {
        error(field.valueMark(), field.path, "invalid address " + quote(value) + ": " + reason);
    }
    return result;
}

std::optional<uint16_t> Reader::port(const Field& field) {
    auto value = integer(field, 1, 65535);
    if (!value) return std::nullopt;
    return static_cast<uint16_t>(*value);
}

std::optional<std::vector<Field>> Reader::list(const Field& field) {
    std::vector<Field> items;
    if (!field.value.IsDefined() || field.value.IsNull()) return items;
    if (!field.value.IsSequence()) {
        error(field.valueMark(), field.path, "expected a list, got " + describe(field.value));
        return std::nullopt;
    }
    Mark listMark = field.valueMark();
    size_t index = 0;
    for (const auto& item : field.value) {
        Mark mark = toMark(item.Mark());
        if (item.IsNull() || mark.line == 0) mark = listMark;
        items.push_back(Field{item, field.path + "[" + std::to_string(index++) + "]", mark});
    }
    return items;
}

std::optional<std::vector<std::string>> Reader::textList(const Field& field,
                                                        std::vector<Field>* fields) {
    auto items = list(field);
    if (!items) return std::nullopt;
    std::vector<std::string> values;
    std::unordered_set<std::string> seen;
    bool ok = true;
    for (const auto& item : *items) {
        auto value = text(item);
        if (!value) {
            ok = false;
        } else if (!seen.insert(*value).second) {
            error(item.valueMark(), item.path, quote(*value) + " is listed twice");
            ok = false;
        } else {
            values.push_back(*value);
        }
    }
    if (!ok) return std::nullopt;
    if (fields) *fields = std::move(*items);
    return values;
}

MapReader::MapReader(Reader& reader, const Field& field,
                     std::initializer_list<std::string_view> known)
    : reader_(reader), node_(field.value), path_(field.path), mark_(field.valueMark()) {
    if (!node_.IsDefined() || node_.IsNull()) {
        isMap_ = true;
        return;
    }
    if (!node_.IsMap()) {
        reader.error(field.valueMark(), path_, "expected a map, got " + describe(node_));
        return;
    }
    isMap_ = true;
    for (const auto& entry : node_) {
        const YAML::Node& key = entry.first;
        Mark keyMark = toMark(key.Mark());
        if (!key.IsScalar()) {
            reader.error(keyMark.line > 0 ? keyMark : mark_, path_,
                         "a key must be a plain string, not " + describe(key));
            continue;
        }
        const std::string& name = key.Scalar();
        if (std::find(known.begin(), known.end(), name) != known.end()) continue;
        // Suggest a known key within a few typos; longer keys tolerate one more.
        std::string closest;
        size_t best = name.size() >= 6 ? 4 : 3;
        std::string accepted;
        for (std::string_view candidate : known) {
            size_t distance = editDistance(name, candidate);
            if (distance < best && distance < candidate.size()) {
                best = distance;
                closest = std::string(candidate);
            }
            accepted += accepted.empty() ? "" : ", ";
            accepted += candidate;
        }
        reader.error(keyMark, path_,
                     "unknown key " + quote(name) +
                         (closest.empty() ? " (accepted keys: " + accepted + ")"
                                          : " (did you mean " + quote(closest) + "?)"));
    }
}

std::optional<Field> MapReader::get(std::string_view key) const {
    if (!node_.IsMap()) return std::nullopt;
    for (const auto& entry : node_) {
        if (entry.first.IsScalar() && entry.first.Scalar() == key) {
            Mark keyMark = toMark(entry.first.Mark());
            return Field{entry.second, join(path_, key), keyMark.line > 0 ? keyMark : mark_};
        }
    }
    return std::nullopt;
}

std::optional<Field> MapReader::require(std::string_view key) const {
    auto field = get(key);
    if (!field && isMap_) {
        reader_.error(mark_, path_, "the required key " + quote(std::string(key)) + " is missing");
    }
    return field;
}

}  // namespace sidecar::config::detail
