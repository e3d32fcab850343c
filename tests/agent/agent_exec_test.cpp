// Execs under the default lifecycle (--lifecycle seccomp, alerts only): an
// exec no rule can match costs one notification and no ptrace stop; an exec
// a rule may match is followed to its ptrace exec stop, so its alert carries
// the real result and image; a failed exec raises nothing and leaves the
// process judged as what it still is.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "tests/agent/agent_harness.h"

using namespace agent_test;
using nlohmann::json;

namespace {

// A rules file with one WARNING rule per (name, condition).
std::string Rules(const TempDir& dir, const std::vector<std::pair<std::string, std::string>>& rules) {
  std::string path = dir / "rules.yaml";
  std::ofstream out(path);
  for (const auto& [name, condition] : rules) {
    out << "- rule: " << name << "\n  desc: test\n  condition: " << condition
        << "\n  output: " << name << " (pid=%proc.pid ppid=%proc.ppid name=%proc.name exepath=%proc.exepath "
        << "cmdline=%proc.cmdline)\n  priority: WARNING\n";
  }
  return path;
}

const char* kSpawned = "evt.type in (execve, execveat) and evt.dir = < and evt.res = SUCCESS";

Child Run(const TempDir& dir, const std::string& rules, const std::vector<std::string>& program) {
  std::vector<std::string> args{"--rules", rules, "--alerts-out", dir / "alerts.json", "--resolve", "off",
                                "--log-level", "info"};
  Child c = RunAgent(dir, args, program);
  return c;
}

}  // namespace

TEST_CASE("agent_exec: an exec no rule can match takes no ptrace stop") {
  TempDir dir;
  std::string rules = Rules(dir, {{"Shell spawned", std::string(kSpawned) + " and proc.name in (bash, zsh)"}});
  Child c = Run(dir, rules, {WorkloadPath(), "storm", "50"});
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  CHECK(Counter(c.Err(), "execs") == 51);  // the workload itself, then 50 x /bin/true
  CHECK(Counter(c.Err(), "execs_fast") == 51);
  CHECK(Counter(c.Err(), "execs_exact") == 0);
  CHECK(ReadEvents(dir / "alerts.json").empty());
}

TEST_CASE("agent_exec: a relative exec is judged with the cwd it was resolved against") {
  // The rule needs the cwd only for "./" programs. After the chdir the agent
  // has not read the shell's cwd; resolving ./prog reads it, and the rule is
  // then judged with it: no ptrace stop outside /dev/shm.
  TempDir dir;
  std::string rules = Rules(dir, {{"Dot program in shm", std::string(kSpawned) +
                                                             " and proc.cwd startswith /dev/shm/ and proc.exe startswith ./"}});
  REQUIRE(link("/bin/true", (dir / "prog").c_str()) == 0);
  Child c = Run(dir, rules, {"/bin/sh", "-c", "cd \"$1\" && ./prog", "sh", dir.path});
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  CHECK(Counter(c.Err(), "execs_exact") == 0);
  CHECK(ReadEvents(dir / "alerts.json").empty());
}

TEST_CASE("agent_exec: every exec a rule matches alerts exactly once, with the new image") {
  TempDir dir;
  std::string rules = Rules(dir, {{"True run", std::string(kSpawned) + " and proc.name = true"}});
  Child c = Run(dir, rules, {WorkloadPath(), "storm", "300"});
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  CHECK(Counter(c.Err(), "execs_exact") == 300);
  auto alerts = ReadEvents(dir / "alerts.json");
  REQUIRE(alerts.size() == 300);
  std::set<std::string> outputs;
  for (const auto& a : alerts) {
    std::string out = a["output"];
    CHECK(out.find("name=true exepath=/usr/bin/true cmdline=true") != std::string::npos);
    outputs.insert(out.substr(out.find("pid=")));
  }
  CHECK(outputs.size() == 300);  // 300 different processes
}

TEST_CASE("agent_exec: a failed exec raises nothing and does not rename the process") {
  // "sshd" is what the failed exec would have made the process; the open
  // rule must still see the workload's own name. A missing file is known to
  // fail at entry; a file that is not executable is followed with ptrace,
  // which the process must not keep once the exec has failed.
  std::string missing = "no-such-dir/sshd", denied = "sshd";
  for (const std::string& prog : {missing, denied}) {
    TempDir dir;
    std::string marker = dir / "marker";
    std::ofstream(marker) << "x";
    if (prog == denied) {
      std::ifstream src(WorkloadPath(), std::ios::binary);
      std::ofstream(dir / denied, std::ios::binary) << src.rdbuf();
      REQUIRE(chmod((dir / denied).c_str(), 0644) == 0);
    }
    std::string rules = Rules(dir, {{"Sshd run", std::string(kSpawned) + " and proc.name = sshd"},
                                    {"Marker read", "evt.type in (open, openat) and fd.name = " + marker +
                                                        " and proc.name != sshd"}});
    Child c = Run(dir, rules, {WorkloadPath(), "failexec-open", dir / prog, marker});
    INFO(prog << "\n" << c.Err());
    REQUIRE(c.ExitCode() == 0);
    CHECK(c.Out() == (prog == missing ? "exec errno 2 fd 3 tracer 0\n" : "exec errno 13 fd 3 tracer 0\n"));
    CHECK(Counter(c.Err(), "execs_exact") == (prog == missing ? 0 : 1));
    auto alerts = ReadEvents(dir / "alerts.json");
    REQUIRE(alerts.size() == 1);
    CHECK(alerts[0]["rule"] == "Marker read");
    CHECK(alerts[0]["output"].get<std::string>().find("name=agent_test_work") != std::string::npos);
  }
}

TEST_CASE("agent_exec: a failed exec of the running file does not rename the process") {
  // The agent takes the image it predicted for an exec once the process's
  // executable is the predicted file; when that file is the one already
  // running (here a second name for it), only /proc can tell a failed exec.
  TempDir dir;
  std::string self = dir / "agent_test_work", other = dir / "sshd", marker = dir / "marker";
  std::ofstream(marker) << "x";
  {
    std::ifstream src(WorkloadPath(), std::ios::binary);
    std::ofstream(self, std::ios::binary) << src.rdbuf();
  }
  REQUIRE(chmod(self.c_str(), 0755) == 0);
  REQUIRE(link(self.c_str(), other.c_str()) == 0);
  std::string rules = Rules(dir, {{"Marker read", "evt.type in (open, openat) and fd.name = " + marker +
                                                      " and proc.name != sshd"}});
  Child c = Run(dir, rules, {self, "failexec-open", other, marker, "big"});
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  CHECK(c.Out() == "exec errno 7 fd 3 tracer 0\n");
  CHECK(Counter(c.Err(), "execs_fast") == 2);  // the workload, then the failed exec
  auto alerts = ReadEvents(dir / "alerts.json");
  REQUIRE(alerts.size() == 1);
  CHECK(alerts[0]["output"].get<std::string>().find("name=agent_test_work") != std::string::npos);
}

TEST_CASE("agent_exec: exec from a thread that is not the leader, and after vfork") {
  TempDir dir;
  std::string rules = Rules(dir, {{"True run", std::string(kSpawned) + " and proc.name = true"}});
  Child t = Run(dir, rules, {WorkloadPath(), "thread-exec", "/bin/true"});
  INFO(t.Err());
  REQUIRE(t.ExitCode() == 0);
  auto alerts = ReadEvents(dir / "alerts.json");
  REQUIRE(alerts.size() == 1);
  // The exec replaced the workload: same pid, the agent's own child.
  std::string out = alerts[0]["output"];
  CHECK(out.find("ppid=" + std::to_string(t.pid)) != std::string::npos);
  CHECK(out.find("exepath=/usr/bin/true") != std::string::npos);

  TempDir dir2;
  std::string rules2 = Rules(dir2, {{"True run", std::string(kSpawned) + " and proc.name = true"}});
  Child v = Run(dir2, rules2, {WorkloadPath(), "vfork"});
  INFO(v.Err());
  REQUIRE(v.ExitCode() == 0);
  auto valerts = ReadEvents(dir2 / "alerts.json");
  REQUIRE(valerts.size() == 1);
  std::smatch m;
  std::string vout = v.Out();
  REQUIRE(std::regex_search(vout, m, std::regex("vfork child ([0-9]+) status 0")));
  CHECK(valerts[0]["output"].get<std::string>().find("pid=" + m[1].str() + " ") != std::string::npos);
}

TEST_CASE("agent_exec: a script is judged by its interpreter, as the kernel runs it") {
  TempDir dir;
  std::string script = dir / "hello.sh";
  {
    std::ofstream(script) << "#!/bin/sh\necho hello\n";
  }
  REQUIRE(chmod(script.c_str(), 0755) == 0);
  std::string rules = Rules(dir, {{"Dash script", std::string(kSpawned) + " and proc.exepath = /usr/bin/dash and "
                                                                           "proc.name = hello.sh"}});
  Child c = Run(dir, rules, {"/bin/sh", "-c", script + "; true"});
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  CHECK(c.Out() == "hello\n");
  CHECK(Counter(c.Err(), "execs_exact") == 1);
  auto alerts = ReadEvents(dir / "alerts.json");
  REQUIRE(alerts.size() == 1);
  CHECK(alerts[0]["output"].get<std::string>().find("cmdline=hello.sh " + script + ")") != std::string::npos);
}

TEST_CASE("agent_exec: an executable rewritten in place is judged by its new content") {
  // The agent keeps what it learnt of a file an exec named; the same path
  // and inode rewritten as a script must be judged by its interpreter.
  TempDir dir;
  std::string prog = dir / "prog";
  std::string rules = Rules(dir, {{"Prog script", std::string(kSpawned) + " and proc.name = prog and "
                                                                          "proc.exepath = /usr/bin/dash"}});
  std::string script = "cp /bin/true \"$1\" && \"$1\" && \"$1\" && "
                       "printf '#!/bin/sh\\necho script\\n' > \"$1\" && \"$1\" && \"$1\"";
  Child c = Run(dir, rules, {"/bin/sh", "-c", script, "sh", prog});
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  CHECK(c.Out() == "script\nscript\n");
  auto alerts = ReadEvents(dir / "alerts.json");
  REQUIRE(alerts.size() == 2);
  for (const auto& a : alerts) {
    CHECK(a["output"].get<std::string>().find("exepath=/usr/bin/dash cmdline=prog " + prog) != std::string::npos);
  }
}

TEST_CASE("agent_exec: a reused pid is never taken for the process that had it") {
  // In a private PID namespace, ns_last_pid makes the next fork reuse the
  // pid of a process that just exited; the new process (a forked shell that
  // does not exec) must be judged as itself, not as the former owner.
  if (geteuid() != 0 || access("/usr/bin/unshare", X_OK) != 0) {
    WARN("needs root and unshare; skipped");
    return;
  }
  TempDir dir;
  std::string marker = dir / "marker", first = dir / "first";
  std::ofstream(marker) << "x";
  {
    std::ifstream src(WorkloadPath(), std::ios::binary);
    std::ofstream(first, std::ios::binary) << src.rdbuf();
  }
  REQUIRE(chmod(first.c_str(), 0755) == 0);
  std::string rules = Rules(dir, {{"Marker read", "evt.type in (open, openat) and fd.name = " + marker}});
  std::string script = "\"$1\" read-n \"$2\" 1 >/dev/null & a=$!; wait $a; "
                       "echo $((a - 1)) > /proc/sys/kernel/ns_last_pid; "
                       "{ read l < \"$2\"; } & b=$!; wait $b; echo \"$a $b\"";
  Child c = Start(dir, {"/usr/bin/unshare", "--pid", "--fork", "--mount-proc", AgentPath(), "--rules", rules,
                        "--alerts-out", dir / "alerts.json", "--resolve", "off", "--", "/bin/sh", "-c", script, "sh",
                        first, marker});
  REQUIRE(c.Wait(std::chrono::seconds(60)));
  INFO(c.Err());
  REQUIRE(c.ExitCode() == 0);
  std::istringstream pids(c.Out());
  int a = 0, b = 0;
  REQUIRE(pids >> a >> b);
  REQUIRE(a == b);  // the pid was reused
  auto alerts = ReadEvents(dir / "alerts.json");
  REQUIRE(alerts.size() == 2);
  CHECK(alerts[0]["output"].get<std::string>().find("pid=" + std::to_string(a) + " ") != std::string::npos);
  CHECK(alerts[0]["output"].get<std::string>().find("name=first ") != std::string::npos);
  CHECK(alerts[1]["output"].get<std::string>().find("pid=" + std::to_string(b) + " ") != std::string::npos);
  CHECK(alerts[1]["output"].get<std::string>().find("name=sh ") != std::string::npos);
}
