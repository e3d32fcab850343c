// The static sidetrace-agent runs unchanged in a root that holds nothing
// but a static busybox: without /proc (init duties, exit codes), and with
// /proc mounted in a private mount namespace (events too).
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "tests/agent/agent_harness.h"

using namespace agent_test;

TEST_CASE("agent_chroot: static binary in a busybox-only root") {
  if (geteuid() != 0 || access("/bin/busybox", X_OK) != 0 || access("/usr/sbin/chroot", X_OK) != 0) {
    WARN("needs root, /bin/busybox (busybox-static) and chroot; skipped");
    return;
  }
  TempDir dir;
  std::string root = dir / "root";
  REQUIRE(system(("mkdir -p " + root + "/bin " + root + "/etc " + root + "/proc " + root + "/tmp && cp /bin/busybox " +
                  root + "/bin/busybox && cp " + AgentPath() + " " + root + "/bin/sidetrace-agent && for a in sh cat echo "
                  "true ls; do ln -s busybox " + root + "/bin/$a; done && echo chroot-host > " + root + "/etc/hostname")
                     .c_str()) == 0);
  {
    Child c = Start(dir, {"/usr/sbin/chroot", root, "/bin/sidetrace-agent", "--", "sh", "-c",
                          "cat /etc/hostname; echo $PATH >/dev/null; exit 4"});
    REQUIRE(c.Wait());
    INFO(c.Err());
    CHECK(c.ExitCode() == 4);
    CHECK(c.Out() == "chroot-host\n");
    Child nf = Start(dir, {"/usr/sbin/chroot", root, "/bin/sidetrace-agent", "--", "no-such-tool"});
    REQUIRE(nf.Wait());
    CHECK(nf.ExitCode() == 127);
  }
  if (access("/usr/bin/unshare", X_OK) == 0) {
    Child c = Start(dir, {"/usr/bin/unshare", "--mount", "--fork", "/bin/sh", "-c",
                          "mount -t proc proc " + root + "/proc && exec /usr/sbin/chroot " + root +
                              " /bin/sidetrace-agent --events-out /tmp/events.json -- sh -c 'cat /etc/hostname'"});
    REQUIRE(c.Wait());
    INFO(c.Err());
    CHECK(c.ExitCode() == 0);
    CHECK(c.Out() == "chroot-host\n");
    auto evs = ReadEvents(root + "/tmp/events.json");
    bool exec_seen = false, open_seen = false;
    for (auto& e : evs) {
      if (e["evt.type"] == "execve" && e["proc.exepath"] == "/bin/busybox") exec_seen = true;
      if (e.value("fd.name", "") == "/etc/hostname" && e["evt.res"].get<int>() >= 0) open_seen = true;
    }
    CHECK(exec_seen);
    CHECK(open_seen);
  }
}
