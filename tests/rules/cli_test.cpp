// sidetrace-rules as a user runs it: validate, eval (replaying events in the
// --events-out format) and list.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/event/event_json.h"
#include "tests/rules/test_events.h"

using namespace sidetrace::rules::testing;

namespace {

struct Run {
  int status = -1;
  std::string out;
};

std::string Bin() { return std::string(getenv("SIDETRACE_BUILD_DIR")) + "/agent/rules_cli/sidetrace-rules"; }
std::string Src() { return getenv("SIDETRACE_SOURCE_DIR"); }

Run Sh(const std::string& cmd) {
  Run r;
  FILE* f = popen(cmd.c_str(), "r");
  REQUIRE(f);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) r.out.append(buf, n);
  int st = pclose(f);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::vector<nlohmann::json> Lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl - pos);
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return out;
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char t[] = "/tmp/rules_cli_XXXXXX";
    REQUIRE(mkdtemp(t));
    path = t;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string Write(const std::string& name, const std::string& text) {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

}  // namespace

TEST_CASE("validate accepts the default policies", "[rules]") {
  auto r = Sh(Bin() + " validate " + Src() + "/policies 2>&1");
  CHECK(r.status == 0);
  CHECK(r.out.find("rules loaded: 23\n") != std::string::npos);
  CHECK(r.out.find("valid\n") != std::string::npos);
  auto j = Sh(Bin() + " validate --json " + Src() + "/policies");
  CHECK(j.status == 0);
  auto o = nlohmann::json::parse(j.out);
  CHECK(o["rules"] == 23);
  CHECK(o["rules_loaded"] == 23);
  CHECK(o["errors"].empty());
  CHECK(o["rules_skipped"].empty());
}

TEST_CASE("validate reports errors with file, line and column", "[rules]") {
  TempDir dir;
  auto bad = dir.Write("bad.yaml",
                       "- rule: r\n  desc: d\n  condition: evt.type = open and (proc.name = x\n  output: o\n"
                       "  priority: INFO\n");
  auto r = Sh(Bin() + " validate --json " + bad);
  CHECK(r.status == 1);
  auto o = nlohmann::json::parse(r.out);
  REQUIRE(o["errors"].size() == 1);
  CHECK(o["errors"][0]["file"] == bad);
  CHECK(o["errors"][0]["line"] == 3);
  CHECK(o["errors"][0]["column"] == 34);
  CHECK(o["errors"][0]["message"] == "unbalanced parentheses: '(' is never closed (rule 'r')");

  auto text = Sh(Bin() + " validate " + bad + " 2>&1");
  CHECK(text.status == 1);
  CHECK(text.out.find("error: " + bad + ":3:34: unbalanced parentheses: '(' is never closed (rule 'r')\n") !=
        std::string::npos);
  CHECK(text.out.find("invalid\n") != std::string::npos);

  auto skip = dir.Write("skip.yaml",
                        "- rule: r\n  desc: d\n  condition: evt.type = open and k8s.pod.name = x\n  output: o\n"
                        "  priority: INFO\n");
  auto s = Sh(Bin() + " validate --json " + skip);
  CHECK(s.status == 0);
  auto so = nlohmann::json::parse(s.out);
  CHECK(so["rules_skipped"] == nlohmann::json::parse(R"([{"rule":"r","reason":"unknown field 'k8s.pod.name'"}])"));
  CHECK(so["warnings"].size() == 1);
  CHECK(Sh(Bin() + " validate --strict " + skip + " >/dev/null 2>&1").status == 1);
  CHECK(Sh("SIDETRACE_STRICT=true " + Bin() + " validate " + skip + " >/dev/null 2>&1").status == 1);
  CHECK(Sh(Bin() + " validate >/dev/null 2>&1").status == 2);
  CHECK(Sh(Bin() + " frobnicate >/dev/null 2>&1").status == 2);
}

TEST_CASE("eval replays --events-out lines and prints Falco alerts", "[rules]") {
  TempDir dir;
  auto web = Proc("python3", {"/app/playground.py"});
  auto curl = Proc("curl", {"203.0.113.10:3333"}, Proc("sh", {"-c", "curl 203.0.113.10:3333"}, web));
  std::string lines;
  for (const auto& ev : {Open(web, "/etc/shadow"), Open(web, "/etc/hostname"), Exec(curl),
                         Connect(curl, "203.0.113.10", 3333, -115)}) {
    sidetrace::event::AppendEventJson(ev.e, &lines);
    lines += "\n";
  }
  auto events = dir.Write("events.jsonl", lines);
  auto r = Sh(Bin() + " eval --resolve off --hostname h1 --rules " + Src() + "/policies " + events);
  CHECK(r.status == 0);
  auto alerts = Lines(r.out);
  REQUIRE(alerts.size() == 2);
  CHECK(alerts[0]["rule"] == "Read sensitive file untrusted");
  CHECK(alerts[0]["output_fields"]["fd.name"] == "/etc/shadow");
  CHECK(alerts[0]["hostname"] == "h1");
  CHECK(alerts[1]["rule"] == "Detect outbound connections to common miner pool ports");
  CHECK(alerts[1]["output_fields"]["proc.pname"] == "sh");
  CHECK(alerts[1]["output_fields"]["evt.time"] == 1764115200123456789ull);

  // From stdin, with a bad line: reported with its number, exit 1.
  auto bad = Sh("(head -1 " + events + "; echo '{\"evt.type\":\"nope\"}') | " + Bin() +
                " eval --resolve off -r " + Src() + "/policies - 2>&1");
  CHECK(bad.status == 1);
  CHECK(bad.out.find("-:2: evt.type: unknown event type 'nope'") != std::string::npos);

  auto min = Sh(Bin() + " eval --resolve off --min-priority critical -r " + Src() + "/policies " + events);
  auto only = Lines(min.out);
  REQUIRE(only.size() == 1);
  CHECK(only[0]["priority"] == "Critical");
}

TEST_CASE("list shows rules, priorities, tags and event types", "[rules]") {
  TempDir dir;
  auto extra = dir.Write("local.yaml", "- rule: Terminal shell in container\n  enabled: false\n");
  auto r = Sh(Bin() + " list --json -r " + Src() + "/policies -r " + extra);
  CHECK(r.status == 0);
  auto rules = nlohmann::json::parse(r.out);
  REQUIRE(rules.size() == 23);
  CHECK(rules[0]["rule"] == "Read sensitive file untrusted");
  CHECK(rules[0]["priority"] == "Warning");
  CHECK(rules[0]["event_types"] == nlohmann::json({"open", "openat", "openat2"}));
  for (const auto& rule : rules) {
    if (rule["rule"] == "Terminal shell in container") CHECK(rule["enabled"] == false);
  }
  auto text = Sh("SIDETRACE_RULES=" + Src() + "/policies " + Bin() + " list");
  CHECK(text.out.find("Critical      enabled  Detect outbound connections to common miner pool ports\n") !=
        std::string::npos);
}
