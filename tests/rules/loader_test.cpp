// Loader and condition parser: inline YAML in, exact messages and places out.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/rules/test_events.h"

using namespace sidetrace::rules;
using namespace sidetrace::rules::testing;
namespace event = sidetrace::event;

namespace {

LoadReport LoadFail(const std::string& yaml, LoadOptions options = {}) {
  LoadReport report;
  options.resolve = ResolveMode::kOff;
  auto engine = Engine::LoadSources({{"test.yaml", yaml}}, options, &report);
  REQUIRE_FALSE(engine.ok());
  REQUIRE_FALSE(report.errors.empty());
  CHECK(engine.status().message() == report.errors[0].ToString());
  return report;
}

std::unique_ptr<Engine> LoadOk(const std::vector<RuleSource>& sources, LoadReport* report = nullptr,
                               LoadOptions options = {}) {
  LoadReport local;
  if (!report) report = &local;
  options.resolve = ResolveMode::kOff;
  auto engine = Engine::LoadSources(sources, options, report);
  INFO((report->errors.empty() ? std::string() : report->errors[0].ToString()));
  REQUIRE(engine.ok());
  return std::move(engine).value();
}

std::string RuleYaml(const std::string& name, const std::string& condition, const std::string& extra = "") {
  return "- rule: " + name + "\n  desc: d\n  condition: " + condition + "\n  output: o %proc.name\n  priority: INFO\n" +
         extra;
}

std::vector<std::string> Names(const Engine& e) {
  std::vector<std::string> out;
  for (const auto* r : e.rules()) out.push_back(r->name);
  return out;
}

}  // namespace

TEST_CASE("YAML syntax errors carry file, line, column and a snippet", "[rules]") {
  auto r = LoadFail("- rule: a\n  condition: [evt.type\n");
  const auto& e = r.errors[0];
  CHECK(e.file == "test.yaml");
  CHECK(e.code == "LOAD_ERR_YAML_PARSE");
  CHECK(e.message.rfind("YAML syntax error: ", 0) == 0);
  CHECK(e.line >= 2);
}

TEST_CASE("input that makes yaml-cpp loop is an error", "[rules]") {
  auto r = LoadFail("- rule: a\n  condition: >\n    x\n,    y\n");
  CHECK(r.errors[0].message == "YAML syntax error: more than 64 documents");
}

TEST_CASE("top level must be a sequence of known items", "[rules]") {
  auto r = LoadFail("rule: a\n");
  CHECK(r.errors[0].message == "a rules file must be a YAML sequence of items");
  r = LoadFail("- foo: bar\n");
  CHECK(r.errors[0].message ==
        "unknown item: expected a key 'rule', 'macro', 'list', 'required_engine_version' or "
        "'required_plugin_versions'");
  CHECK(r.errors[0].line == 1);
  CHECK(r.errors[0].column == 3);
}

TEST_CASE("unknown keys are errors naming the key and the item", "[rules]") {
  auto r = LoadFail(RuleYaml("r", "evt.type=open", "  colour: blue\n"));
  const auto& e = r.errors[0];
  CHECK(e.message == "unknown key 'colour' in rule 'r'");
  CHECK(e.line == 6);
  CHECK(e.column == 3);
  CHECK(e.snippet == "  colour: blue\n  ^");
  CHECK(e.ToString() == "test.yaml:6:3: unknown key 'colour' in rule 'r'\n      colour: blue\n      ^");
}

TEST_CASE("wrong value types", "[rules]") {
  CHECK(LoadFail(RuleYaml("r", "evt.type=open", "  enabled: maybe\n")).errors[0].message ==
        "wrong value type for 'enabled': expected true or false");
  CHECK(LoadFail(RuleYaml("r", "evt.type=open", "  tags: fs\n")).errors[0].message ==
        "wrong value type for 'tags': expected a sequence");
  auto r = LoadFail("- rule: r\n  desc: d\n  condition: evt.type=open\n  output: o\n  priority: LOUD\n");
  CHECK(r.errors[0].message ==
        "unknown priority 'LOUD': expected emergency, alert, critical, error, warning, notice, informational "
        "(or info) or debug");
  CHECK(r.errors[0].line == 5);
  CHECK(r.errors[0].column == 13);
  r = LoadFail("- list: l\n  items: {a: b}\n");
  CHECK(r.errors[0].message == "wrong value type for 'items': expected a sequence");
}

TEST_CASE("missing required keys", "[rules]") {
  auto r = LoadFail("- rule: r\n  desc: d\n  condition: evt.type=open\n  priority: INFO\n");
  CHECK(r.errors[0].message == "rule 'r' has no 'output' key");
  CHECK(r.errors[0].line == 1);
  CHECK(r.errors[0].column == 3);
}

TEST_CASE("condition errors point into the condition", "[rules]") {
  // "  condition: " is 13 columns: the condition starts at column 14.
  auto r = LoadFail(RuleYaml("r", "evt.type=open and no_such_macro"));
  CHECK(r.errors[0].message == "undefined macro 'no_such_macro'");
  CHECK(r.errors[0].item == "rule 'r'");
  CHECK(r.errors[0].line == 3);
  CHECK(r.errors[0].column == 32);
  CHECK(r.errors[0].snippet == "  condition: evt.type=open and no_such_macro\n                               ^");

  r = LoadFail(RuleYaml("r", "(evt.type=open and proc.name=cat"));
  CHECK(r.errors[0].message == "unbalanced parentheses: '(' is never closed");
  CHECK(r.errors[0].column == 14);

  r = LoadFail(RuleYaml("r", "evt.type=open)"));
  CHECK(r.errors[0].message == "unexpected ')' after a complete expression");
  CHECK(r.errors[0].column == 27);

  r = LoadFail(RuleYaml("r", "proc.name startz foo"));
  CHECK(r.errors[0].message == "unknown operator 'startz' after 'proc.name'");
  CHECK(r.errors[0].column == 24);

  r = LoadFail(RuleYaml("r", "proc.name ="));
  CHECK(r.errors[0].message == "expected a value, found the end of the condition");

  r = LoadFail(RuleYaml("r", "proc.pid = abc"));
  CHECK(r.errors[0].message == "'abc' is not a number, as field 'proc.pid' needs");
  CHECK(r.errors[0].column == 25);

  r = LoadFail(RuleYaml("r", "fd.sip in (1.2.3.4, nope)"));
  CHECK(r.errors[0].message == "'nope' is not an IP address or CIDR network, as field 'fd.sip' needs");
  CHECK(r.errors[0].column == 34);

  r = LoadFail(RuleYaml("r", "proc.name in no_such_list"));
  CHECK(r.errors[0].message == "undefined list 'no_such_list'");
  CHECK(r.errors[0].column == 27);

  r = LoadFail(RuleYaml("r", "proc.name = \"unterminated"));
  CHECK(r.errors[0].message == "unterminated quoted string");

  r = LoadFail(RuleYaml("r", "proc.aname[x] = sh"));
  CHECK(r.errors[0].message == "field 'proc.aname' needs a numeric index, got 'x'");

  r = LoadFail(RuleYaml("r", "proc.name regex \"([\""));
  CHECK(r.errors[0].message.rfind("invalid regular expression '([': ", 0) == 0);
}

TEST_CASE("errors in folded conditions and in macros are placed in their own text", "[rules]") {
  auto r = LoadFail(
      "- macro: m\n"
      "  condition: >\n"
      "    evt.type = open\n"
      "    and proc.name startz x\n" +
      RuleYaml("r", "m"));
  CHECK(r.errors[0].message == "unknown operator 'startz' after 'proc.name'");
  CHECK(r.errors[0].item == "macro 'm'");
  CHECK(r.errors[0].line == 4);
  CHECK(r.errors[0].column == 19);

  r = LoadFail(
      "- macro: m\n"
      "  condition: proc.name = x and undefined_one\n" +
      RuleYaml("r", "evt.type=open and m"));
  CHECK(r.errors[0].message == "undefined macro 'undefined_one'");
  CHECK(r.errors[0].line == 2);
  CHECK(r.errors[0].column == 32);
}

TEST_CASE("parser recursion is bounded", "[rules]") {
  std::string deep(5000, '(');
  auto r = LoadFail(RuleYaml("r", "'" + deep + "evt.type=open'"));
  CHECK(r.errors[0].message == "condition nested too deeply (limit 100)");
  std::string nots;
  for (int i = 0; i < 3000; ++i) nots += "not ";
  r = LoadFail(RuleYaml("r", nots + "evt.type=open"));
  CHECK(r.errors[0].message == "condition nested too deeply (limit 100)");
  r = LoadFail(RuleYaml("r", "tolower(tolower(tolower(" + std::string(400, 'x') + ")))"));
  CHECK_FALSE(r.errors.empty());
}

TEST_CASE("macro cycles are errors", "[rules]") {
  auto r = LoadFail("- macro: a\n  condition: b\n- macro: b\n  condition: a\n" + RuleYaml("r", "a"));
  CHECK(r.errors[0].message == "macro 'a' refers to itself");
}

TEST_CASE("unknown fields skip the rule with a warning, or fail with strict", "[rules]") {
  std::string yaml = RuleYaml("bad", "proc.nope = 1") + RuleYaml("good", "evt.type=open");
  LoadReport report;
  auto engine = LoadOk({{"t.yaml", yaml}}, &report);
  CHECK(Names(*engine) == std::vector<std::string>{"good"});
  REQUIRE(report.rules_skipped.size() == 1);
  CHECK(report.rules_skipped[0].rule == "bad");
  CHECK(report.rules_skipped[0].reason == "unknown field 'proc.nope'");
  REQUIRE(report.warnings.size() == 1);
  CHECK(report.warnings[0].message == "rule skipped: unknown field 'proc.nope'");
  CHECK(report.warnings[0].line == 3);
  CHECK(report.warnings[0].column == 14);

  LoadOptions strict;
  strict.strict = true;
  auto r = LoadFail(yaml, strict);
  CHECK(r.errors[0].message == "unknown field 'proc.nope'");
  CHECK(r.errors[0].code == "LOAD_ERR_UNKNOWN_FIELD");

  // skip-if-unknown-filter keeps strict loads going.
  LoadReport report2;
  LoadOk({{"t.yaml", RuleYaml("bad", "proc.nope = 1", "  skip-if-unknown-filter: true\n")}}, &report2, strict);
  CHECK(report2.rules_skipped.size() == 1);

  // An unknown field in the output skips the rule too.
  LoadReport report3;
  auto e3 = LoadOk({{"t.yaml", "- rule: r\n  desc: d\n  condition: evt.type=open\n  output: x %foo.bar y\n"
                               "  priority: INFO\n"}},
                   &report3);
  CHECK(e3->rules().empty());
  CHECK(report3.rules_skipped[0].reason == "unknown field 'foo.bar'");
}

TEST_CASE("lists inline lists, macros use macros, items keep their position", "[rules]") {
  std::string base =
      "- required_engine_version: 0.31.0\n"
      "- required_plugin_versions:\n  - name: container\n    version: 0.2.0\n"
      "- list: inner\n  items: [bash, '\"zsh\"']\n"
      "- list: shells\n  items: [inner, sh]\n"
      "- macro: is_shell\n  condition: proc.name in (shells)\n"
      "- macro: shell_exec\n  condition: evt.type = execve and is_shell\n" +
      RuleYaml("first", "shell_exec") + RuleYaml("second", "evt.type = openat");
  LoadReport report;
  auto engine = LoadOk({{"a.yaml", base}}, &report);
  CHECK(report.lists == 2);
  CHECK(report.macros == 2);
  CHECK(report.rules == 2);
  CHECK(report.rules_loaded == 2);
  CHECK(report.required_engine_versions == std::vector<std::string>{"0.31.0"});
  CHECK(report.required_plugins == std::vector<std::string>{"container 0.2.0"});
  for (const char* name : {"bash", "zsh", "sh"}) {
    CHECK(Fired(*engine, Exec(Proc(name)).e) == std::vector<std::string>{"first"});
  }
  CHECK(Fired(*engine, Exec(Proc("cat")).e).empty());

  // A second file: append to the list, redefine 'first' (same place), add a rule.
  std::string more =
      "- list: shells\n  items: [fish]\n  override:\n    items: append\n" +
      RuleYaml("third", "evt.type = connect") + RuleYaml("first", "evt.type = execve and proc.name = cat");
  auto e2 = LoadOk({{"a.yaml", base}, {"b.yaml", more}});
  CHECK(Names(*e2) == std::vector<std::string>{"first", "second", "third"});
  CHECK(Fired(*e2, Exec(Proc("cat")).e) == std::vector<std::string>{"first"});
  CHECK(Fired(*e2, Exec(Proc("bash")).e).empty());
}

TEST_CASE("append and override follow Falco", "[rules]") {
  std::string base =
      "- list: shells\n  items: [bash]\n"
      "- macro: is_shell\n  condition: proc.name in (shells)\n" +
      RuleYaml("r", "evt.type = execve and is_shell", "  tags: [a]\n") + RuleYaml("other", "evt.type = openat");
  SECTION("legacy append") {
    std::string more =
        "- list: shells\n  items: [zsh]\n  append: true\n"
        "- macro: is_shell\n  condition: or proc.name = fish\n  append: true\n"
        "- rule: r\n  condition: and user.uid = 0\n  append: true\n";
    auto e = LoadOk({{"a", base}, {"b", more}});
    for (const char* name : {"bash", "zsh", "fish"}) {
      CHECK(Fired(*e, Exec(Proc(name)).e) == std::vector<std::string>{"r"});
    }
    auto p = Proc("bash");
    p->uid = 1000;
    CHECK(Fired(*e, Exec(p).e).empty());
  }
  SECTION("override append and replace") {
    std::string more =
        "- rule: r\n  condition: and user.uid = 0\n  output: replaced %user.uid\n  tags: [b]\n  priority: ERROR\n"
        "  override:\n    condition: append\n    output: replace\n    tags: append\n    priority: replace\n";
    auto e = LoadOk({{"a", base}, {"b", more}});
    const Rule* r = e->rules()[0];
    CHECK(r->condition == "evt.type = execve and is_shell and user.uid = 0");
    CHECK(r->output == "replaced %user.uid");
    CHECK(r->tags == std::vector<std::string>{"a", "b"});
    CHECK(r->priority == Priority::kError);
  }
  SECTION("enabled switches") {
    auto e = LoadOk({{"a", base}, {"b", "- rule: r\n  enabled: false\n"}});
    CHECK(Names(*e) == std::vector<std::string>{"other"});
    auto e2 = LoadOk({{"a", base}, {"b", "- rule: r\n  enabled: false\n  override:\n    enabled: replace\n"},
                      {"c", "- rule: r\n  enabled: true\n"}});
    CHECK(Names(*e2) == std::vector<std::string>{"r", "other"});
  }
  SECTION("appending to what is not there is an error") {
    auto r = LoadFail("- list: nope\n  items: [a]\n  append: true\n");
    CHECK(r.errors[0].message == "list 'nope' appends to an item that is not defined before");
    r = LoadFail("- rule: nope\n  condition: x\n  override:\n    condition: append\n");
    CHECK(r.errors[0].message == "rule 'nope' overrides an item that is not defined before");
    r = LoadFail("- rule: nope\n  enabled: false\n");
    CHECK(r.errors[0].message == "rule 'nope' changes 'enabled' of a rule that is not defined before");
    r = LoadFail(base + "- rule: r\n  priority: INFO\n  override:\n    priority: append\n");
    CHECK(r.errors[0].message == "'priority' cannot be overridden with 'append' in rule 'r'");
    r = LoadFail(base + "- rule: r\n  override:\n    output: replace\n");
    CHECK(r.errors[0].message == "rule 'r' overrides 'output' but gives no 'output' key");
  }
}

TEST_CASE("exceptions", "[rules]") {
  std::string yaml = RuleYaml("r", "evt.type = openat",
                          "  exceptions:\n"
                          "  - name: by_proc_and_file\n"
                          "    fields: [proc.name, fd.name]\n"
                          "    comps: [=, startswith]\n"
                          "    values:\n"
                          "    - [cat, /tmp/]\n"
                          "    - [[less, more], /var/]\n"
                          "  - name: by_name\n"
                          "    fields: proc.name\n"
                          "    values: [trusted, safe]\n");
  // [less, more] with '=' is not valid: use 'in' for tuples holding lists.
  yaml.replace(yaml.find("[=, startswith]"), 15, "[in, startswith]");
  auto e = LoadOk({{"t", yaml}});
  CHECK(Fired(*e, Open(Proc("cat"), "/tmp/x").e).empty());
  CHECK(Fired(*e, Open(Proc("less"), "/var/log/x").e).empty());
  CHECK(Fired(*e, Open(Proc("trusted"), "/etc/x").e).empty());
  CHECK(Fired(*e, Open(Proc("cat"), "/etc/x").e) == std::vector<std::string>{"r"});
  CHECK(Fired(*e, Open(Proc("more"), "/tmp/x").e) == std::vector<std::string>{"r"});

  // Values appended later extend the exception of the same name.
  std::string more =
      "- rule: r\n  exceptions:\n  - name: by_name\n    values: [vim]\n  override:\n    exceptions: append\n";
  auto e2 = LoadOk({{"t", yaml}, {"u", more}});
  CHECK(Fired(*e2, Open(Proc("vim"), "/etc/x").e).empty());
  CHECK(Fired(*e2, Open(Proc("nano"), "/etc/x").e) == std::vector<std::string>{"r"});

  auto r = LoadFail(RuleYaml("r", "evt.type=open", "  exceptions:\n  - name: x\n    fields: [proc.name, fd.name]\n"
                                                "    values:\n    - [only_one]\n"));
  CHECK(r.errors[0].message == "exception 'x' of rule 'r': each value must be a sequence of 2 items, one per field");
  CHECK(r.errors[0].line == 10);
}

TEST_CASE("priorities, min_priority and sources", "[rules]") {
  std::string yaml = RuleYaml("info", "evt.type=openat") +
                     "- rule: crit\n  desc: d\n  condition: evt.type=openat\n  output: o\n  priority: critical\n" +
                     "- rule: k8s\n  desc: d\n  condition: ka.verb=create\n  output: o\n  priority: info\n"
                     "  source: k8s_audit\n";
  LoadOptions o;
  o.min_priority = Priority::kWarning;
  LoadReport report;
  auto e = LoadOk({{"t", yaml}}, &report, o);
  CHECK(Names(*e) == std::vector<std::string>{"crit"});
  CHECK(report.rules_disabled == 1);
  REQUIRE(report.rules_skipped.size() == 1);
  CHECK(report.rules_skipped[0].reason == "source 'k8s_audit' is not supported");
  Priority p;
  CHECK(ParsePriority("INFO", &p));
  CHECK(p == Priority::kInformational);
  CHECK(PriorityName(p) == "Informational");
  CHECK_FALSE(ParsePriority("loud", &p));
}

TEST_CASE("files and folders load in order", "[rules]") {
  char tmpl[] = "/tmp/rules_loader_XXXXXX";
  REQUIRE(mkdtemp(tmpl));
  std::filesystem::path dir(tmpl);
  std::ofstream(dir / "10-base.yaml") << "- list: l\n  items: [cat]\n" << RuleYaml("r", "evt.type=openat and proc.name in (l)");
  std::ofstream(dir / "20-local.yml") << "- list: l\n  items: [dog]\n  override:\n    items: append\n";
  std::ofstream(dir / "notes.txt") << "not yaml: [";
  LoadReport report;
  auto e = Engine::LoadFiles({dir.string()}, {}, &report);
  REQUIRE(e.ok());
  CHECK(Fired(**e, Open(Proc("dog"), "/x").e) == std::vector<std::string>{"r"});

  auto missing = Engine::LoadFiles({(dir / "nope.yaml").string()}, {}, &report);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().message() == (dir / "nope.yaml").string() + ": cannot read rules file: No such file or directory");

  std::ofstream(dir / "30-bad.yaml") << RuleYaml("r2", "evt.type=openat and");
  LoadReport bad;
  auto e3 = Engine::LoadFiles({dir.string()}, {}, &bad);
  REQUIRE_FALSE(e3.ok());
  CHECK(bad.errors[0].file == (dir / "30-bad.yaml").string());
  CHECK(bad.errors[0].message == "unexpected end of condition, expected a field, a macro or '('");
  std::filesystem::remove_all(dir);
}

TEST_CASE("the event-type index follows Falco's rules", "[rules]") {
  auto e = LoadOk({{"t", RuleYaml("a", "evt.type in (open, openat) and proc.name = cat") +
                             RuleYaml("b", "not evt.type = execve and proc.name = cat") +
                             RuleYaml("c", "(evt.type = connect or evt.type = openat) and not (evt.type = connect)") +
                             RuleYaml("d", "not (evt.type = openat and proc.name = cat)", "  warn_evttypes: false\n")}});
  const auto& rules = e->rules();
  using event::EventType;
  auto has = [](const Rule* r, EventType t) { return r->event_types.test(static_cast<size_t>(t)); };
  CHECK(rules[0]->event_types.count() == 2);
  CHECK(has(rules[0], EventType::kOpen));
  CHECK(has(rules[0], EventType::kOpenat));
  CHECK(rules[1]->event_types.count() == event::kEventTypeCount - 1);
  CHECK_FALSE(has(rules[1], EventType::kExecve));
  CHECK(rules[2]->event_types.count() == 1);
  CHECK(has(rules[2], EventType::kOpenat));
  // "not (openat and cat)" can be true on an openat (by another process).
  CHECK(rules[3]->event_types.count() == event::kEventTypeCount);
  CHECK(e->EventTypes().count() == event::kEventTypeCount);
}

TEST_CASE("mangled rules files give errors, never crashes", "[rules]") {
  std::ifstream in(std::string(getenv("SIDETRACE_SOURCE_DIR") ? getenv("SIDETRACE_SOURCE_DIR") : ".") +
                   "/policies/sidetrace_rules.yaml");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(text.size() > 1000);
  const std::string alphabet = "()[]{},:'\"- \n\tandornot=!<>%\\x";
  uint64_t seed = 42;
  auto next = [&seed] { return (seed = seed * 6364136223846793005ull + 1442695040888963407ull) >> 33; };
  int failed = 0;
  for (int round = 0; round < 200; ++round) {
    std::string t = text;
    int edits = 1 + static_cast<int>(next() % 8);
    for (int i = 0; i < edits; ++i) {
      size_t at = next() % t.size();
      switch (next() % 3) {
        case 0: t[at] = alphabet[next() % alphabet.size()]; break;
        case 1: t.erase(at, 1 + next() % 20); break;
        default: t.insert(at, 1, alphabet[next() % alphabet.size()]); break;
      }
    }
    LoadReport report;
    LoadOptions o;
    o.resolve = ResolveMode::kOff;
    auto e = Engine::LoadSources({{"mangled.yaml", t}}, o, &report);
    if (!e.ok()) {
      ++failed;
      CHECK_FALSE(report.errors.empty());
      CHECK(report.errors[0].file == "mangled.yaml");
    }
  }
  CHECK(failed > 0);
}
