#include "common/event/event.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

using namespace sidetrace::event;

TEST_CASE("event type names are Falco's and round-trip") {
  CHECK(EventTypeName(EventType::kProcExit) == "procexit");
  CHECK(EventTypeName(EventType::kMemfdCreate) == "memfd_create");
  for (size_t i = 0; i < kEventTypeCount; ++i) {
    auto type = static_cast<EventType>(i);
    REQUIRE(EventTypeFromName(EventTypeName(type)) == type);
  }
  CHECK_FALSE(EventTypeFromName("not_a_syscall").has_value());
}

TEST_CASE("event args are reused across Clear without losing values") {
  Event e;
  e.SetArg("flags", "O_RDONLY");
  e.SetArg("mode", "0");
  e.SetArg("flags", "O_WRONLY");
  REQUIRE(e.arg_count() == 2);
  CHECK(*e.Arg("flags") == "O_WRONLY");
  e.Clear();
  CHECK(e.arg_count() == 0);
  CHECK(e.Arg("flags") == nullptr);
  e.SetArg("request", "PTRACE_ATTACH");
  CHECK(*e.Arg("request") == "PTRACE_ATTACH");
  CHECK(e.ArgAt(0).first == "request");
}

TEST_CASE("socket addresses print like Falco") {
  SocketAddress a;
  a.family = AF_INET;
  REQUIRE(inet_pton(AF_INET, "203.0.113.10", a.ip.data()) == 1);
  CHECK(a.IpString() == "203.0.113.10");
  SocketAddress b;
  b.family = AF_INET6;
  REQUIRE(inet_pton(AF_INET6, "2001:db8::1", b.ip.data()) == 1);
  CHECK(b.IpString() == "2001:db8::1");
  CHECK(SocketAddress().IpString().empty());
}

#include <netinet/in.h>

#include "common/event/event_json.h"

TEST_CASE("an event survives the JSON round trip") {
  auto parent = std::make_shared<ProcessInfo>();
  parent->pid = 1;
  parent->name = "sh";
  parent->args = {"-c", "cat /etc/shadow"};
  ProcessInfo proc;
  proc.pid = 42;
  proc.ppid = 1;
  proc.name = "cat";
  proc.exe = "cat";
  proc.exepath = "/usr/bin/cat";
  proc.args = {"/etc/shadow", "odd \"quoted\"\n"};
  proc.cwd = "/root/";
  proc.env = {"SECRET=hunter2"};
  proc.parent = parent;
  ContainerInfo container;
  container.id = "abc123";
  container.extra = {{"aws.ecs.cluster", "demo"}};

  Event e;
  e.type = EventType::kOpenat;
  e.num = 7;
  e.time_ns = 1764115200123456789ULL;  // beyond a double's exact range
  e.res = 3;
  e.tid = 42;
  e.proc = &proc;
  e.container = &container;
  e.fd.num = 3;
  e.fd.typechar = 'f';
  e.fd.name = "/etc/shadow";
  e.SetArg("flags", "O_RDONLY");

  std::string line;
  AppendEventJson(e, &line);
  CHECK(line.find("hunter2") == std::string::npos);
  auto parsed = EventFromJson(nlohmann::json::parse(line));
  REQUIRE(parsed.ok());
  const Event& back = parsed->event;
  CHECK(back.type == EventType::kOpenat);
  CHECK(back.time_ns == 1764115200123456789ULL);
  CHECK(back.res == 3);
  REQUIRE(back.proc != nullptr);
  CHECK(back.proc->args == proc.args);
  REQUIRE(back.proc->parent != nullptr);
  CHECK(back.proc->parent->name == "sh");
  CHECK(back.fd.name == "/etc/shadow");
  CHECK(back.fd.typechar == 'f');
  CHECK(*back.Arg("flags") == "O_RDONLY");
  REQUIRE(back.container != nullptr);
  CHECK(back.container->extra.size() == 1);
}

TEST_CASE("a connect event keeps its addresses") {
  Event e;
  e.type = EventType::kConnect;
  e.fd.num = 5;
  e.fd.typechar = '4';
  e.fd.l4proto = IPPROTO_TCP;
  e.fd.remote.family = AF_INET;
  e.fd.remote.ip = {203, 0, 113, 10};
  e.fd.remote.port = 3333;
  std::string line;
  AppendEventJson(e, &line);
  auto parsed = EventFromJson(nlohmann::json::parse(line));
  REQUIRE(parsed.ok());
  CHECK(parsed->event.fd.remote.IpString() == "203.0.113.10");
  CHECK(parsed->event.fd.remote.port == 3333);
  CHECK(parsed->event.fd.l4proto == IPPROTO_TCP);
}

TEST_CASE("bad event JSON names the key at fault") {
  auto r = EventFromJson(nlohmann::json::parse(R"({"evt.type":"nope"})"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message() == "evt.type: unknown event type 'nope'");
  r = EventFromJson(nlohmann::json::parse(R"({"evt.type":"open","proc.pid":"x"})"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message() == "proc.pid: expected an integer");
  r = EventFromJson(nlohmann::json::parse(R"({"evt.type":"connect","fd.num":3,"fd.rip":"999.1.1.1"})"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message() == "fd.rip: not an IP address '999.1.1.1'");
}
