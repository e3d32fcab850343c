// Evaluation on hand-built events: operators, fields, <NA>, transformers,
// outputs, alerts, fd.sip.name through a hosts file, and no allocation.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <new>
#include <regex>

#include "tests/rules/test_events.h"

using namespace sidetrace::rules;
using namespace sidetrace::rules::testing;

// Counts heap allocations while g_counting is set. GCC cannot see that these
// replacements pair malloc with free consistently.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static std::atomic<bool> g_counting{false};
static std::atomic<long> g_allocations{0};
void* operator new(std::size_t n) {
  if (g_counting) ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  if (g_counting) ++g_allocations;
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

std::unique_ptr<Engine> Load(const std::string& yaml, LoadOptions options = {}) {
  LoadReport report;
  if (options.resolve == ResolveMode::kDns) options.resolve = ResolveMode::kOff;
  auto engine = Engine::LoadSources({{"t.yaml", yaml}}, options, &report);
  INFO((report.errors.empty() ? std::string() : report.errors[0].ToString()));
  REQUIRE(engine.ok());
  return std::move(engine).value();
}

// True when `condition` matches e (on any event type).
bool Matches(const std::string& condition, const Event& e, const std::string& prefix = "") {
  std::string yaml = prefix + "- rule: r\n  desc: d\n  condition: '" + condition +
                     "'\n  output: o\n  priority: INFO\n  warn_evttypes: false\n";
  auto engine = Load(yaml);
  return !Fired(*engine, e).empty();
}

}  // namespace

TEST_CASE("string operators", "[rules]") {
  auto p = Proc("Bash", {"-c", "cat /etc/shadow"}, Proc("nginx"));
  p->exepath = "/usr/bin/Bash";
  const Event& e = Exec(p).e;
  auto ev = Exec(p);
  CHECK(Matches("proc.name = Bash", ev.e));
  CHECK(Matches("proc.name == Bash", ev.e));
  CHECK_FALSE(Matches("proc.name = bash", ev.e));
  CHECK(Matches("proc.name != bash", ev.e));
  CHECK(Matches("proc.cmdline contains \"cat /etc\"", ev.e));
  CHECK(Matches("proc.cmdline icontains \"BASH -C\"", ev.e));
  CHECK(Matches("proc.exepath startswith /usr/", ev.e));
  CHECK(Matches("proc.exepath bstartswith 2f757372", ev.e));  // "/usr"
  CHECK(Matches("proc.cmdline bcontains 736861646f77", ev.e));  // "shadow"
  CHECK(Matches("proc.exepath endswith /Bash", ev.e));
  CHECK(Matches("proc.exepath glob /usr/*/B?s[a-z]", ev.e));
  CHECK_FALSE(Matches("proc.exepath glob /usr/*/b*", ev.e));
  CHECK(Matches("proc.exepath iglob /USR/*/b*", ev.e));
  CHECK(Matches("proc.exepath pmatch (/usr/bin, /opt)", ev.e));
  CHECK_FALSE(Matches("proc.exepath pmatch (/usr/bi)", ev.e));
  CHECK(Matches("proc.name in (sh, Bash)", ev.e));
  CHECK(Matches("proc.name in (a1,a2,a3,a4,a5,a6,a7,a8,a9,Bash)", ev.e));  // hashed set
  CHECK_FALSE(Matches("proc.name in (a1,a2,a3,a4,a5,a6,a7,a8,a9,bash)", ev.e));
  CHECK(Matches("proc.name intersects (Bash, x)", ev.e));
  CHECK(Matches("proc.cmdline regex \"c.t /etc/(shadow|passwd)$\"", ev.e));
  CHECK(Matches("proc.name exists", ev.e));
  CHECK(Matches("proc.args = \"-c cat /etc/shadow\"", ev.e));
  (void)e;
}

TEST_CASE("numeric, boolean and address operators", "[rules]") {
  auto p = Proc("curl");
  p->uid = 1000;
  auto ev = Connect(p, "203.0.113.7", 3333, -EINPROGRESS);
  CHECK(Matches("user.uid = 1000", ev.e));
  CHECK(Matches("user.uid > 999 and user.uid < 1001 and user.uid >= 1000 and user.uid <= 1000", ev.e));
  CHECK(Matches("user.uid in (0, 1000)", ev.e));
  CHECK(Matches("fd.sport = \"3333\"", ev.e));
  CHECK(Matches("fd.sport in (3333, 4444)", ev.e));
  CHECK(Matches("evt.rawres = -115", ev.e));
  CHECK(Matches("evt.res = EINPROGRESS", ev.e));
  CHECK(Matches("evt.failed = true", ev.e));
  CHECK(Matches("fd.sip = 203.0.113.7", ev.e));
  CHECK(Matches("fd.rip = 203.0.113.7 and fd.lip = 10.1.2.3 and fd.cip = 10.1.2.3", ev.e));
  CHECK(Matches("fd.snet = \"203.0.113.0/24\"", ev.e));
  CHECK(Matches("fd.snet in (\"198.51.100.0/24\", \"203.0.113.0/25\")", ev.e));
  CHECK_FALSE(Matches("fd.snet in (\"203.0.113.128/25\")", ev.e));
  // fd.net: either end. != needs both ends outside.
  CHECK(Matches("fd.net = \"10.0.0.0/8\"", ev.e));
  CHECK(Matches("fd.net = \"203.0.113.0/24\"", ev.e));
  CHECK_FALSE(Matches("fd.net != \"10.0.0.0/8\"", ev.e));
  CHECK(Matches("fd.net != \"127.0.0.0/8\"", ev.e));
  CHECK(Matches("fd.l4proto = tcp and fd.type = ipv4 and fd.typechar = 4", ev.e));
  CHECK(Matches("fd.name = \"10.1.2.3:40000->203.0.113.7:3333\"", ev.e));
  CHECK(Matches("fd.connected = false", ev.e));
  auto v6 = Connect(p, "2001:db8::7", 443);
  CHECK(Matches("fd.sip = \"2001:db8::7\" and fd.snet = \"2001:db8::/32\" and fd.type = ipv6", v6.e));
}

TEST_CASE("missing values are <NA>: every comparison on them is false", "[rules]") {
  auto ev = Exec(Proc("sh"));  // no fd, no parent
  CHECK_FALSE(Matches("fd.name = /etc/shadow", ev.e));
  CHECK_FALSE(Matches("fd.name != /etc/shadow", ev.e));
  CHECK(Matches("not fd.name = /etc/shadow", ev.e));
  CHECK_FALSE(Matches("fd.name exists", ev.e));
  CHECK_FALSE(Matches("proc.pname exists", ev.e));
  CHECK(Matches("not proc.pname exists", ev.e));
  CHECK_FALSE(Matches("proc.pname != x", ev.e));
  CHECK_FALSE(Matches("proc.aname[3] = x or proc.aname[3] != x", ev.e));
  CHECK_FALSE(Matches("evt.is_open_read = true or evt.is_open_read = false", ev.e));
  CHECK_FALSE(Matches("fd.sip.name = example.test", ev.e));
  CHECK_FALSE(Matches("evt.arg.nope = x", ev.e));
}

TEST_CASE("process ancestry, fields with arguments, transformers and val()", "[rules]") {
  auto init = Proc("tini");
  auto web = Proc("nginx", {"-g", "daemon off;"}, init);
  auto sh = Proc("sh", {"-c", "id"}, web);
  auto id = Proc("id", {}, sh);
  id->env = {"HOME=/root", "SECRET=x"};
  id->cap_effective = (1ull << 21) | (1ull << 0);  // CAP_SYS_ADMIN, CAP_CHOWN
  auto ev = Exec(id);
  CHECK(Matches("proc.pname = sh and proc.aname[0] = id and proc.aname[1] = sh and proc.aname[2] = nginx", ev.e));
  CHECK(Matches("proc.aname = nginx", ev.e));
  CHECK(Matches("proc.aname in (tini)", ev.e));
  CHECK_FALSE(Matches("proc.aname = id", ev.e));  // without index: ancestors only
  CHECK(Matches("proc.apid[2] = " + std::to_string(web->pid), ev.e));
  CHECK(Matches("proc.pcmdline = \"sh -c id\"", ev.e));
  CHECK(Matches("proc.pexepath = /usr/bin/sh and proc.pexe = sh", ev.e));
  CHECK(Matches("proc.env[HOME] = /root and proc.env contains SECRET=x", ev.e));
  CHECK(Matches("thread.cap_effective contains CAP_SYS_ADMIN", ev.e));
  CHECK(Matches("thread.cap_effective = \"CAP_CHOWN CAP_SYS_ADMIN\"", ev.e));
  CHECK(Matches("evt.arg.filename = /usr/bin/id and evt.arg[0] = /usr/bin/id", ev.e));
  CHECK(Matches("toupper(proc.name) = ID and tolower(toupper(proc.pname)) = sh", ev.e));
  CHECK(Matches("basename(proc.exepath) = id and len(proc.exepath) = 11", ev.e));
  CHECK(Matches("len(proc.name) > 1", ev.e));
  CHECK(Matches("proc.aname[1] = val(proc.pname)", ev.e));
  CHECK_FALSE(Matches("proc.name = val(proc.pname)", ev.e));
  CHECK(Matches("proc.pid > val(proc.ppid)", ev.e));
  CHECK(Matches("container.id = 3f2a1b4c5d6e and container.image.repository = example/playground", ev.e));
  CHECK(Matches("container.image.tag = \"1.0\" and container.privileged = false", ev.e));
  CHECK(Matches("evt.type = execve and evt.dir = < and evt.num = 7", ev.e));
  CHECK(Matches("proc.duration = 123456789", ev.e));
  auto b64 = Exec(Proc("sh", {"-c", "ZWNobyBoaQ=="}));
  CHECK(Matches("b64(proc.args) contains \"echo hi\"", b64.e) == false);  // "-c ..." is not base64
  b64.proc->args = {"ZWNobyBoaQ=="};
  CHECK(Matches("b64(proc.args) = \"echo hi\"", b64.e));
}

TEST_CASE("file fields", "[rules]") {
  auto ev = Open(Proc("cat"), "/etc/pam.d/sshd", O_RDONLY);
  CHECK(Matches("fd.directory = /etc/pam.d and fd.filename = sshd and fd.type = file", ev.e));
  CHECK(Matches("evt.is_open_read = true and evt.is_open_write = false", ev.e));
  CHECK(Matches("evt.arg.flags = O_RDONLY and fd.num = 3 and evt.rawres = 3", ev.e));
  auto w = Open(Proc("tee"), "/x", O_RDWR | O_CREAT | O_TRUNC);
  CHECK(Matches("evt.is_open_read = true and evt.is_open_write = true and fd.directory = /", w.e));
  CHECK(Matches("evt.arg.flags contains O_TRUNC", w.e));
}

TEST_CASE("rules only see the event types they can match", "[rules]") {
  auto engine = Load(
      "- rule: opens\n  desc: d\n  condition: evt.type = openat and proc.name = cat\n  output: o\n  priority: INFO\n"
      "- rule: execs\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: INFO\n");
  CHECK(Fired(*engine, Open(Proc("cat"), "/x").e) == std::vector<std::string>{"opens"});
  CHECK(Fired(*engine, Exec(Proc("cat")).e) == std::vector<std::string>{"execs"});
  CHECK(Fired(*engine, Connect(Proc("cat"), "203.0.113.1", 1).e).empty());
  auto types = engine->EventTypes();
  CHECK(types.count() == 2);
  CHECK(types.test(static_cast<size_t>(EventType::kOpenat)));
  CHECK(types.test(static_cast<size_t>(EventType::kExecve)));
}

TEST_CASE("fd.sip.name matches addresses resolved from a hosts file", "[rules]") {
  char path[] = "/tmp/rules_hosts_XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path) << "# test hosts\n127.0.0.1 localhost\n203.0.113.7  pool.example.test  alias.example.test\n"
                         "2001:db8::9 v6pool.example.test # trailing comment\n";
  std::string yaml =
      "- list: pools\n  items: [pool.example.test, v6pool.example.test, other.example.test]\n"
      "- rule: pool\n  desc: d\n  condition: evt.type = connect and fd.sip.name in (pools)\n"
      "  output: to %fd.sip.name\n  priority: CRITICAL\n";
  LoadOptions o;
  o.resolve = ResolveMode::kHosts;
  o.hosts_path = path;
  auto engine = Load(yaml, o);
  auto hit = Connect(Proc("curl"), "203.0.113.7", 3333);
  CHECK(Fired(*engine, hit.e) == std::vector<std::string>{"pool"});
  CHECK(engine->MakeAlert(*engine->rules()[0], hit.e).output_fields["fd.sip.name"] == "pool.example.test");
  CHECK(Fired(*engine, Connect(Proc("curl"), "2001:db8::9", 3333).e) == std::vector<std::string>{"pool"});
  CHECK(Fired(*engine, Connect(Proc("curl"), "203.0.113.8", 3333).e).empty());

  LoadOptions off;
  off.resolve = ResolveMode::kOff;
  auto none = Engine::LoadSources({{"t", yaml}}, off, nullptr);
  REQUIRE(none.ok());
  CHECK(Fired(**none, hit.e).empty());
  unlink(path);
}

TEST_CASE("outputs and Falco JSON alerts", "[rules]") {
  LoadOptions o;
  o.hostname = "test-host";
  auto engine = Load(
      "- rule: Read it\n  desc: d\n  condition: evt.type = openat\n"
      "  output: \"%proc.name read %fd.name (gp=%proc.aname[2] up=%toupper(proc.name) uid=%user.uid "
      "missing=%fd.sip arg=%evt.arg.flags ok=%evt.is_open_read 100%% done).\"\n"
      "  priority: WARNING\n  tags: [filesystem, T1555]\n",
      o);
  auto ev = Open(Proc("cat", {"/etc/shadow"}, Proc("sh")), "/etc/shadow");
  ev.container->extra = {{"aws.ecs.task.arn", "arn:aws:ecs:eu-west-1:1:task/c/abc"}};
  Alert a = engine->MakeAlert(*engine->rules()[0], ev.e);
  CHECK(a.output ==
        "00:00:00.123456789: Warning cat read /etc/shadow (gp=<NA> up=CAT uid=0 missing=<NA> arg=O_RDONLY "
        "ok=true 100% done).");
  auto j = a.ToJson();
  // Version 7: the event's time in Unix ms (1764115200123 = 0x19abd75b87b), then random bits.
  CHECK(std::regex_match(j["uuid"].get<std::string>(),
                         std::regex("019abd75-b87b-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")));
  CHECK(j["time"] == "2025-11-26T00:00:00.123456789Z");
  CHECK(j["rule"] == "Read it");
  CHECK(j["priority"] == "Warning");
  CHECK(j["source"] == "syscall");
  CHECK(j["hostname"] == "test-host");
  CHECK(j["tags"] == nlohmann::json({"filesystem", "T1555"}));
  const auto& f = j["output_fields"];
  CHECK(f["proc.name"] == "cat");
  CHECK(f["fd.name"] == "/etc/shadow");
  CHECK(f["proc.aname[2]"].is_null());
  CHECK(f["toupper(proc.name)"] == "CAT");
  CHECK(f["user.uid"] == 0);
  CHECK(f["fd.sip"].is_null());
  CHECK(f["evt.is_open_read"] == true);
  CHECK(f["evt.time"] == 1764115200123456789ull);
  CHECK(f["container.id"] == "3f2a1b4c5d6e");
  CHECK(f["aws.ecs.task.arn"] == "arn:aws:ecs:eu-west-1:1:task/c/abc");
  CHECK(engine->MakeAlert(*engine->rules()[0], ev.e).uuid != a.uuid);
  CHECK(FormatRfc3339(0) == "1970-01-01T00:00:00.000000000Z");
}

TEST_CASE("evaluation allocates nothing in steady state", "[rules]") {
  std::string policies = std::string(getenv("SIDETRACE_SOURCE_DIR") ? getenv("SIDETRACE_SOURCE_DIR") : ".") + "/policies";
  LoadOptions o;
  o.resolve = ResolveMode::kOff;
  auto loaded = Engine::LoadFiles({policies}, o, nullptr);
  REQUIRE(loaded.ok());
  const Engine& engine = **loaded;
  auto web = Proc("nginx");
  std::vector<TestEvent> events = {
      Open(Proc("cat", {"/etc/shadow"}, web), "/etc/shadow"), Open(Proc("python3", {"app.py"}), "/app/x.py"),
      Exec(Proc("sh", {"-c", "curl 203.0.113.7:3333"}, web)), Connect(Proc("curl"), "203.0.113.7", 3333),
      Connect(Proc("curl"), "10.0.0.5", 80), Open(Proc("tee"), "/root/.bashrc", O_WRONLY | O_APPEND)};
  long matches = 0, maybes = 0;
  auto count = [&](const Rule&) { ++matches; };
  for (const auto& ev : events) {  // warm up scratch buffers
    engine.Evaluate(ev.e, count);
    engine.MayMatch(ev.e);
  }
  matches = 0;
  g_allocations = 0;
  g_counting = true;
  for (int i = 0; i < 100; ++i) {
    for (const auto& ev : events) {
      engine.Evaluate(ev.e, count);
      maybes += engine.MayMatch(ev.e);
    }
  }
  g_counting = false;
  CHECK(g_allocations == 0);
  CHECK(matches > 0);
  CHECK(maybes > 0);
}

namespace {

// MayMatch of one rule `condition` (plus `prefix` items) on e.
bool May(const std::string& condition, const Event& e, const std::string& prefix = "") {
  std::string yaml = prefix + "- rule: r\n  desc: d\n  condition: '" + condition +
                     "'\n  output: o\n  priority: INFO\n  warn_evttypes: false\n";
  return Load(yaml)->MayMatch(e);
}

}  // namespace

TEST_CASE("regex on a very long command line neither crashes nor backtracks", "[rules]") {
  // std::regex recursed once per character here and overflowed the stack
  // from about 30 kB: a command line is the attacker's to choose.
  std::string arg(4 << 20, 'a');
  auto ev = Exec(Proc("python3", {"-c", arg}));
  CHECK_FALSE(Matches("proc.cmdline regex \"a*b\"", ev.e));
  CHECK_FALSE(Matches("proc.cmdline regex \"(a|b)*z\"", ev.e));
  CHECK(Matches("proc.cmdline regex \"^python3 -c (a|b)*$\"", ev.e));
  ev.proc->args[1] += "xb";
  CHECK(Matches("proc.cmdline regex \"a*xb$\"", ev.e));
}

TEST_CASE("MayMatch: result fields are unknown, the rest decides", "[rules][maymatch]") {
  auto p = Proc("cat");
  // The result the event carries is ignored: a failed open may still match.
  for (int64_t res : {int64_t{3}, int64_t{-ENOENT}}) {
    auto shadow = Open(p, "/etc/shadow");
    auto other = Open(p, "/tmp/x");
    shadow.e.res = other.e.res = res;
    shadow.e.fd.num = other.e.fd.num = res < 0 ? -1 : res;
    INFO("res " << res);
    for (const char* cond : {"fd.name = /etc/shadow and fd.num >= 0", "fd.name = /etc/shadow and evt.res = SUCCESS",
                             "fd.name = /etc/shadow and evt.rawres < 0", "fd.name = /etc/shadow and evt.failed = true",
                             "fd.name = /etc/shadow and evt.arg.fd exists", "fd.name = /etc/shadow and evt.arg[0] = x",
                             "fd.name = /etc/shadow and not (evt.res = SUCCESS)",
                             "fd.name = /etc/shadow and not evt.rawres >= 0 and not fd.num < 0"}) {
      INFO(cond);
      CHECK(May(cond, shadow.e));
      CHECK_FALSE(May(cond, other.e));
    }
    // Unknown or True = True; Unknown and False = False; not Unknown = Unknown.
    CHECK(May("evt.res = SUCCESS or fd.name = /tmp/x", other.e));
    CHECK(May("evt.res = SUCCESS or fd.name = /nope", other.e));
    CHECK_FALSE(May("not (evt.res = SUCCESS or fd.name = /tmp/x)", other.e));
    CHECK(May("not (evt.res = SUCCESS and fd.name = /tmp/x)", other.e));
    CHECK_FALSE(May("not (evt.res != SUCCESS or fd.name != /nope) and proc.name = cat", other.e));
    CHECK(May("not (evt.res != SUCCESS and fd.name != /nope) and proc.name = cat", other.e));
    // Checks without result fields decide alone, both ways.
    CHECK(May("proc.name = cat and fd.name startswith /etc/", shadow.e));
    CHECK_FALSE(May("proc.name = cat and fd.name startswith /etc/", other.e));
    CHECK_FALSE(May("proc.name = cat and not fd.name startswith /etc/", shadow.e));
    // Fields compared with fields (val()) follow the result fields too.
    CHECK(May("fd.num = val(proc.pid)", shadow.e));
    CHECK_FALSE(May("fd.name = val(proc.name)", shadow.e));
  }
}

TEST_CASE("MayMatch: whether an open opens a file or a directory is a result", "[rules][maymatch]") {
  auto ev = Open(Proc("ls"), "/etc/ssh");
  ev.e.fd.typechar = 'f';  // what the agent may guess at entry: ignored
  CHECK(May("fd.typechar = d", ev.e));
  CHECK(May("fd.typechar = f", ev.e));
  CHECK(May("fd.directory = /etc/ssh", ev.e));  // when a directory
  CHECK(May("fd.directory = /etc", ev.e));      // when a file
  CHECK_FALSE(May("fd.directory = /usr", ev.e));
  CHECK(May("fd.filename = ssh", ev.e));
  CHECK_FALSE(May("fd.filename = sshd", ev.e));
  CHECK(May("fd.type in (file, directory)", ev.e));
  // The two cases are tried whole: a file below /etc/ssh, or /etc/ssh as
  // a file, but not both at once.
  CHECK_FALSE(May("fd.typechar = f and fd.directory = /etc/ssh", ev.e));
  CHECK_FALSE(May("fd.typechar = d and fd.filename = ssh", ev.e));
  CHECK(May("fd.typechar = d and fd.name = /etc/ssh and fd.num >= 0", ev.e));
  CHECK_FALSE(May("fd.type in (ipv4, pipe)", ev.e));
  // Not for events whose descriptor exists already.
  auto conn = Connect(Proc("curl"), "203.0.113.7", 3333);
  CHECK_FALSE(May("fd.typechar = f", conn.e));
  CHECK(May("fd.typechar = 4 and fd.sport = 3333 and fd.sip = 203.0.113.7", conn.e));
  CHECK_FALSE(May("fd.typechar = 4 and fd.sport = 80", conn.e));
  // connect: the local end and fd.connected come from the call.
  CHECK(May("fd.connected = true and fd.lport = 1", conn.e));
  CHECK(May("fd.name contains \"->9.9.9.9\" or fd.cip = 1.2.3.4", conn.e));
  CHECK(May("fd.num = 4", conn.e));
  CHECK_FALSE(May("fd.num = 5", conn.e));  // the socket is the argument
}

TEST_CASE("MayMatch: rules for directories among rules for files", "[rules][maymatch]") {
  auto engine = Load(
      "- rule: file\n  desc: d\n  condition: evt.type = openat and fd.typechar = f and fd.name = /a\n"
      "  output: o\n  priority: INFO\n"
      "- rule: dir\n  desc: d\n  condition: evt.type = openat and not fd.type = file and fd.name = /b\n"
      "  output: o\n  priority: INFO\n");
  auto p = Proc("ls");
  CHECK(engine->MayMatch(Open(p, "/a").e));
  CHECK(engine->MayMatch(Open(p, "/b").e));  // only as a directory
  CHECK_FALSE(engine->MayMatch(Open(p, "/c").e));
  auto b = Open(p, "/b");
  b.e.fd.typechar = 'd';
  CHECK(Fired(*engine, b.e) == std::vector<std::string>{"dir"});
}

TEST_CASE("MayMatch: macros memoise the three-valued result apart from Evaluate", "[rules][maymatch]") {
  const std::string macros =
      "- macro: opened\n  condition: (evt.type = openat and fd.num >= 0)\n"
      "- macro: secret\n  condition: (fd.name startswith /etc/shadow or fd.name = /etc/sudoers)\n";
  const std::string yaml = macros +
      "- rule: a\n  desc: d\n  condition: opened and secret and proc.name = cat\n  output: o\n  priority: INFO\n"
      "- rule: b\n  desc: d\n  condition: not opened and secret\n  output: o\n  priority: INFO\n"
      "- rule: c\n  desc: d\n  condition: opened and proc.name = sh\n  output: o\n  priority: INFO\n";
  auto engine = Load(yaml);
  auto shadow = Open(Proc("cat"), "/etc/shadow");
  auto tmp = Open(Proc("cat"), "/tmp/x");
  auto sh = Open(Proc("sh"), "/tmp/x");
  // Evaluate then MayMatch then Evaluate on one event: the memos stay apart.
  CHECK(Fired(*engine, shadow.e) == std::vector<std::string>{"a"});
  CHECK(engine->MayMatch(shadow.e));
  CHECK(Fired(*engine, shadow.e) == std::vector<std::string>{"a"});
  CHECK_FALSE(engine->MayMatch(tmp.e));
  CHECK(Fired(*engine, tmp.e).empty());
  CHECK(engine->MayMatch(sh.e));  // c: "opened" is unknown, proc.name decides
  // Rule b alone: "not opened" is unknown too.
  auto b_only = Load(macros +
                     "- rule: b\n  desc: d\n  condition: not opened and secret\n  output: o\n  priority: INFO\n");
  auto failed = Open(Proc("cat"), "/etc/sudoers", O_RDONLY, -EACCES);
  failed.e.fd.num = -1;
  CHECK(b_only->MayMatch(shadow.e));
  CHECK(b_only->MayMatch(failed.e));
  CHECK_FALSE(b_only->MayMatch(tmp.e));
  CHECK(Fired(*b_only, failed.e) == std::vector<std::string>{"b"});
  // An event type no rule names.
  auto exec = Exec(Proc("cat"));
  CHECK_FALSE(engine->MayMatch(exec.e));
}

TEST_CASE("MayMatch: a rule without result fields is exact", "[rules][maymatch]") {
  const std::string cond = "evt.type = openat and proc.name in (cat, less) and fd.name pmatch (/etc/ssl)";
  auto yes = Open(Proc("less"), "/etc/ssl/private/key.pem");
  auto no = Open(Proc("less"), "/etc/sslx");
  CHECK(May(cond, yes.e));
  CHECK_FALSE(May(cond, no.e));
  // For such a rule MayMatch agrees with Evaluate.
  CHECK(Matches(cond, yes.e));
  CHECK_FALSE(Matches(cond, no.e));
}
