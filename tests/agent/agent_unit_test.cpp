// Units of the agent that need no tracing: path normalisation, tracee memory
// reads across page boundaries, the syscall table, mountinfo lines, tty_nr,
// pushed policies checked against the filter.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "agent/overlay.h"
#include "agent/procfs.h"
#include "agent/rules_runner.h"
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

TEST_CASE("agent_overlay: mountinfo lines, escapes and upperdir") {
  MountEntry e;
  REQUIRE(ParseMountInfoLine("714 713 0:61 / /tmp/a\\040b rw,relatime shared:1 master:2 - overlay ov "
                             "rw,lowerdir=/l,upperdir=/up\\,per/x\\134y,workdir=/w",
                             &e));
  CHECK(e.mount_point == "/tmp/a b");
  CHECK(e.root == "/");
  CHECK(e.fstype == "overlay");
  CHECK(e.upperdir == "/up,per/x\\y");
  REQUIRE(ParseMountInfoLine("22 1 254:0 / / rw,relatime - ext4 /dev/vda rw", &e));
  CHECK(e.fstype == "ext4");
  CHECK(e.upperdir.empty());
  CHECK_FALSE(ParseMountInfoLine("22 1 254:0 / / rw,relatime", &e));
  // Not on an overlay: false without reading mountinfo.
  CHECK_FALSE(ExeOnUpperLayer(getpid(), "/proc/self/exe"));
}

TEST_CASE("agent_tty: tty_nr is the controlling terminal's device, 0 without one") {
  int master = posix_openpt(O_RDWR | O_NOCTTY);
  REQUIRE(master >= 0);
  REQUIRE(grantpt(master) == 0);
  REQUIRE(unlockpt(master) == 0);
  std::string slave = ptsname(master);
  struct stat st{};
  REQUIRE(stat(slave.c_str(), &st) == 0);
  int pipefd[2];
  REQUIRE(pipe(pipefd) == 0);
  pid_t with = fork();
  if (with == 0) {
    // A new session, then the pty as its controlling terminal.
    close(pipefd[1]);
    setsid();
    int s = open(slave.c_str(), O_RDWR);
    ioctl(s, TIOCSCTTY, 0);
    char c;
    (void)!read(pipefd[0], &c, 1);  // until the parent closes its end
    _exit(0);
  }
  pid_t without = fork();
  if (without == 0) {
    close(pipefd[1]);
    setsid();
    char c;
    (void)!read(pipefd[0], &c, 1);  // until the parent closes its end
    _exit(0);
  }
  close(pipefd[0]);
  int32_t tty = -1;
  // The children may not have run setsid/TIOCSCTTY yet: poll (bounded).
  for (int i = 0; i < 500 && !(ReadTtyNr(with, &tty) && tty == static_cast<int32_t>(st.st_rdev)); ++i) usleep(10000);
  CHECK(tty == static_cast<int32_t>(st.st_rdev));
  for (int i = 0; i < 500 && !(ReadTtyNr(without, &tty) && tty == 0 && getsid(without) == without); ++i) usleep(10000);
  CHECK(tty == 0);
  close(pipefd[1]);
  waitpid(with, nullptr, 0);
  waitpid(without, nullptr, 0);
  close(master);
  CHECK_FALSE(ReadTtyNr(with, &tty));  // reaped: gone
}

TEST_CASE("agent_rules_runner: pushed policies that need untrapped syscalls are applied with a warning") {
  char dir[] = "/tmp/sidetrace-runner-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  std::string rules = std::string(dir) + "/rules.yaml", log = std::string(dir) + "/log";
  {
    FILE* f = fopen(rules.c_str(), "w");
    fputs("- rule: Opens\n  desc: t\n  condition: evt.type = openat\n  output: o\n  priority: WARNING\n", f);
    fclose(f);
  }
  auto runner = RulesRunner::Create({{rules}, "/dev/null", "debug", "off"});
  REQUIRE(runner.ok());
  SysSet filter = (*runner)->Trapped();
  CHECK(filter.Has(Sys::kOpenat));
  CHECK_FALSE(filter.Has(Sys::kConnect));
  (*runner)->SetFilter(filter);
  // The log goes to stderr: catch it in a file for the two offers.
  int saved = dup(STDERR_FILENO);
  int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  dup2(fd, STDERR_FILENO);
  (*runner)->OfferPolicies({{"same.yaml", "- rule: Opens2\n  desc: t\n  condition: evt.type = openat\n"
                                          "  output: o\n  priority: WARNING\n"}});
  (*runner)->OfferPolicies({{"more.yaml", "- rule: Connects\n  desc: t\n  condition: evt.type = connect\n"
                                          "  output: c\n  priority: WARNING\n"}});
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fd);
  std::string text;
  REQUIRE(ReadSmallFile(log, 1 << 16, &text));
  CHECK(text.find("syscalls=connect") != std::string::npos);
  CHECK(text.find("does not trap") == text.rfind("does not trap"));  // the first offer warned of nothing
  std::remove(log.c_str());
  std::remove(rules.c_str());
  rmdir(dir);
}
