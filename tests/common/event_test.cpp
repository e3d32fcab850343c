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
