#include "config/yaml_scan.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/parser.h>

#include <optional>
#include <sstream>
#include <unordered_map>

#include "config/values.h"

namespace sidecar::config::detail {
namespace {

const std::string kTooDeep =
    "the document is nested more than " + std::to_string(kMaxNesting) + " levels deep";

// yaml-cpp's scanner holds every token of a flow collection ("[...]", "{...}") in memory until
// the collection closes, at a few hundred bytes per token, and its parser recurses once per
// nesting level. This rough lexer finds flow collections that are nested too deeply or are too
// long before yaml-cpp sees them. It skips comments and quoted strings and ignores brackets
// inside plain text such as "a[1]"; a collection it misses is still bounded by yaml-cpp's own
// recursion limit and by the event checks below.
bool checkFlowCollections(const std::string& text, Diagnostics& diagnostics) {
    auto isBlank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    int depth = 0;
    size_t outerStart = 0;
    Mark outerMark;
    int line = 1;
    int column = 1;
    // Whether a node may start here: at the start of a line, after "- ", "? " or ": ", and
    // inside a flow collection after '[', '{', ',' or ':'. Brackets elsewhere are plain text.
    bool expectNode = true;
    size_t i = 0;
    auto step = [&] {
        if (text[i] == '\n') {
            ++line;
            column = 1;
        } else {
            ++column;
        }
        ++i;
    };
    while (i < text.size()) {
        if (depth > 0 && i - outerStart > kMaxFlowBytes) {
            diagnostics.add(outerMark, "a [...] or {...} collection is longer than " +
                                           std::to_string(kMaxFlowBytes / 1024) +
                                           " KiB; write long lists in block style (\"- item\")");
            return false;
        }
        char c = text[i];
        bool afterBlank = i == 0 || isBlank(text[i - 1]);
        bool beforeBlank = i + 1 == text.size() || isBlank(text[i + 1]);
        if (c == '\n') {
            expectNode = true;
            step();
        } else if (isBlank(c)) {
            step();
        } else if (c == '#' && afterBlank) {
            while (i < text.size() && text[i] != '\n') step();
        } else if ((c == '"' || c == '\'') && expectNode) {
            step();
            while (i < text.size()) {
                if (c == '"' && text[i] == '\\' && i + 1 < text.size()) {
                    step();
                } else if (text[i] == c) {
                    if (c == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
                        step();
                    } else {
                        break;
                    }
                }
                step();
            }
            if (i < text.size()) step();
            expectNode = false;
        } else if ((c == '&' || c == '!') && expectNode) {
            // An anchor or a tag in front of a node: the node is still to come.
            while (i < text.size() && !isBlank(text[i])) step();
        } else if ((c == '[' || c == '{') && (depth > 0 || expectNode)) {
            if (depth == 0) {
                outerStart = i;
                outerMark = {line, column};
            }
            if (++depth > kMaxNesting) {
                diagnostics.add(Mark{line, column}, kTooDeep);
                return false;
            }
            expectNode = true;
            step();
        } else {
            if ((c == ']' || c == '}') && depth > 0) {
                --depth;
                expectNode = false;
            } else if (depth > 0) {
                expectNode = c == ',' || c == ':' || c == '?';
            } else {
                expectNode = (c == '-' || c == '?' || c == ':') && beforeBlank;
            }
            step();
        }
    }
    return true;
}

struct Stop {};

// Sees the document as a stream of events, before any node exists.
class ScanHandler final : public YAML::EventHandler {
public:
    explicit ScanHandler(Diagnostics& diagnostics) : diagnostics_(diagnostics) {}

    void OnDocumentStart(const YAML::Mark& mark) override {
        if (++documents_ > 1) {
            diagnostics_.add(mark,
                             "a config file holds one YAML document; remove the second one "
                             "(or its \"---\" line)");
            throw Stop{};
        }
    }
    void OnDocumentEnd() override {}

    void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
        beginNode(mark, nullptr);
        defineLeaf(anchor, std::nullopt);
        endNode(1);
    }

    void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  const std::string& value) override {
        beginNode(mark, &value);
        defineLeaf(anchor, value);
        endNode(1);
    }

    void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
        Anchor& target = anchorAt(anchor);
        if (target.open) {
            diagnostics_.add(mark, "the alias *" + target.name +
                                       " refers to a node that contains "
                                       "it; recursive aliases are not "
                                       "supported");
            throw Stop{};
        }
        beginNode(mark, target.scalar ? &*target.scalar : nullptr);
        endNode(target.size);
    }

    void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                         YAML::EmitterStyle::value) override {
        beginCollection(mark, anchor, false);
    }
    void OnSequenceEnd() override { endCollection(); }

    void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                    YAML::EmitterStyle::value) override {
        beginCollection(mark, anchor, true);
    }
    void OnMapEnd() override { endCollection(); }

    void OnAnchor(const YAML::Mark&, const std::string& name) override { pendingName_ = name; }

private:
    struct Frame {
        bool map = false;
        bool atKey = true;  // maps alternate key, value, key, ...
        YAML::anchor_t anchor = YAML::NullAnchor;
        uint64_t size = 1;
        std::unordered_map<std::string, Mark> keys;
    };
    struct Anchor {
        std::string name;
        bool open = false;
        uint64_t size = 1;
        std::optional<std::string> scalar;
    };

    Anchor& anchorAt(YAML::anchor_t anchor) {
        if (anchor >= anchors_.size()) anchors_.resize(anchor + 1);
        return anchors_[anchor];
    }

    void defineLeaf(YAML::anchor_t anchor, std::optional<std::string> scalar) {
        if (anchor == YAML::NullAnchor) return;
        Anchor& entry = anchorAt(anchor);
        entry = Anchor{std::move(pendingName_), false, 1, std::move(scalar)};
        pendingName_.clear();
    }

    // A node starts: if it is a key of the enclosing map, look for an earlier equal key.
    void beginNode(const YAML::Mark& mark, const std::string* scalar) {
        lastMark_ = toMark(mark);
        if (stack_.empty() || !stack_.back().map || !stack_.back().atKey || !scalar) return;
        Mark here = toMark(mark);
        auto [it, inserted] = stack_.back().keys.emplace(*scalar, here);
        if (!inserted) {
            diagnostics_.add(here, "duplicate key " + quote(*scalar) + " (first given at line " +
                                       std::to_string(it->second.line) + ", column " +
                                       std::to_string(it->second.column) + ")");
        }
    }

    // A node of `size` nodes (after alias expansion) has ended.
    void endNode(uint64_t size) {
        if (stack_.empty()) return;
        Frame& parent = stack_.back();
        if (parent.map) parent.atKey = !parent.atKey;
        parent.size += std::min(size, kMaxNodes + 1);
        if (parent.size > kMaxNodes) {
            diagnostics_.add(lastMark_, "the document has more than " + std::to_string(kMaxNodes) +
                                            " nodes (counting each alias as a copy of its target)");
            throw Stop{};
        }
    }

    void beginCollection(const YAML::Mark& mark, YAML::anchor_t anchor, bool map) {
        beginNode(mark, nullptr);
        if (stack_.size() >= static_cast<size_t>(kMaxNesting)) {
            diagnostics_.add(mark, kTooDeep);
            throw Stop{};
        }
        if (anchor != YAML::NullAnchor) {
            Anchor& entry = anchorAt(anchor);
            entry = Anchor{std::move(pendingName_), true, 1, std::nullopt};
            pendingName_.clear();
        }
        Frame frame;
        frame.map = map;
        frame.anchor = anchor;
        stack_.push_back(std::move(frame));
    }

    void endCollection() {
        uint64_t size = stack_.back().size;
        YAML::anchor_t anchor = stack_.back().anchor;
        stack_.pop_back();
        if (anchor != YAML::NullAnchor) {
            anchorAt(anchor).open = false;
            anchorAt(anchor).size = size;
        }
        endNode(size);
    }

    Diagnostics& diagnostics_;
    int documents_ = 0;
    std::vector<Frame> stack_;
    std::vector<Anchor> anchors_;
    std::string pendingName_;
    Mark lastMark_;  // of the latest node, where a limit is found to be crossed
};

}  // namespace

ScanResult scanYaml(const std::string& text, Diagnostics& diagnostics) {
    if (!checkFlowCollections(text, diagnostics)) return ScanResult::Unusable;
    std::istringstream stream(text);
    ScanHandler handler(diagnostics);
    try {
        YAML::Parser parser(stream);
        while (parser.HandleNextDocument(handler)) {
        }
    } catch (const Stop&) {
        return ScanResult::Unusable;
    } catch (const YAML::Exception& e) {
        diagnostics.add(e.mark, "invalid YAML: " + e.msg);
        return ScanResult::Unusable;
    } catch (const std::exception& e) {
        diagnostics.add(Mark{}, std::string("cannot parse the file: ") + e.what());
        return ScanResult::Unusable;
    }
    return ScanResult::Document;
}

}  // namespace sidecar::config::detail
