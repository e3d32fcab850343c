// sidetrace-agent as a transparent init: exit codes, signals, job control,
// zombie reaping, stdio and terminals, fail-open. Drives the built binary.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "tests/agent/agent_harness.h"

using namespace agent_test;

namespace {

// The agent's direct child (the workload), or 0.
pid_t WorkloadOf(pid_t agent) {
  std::string kids = ReadFile("/proc/" + std::to_string(agent) + "/task/" + std::to_string(agent) + "/children");
  return kids.empty() ? 0 : static_cast<pid_t>(std::stol(kids));
}

}  // namespace

TEST_CASE("agent_exit_codes follow the workload like a shell") {
  TempDir dir;
  CHECK(RunAgent(dir, {}, {"true"}).ExitCode() == 0);
  CHECK(RunAgent(dir, {}, {"sh", "-c", "exit 7"}).ExitCode() == 7);
  Child nf = RunAgent(dir, {}, {"sidetrace-no-such-program"});
  CHECK(nf.ExitCode() == 127);
  CHECK(nf.Err().find("sidetrace-no-such-program: not found") != std::string::npos);
  CHECK(RunAgent(dir, {}, {"/etc/passwd"}).ExitCode() == 126);
  CHECK(RunAgent(dir, {}, {"sh", "-c", "kill -9 $$"}).ExitCode() == 137);
  CHECK(RunAgent(dir, {}, {"sh", "-c", "kill -TERM $$"}).ExitCode() == 143);
  // Untraced init mode gives the same answers.
  CHECK(RunAgent(dir, {"--mode=off"}, {"sh", "-c", "exit 7"}).ExitCode() == 7);
}

TEST_CASE("agent_stdio passes stdin, stdout and the environment through") {
  TempDir dir;
  {
    std::ofstream(dir / "input") << "line one\nline two\n";
  }
  Child c = RunAgent(dir, {}, {"cat"}, dir / "input");
  CHECK(c.ExitCode() == 0);
  CHECK(c.Out() == "line one\nline two\n");
  CHECK(c.Err().empty());
  setenv("SIDETRACE_TEST_MARKER", "marker-value", 1);
  Child e = RunAgent(dir, {}, {"sh", "-c", "echo $SIDETRACE_TEST_MARKER; pwd"});
  unsetenv("SIDETRACE_TEST_MARKER");
  char cwd[4096];
  REQUIRE(getcwd(cwd, sizeof cwd));
  CHECK(e.Out() == std::string("marker-value\n") + cwd + "\n");
}

TEST_CASE("agent_signals sent to the agent reach the workload") {
  TempDir dir;
  Child c = Start(dir, {AgentPath(), "--", "sh", "-c",
                        "trap 'echo USR1' USR1; trap 'echo TERM; exit 3' TERM; echo ready; "
                        "i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; exit 9"});
  REQUIRE(WaitFor([&] { return c.Out().find("ready") != std::string::npos; }));
  kill(c.pid, SIGUSR1);
  REQUIRE(WaitFor([&] { return c.Out().find("USR1") != std::string::npos; }));
  kill(c.pid, SIGTERM);
  REQUIRE(c.Wait());
  CHECK(c.ExitCode() == 3);
  CHECK(c.Out() == "ready\nUSR1\nTERM\n");
}

TEST_CASE("agent_job_control SIGSTOP and SIGCONT behave as without the agent") {
  TempDir dir;
  Child c = Start(dir, {AgentPath(), "--", WorkloadPath(), "stop-self"});
  pid_t w = 0;
  REQUIRE(WaitFor([&] {
    w = WorkloadOf(c.pid);
    char st = w ? ProcState(w) : 0;
    return st == 'T' || st == 't';
  }));
  // Stopped, and stays stopped: nothing printed, the agent still running.
  // The 300 ms also let the agent re-inject the stop before SIGCONT comes
  // (see the known race in docs/agent.md).
  usleep(300 * 1000);
  char held = ProcState(w);
  CHECK((held == 'T' || held == 't'));
  CHECK(c.Out().empty());
  CHECK(waitpid(c.pid, nullptr, WNOHANG) == 0);
  kill(c.pid, SIGCONT);  // forwarded
  REQUIRE(c.Wait());
  CHECK(c.ExitCode() == 0);
  CHECK(c.Out() == "resumed\n");

  // A stop sent straight to the workload, continued straight too.
  Child e = Start(dir, {AgentPath(), "--", "sh", "-c", "echo ready; sleep 1; echo done"});
  REQUIRE(WaitFor([&] { return e.Out() == "ready\n"; }));
  pid_t sh = WorkloadOf(e.pid);
  REQUIRE(sh != 0);
  kill(sh, SIGSTOP);
  REQUIRE(WaitFor([&] { char s = ProcState(sh); return s == 'T' || s == 't'; }));
  // The stop is first a ptrace signal-delivery stop ('t' too) until the
  // agent re-injects it. A SIGCONT that lands in that window is lost (the
  // stop then wins): a known race, see docs/agent.md. The stop must still
  // hold 300 ms later, which also lets the agent finish re-injecting.
  usleep(300 * 1000);
  held = ProcState(sh);
  CHECK((held == 'T' || held == 't'));
  kill(sh, SIGCONT);
  REQUIRE(e.Wait());
  CHECK(e.ExitCode() == 0);
  CHECK(e.Out() == "ready\ndone\n");
}

TEST_CASE("agent_reaping: orphans are reaped, as subreaper and as PID 1") {
  TempDir dir;
  // The orphan's pid is printed; the workload then polls until it is gone
  // from /proc (reaped by the agent) or 20 s pass.
  const std::string script =
      "p=$(sh -c 'sleep 0.2 >/dev/null & echo $!'); i=0; "
      "while [ -e /proc/$p ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; "
      "if [ -e /proc/$p ]; then echo zombie; else echo reaped; fi";
  Child c = RunAgent(dir, {}, {"sh", "-c", script});
  CHECK(c.ExitCode() == 0);
  CHECK(c.Out() == "reaped\n");
  if (access("/usr/bin/unshare", X_OK) == 0 && geteuid() == 0) {
    Child u = Start(dir, {"/usr/bin/unshare", "--pid", "--fork", "--mount-proc", AgentPath(), "--", "sh", "-c",
                          "echo pid=$PPID; " + script});
    REQUIRE(u.Wait());
    CHECK(u.ExitCode() == 0);
    CHECK(u.Out() == "pid=1\nreaped\n");
  }
}

TEST_CASE("agent_pty: the workload gets the terminal and ^C reaches it") {
  TempDir dir;
  const std::string py = dir / "pty_driver.py";
  std::ofstream(py) << R"(
import os, pty, sys, time, select
agent, alerts = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execv(agent, [agent, "--alerts-out", alerts, "--",
                     "sh", "-c", "test -t 0 && echo isatty; tty; echo ready; sleep 30; echo late"])
buf = b""
deadline = time.time() + 30
sent = 0
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            data = os.read(fd, 1024)
        except OSError:
            break
        if not data:
            break
        buf += data
    # ^C until the workload dies: one typed before sh has started sleep can
    # be taken by sh itself (dash catches SIGINT under -c).
    if b"ready" in buf and time.time() - sent > 0.5:
        os.write(fd, b"\x03")
        sent = time.time()
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
else:
    os.kill(pid, 9)
    done, status = os.waitpid(pid, 0)
if not done:
    done, status = os.waitpid(pid, 0)
print(buf.decode(errors="replace").replace("\r", ""))
print("exit", os.waitstatus_to_exitcode(status))
)";
  // Alerts go to a file: on the terminal they would mix with the output.
  Child c = Start(dir, {"/usr/bin/python3", py, AgentPath(), dir / "alerts.json"});
  REQUIRE(c.Wait());
  std::string out = c.Out();
  INFO(out << c.Err());
  CHECK(out.find("isatty") != std::string::npos);
  CHECK(out.find("/dev/pts/") != std::string::npos);
  CHECK(out.find("late") == std::string::npos);
  CHECK(out.find("exit 130") != std::string::npos);
  // The entrypoint is a shell on a terminal: the bundled policies say so.
  CHECK(ReadFile(dir / "alerts.json").find("\"rule\":\"Terminal shell in container\"") != std::string::npos);
}

TEST_CASE("agent_job_control under an interactive shell: ^Z stops the job, fg resumes it") {
  TempDir dir;
  if (access("/bin/bash", X_OK) != 0) return;
  const std::string py = dir / "jc_driver.py";
  std::ofstream(py) << R"(
import os, pty, sys, time, select
agent = sys.argv[1]
pid, fd = pty.fork()
if pid == 0:
    os.execv("/bin/bash", ["bash", "--norc", "--noprofile", "-i"])
buf = b""
def expect(pattern, timeout=30):
    global buf
    end = time.time() + timeout
    while time.time() < end:
        if pattern in buf:
            return True
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try: buf += os.read(fd, 4096)
            except OSError: return False
    return False
# Quotes split the words so that the terminal's echo of the command line
# does not match what the workload prints.
os.write(fd, f"{agent} -- sh -c 'echo st\"\"arted; sleep 2; echo fin\"\"ished'\n".encode())
ok = expect(b"started")
# Let sh start `sleep` first. A ^Z that lands between sh's vfork and the
# child's exec stops the vfork child while sh waits, unstoppable, for it: the
# job never reports a stop (the same happens without the agent, but tracing
# makes that window wider).
time.sleep(0.5)
# ^Z until the job stops: one typed while sh is still starting `sleep` can be
# lost by sh itself (the same happens without the agent).
for _ in range(40):
    os.write(fd, b"\x1a")
    if expect(b"Stopped", 0.5):
        break
ok = ok and expect(b"Stopped", 1)
os.write(fd, b"fg\n")
ok = ok and expect(b"finished")
os.write(fd, b"echo rc=$?\n")
ok = ok and expect(b"rc=0")
os.write(fd, b"exit\n")
end = time.time() + 10
while time.time() < end and os.waitpid(pid, os.WNOHANG)[0] == 0:
    expect(b"\0", 0.1)
# On failure bash may refuse to exit over a stopped job: end the session
# (bash, the agent and its workload) that this driver started.
os.system(f"pkill -KILL -s {pid}")
print(buf.decode(errors="replace").replace("\r", ""))
print("ok" if ok else "FAILED")
)";
  Child c = Start(dir, {"/usr/bin/python3", py, AgentPath()});
  REQUIRE(c.Wait(std::chrono::seconds(120)));
  INFO(c.Out() << c.Err());
  CHECK(c.Out().find("\nok\n") != std::string::npos);
}

TEST_CASE("agent_fail_open: untraceable workloads still run, or not with --fail-closed") {
  TempDir dir;
  if (access("/usr/bin/strace", X_OK) != 0) return;
  // Under strace -f the agent's child is already traced, so PTRACE_SEIZE
  // fails: --lifecycle ptrace cannot trace at all.
  Child open = Start(dir, {"/usr/bin/strace", "-f", "-o", "/dev/null", AgentPath(), "--lifecycle", "ptrace", "--",
                           "sh", "-c", "echo ran; exit 5"});
  REQUIRE(open.Wait());
  CHECK(open.ExitCode() == 5);
  CHECK(open.Out() == "ran\n");
  CHECK(open.Err().find("cannot trace the workload") != std::string::npos);
  Child closed = Start(dir, {"/usr/bin/strace", "-f", "-o", "/dev/null", AgentPath(), "--lifecycle", "ptrace",
                             "--fail-closed", "--", "sh", "-c", "echo ran; exit 5"});
  REQUIRE(closed.Wait());
  CHECK(closed.ExitCode() != 5);
  CHECK(closed.ExitCode() != 0);
  CHECK(closed.Out().empty());
}

TEST_CASE("agent_fail_open: the seccomp lifecycle traces without ptrace, judging an exec at the next call") {
  TempDir dir;
  if (access("/usr/bin/strace", X_OK) != 0) return;
  // The rule matches an exec of `cat`; ptrace is taken by strace, so the
  // agent learns the exec when the new image first traps (its libc open,
  // trapped for the second rule).
  std::ofstream(dir / "rules.yaml")
      << "- rule: cat run\n  desc: t\n"
         "  condition: evt.type = execve and evt.dir = < and evt.res = SUCCESS and proc.name = cat\n"
         "  output: cat ran (%proc.cmdline)\n  priority: WARNING\n"
         "- rule: opens\n  desc: t\n  condition: evt.type = openat and fd.name = /nonexistent\n"
         "  output: o\n  priority: WARNING\n";
  std::string alerts = dir / "alerts.json";
  Child c = Start(dir, {"/usr/bin/strace", "-f", "-o", "/dev/null", AgentPath(), "--rules", dir / "rules.yaml",
                        "--alerts-out", alerts, "--log-level", "info", "--", "sh", "-c",
                        "cat /etc/hostname >/dev/null; /nonexistent/cat; echo ran; exit 5"});
  REQUIRE(c.Wait());
  INFO(c.Err());
  CHECK(c.ExitCode() == 5);
  CHECK(c.Out() == "ran\n");
  CHECK(c.Err().find("cannot trace the workload") == std::string::npos);
  CHECK(c.Err().find("execs_deferred=0") == std::string::npos);
  std::ifstream in(alerts);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  REQUIRE(lines.size() == 1);  // the failed exec raised none
  CHECK(lines[0].find("cat ran (cat /etc/hostname)") != std::string::npos);
}

TEST_CASE("agent_nice: the tracer takes --nice, the workload keeps its own") {
  TempDir dir;
  // The nice values (field 19 of /proc/PID/stat) of the workload's shell
  // and of its parent, the agent, whose main thread is the tracer.
  const std::string show = "n() { sed 's/.*) //' /proc/$1/stat | cut -d' ' -f17; }; echo $(n $$) $(n $PPID)";
  Child dflt = RunAgent(dir, {}, {"sh", "-c", show});
  INFO(dflt.Err());
  CHECK(dflt.ExitCode() == 0);
  if (geteuid() == 0) CHECK(dflt.Out() == "0 -10\n");
  Child five = RunAgent(dir, {"--nice", "5"}, {"sh", "-c", show});
  CHECK(five.Out() == "0 5\n");
  Child bad = RunAgent(dir, {"--nice", "-21"}, {"true"});
  CHECK(bad.ExitCode() == 2);
  if (geteuid() != 0 || access("/usr/bin/setpriv", X_OK) != 0) return;
  // Without CAP_SYS_NICE or RLIMIT_NICE the tracer keeps its nice, says so
  // at info, and traces as usual.
  Child user = Start(dir, {"/usr/bin/setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                           "--inh-caps=-all", AgentPath(), "--log-level", "info", "--", "sh", "-c", show});
  REQUIRE(user.Wait());
  INFO(user.Err());
  CHECK(user.ExitCode() == 0);
  CHECK(user.Out() == "0 0\n");
  CHECK(user.Err().find("cannot change the tracer's nice value") != std::string::npos);
  CHECK(user.Err().find("tracing the workload") != std::string::npos);
}

TEST_CASE("agent_flags: --help, bad flags and SIDETRACE_ environment") {
  TempDir dir;
  Child h = Start(dir, {AgentPath(), "--help"});
  REQUIRE(h.Wait());
  CHECK(h.ExitCode() == 0);
  CHECK(h.Out().find("--events-out") != std::string::npos);
  Child bad = Start(dir, {AgentPath(), "--mode=bogus", "--", "true"});
  REQUIRE(bad.Wait());
  CHECK(bad.ExitCode() == 2);
  CHECK(bad.Err().find("--mode") != std::string::npos);
  Child env = Start(dir, {"/usr/bin/env", "SIDETRACE_EVENTS_OUT=" + (dir / "ev.json"), AgentPath(), "--", "true"});
  REQUIRE(env.Wait());
  CHECK(env.ExitCode() == 0);
  CHECK(ReadFile(dir / "ev.json").find("\"evt.type\":\"execve\"") != std::string::npos);
}

// --resolve dns (the default) resolves the rules' domain lists on a
// background thread; a resolver that never answers must delay neither the
// workload nor the agent's exit. A private network and mount namespace holds
// a "resolver" on 127.0.0.53 that swallows every query, so no packet leaves
// the machine; `getent hosts` in the same place shows a lookup really hangs.
TEST_CASE("agent_resolver: an unresponsive DNS server does not delay the agent's exit") {
  if (geteuid() != 0) {
    WARN("needs root for namespaces; skipped");
    return;
  }
  TempDir dir;
  {
    std::ofstream(dir / "resolv.conf") << "nameserver 127.0.0.53\noptions timeout:3 attempts:1\n";
    std::ofstream script(dir / "run.sh");
    script << "set -e\n"
              "ip link set lo up\n"
              "python3 -c 'import socket,time\n"
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind((\"127.0.0.53\",53))\n"
              "t=time.time()\n"
              "while time.time()-t<60: time.sleep(0.2)' &\n"
              "swallower=$!\n"
              "mount --bind '" + dir.path + "/resolv.conf' /etc/resolv.conf\n"
              "sleep 0.5\n"
              "ms() { echo $(( $(date +%s%N) / 1000000 )); }\n"
              "t0=$(ms); getent hosts lookup-hangs.example >/dev/null || true; t1=$(ms)\n"
              "'" + AgentPath() + "' --resolve dns --alerts-out /dev/null -- /bin/true; rc=$?\n"
              "t2=$(ms)\n"
              "echo \"lookup_ms=$((t1 - t0)) agent_ms=$((t2 - t1)) rc=$rc\" > '" + dir.path + "/result'\n"
              "kill $swallower\n";
  }
  Child c = Start(dir, {"/usr/bin/unshare", "-n", "-m", "/bin/sh", (dir / "run.sh")});
  REQUIRE(c.Wait(std::chrono::seconds(120)));
  std::string result = ReadFile(dir / "result");
  INFO(result << ReadFile(c.err_path));
  long lookup_ms = -1, agent_ms = -1;
  int rc = -1;
  REQUIRE(sscanf(result.c_str(), "lookup_ms=%ld agent_ms=%ld rc=%d", &lookup_ms, &agent_ms, &rc) == 3);
  CHECK(rc == 0);
  REQUIRE(lookup_ms >= 2500);          // the resolver really swallows queries (timeout:3)
  CHECK(agent_ms < lookup_ms / 2);     // the agent did not wait for the lookup in flight
}
