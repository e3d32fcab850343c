// Sends: with rules alone, a send that names no destination (a connected
// socket's, whose peer was judged at its connect) costs nothing; with
// --events-out every send is recorded.
//
// Open results are paid for only when a rule may match (--emulate rules, the
// default without --events-out): benign opens take the fast path (the kernel
// runs them, the agent never learns the result) and still work; a sensitive
// open is performed by the agent, so its alert has the real fd number, and a
// failed one raises none. Counters come from the agent's exit log line
// ("tracing finished ... opens_fast=N opens_emulated=N").
//
// /etc/shadow is a scratch file bind-mounted over the real one inside a
// private mount namespace (root only; skipped otherwise).
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <regex>
#include <set>

#include "tests/agent/agent_harness.h"

using namespace agent_test;
using nlohmann::json;

namespace {

// Runs the agent (with `agent_args`) on `script` inside a private mount
// namespace where /etc/shadow is `fake`.
Child RunWithFakeShadow(const TempDir& dir, const std::string& fake, const std::vector<std::string>& agent_args,
                        const std::string& script) {
  std::vector<std::string> argv{"/usr/bin/unshare", "--mount", "/bin/sh", "-c",
                                "mount --bind \"$1\" /etc/shadow && shift && exec \"$@\"", "sh", fake, AgentPath()};
  argv.insert(argv.end(), agent_args.begin(), agent_args.end());
  argv.insert(argv.end(), {"--", "/bin/sh", "-c", script});
  Child c = Start(dir, argv);
  REQUIRE(c.Wait(std::chrono::seconds(120)));
  return c;
}

// A stand-in for /etc/shadow (26 bytes, root only) in `dir`.
std::string FakeShadow(const TempDir& dir) {
  std::string fake = dir / "shadow";
  std::ofstream(fake) << "root:*:19000:0:99999:7:::\n";
  REQUIRE(chmod(fake.c_str(), 0600) == 0);
  return fake;
}

bool CanRun() {
  if (geteuid() != 0 || access("/usr/bin/unshare", X_OK) != 0 || access("/usr/bin/setpriv", X_OK) != 0) {
    WARN("needs root, unshare and setpriv; skipped");
    return false;
  }
  return true;
}

}  // namespace

TEST_CASE("agent_results: benign opens take the fast path, sensitive ones are exact") {
  if (!CanRun()) return;
  TempDir dir;
  std::string fake = FakeShadow(dir);
  std::string alerts = dir / "alerts.json", events = dir / "events.json";
  const std::string w = WorkloadPath();
  // 300 benign reads, one sensitive read, one sensitive read that fails.
  std::string script = w + " read-n /etc/hostname 300 && " + w + " read-n /etc/shadow 1 && " +
                       "/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups " + w + " fail-open /etc/shadow";
  Child c = RunWithFakeShadow(dir, fake,
                              {"--log-level", "info", "--resolve", "off", "--alerts-out", alerts, "--emulate", "rules",
                               "--events-out", events},
                              script);
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  std::string out = c.Out();
  CHECK(out.find("fd 3 bytes ") == 0);  // the fast path hands out real, readable files
  CHECK(out.find("\nfd 3 bytes 26\n") != std::string::npos);  // the fake /etc/shadow
  CHECK(out.find("fd -1 errno 13\n") != std::string::npos);

  std::string err = c.Err();
  CHECK(Counter(err, "opens_fast") >= 300);
  CHECK(Counter(err, "opens_emulated") >= 2);
  CHECK(Counter(err, "opens_emulated") < 20);

  int benign = 0, shadow_ok = 0, shadow_denied = 0;
  for (const json& e : ReadEvents(events)) {
    std::string name = e.value("fd.name", "");
    if (name == "/etc/hostname") {
      ++benign;
      CHECK(e.value("evt.arg.res", "") == "unknown");  // never paid for
      CHECK(e["fd.num"] == -1);
    } else if (name == "/etc/shadow") {
      CHECK(e.count("evt.arg.res") == 0);
      if (e["evt.res"] == 3 && e["fd.num"] == 3) ++shadow_ok;
      if (e["evt.res"] == -13 && e["fd.num"] == -1) ++shadow_denied;
    }
  }
  CHECK(benign >= 300);
  CHECK(shadow_ok == 1);
  CHECK(shadow_denied == 1);

  int alerted = 0;
  for (const json& a : ReadEvents(alerts)) {
    CHECK(a["output_fields"].value("fd.name", "") == "/etc/shadow");
    if (a["rule"] == "Read sensitive file untrusted") ++alerted;
  }
  CHECK(alerted == 1);  // the successful read; the failed one is not a read
}

TEST_CASE("agent_results: the default (alerts only) pays for no benign open") {
  if (!CanRun()) return;
  TempDir dir;
  std::string fake = FakeShadow(dir);
  std::string alerts = dir / "alerts.json";
  const std::string w = WorkloadPath();
  Child c = RunWithFakeShadow(dir, fake, {"--log-level", "info", "--resolve", "off", "--alerts-out", alerts},
                              w + " read-n /etc/hostname 200 && " + w + " read-n /etc/shadow 1");
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  CHECK(c.Err().find("emulation=rules") != std::string::npos);
  CHECK(Counter(c.Err(), "opens_fast") >= 200);
  CHECK(Counter(c.Err(), "opens_emulated") >= 1);
  CHECK(Counter(c.Err(), "opens_emulated") < 20);
  auto lines = ReadEvents(alerts);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["rule"] == "Read sensitive file untrusted");
  CHECK(lines[0]["output_fields"]["fd.name"] == "/etc/shadow");
}

TEST_CASE("agent_results: the question at entry sees the container the alert will show") {
  // container.name comes from HOSTNAME; a rule that needs it must still make
  // the agent pay for the open.
  TempDir dir;
  std::string marker = dir / "marker", rules = dir / "rules.yaml", alerts = dir / "alerts.json";
  std::ofstream(marker) << "x";
  std::ofstream(rules) << "- rule: Marker read in the test box\n"
                          "  desc: test\n"
                          "  condition: evt.type in (open, openat) and fd.name = " << marker << "\n"
                          "    and container.name = sidetrace-test-box and evt.rawres >= 0\n"
                          "  output: marker read (file=%fd.name fd=%fd.num container=%container.name)\n"
                          "  priority: WARNING\n";
  Child c = Start(dir,
                  {AgentPath(), "--rules", rules, "--alerts-out", alerts, "--resolve", "off", "--log-level", "info",
                   "--", WorkloadPath(), "read-n", marker, "1"},
                  "/dev/null", [] { setenv("HOSTNAME", "sidetrace-test-box", 1); });
  REQUIRE(c.Wait());
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  CHECK(c.Out() == "fd 3 bytes 1\n");
  CHECK(Counter(c.Err(), "opens_emulated") == 1);
  auto lines = ReadEvents(alerts);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["output_fields"]["container.name"] == "sidetrace-test-box");
  CHECK(lines[0]["output_fields"]["fd.num"] == 3);
}

TEST_CASE("agent_results: openat2 RESOLVE_IN_ROOT names the file below dirfd") {
  // "/etc/secret" in root DIR is DIR/etc/secret: a lexical name would be
  // /etc/secret, which the rule below does not look at.
  TempDir dir;
  REQUIRE(mkdir((dir / "etc").c_str(), 0755) == 0);
  std::string secret = dir / "etc/secret", rules = dir / "rules.yaml", alerts = dir / "alerts.json";
  std::ofstream(secret) << "abc";
  std::ofstream(rules) << "- rule: Secret read below a root\n"
                          "  desc: test\n"
                          "  condition: evt.type = openat2 and fd.name = " << secret << " and evt.rawres >= 0\n"
                          "  output: secret read (file=%fd.name fd=%fd.num)\n"
                          "  priority: WARNING\n";
  Child c = RunAgent(dir, {"--rules", rules, "--alerts-out", alerts, "--resolve", "off", "--log-level", "info"},
                     {WorkloadPath(), "read-in-root", dir.path, "/etc/secret"});
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  CHECK(c.Out() == "fd 4 bytes 3\n");
  auto lines = ReadEvents(alerts);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["output_fields"]["fd.name"] == secret);
  CHECK(lines[0]["output_fields"]["fd.num"] == 4);
}

TEST_CASE("agent_results: proc.cwd is read when a rule may need it, and is then the process's own") {
  // The agent reads a working directory from /proc only for an event a rule
  // may match with it: the marker reads below happen after a chdir, in
  // processes whose cwd the agent has not read.
  TempDir dir;
  REQUIRE(mkdir((dir / "sub").c_str(), 0755) == 0);
  std::string marker = dir / "marker", rules = dir / "rules.yaml", alerts = dir / "alerts.json";
  std::ofstream(marker) << "m";
  std::ofstream(rules) << "- rule: Marker read from sub\n"
                          "  desc: test\n"
                          "  condition: evt.type in (open, openat) and fd.name = " << marker
                       << " and proc.cwd = " << dir / "sub/" << "\n"
                          "  output: marker read (cwd=%proc.cwd)\n"
                          "  priority: WARNING\n";
  Child c = RunAgent(dir, {"--rules", rules, "--alerts-out", alerts, "--resolve", "off"},
                     {"/bin/sh", "-c", "cd \"$1\" && cat \"$1/marker\" && cd sub && cat \"$1/marker\"", "sh", dir.path});
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  CHECK(c.Out() == "mm");
  auto lines = ReadEvents(alerts);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0]["output_fields"]["proc.cwd"] == dir / "sub/");
}

TEST_CASE("agent_results: a dup is paid for only when a rule may match it") {
  // Alerts only: the dup family on a file a rule watches is emulated (exact
  // new fd in the alert); on another file it runs in the kernel. Either
  // way the workload sees the same results as natively.
  TempDir dir;
  std::string watched = dir / "watched", other = dir / "other", rules = dir / "rules.yaml";
  std::ofstream(watched) << "x";
  std::ofstream(other) << "x";
  std::ofstream(rules) << "- rule: Watched dup\n  desc: test\n"
                          "  condition: evt.type in (dup, dup2, dup3, fcntl) and fd.name = " << watched << "\n"
                          "    and evt.rawres >= 0\n"
                          "  output: watched dup (call=%evt.type res=%evt.rawres)\n  priority: WARNING\n";
  Child native = Start(dir, {WorkloadPath(), "dup", watched});
  REQUIRE(native.Wait());
  REQUIRE(native.ExitCode() == 0);
  for (const std::string& file : {watched, other}) {
    std::string alerts = file + ".alerts.json";
    Child c = RunAgent(dir, {"--rules", rules, "--alerts-out", alerts, "--resolve", "off"},
                       {WorkloadPath(), "dup", file});
    INFO(file << "\n" << c.Err());
    REQUIRE(c.ExitCode() == 0);
    CHECK(c.Out() == native.Out());
    auto lines = ReadEvents(alerts);
    if (file == other) {
      CHECK(lines.empty());
      continue;
    }
    // dup 4, dup2 9 (x2), dup3 0, fcntl 5, 6 and 20 succeed; fcntl(F_DUPFD,
    // 20) is not emulable, so its result is unknown and it raises nothing.
    std::vector<std::string> outs;
    for (const auto& l : lines) {
      std::string out = l["output"];
      outs.push_back(out.substr(out.find("watched dup")));
    }
    CHECK(outs == std::vector<std::string>{"watched dup (call=dup res=4)", "watched dup (call=dup2 res=9)",
                                           "watched dup (call=dup2 res=9)", "watched dup (call=dup3 res=0)",
                                           "watched dup (call=fcntl res=5)", "watched dup (call=fcntl res=6)"});
  }
}

TEST_CASE("agent_results: sends are judged where they name a destination; all are recorded with --events-out") {
  TempDir dir;
  std::string rules = dir / "rules.yaml";
  std::ofstream(rules) << "- rule: Loopback datagram\n  desc: test\n"
                          "  condition: evt.type in (sendto, sendmsg, connect) and fd.sip = 127.0.0.1 and "
                          "fd.l4proto = udp\n  output: to %fd.sip (type=%evt.type)\n  priority: WARNING\n";
  Child c = RunAgent(dir, {"--rules", rules, "--alerts-out", dir / "alerts.json", "--log-level", "info"},
                     {WorkloadPath(), "udp-send"});
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  CHECK(c.Out() == "received 4\n");
  std::multiset<std::string> types;
  for (const auto& a : ReadEvents(dir / "alerts.json")) types.insert(a["output_fields"]["evt.type"]);
  CHECK(types == std::multiset<std::string>{"connect", "sendmsg", "sendto"});
  CHECK(Counter(c.Err(), "sends_unaddressed") == 1);

  TempDir all;
  Child e = RunAgent(all, {"--events-out", all / "events.json"}, {WorkloadPath(), "udp-send"});
  INFO(e.Err());
  REQUIRE(e.ExitCode() == 0);
  std::multiset<std::string> sends;
  for (const auto& ev : ReadEvents(all / "events.json")) {
    std::string type = ev["evt.type"];
    if ((type == "sendto" || type == "sendmsg") && ev.value("fd.rip", "") == "127.0.0.1") sends.insert(type);
  }
  CHECK(sends == std::multiset<std::string>{"sendmsg", "sendmsg", "sendto", "sendto"});
}
