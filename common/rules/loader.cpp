#include "common/rules/loader.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <sstream>

#include <yaml-cpp/eventhandler.h>

namespace sidetrace::rules {
namespace {

// Message texts, named so that tests can match them.
constexpr const char* kErrYaml = "YAML syntax error: {}";
constexpr const char* kErrNotSequence = "a rules file must be a YAML sequence of items";
constexpr const char* kErrItemNotMap = "expected an item (a mapping with 'rule', 'macro' or 'list')";
constexpr const char* kErrUnknownItem =
    "unknown item: expected a key 'rule', 'macro', 'list', 'required_engine_version' or "
    "'required_plugin_versions'";
constexpr const char* kErrUnknownKey = "unknown key '{}' in {}";
constexpr const char* kErrExpectedString = "wrong value type for '{}': expected a string";
constexpr const char* kErrExpectedBool = "wrong value type for '{}': expected true or false";
constexpr const char* kErrExpectedSeq = "wrong value type for '{}': expected a sequence";
constexpr const char* kErrExpectedMap = "wrong value type for '{}': expected a mapping";
constexpr const char* kErrBadPriority =
    "unknown priority '{}': expected emergency, alert, critical, error, warning, notice, informational "
    "(or info) or debug";
constexpr const char* kErrMissingKey = "{} has no '{}' key";
constexpr const char* kErrEmptyName = "{} must not be empty";
constexpr const char* kErrAppendUndefined = "{} appends to an item that is not defined before";
constexpr const char* kErrOverrideUndefined = "{} overrides an item that is not defined before";
constexpr const char* kErrAppendAndOverride = "{} uses both 'append' and 'override'";
constexpr const char* kErrOverrideValue = "override of '{}' must be 'append' or 'replace', not '{}'";
constexpr const char* kErrOverrideKey = "'{}' cannot be overridden with '{}' in {}";
constexpr const char* kErrOverrideMissing = "{} overrides '{}' but gives no '{}' key";
constexpr const char* kErrEnableUndefined = "{} changes 'enabled' of a rule that is not defined before";
constexpr const char* kErrException = "exception '{}' of {}: {}";
constexpr const char* kErrTooManyDocuments = "YAML syntax error: more than {} documents";

// yaml-cpp 0.7 loops forever on some malformed input (a ',' at the start of a
// line inside a block), producing empty documents until memory runs out. A
// first pass counts documents with the streaming parser and stops early.
constexpr int kMaxDocuments = 64;

class DocumentCounter : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override { ++documents; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
  int documents = 0;
};

// False when `text` holds more than kMaxDocuments documents; *mark is where
// the parser was then. Syntax errors are left to YAML::LoadAll.
bool FewDocuments(const std::string& text, YAML::Mark* mark) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentCounter counter;
  try {
    while (parser.HandleNextDocument(counter)) {
      if (counter.documents > kMaxDocuments) return false;
    }
  } catch (const YAML::Exception& e) {
    *mark = e.mark;
  }
  return true;
}

Pos PosOf(int source, const YAML::Node& n) {
  YAML::Mark m = n.Mark();
  Pos p;
  p.source = source;
  if (m.pos >= 0) {
    p.offset = static_cast<size_t>(m.pos);
    p.line = m.line;
    p.column = m.column;
  }
  return p;
}

bool ParseBool(const YAML::Node& n, bool* out) {
  if (!n.IsScalar()) return false;
  std::string s = n.Scalar();
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s == "true" || s == "yes" || s == "on") {
    *out = true;
    return true;
  }
  if (s == "false" || s == "no" || s == "off") {
    *out = false;
    return true;
  }
  return false;
}

class Reader {
 public:
  Reader(Collection* c, int source, LoadReport* r) : c_(c), src_(source), r_(r) {}

  void Run() {
    const std::string& text = c_->sources[src_].yaml;
    std::vector<YAML::Node> docs;
    YAML::Mark mark;
    if (!FewDocuments(text, &mark)) {
      Pos p;
      p.source = src_;
      Error(p, "LOAD_ERR_YAML_PARSE", fmt::format(kErrTooManyDocuments, kMaxDocuments), "");
      return;
    }
    try {
      docs = YAML::LoadAll(text);
    } catch (const YAML::Exception& e) {
      Pos p;
      p.source = src_;
      if (e.mark.pos >= 0) {
        p.offset = static_cast<size_t>(e.mark.pos);
        p.line = e.mark.line;
        p.column = e.mark.column;
      }
      Error(p, "LOAD_ERR_YAML_PARSE", fmt::format(kErrYaml, e.msg), "");
      return;
    }
    for (const auto& doc : docs) {
      if (doc.IsNull()) continue;
      if (!doc.IsSequence()) {
        Error(PosOf(src_, doc), "LOAD_ERR_YAML_VALIDATE", kErrNotSequence, "");
        continue;
      }
      for (const auto& item : doc) {
        try {
          Item(item);
        } catch (const YAML::Exception& e) {
          Error(PosOf(src_, item), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrYaml, e.msg), "");
        }
      }
    }
  }

 private:
  void Error(const Pos& p, const char* code, std::string msg, std::string item) {
    r_->errors.push_back(MakeMessage(*c_, p, code, std::move(msg), std::move(item)));
  }
  void Warn(const Pos& p, const char* code, std::string msg, std::string item) {
    r_->warnings.push_back(MakeMessage(*c_, p, code, std::move(msg), std::move(item)));
  }

  // Rejects keys outside `allowed`. Returns false after reporting.
  bool CheckKeys(const YAML::Node& item, const std::set<std::string>& allowed, const std::string& what) {
    bool ok = true;
    for (auto it = item.begin(); it != item.end(); ++it) {
      std::string key = it->first.IsScalar() ? it->first.Scalar() : "?";
      if (!allowed.count(key)) {
        Error(PosOf(src_, it->first), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrUnknownKey, key, what), what);
        ok = false;
      }
    }
    return ok;
  }

  bool GetString(const YAML::Node& item, const char* key, std::string* out, const std::string& what) {
    YAML::Node n = item[key];
    if (!n) return true;
    if (!n.IsScalar()) {
      Error(PosOf(src_, n), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrExpectedString, key), what);
      return false;
    }
    *out = n.Scalar();
    return true;
  }
  bool GetBool(const YAML::Node& item, const char* key, bool* out, const std::string& what) {
    YAML::Node n = item[key];
    if (!n) return true;
    if (!ParseBool(n, out)) {
      Error(PosOf(src_, n), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrExpectedBool, key), what);
      return false;
    }
    return true;
  }
  bool GetStrings(const YAML::Node& item, const char* key, std::vector<std::string>* out, const std::string& what) {
    YAML::Node n = item[key];
    if (!n) return true;
    if (n.IsNull()) return true;
    if (!n.IsSequence()) {
      Error(PosOf(src_, n), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrExpectedSeq, key), what);
      return false;
    }
    for (const auto& v : n) {
      if (!v.IsScalar()) {
        Error(PosOf(src_, v), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrExpectedString, key), what);
        return false;
      }
      out->push_back(v.Scalar());
    }
    return true;
  }

  // Parses `override:`; fills *modes (key -> append|replace). Checks that the
  // keys are allowed and present in the item.
  bool GetOverride(const YAML::Node& item, const std::set<std::string>& appendable,
                   const std::set<std::string>& replaceable, std::map<std::string, std::string>* modes,
                   const std::string& what) {
    YAML::Node n = item["override"];
    if (!n) return true;
    if (!n.IsMap()) {
      Error(PosOf(src_, n), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrExpectedMap, "override"), what);
      return false;
    }
    for (auto it = n.begin(); it != n.end(); ++it) {
      std::string key = it->first.Scalar();
      std::string mode = it->second.IsScalar() ? it->second.Scalar() : "";
      if (mode != "append" && mode != "replace") {
        Error(PosOf(src_, it->second), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrOverrideValue, key, mode), what);
        return false;
      }
      const auto& allowed = mode == "append" ? appendable : replaceable;
      if (!allowed.count(key)) {
        Error(PosOf(src_, it->first), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrOverrideKey, key, mode, what),
              what);
        return false;
      }
      if (!item[key]) {
        Error(PosOf(src_, it->first), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrOverrideMissing, what, key, key),
              what);
        return false;
      }
      (*modes)[key] = mode;
    }
    return true;
  }

  bool GetName(const YAML::Node& item, const char* key, std::string* name, const std::string& kind) {
    YAML::Node n = item[key];
    if (!n.IsScalar()) {
      Error(PosOf(src_, n.IsDefined() ? n : item), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrExpectedString, key),
            "");
      return false;
    }
    *name = n.Scalar();
    if (name->empty()) {
      Error(PosOf(src_, n), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrEmptyName, kind + " name"), "");
      return false;
    }
    return true;
  }

  void Item(const YAML::Node& item) {
    if (!item.IsMap()) {
      Error(PosOf(src_, item), "LOAD_ERR_YAML_VALIDATE", kErrItemNotMap, "");
      return;
    }
    if (item["rule"]) return Rule(item);
    if (item["macro"]) return Macro(item);
    if (item["list"]) return List(item);
    if (item["required_engine_version"]) {
      CheckKeys(item, {"required_engine_version"}, "required_engine_version");
      YAML::Node v = item["required_engine_version"];
      if (!v.IsScalar()) {
        Error(PosOf(src_, v), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrExpectedString, "required_engine_version"),
              "");
        return;
      }
      r_->required_engine_versions.push_back(v.Scalar());
      return;
    }
    if (item["required_plugin_versions"]) {
      CheckKeys(item, {"required_plugin_versions"}, "required_plugin_versions");
      YAML::Node v = item["required_plugin_versions"];
      if (!v.IsSequence()) {
        Error(PosOf(src_, v), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrExpectedSeq, "required_plugin_versions"),
              "");
        return;
      }
      for (const auto& p : v) {
        if (!p.IsMap() || !p["name"].IsScalar()) {
          Error(PosOf(src_, p), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrExpectedMap, "required_plugin_versions"),
                "");
          return;
        }
        std::string version = p["version"].IsScalar() ? p["version"].Scalar() : "";
        r_->required_plugins.push_back(p["name"].Scalar() + (version.empty() ? "" : " " + version));
      }
      return;
    }
    Error(PosOf(src_, item), "LOAD_ERR_YAML_VALIDATE", kErrUnknownItem, "");
  }

  void List(const YAML::Node& item) {
    std::string name;
    if (!GetName(item, "list", &name, "list")) return;
    std::string what = "list '" + name + "'";
    if (!CheckKeys(item, {"list", "items", "append", "override"}, what)) return;
    bool append = false;
    std::map<std::string, std::string> modes;
    std::vector<std::string> items;
    if (!GetBool(item, "append", &append, what) || !GetOverride(item, {"items"}, {"items"}, &modes, what) ||
        !GetStrings(item, "items", &items, what)) {
      return;
    }
    if (append && !modes.empty()) {
      return Error(PosOf(src_, item), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrAppendAndOverride, what), what);
    }
    if (!item["items"]) {
      return Error(PosOf(src_, item), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrMissingKey, what, "items"), what);
    }
    auto it = c_->list_index.find(name);
    if (append || !modes.empty()) {
      if (it == c_->list_index.end()) {
        return Error(PosOf(src_, item), "LOAD_ERR_YAML_VALIDATE",
                     fmt::format(fmt::runtime(append ? kErrAppendUndefined : kErrOverrideUndefined), what), what);
      }
      auto& def = c_->lists[it->second];
      if (append || modes["items"] == "append") {
        def.items.insert(def.items.end(), items.begin(), items.end());
      } else {
        def.items = items;
      }
      return;
    }
    ListDef def{name, items, PosOf(src_, item)};
    if (it != c_->list_index.end()) {
      c_->lists[it->second] = std::move(def);
    } else {
      c_->list_index[name] = c_->lists.size();
      c_->lists.push_back(std::move(def));
    }
  }

  void Macro(const YAML::Node& item) {
    std::string name;
    if (!GetName(item, "macro", &name, "macro")) return;
    std::string what = "macro '" + name + "'";
    if (!CheckKeys(item, {"macro", "condition", "append", "override"}, what)) return;
    bool append = false;
    std::map<std::string, std::string> modes;
    std::string cond;
    if (!GetBool(item, "append", &append, what) ||
        !GetOverride(item, {"condition"}, {"condition"}, &modes, what) ||
        !GetString(item, "condition", &cond, what)) {
      return;
    }
    if (append && !modes.empty()) {
      return Error(PosOf(src_, item), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrAppendAndOverride, what), what);
    }
    if (!item["condition"]) {
      return Error(PosOf(src_, item), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrMissingKey, what, "condition"),
                   what);
    }
    Pos cpos = PosOf(src_, item["condition"]);
    auto it = c_->macro_index.find(name);
    if (append || !modes.empty()) {
      if (it == c_->macro_index.end()) {
        return Error(PosOf(src_, item), "LOAD_ERR_YAML_VALIDATE",
                     fmt::format(fmt::runtime(append ? kErrAppendUndefined : kErrOverrideUndefined), what), what);
      }
      auto& def = c_->macros[it->second];
      if (append || modes["condition"] == "append") {
        def.condition.Append(cond, cpos);
      } else {
        def.condition.Assign(cond, cpos);
      }
      return;
    }
    MacroDef def;
    def.name = name;
    def.condition.Assign(cond, cpos);
    def.pos = PosOf(src_, item);
    if (it != c_->macro_index.end()) {
      c_->macros[it->second] = std::move(def);
    } else {
      c_->macro_index[name] = c_->macros.size();
      c_->macros.push_back(std::move(def));
    }
  }

  bool Exceptions(const YAML::Node& item, std::vector<ExceptionDef>* out, const std::string& what) {
    YAML::Node n = item["exceptions"];
    if (!n || n.IsNull()) return true;
    if (!n.IsSequence()) {
      Error(PosOf(src_, n), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrExpectedSeq, "exceptions"), what);
      return false;
    }
    for (const auto& e : n) {
      if (!e.IsMap() || !e["name"].IsScalar()) {
        Error(PosOf(src_, e), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrMissingKey, "exception", "name"), what);
        return false;
      }
      ExceptionDef def;
      def.name = e["name"].Scalar();
      def.pos = PosOf(src_, e);
      auto fail = [&](const YAML::Node& at, const std::string& why) {
        Error(PosOf(src_, at), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrException, def.name, what, why), what);
        return false;
      };
      if (!CheckKeys(e, {"name", "fields", "comps", "values"}, "exception '" + def.name + "'")) return false;
      YAML::Node fields = e["fields"], comps = e["comps"], values = e["values"];
      if (fields) {
        if (fields.IsScalar()) {
          def.fields = {fields.Scalar()};
        } else if (fields.IsSequence()) {
          def.fields_is_list = true;
          for (const auto& f : fields) {
            if (!f.IsScalar()) return fail(f, "fields must be field names");
            def.fields.push_back(f.Scalar());
          }
        } else {
          return fail(fields, "fields must be a field name or a sequence of them");
        }
      }
      if (comps) {
        if (comps.IsScalar()) {
          def.comps = {comps.Scalar()};
        } else if (comps.IsSequence()) {
          for (const auto& f : comps) {
            if (!f.IsScalar()) return fail(f, "comps must be operators");
            def.comps.push_back(f.Scalar());
          }
        } else {
          return fail(comps, "comps must be an operator or a sequence of them");
        }
      } else if (!def.fields.empty()) {
        def.comps.assign(def.fields.size(), def.fields_is_list ? "=" : "in");
      }
      if (!def.fields.empty() && def.comps.size() != def.fields.size()) {
        return fail(comps, fmt::format("{} fields but {} comps", def.fields.size(), def.comps.size()));
      }
      def.values = YAML::Node(YAML::NodeType::Sequence);
      if (values && !values.IsNull()) {
        if (!values.IsSequence()) return fail(values, "values must be a sequence");
        for (const auto& v : values) {
          if (def.fields_is_list) {
            if (!v.IsSequence() || v.size() != def.fields.size()) {
              return fail(v, fmt::format("each value must be a sequence of {} items, one per field", def.fields.size()));
            }
          } else if (!v.IsScalar() && !v.IsSequence()) {
            return fail(v, "values must be strings");
          }
          def.values.push_back(v);
        }
      }
      out->push_back(std::move(def));
    }
    return true;
  }

  void Rule(const YAML::Node& item) {
    std::string name;
    if (!GetName(item, "rule", &name, "rule")) return;
    std::string what = "rule '" + name + "'";
    if (!CheckKeys(item,
                   {"rule", "desc", "condition", "output", "priority", "enabled", "tags", "source", "exceptions",
                    "warn_evttypes", "skip-if-unknown-filter", "append", "override"},
                   what)) {
      return;
    }
    RuleDef def;
    def.name = name;
    def.pos = PosOf(src_, item);
    bool append = false;
    std::map<std::string, std::string> modes;
    std::string cond, output, priority;
    if (!GetBool(item, "append", &append, what) ||
        !GetOverride(item, {"condition", "output", "desc", "tags", "exceptions"},
                     {"condition", "output", "desc", "priority", "tags", "exceptions", "enabled", "warn_evttypes",
                      "skip-if-unknown-filter"},
                     &modes, what) ||
        !GetString(item, "condition", &cond, what) || !GetString(item, "output", &output, what) ||
        !GetString(item, "desc", &def.desc, what) || !GetString(item, "priority", &priority, what) ||
        !GetString(item, "source", &def.source, what) || !GetBool(item, "enabled", &def.enabled, what) ||
        !GetBool(item, "warn_evttypes", &def.warn_evttypes, what) ||
        !GetBool(item, "skip-if-unknown-filter", &def.skip_if_unknown_filter, what) ||
        !GetStrings(item, "tags", &def.tags, what) || !Exceptions(item, &def.exceptions, what)) {
      return;
    }
    if (item["priority"]) {
      if (!ParsePriority(priority, &def.priority)) {
        return Error(PosOf(src_, item["priority"]), "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrBadPriority, priority),
                     what);
      }
      def.has_priority = true;
    }
    if (item["condition"]) def.condition.Assign(cond, PosOf(src_, item["condition"]));
    if (item["output"]) def.output.Assign(output, PosOf(src_, item["output"]));
    if (append && !modes.empty()) {
      return Error(def.pos, "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrAppendAndOverride, what), what);
    }
    auto it = c_->rule_index.find(name);
    // Legacy form: only `rule` and `enabled` switches an existing rule.
    bool enable_only = item.size() == 2 && item["enabled"];
    if (append || !modes.empty() || enable_only) {
      if (it == c_->rule_index.end()) {
        const char* fmt_text = append ? kErrAppendUndefined : !modes.empty() ? kErrOverrideUndefined : kErrEnableUndefined;
        return Error(def.pos, "LOAD_ERR_YAML_VALIDATE", fmt::format(fmt::runtime(fmt_text), what), what);
      }
      RuleDef& old = c_->rules[it->second];
      if (enable_only) {
        old.enabled = def.enabled;
        return;
      }
      auto mode = [&](const char* key) -> std::string {
        if (!item[key]) return "";
        if (append) return "append";
        auto m = modes.find(key);
        return m == modes.end() ? "" : m->second;
      };
      if (mode("condition") == "append") old.condition.Append(cond, PosOf(src_, item["condition"]));
      if (mode("condition") == "replace") old.condition = def.condition;
      if (mode("output") == "append") old.output.Append(output, PosOf(src_, item["output"]));
      if (mode("output") == "replace") old.output = def.output;
      if (mode("desc") == "append") old.desc += " " + def.desc;
      if (mode("desc") == "replace") old.desc = def.desc;
      if (mode("tags") == "append") old.tags.insert(old.tags.end(), def.tags.begin(), def.tags.end());
      if (mode("tags") == "replace") old.tags = def.tags;
      if (!mode("priority").empty()) old.priority = def.priority;
      if (!mode("enabled").empty()) old.enabled = def.enabled;
      if (!mode("warn_evttypes").empty()) old.warn_evttypes = def.warn_evttypes;
      if (!mode("skip-if-unknown-filter").empty()) old.skip_if_unknown_filter = def.skip_if_unknown_filter;
      if (mode("exceptions") == "replace") old.exceptions = def.exceptions;
      if (mode("exceptions") == "append") {
        for (auto& e : def.exceptions) {
          auto same = std::find_if(old.exceptions.begin(), old.exceptions.end(),
                                   [&](const ExceptionDef& x) { return x.name == e.name; });
          if (same == old.exceptions.end()) {
            old.exceptions.push_back(std::move(e));
          } else {
            for (const auto& v : e.values) same->values.push_back(v);
          }
        }
      }
      return;
    }
    for (const char* key : {"condition", "output", "desc", "priority"}) {
      if (!item[key]) {
        return Error(def.pos, "LOAD_ERR_YAML_VALIDATE", fmt::format(kErrMissingKey, what, key), what);
      }
    }
    if (it != c_->rule_index.end()) {
      c_->rules[it->second] = std::move(def);
    } else {
      c_->rule_index[name] = c_->rules.size();
      c_->rules.push_back(std::move(def));
    }
  }

  Collection* c_;
  int src_;
  LoadReport* r_;
};

}  // namespace

LoadMessage MakeMessage(const Collection& c, const Pos& pos, std::string code, std::string message,
                        std::string item) {
  LoadMessage m;
  m.code = std::move(code);
  m.message = std::move(message);
  m.item = std::move(item);
  if (pos.source < 0 || pos.source >= static_cast<int>(c.sources.size())) return m;
  const std::string& text = c.sources[pos.source].yaml;
  m.file = c.sources[pos.source].name;
  m.line = pos.line + 1;
  m.column = pos.column + 1;
  size_t off = std::min(pos.offset, text.size());
  size_t begin = off == 0 ? std::string::npos : text.rfind('\n', off - 1);
  begin = begin == std::string::npos ? 0 : begin + 1;
  size_t end = text.find('\n', begin);
  std::string line = text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
  if (line.size() > 160) line = line.substr(0, 160) + "...";
  m.snippet = line + "\n" + std::string(static_cast<size_t>(pos.column), ' ') + "^";
  return m;
}

Pos MapOffset(const Collection& c, const PlacedText& t, size_t offset) {
  if (t.segments.empty()) return Pos();
  size_t s = 0;
  while (s + 1 < t.segments.size() && t.segments[s + 1].start <= offset) ++s;
  const auto& seg = t.segments[s];
  Pos base = seg.pos;
  if (base.source < 0) return base;
  const std::string& src = c.sources[base.source].yaml;
  size_t p = base.offset;
  if (p >= src.size()) return base;
  auto is_space = [](char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'; };
  if (src[p] == '"' || src[p] == '\'') {
    ++p;
  } else if (src[p] == '|' || src[p] == '>') {
    size_t nl = src.find('\n', p);
    if (nl == std::string::npos) return base;
    p = nl + 1;
  }
  // Walk the condition and the source together: their non-blank characters
  // appear in the same order (folding and indentation only move blanks).
  size_t end = std::min(offset, t.text.size());
  for (size_t i = seg.start; i < end; ++i) {
    char ch = t.text[i];
    if (is_space(ch)) continue;
    while (p < src.size() && is_space(src[p])) ++p;
    if (p < src.size() && src[p] == '\\' && ch != '\\') ++p;
    if (p >= src.size() || src[p] != ch) return base;
    ++p;
  }
  while (p < src.size() && is_space(src[p])) ++p;
  Pos out = base;
  out.offset = p;
  out.line = base.line;
  size_t line_start = base.offset - static_cast<size_t>(base.column);
  for (size_t i = base.offset; i < p; ++i) {
    if (src[i] == '\n') {
      ++out.line;
      line_start = i + 1;
    }
  }
  out.column = static_cast<int>(p - line_start);
  return out;
}

void CollectSource(Collection* c, int source, LoadReport* report) { Reader(c, source, report).Run(); }

}  // namespace sidetrace::rules
