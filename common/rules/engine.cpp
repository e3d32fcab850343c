#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "common/rules/condition_parser.h"
#include "common/rules/filter.h"
#include "common/rules/loader.h"
#include "common/rules/output.h"
#include "common/rules/rules.h"
#include "common/util/log.h"

namespace sidetrace::rules {

namespace {

constexpr const char* kErrUndefinedMacro = "undefined macro '{}'";
constexpr const char* kErrUndefinedList = "undefined list '{}'";
constexpr const char* kErrMacroCycle = "macro '{}' refers to itself";
constexpr const char* kErrReadFile = "cannot read rules file: {}";
constexpr const char* kWarnUnknownField = "rule skipped: unknown field '{}'";
constexpr const char* kErrUnknownField = "unknown field '{}'";
constexpr const char* kWarnAllEventTypes =
    "condition does not restrict evt.type: the rule is evaluated on every event type";

using TypeSet = std::bitset<event::kEventTypeCount>;

TypeSet AllTypes() { return TypeSet().set(); }

}  // namespace

// Owns what the Engine's slots point at.
class CompiledRules {
 public:
  struct Compiled {
    std::unique_ptr<Rule> rule;
    std::unique_ptr<Filter> filter;
    OutputFormat output;
    bool needs_names = false;
    bool reads_cwd = false;  // proc.cwd in its condition, exceptions or output
  };
  std::vector<Compiled> rules;
};

namespace {

class Compiler {
 public:
  Compiler(Collection* c, const LoadOptions& o, LoadReport* r) : c_(*c), o_(o), r_(r) {
    macro_ast_.resize(c_.macros.size());
    macro_state_.assign(c_.macros.size(), 0);
    macro_compiled_.resize(c_.macros.size());
  }

  // Domain names compared against fd.*.name, for the resolver.
  std::vector<std::string> domains;

  void ParseMacros() {
    for (size_t i = 0; i < c_.macros.size(); ++i) ParseMacro(i);
  }

  // Compiles one rule; returns false when skipped or failed.
  bool CompileRule(const RuleDef& def, CompiledRules::Compiled* out) {
    std::string item = "rule '" + def.name + "'";
    unknown_field_.clear();
    names_ = false;
    cwd_ = false;
    ParseError perr;
    auto ast = ParseCondition(def.condition.text, &perr);
    if (!ast) {
      Error(MapOffset(c_, def.condition, perr.pos), "LOAD_ERR_COMPILE_CONDITION", perr.message, item);
      return false;
    }
    TypeSet t, f;
    auto filter = Compile(*ast, def.condition, item, 0, &t, &f);
    std::vector<std::unique_ptr<Filter>> exceptions;
    if (filter) {
      for (const auto& e : def.exceptions) {
        std::unique_ptr<Filter> ef;
        if (!CompileException(e, item, &ef)) {
          filter.reset();
          break;
        }
        if (ef) exceptions.push_back(std::move(ef));
      }
    }
    OutputFormat output;
    if (filter) {
      std::string why;
      size_t off = 0;
      bool unknown = false;
      if (!CompileOutput(def.output.text, &output, &why, &off, &unknown)) {
        if (unknown) {
          unknown_field_ = why.substr(why.find('\'') + 1);
          unknown_field_ = unknown_field_.substr(0, unknown_field_.find('\''));
          unknown_pos_ = MapOffset(c_, def.output, off);
        } else {
          Error(MapOffset(c_, def.output, off), "LOAD_ERR_COMPILE_OUTPUT", why, item);
        }
        filter.reset();
      }
    }
    if (!filter) {
      if (unknown_field_.empty()) return false;
      if (o_.strict && !def.skip_if_unknown_filter) {
        Error(unknown_pos_, "LOAD_ERR_UNKNOWN_FIELD", fmt::format(kErrUnknownField, unknown_field_), item);
      } else {
        r_->warnings.push_back(MakeMessage(c_, unknown_pos_, "LOAD_UNKNOWN_FIELD",
                                           fmt::format(kWarnUnknownField, unknown_field_), item));
        r_->rules_skipped.push_back({def.name, "unknown field '" + unknown_field_ + "'"});
      }
      return false;
    }
    if (!exceptions.empty()) {
      std::vector<std::unique_ptr<Filter>> both;
      both.push_back(std::move(filter));
      both.push_back(MakeNot(MakeOr(std::move(exceptions))));
      filter = MakeAnd(std::move(both));
    }
    if (t == AllTypes() && def.warn_evttypes) {
      r_->warnings.push_back(MakeMessage(c_, def.condition.segments.empty() ? def.pos : def.condition.segments[0].pos,
                                         "LOAD_NO_EVTTYPE", kWarnAllEventTypes, item));
    }
    auto rule = std::make_unique<Rule>();
    rule->name = def.name;
    rule->desc = def.desc;
    rule->condition = def.condition.text;
    rule->output = def.output.text;
    rule->priority = def.priority;
    rule->tags = def.tags;
    rule->source = def.source;
    rule->enabled = def.enabled;
    rule->event_types = t;
    out->rule = std::move(rule);
    out->filter = std::move(filter);
    out->needs_names = names_ || output.uses_names;
    out->reads_cwd = cwd_;
    for (const auto& part : output.parts) out->reads_cwd |= part.has_field && ReadsCwd(part.field);
    out->output = std::move(output);
    return true;
  }

 private:
  void Error(const Pos& p, const char* code, std::string msg, std::string item) {
    r_->errors.push_back(MakeMessage(c_, p, code, std::move(msg), std::move(item)));
  }

  const AstNode* ParseMacro(size_t i) {
    if (macro_ast_[i]) return macro_ast_[i].get();
    if (macro_state_[i] == 2) return nullptr;  // failed before
    ParseError perr;
    macro_ast_[i] = ParseCondition(c_.macros[i].condition.text, &perr);
    if (!macro_ast_[i]) {
      macro_state_[i] = 2;
      Error(MapOffset(c_, c_.macros[i].condition, perr.pos), "LOAD_ERR_COMPILE_CONDITION", perr.message,
            "macro '" + c_.macros[i].name + "'");
      return nullptr;
    }
    return macro_ast_[i].get();
  }

  // Expands unquoted list names, recursively (lists inlining lists).
  bool ExpandValues(const std::vector<AstValue>& in, std::vector<std::string>* out, int depth = 0) {
    for (const auto& v : in) {
      auto it = v.quoted ? c_.list_index.end() : c_.list_index.find(v.text);
      if (it == c_.list_index.end()) {
        out->push_back(v.text);
        continue;
      }
      if (depth > 32) return false;
      std::vector<AstValue> items;
      for (const auto& s : c_.lists[it->second].items) {
        // Falco pastes list items into the condition text, so an item
        // written '"10.0.0.0/8"' is a quoted value there.
        AstValue x;
        x.text = s;
        if (s.size() >= 2 && (s[0] == '"' || s[0] == '\'') && s.back() == s[0]) {
          x.text = s.substr(1, s.size() - 2);
          x.quoted = true;
        }
        items.push_back(std::move(x));
      }
      if (!ExpandValues(items, out, depth + 1)) return false;
    }
    return true;
  }

  // Compiles a field reference; on failure records the unknown field (skip)
  // or an error, and returns false.
  bool Field(const AstField& af, const PlacedText& text, const std::string& item, CompiledField* out) {
    std::string why;
    if (CompileField(af.transformers, af.name, af.has_arg, af.arg, af.ToString(), out, &why)) {
      names_ |= out->uses_names;
      cwd_ |= ReadsCwd(*out);
      return true;
    }
    Pos p = MapOffset(c_, text, af.pos);
    if (why.rfind("unknown field", 0) == 0) {
      if (unknown_field_.empty()) {
        unknown_field_ = af.name;
        unknown_pos_ = p;
      }
    } else {
      Error(p, "LOAD_ERR_COMPILE_CONDITION", why, item);
    }
    return false;
  }

  std::unique_ptr<Filter> Compile(const AstNode& n, const PlacedText& text, const std::string& item, int depth,
                                  TypeSet* t, TypeSet* f) {
    if (depth > kMaxConditionDepth * 4) {
      Error(MapOffset(c_, text, n.pos), "LOAD_ERR_COMPILE_CONDITION",
            fmt::format("condition nested too deeply (limit {})", kMaxConditionDepth), item);
      return nullptr;
    }
    switch (n.kind) {
      case AstNode::Kind::kAnd:
      case AstNode::Kind::kOr: {
        bool is_and = n.kind == AstNode::Kind::kAnd;
        std::vector<std::unique_ptr<Filter>> children;
        *t = is_and ? AllTypes() : TypeSet();
        *f = is_and ? TypeSet() : AllTypes();
        for (const auto& child : n.children) {
          TypeSet ct, cf;
          auto c = Compile(*child, text, item, depth + 1, &ct, &cf);
          if (!c) return nullptr;
          if (is_and) {
            *t &= ct;
            *f |= cf;
          } else {
            *t |= ct;
            *f &= cf;
          }
          children.push_back(std::move(c));
        }
        return is_and ? MakeAnd(std::move(children)) : MakeOr(std::move(children));
      }
      case AstNode::Kind::kNot: {
        auto c = Compile(*n.children[0], text, item, depth + 1, f, t);  // swapped
        return c ? MakeNot(std::move(c)) : nullptr;
      }
      case AstNode::Kind::kBool:
        *t = n.bool_value ? AllTypes() : TypeSet();
        *f = n.bool_value ? TypeSet() : AllTypes();
        return MakeConst(n.bool_value);
      case AstNode::Kind::kMacro: {
        auto it = c_.macro_index.find(n.macro);
        if (it == c_.macro_index.end()) {
          Error(MapOffset(c_, text, n.pos), "LOAD_ERR_COMPILE_CONDITION", fmt::format(kErrUndefinedMacro, n.macro),
                item);
          return nullptr;
        }
        size_t i = it->second;
        if (macro_state_[i] == 1) {
          Error(MapOffset(c_, text, n.pos), "LOAD_ERR_COMPILE_CONDITION", fmt::format(kErrMacroCycle, n.macro), item);
          return nullptr;
        }
        Compiled& m = macro_compiled_[i];
        if (!m.done) {
          const AstNode* ast = ParseMacro(i);
          if (!ast) return nullptr;
          macro_state_[i] = 1;
          std::string outer_unknown = std::move(unknown_field_);
          unknown_field_.clear();
          bool outer_names = names_;
          bool outer_cwd = cwd_;
          names_ = false;
          cwd_ = false;
          std::unique_ptr<Filter> filter =
              Compile(*ast, c_.macros[i].condition, "macro '" + n.macro + "'", depth + 1, &m.t, &m.f);
          macro_state_[i] = 0;
          m.done = true;
          m.unknown_field = unknown_field_;
          m.unknown_pos = unknown_pos_;
          m.names = names_;
          m.cwd = cwd_;
          m.filter = std::move(filter);
          unknown_field_ = std::move(outer_unknown);
          names_ = outer_names || m.names;
          cwd_ = outer_cwd || m.cwd;
        }
        names_ |= m.names;
        cwd_ |= m.cwd;
        if (!m.filter) {
          if (!m.unknown_field.empty() && unknown_field_.empty()) {
            unknown_field_ = m.unknown_field;
            unknown_pos_ = m.unknown_pos;
          }
          return nullptr;
        }
        *t = m.t;
        *f = m.f;
        return MakeMemo(m.filter, i);
      }
      case AstNode::Kind::kCheck:
        break;
    }
    *t = AllTypes();
    *f = AllTypes();
    CompiledField lhs;
    if (!Field(n.field, text, item, &lhs)) return nullptr;
    std::vector<std::string> values;
    if (!n.list_name.empty() && !c_.list_index.count(n.list_name)) {
      Error(MapOffset(c_, text, n.values[0].pos), "LOAD_ERR_COMPILE_CONDITION",
            fmt::format(kErrUndefinedList, n.list_name), item);
      return nullptr;
    }
    std::unique_ptr<CompiledField> rhs;
    if (n.values.size() == 1 && n.values[0].is_field) {
      rhs = std::make_unique<CompiledField>();
      if (!Field(n.values[0].field, text, item, rhs.get())) return nullptr;
    } else if (n.list_value) {
      if (!ExpandValues(n.values, &values)) {
        Error(MapOffset(c_, text, n.pos), "LOAD_ERR_COMPILE_CONDITION", "lists nested too deeply", item);
        return nullptr;
      }
    } else {
      for (const auto& v : n.values) values.push_back(v.text);
    }
    std::string why;
    int bad = -1;
    auto filter = MakeCheck(lhs, n.op, values, rhs.get(), &why, &bad);
    if (!filter) {
      size_t pos = n.pos;
      if (bad >= 0 && !n.list_value && bad < static_cast<int>(n.values.size())) pos = n.values[bad].pos;
      if (bad >= 0 && n.list_value && n.list_name.empty()) {
        // Point at the written value when the bad one was written inline.
        for (const auto& v : n.values) {
          if (v.text == values[bad]) pos = v.pos;
        }
      }
      Error(MapOffset(c_, text, pos), "LOAD_ERR_COMPILE_CONDITION", why, item);
      return nullptr;
    }
    FieldId id = lhs.field.info->id;
    if (lhs.uses_names && (n.op == "=" || n.op == "in" || n.op == "intersects")) {
      for (const auto& v : values) domains.push_back(v);
    }
    if (id == FieldId::kEvtType && lhs.transformers.empty() && !rhs &&
        (n.op == "=" || n.op == "==" || n.op == "in" || n.op == "!=")) {
      TypeSet s;
      for (const auto& v : values) {
        if (auto type = event::EventTypeFromName(v)) s.set(static_cast<size_t>(*type));
      }
      if (n.op == "!=") {
        *t = AllTypes() & ~s;
        *f = s;
      } else {
        *t = s;
        *f = AllTypes() & ~s;
      }
    }
    return filter;
  }

  // Builds "(f1 c1 v1 and f2 c2 v2) or ..." for one exception into *out
  // (left null when it has no values yet); false on error.
  bool CompileException(const ExceptionDef& e, const std::string& item, std::unique_ptr<Filter>* out) {
    if (e.values.size() == 0 || e.fields.empty()) return true;
    std::vector<CompiledField> fields;
    for (const auto& name : e.fields) {
      ParseError perr;
      auto ast = ParseCondition(name + " exists", &perr);
      CompiledField cf;
      std::string why;
      if (!ast || ast->kind != AstNode::Kind::kCheck ||
          !CompileField(ast->field.transformers, ast->field.name, ast->field.has_arg, ast->field.arg,
                        ast->field.ToString(), &cf, &why)) {
        if (why.rfind("unknown field", 0) == 0) {
          unknown_field_ = ast->field.name;
          unknown_pos_ = e.pos;
          return false;
        }
        Error(e.pos, "LOAD_ERR_COMPILE_CONDITION",
              fmt::format("exception '{}': bad field '{}'{}", e.name, name, why.empty() ? "" : ": " + why), item);
        return false;
      }
      cwd_ |= ReadsCwd(cf);
      fields.push_back(std::move(cf));
    }
    auto check = [&](size_t i, const YAML::Node& v) -> std::unique_ptr<Filter> {
      std::vector<AstValue> raw;
      if (v.IsSequence()) {
        for (const auto& x : v) {
          AstValue a;
          a.text = x.IsScalar() ? x.Scalar() : "";
          raw.push_back(a);
        }
      } else {
        AstValue a;
        a.text = v.Scalar();
        raw.push_back(a);
      }
      std::vector<std::string> values;
      bool list_op = IsListOperator(e.comps[i]);
      if (list_op) {
        ExpandValues(raw, &values);
      } else {
        for (const auto& a : raw) values.push_back(a.text);
      }
      std::string why;
      int bad = -1;
      auto f = MakeCheck(fields[i], e.comps[i], values, nullptr, &why, &bad);
      if (!f) {
        Error(PosOf(v), "LOAD_ERR_COMPILE_CONDITION",
              fmt::format("exception '{}': {}", e.name, why), item);
      }
      return f;
    };
    std::vector<std::unique_ptr<Filter>> alternatives;
    if (!e.fields_is_list) {
      // One field: values are its alternatives, compared with one operator.
      if (IsListOperator(e.comps[0])) {
        auto f = check(0, e.values);
        if (!f) return false;
        alternatives.push_back(std::move(f));
      } else {
        for (const auto& v : e.values) {
          auto f = check(0, v);
          if (!f) return false;
          alternatives.push_back(std::move(f));
        }
      }
    } else {
      for (const auto& tuple : e.values) {
        std::vector<std::unique_ptr<Filter>> all;
        for (size_t i = 0; i < fields.size(); ++i) {
          auto f = check(i, tuple[i]);
          if (!f) return false;
          all.push_back(std::move(f));
        }
        alternatives.push_back(MakeAnd(std::move(all)));
      }
    }
    *out = MakeOr(std::move(alternatives));
    return true;
  }

  Pos PosOf(const YAML::Node& n) const {
    Pos p;
    p.source = current_source_;
    YAML::Mark m = n.Mark();
    if (m.pos >= 0) {
      p.offset = static_cast<size_t>(m.pos);
      p.line = m.line;
      p.column = m.column;
    }
    return p;
  }

 public:
  int current_source_ = -1;

 private:
  Collection& c_;
  const LoadOptions& o_;
  LoadReport* r_;
  // A macro compiled once and shared by every rule that uses it.
  struct Compiled {
    bool done = false;
    std::shared_ptr<const Filter> filter;  // null: failed
    TypeSet t, f;
    std::string unknown_field;
    Pos unknown_pos;
    bool names = false;
    bool cwd = false;
  };
  std::vector<std::shared_ptr<const AstNode>> macro_ast_;
  std::vector<int> macro_state_;  // 0 idle, 1 being expanded, 2 failed to parse
  std::vector<Compiled> macro_compiled_;
  std::string unknown_field_;
  Pos unknown_pos_;
  bool names_ = false;
  bool cwd_ = false;  // the rule being compiled reads proc.cwd

  static bool ReadsCwd(const CompiledField& f) { return f.field.info->id == FieldId::kProcCwd; }
};

std::string Hostname(const LoadOptions& o) {
  if (!o.hostname.empty()) return o.hostname;
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

// A version 7 uuid (RFC 9562): the alert's time in Unix milliseconds, then
// 74 random bits. Alert ids sort by time, so the backend's unique index on
// them grows at its end instead of touching a random page per alert (Falco
// uses v4; any consumer that treats the uuid as opaque sees no difference).
std::string Uuid7(uint64_t time_ns) {
  thread_local std::mt19937_64 rng([] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }());
  const uint64_t ms = (time_ns / 1000000ull) & 0xffffffffffffull;
  const uint64_t a = (ms << 16) | 0x7000ull | (rng() & 0x0fffull);        // unix_ts_ms, version 7, rand_a
  const uint64_t b = (rng() & 0x3fffffffffffffffull) | 0x8000000000000000ull;  // variant 10, rand_b
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xffff, b >> 48,
                     b & 0xffffffffffffull);
}

std::string TimeOfDay(uint64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1000000000ull);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  return fmt::format("{:02}:{:02}:{:02}.{:09}", tm.tm_hour, tm.tm_min, tm.tm_sec, ns % 1000000000ull);
}

}  // namespace

bool ParsePriority(std::string_view text, Priority* out) {
  std::string s(text);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  static const std::pair<const char*, Priority> kNames[] = {
      {"emergency", Priority::kEmergency}, {"alert", Priority::kAlert}, {"critical", Priority::kCritical},
      {"error", Priority::kError}, {"warning", Priority::kWarning}, {"notice", Priority::kNotice},
      {"informational", Priority::kInformational}, {"info", Priority::kInformational}, {"debug", Priority::kDebug}};
  for (const auto& [name, p] : kNames) {
    if (s == name) {
      *out = p;
      return true;
    }
  }
  return false;
}

std::string_view PriorityName(Priority p) {
  static const char* kNames[] = {"Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational",
                                 "Debug"};
  return kNames[static_cast<int>(p)];
}

bool ParseResolveMode(std::string_view text, ResolveMode* out) {
  if (text == "dns") *out = ResolveMode::kDns;
  else if (text == "hosts") *out = ResolveMode::kHosts;
  else if (text == "off") *out = ResolveMode::kOff;
  else return false;
  return true;
}

std::string FormatRfc3339(uint64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1000000000ull);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ns % 1000000000ull);
}

std::string LoadMessage::ToString() const {
  std::string s;
  if (!file.empty()) s = line > 0 ? fmt::format("{}:{}:{}: ", file, line, column) : file + ": ";
  s += message;
  if (!item.empty() && message.find(item) == std::string::npos) s += " (" + item + ")";
  if (!snippet.empty()) {
    std::istringstream lines(snippet);
    std::string l;
    while (std::getline(lines, l)) s += "\n    " + l;
  }
  return s;
}

nlohmann::json LoadReport::ToJson() const {
  auto msgs = [](const std::vector<LoadMessage>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& m : v) {
      a.push_back({{"file", m.file}, {"line", m.line}, {"column", m.column}, {"code", m.code},
                   {"message", m.item.empty() || m.message.find(m.item) != std::string::npos ? m.message
                                                                                        : m.message + " (" + m.item + ")"}, {"snippet", m.snippet}});
    }
    return a;
  };
  nlohmann::json skipped = nlohmann::json::array();
  for (const auto& s : rules_skipped) skipped.push_back({{"rule", s.rule}, {"reason", s.reason}});
  return {{"lists", lists}, {"macros", macros}, {"rules", rules}, {"rules_loaded", rules_loaded},
          {"rules_disabled", rules_disabled}, {"rules_skipped", skipped}, {"warnings", msgs(warnings)},
          {"errors", msgs(errors)}, {"required_engine_versions", required_engine_versions},
          {"required_plugins", required_plugins}};
}

nlohmann::json Alert::ToJson() const {
  return {{"uuid", uuid}, {"time", FormatRfc3339(time_ns)}, {"rule", rule}, {"priority", PriorityName(priority)},
          {"output", output}, {"output_fields", output_fields}, {"source", source}, {"tags", tags},
          {"hostname", hostname}};
}

Engine::Engine() = default;
Engine::~Engine() = default;

Result<std::unique_ptr<Engine>> Engine::LoadFiles(const std::vector<std::string>& paths, const LoadOptions& options,
                                                  LoadReport* report) {
  LoadReport local;
  if (!report) report = &local;
  std::vector<RuleSource> sources;
  namespace fs = std::filesystem;
  for (const auto& path : paths) {
    std::vector<std::string> files;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      for (const auto& entry : fs::directory_iterator(path, ec)) {
        auto ext = entry.path().extension();
        if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml")) files.push_back(entry.path().string());
      }
      std::sort(files.begin(), files.end());
    } else {
      files.push_back(path);
    }
    for (const auto& file : files) {
      std::ifstream in(file, std::ios::binary);
      std::stringstream buf;
      if (in) buf << in.rdbuf();
      if (!in) {
        LoadMessage m;
        m.file = file;
        m.code = "LOAD_ERR_FILE_READ";
        m.message = fmt::format(kErrReadFile, std::strerror(errno));
        report->errors.push_back(m);
        return Status::IoError(m.ToString());
      }
      sources.push_back({file, buf.str()});
    }
  }
  return Build(sources, options, report);
}

Result<std::unique_ptr<Engine>> Engine::LoadSources(const std::vector<RuleSource>& sources, const LoadOptions& options,
                                                    LoadReport* report) {
  LoadReport local;
  return Build(sources, options, report ? report : &local);
}

Result<std::unique_ptr<Engine>> Engine::Build(const std::vector<RuleSource>& sources, const LoadOptions& options,
                                              LoadReport* report) {
  Collection c;
  c.sources = sources;
  for (size_t i = 0; i < sources.size(); ++i) CollectSource(&c, static_cast<int>(i), report);
  report->lists = static_cast<int>(c.lists.size());
  report->macros = static_cast<int>(c.macros.size());
  report->rules = static_cast<int>(c.rules.size());
  if (!report->errors.empty()) return Status::InvalidArgument(report->errors[0].ToString());

  std::unique_ptr<Engine> engine(new Engine());
  engine->compiled_ = std::make_unique<CompiledRules>();
  Compiler compiler(&c, options, report);
  compiler.ParseMacros();
  for (const auto& def : c.rules) {
    compiler.current_source_ = def.pos.source;
    if (def.source != "syscall") {
      report->rules_skipped.push_back({def.name, "source '" + def.source + "' is not supported"});
      continue;
    }
    CompiledRules::Compiled compiled;
    if (!compiler.CompileRule(def, &compiled)) continue;
    compiled.rule->index = engine->compiled_->rules.size();
    engine->compiled_->rules.push_back(std::move(compiled));
  }
  if (!report->errors.empty()) return Status::InvalidArgument(report->errors[0].ToString());

  bool any_names = false;
  for (auto& compiled : engine->compiled_->rules) {
    const Rule& rule = *compiled.rule;
    engine->all_.push_back(&rule);
    if (!rule.enabled || rule.priority > options.min_priority) {
      ++report->rules_disabled;
      continue;
    }
    ++report->rules_loaded;
    engine->enabled_.push_back(&rule);
    engine->event_types_ |= rule.event_types;
    any_names |= compiled.needs_names;
    if (compiled.reads_cwd) engine->cwd_types_ |= rule.event_types;
    for (size_t t = 0; t < event::kEventTypeCount; ++t) {
      if (rule.event_types.test(t)) engine->by_type_[t].push_back({&rule, &compiled, compiled.needs_names});
    }
  }
  engine->hostname_ = Hostname(options);
  engine->memo_slots_ = c.macros.size();
  engine->IndexDirectoryOpens();
  if (any_names) {
    std::sort(compiler.domains.begin(), compiler.domains.end());
    compiler.domains.erase(std::unique(compiler.domains.begin(), compiler.domains.end()), compiler.domains.end());
    engine->resolver_ = std::make_unique<Resolver>(options.resolve, compiler.domains, options.hosts_path,
                                                   std::chrono::seconds(options.resolve_refresh_seconds));
  }
  return engine;
}

namespace {
thread_local EvalContext t_ctx;
}

void Engine::BeginEvent(const event::Event& e) const {
  EvalContext& ctx = t_ctx;
  ctx.x.SetEvent(&e);
  if (ctx.memo_epoch.size() < memo_slots_) {
    ctx.memo_epoch.resize(memo_slots_, 0);
    ctx.memo_value.resize(memo_slots_, 0);
    ctx.may_epoch.resize(memo_slots_, 0);
    ctx.may_value.resize(memo_slots_, Tri::kUnknown);
  }
  ++ctx.epoch;
}

void Engine::IndexDirectoryOpens() {
  // An open of "/" as a directory, where only evt.type and the file type
  // are known: a rule that is false there is false for every directory
  // (with or without a name, as the first MayMatch pass covers events
  // without one).
  EvalContext ctx;
  ctx.only_file_type = true;
  ctx.x.typechar = 'd';
  ctx.may_epoch.assign(memo_slots_, 0);
  ctx.may_value.assign(memo_slots_, Tri::kUnknown);
  event::Event e;
  e.fd.name = "/";
  ctx.x.SetEvent(&e);
  for (size_t t = 0; t < event::kEventTypeCount; ++t) {
    e.type = static_cast<event::EventType>(t);
    if (!OpenTypeIsResult(e.type)) continue;
    for (const RuleSlot& slot : by_type_[t]) {
      ++ctx.epoch;
      if (static_cast<const CompiledRules::Compiled*>(slot.filter)->filter->May(ctx) != Tri::kFalse) {
        by_type_dir_[t].push_back(slot);
      }
    }
  }
}

bool Engine::MayMatch(const event::Event& e) const {
  size_t t = static_cast<size_t>(e.type);
  if (t >= event::kEventTypeCount) return false;
  EvalContext& ctx = t_ctx;
  // An open's file type is known only after the call: try the event as a
  // file, then as a directory (only the rules that can match one).
  const bool two_types = OpenTypeIsResult(e.type);
  bool may = false;
  for (char typechar : {'f', 'd'}) {
    BeginEvent(e);
    ctx.x.typechar = two_types ? typechar : 0;
    for (const RuleSlot& slot : typechar == 'f' ? by_type_[t] : by_type_dir_[t]) {
      ctx.x.resolver = slot.needs_names ? resolver_.get() : nullptr;
      may = static_cast<const CompiledRules::Compiled*>(slot.filter)->filter->May(ctx) != Tri::kFalse;
      if (ctx.x.names) ctx.x.names.reset();
      if (may) break;
    }
    if (may || !two_types) break;
  }
  ctx.x.typechar = 0;
  return may;
}

bool Engine::Matches(const RuleSlot& slot) const {
  const auto* compiled = static_cast<const CompiledRules::Compiled*>(slot.filter);
  EvalContext& ctx = t_ctx;
  ctx.x.resolver = slot.needs_names ? resolver_.get() : nullptr;
  bool r = compiled->filter->Eval(ctx);
  if (ctx.x.names) ctx.x.names.reset();
  return r;
}

Alert Engine::MakeAlert(const Rule& rule, const event::Event& e) const {
  const auto& compiled = compiled_->rules[rule.index];
  EvalContext& ctx = t_ctx;
  ctx.x.SetEvent(&e);
  ctx.x.resolver = resolver_.get();
  Alert a;
  a.uuid = Uuid7(e.time_ns);
  a.time_ns = e.time_ns;
  a.rule = rule.name;
  a.priority = rule.priority;
  a.source = rule.source;
  a.tags = rule.tags;
  a.hostname = hostname_;
  a.output = TimeOfDay(e.time_ns) + ": " + std::string(PriorityName(rule.priority)) + " ";
  RenderOutput(compiled.output, ctx, &a.output, &a.output_fields);
  a.output_fields["evt.time"] = e.time_ns;
  // Where it ran, whether or not the output names it (Falco's -pc).
  if (const event::ContainerInfo* c = e.container) {
    auto put = [&](const char* key, const std::string& v) {
      if (!a.output_fields.contains(key)) a.output_fields[key] = v.empty() ? nlohmann::json() : nlohmann::json(v);
    };
    put("container.id", c->id);
    put("container.name", c->name);
    put("container.image.repository", c->image_repository);
    put("container.image.tag", c->image_tag);
    for (const auto& [k, v] : c->extra) put(k.c_str(), v);
  }
  ctx.x.names.reset();
  return a;
}

}  // namespace sidetrace::rules
