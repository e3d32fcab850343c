// Units of the agent that need no tracing: path normalisation, tracee memory
// reads across page boundaries, the syscall table.
#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "agent/procfs.h"
#include "agent/syscalls.h"

using namespace sidetrace::agent;

TEST_CASE("agent_paths normalise like Falco's fd.name") {
  CHECK(NormalizePath("/etc//passwd") == "/etc/passwd");
  CHECK(NormalizePath("/etc/./x/../shadow") == "/etc/shadow");
  CHECK(NormalizePath("/..") == "/");
  CHECK(JoinPath("/root", "../etc/shadow") == "/etc/shadow");
  CHECK(JoinPath("/tmp/", "a/b") == "/tmp/a/b");
  CHECK(JoinPath("/tmp", "/abs") == "/abs");
  CHECK(JoinPath("/", ".") == "/");
}

TEST_CASE("agent_memory: strings are read up to an unmapped page") {
  long page = sysconf(_SC_PAGESIZE);
  auto* p = static_cast<char*>(mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  REQUIRE(p != MAP_FAILED);
  REQUIRE(munmap(p + page, page) == 0);
  char* s = p + page - 6;
  memcpy(s, "hello", 6);
  std::string out;
  CHECK(ReadTraceeString(getpid(), reinterpret_cast<uint64_t>(s), 4096, &out) == 0);
  CHECK(out == "hello");
  memcpy(s, "hellox", 6);  // no NUL before the hole
  CHECK(ReadTraceeString(getpid(), reinterpret_cast<uint64_t>(s), 4096, &out) == -EFAULT);
  CHECK(ReadTraceeString(getpid(), reinterpret_cast<uint64_t>(s), 3, &out) == -ENAMETOOLONG);
  munmap(p, page);
}

TEST_CASE("agent_syscalls: the table maps every ABI's numbers") {
  SysTable t;
  CHECK(t.Lookup(0xC000003E /*AUDIT_ARCH_X86_64*/, 257) == Sys::kOpenat);
  CHECK(t.Lookup(0x40000003 /*AUDIT_ARCH_I386*/, 5) == Sys::kOpen);
  CHECK(t.Lookup(0xC000003E, 0x40000000 | 257) == Sys::kOpenat);  // x32
  CHECK_FALSE(t.Lookup(0xC000003E, 39 /*getpid*/).has_value());
  CHECK(SysName(Sys::kConnect) == "connect");
  auto set = SysSet::All();
  CHECK(set.Has(Sys::kIoUringSetup));
  auto prog = BuildFilter(set);
  REQUIRE(prog.ok());
  CHECK(prog->bytes.size() > 8 * 40);
}
