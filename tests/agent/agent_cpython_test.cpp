// Real programs' own test suites under the agent: CPython's regression tests
// for signals, ptys, threads and subprocesses give the same results with and
// without sidetrace-agent.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <regex>

#include "tests/agent/agent_harness.h"

using namespace agent_test;

namespace {

// "Total tests: run=259 failures=1" plus the failed test names. The skip
// count is left out: it varies with timing (one CI run skipped 103 natively
// and 105 traced; rerun with -v, both skipped the very same tests).
std::string Summary(const std::string& out) {
  std::smatch m;
  std::string s;
  if (std::regex_search(out, m, std::regex("Total tests: run=[0-9]+ failures=[0-9]+"))) s = m.str();
  std::regex failed("(\\d+ tests? failed:\\n(    [^\\n]*\\n)+)");
  if (std::regex_search(out, m, failed)) s += "\n" + m.str();
  return s;
}

}  // namespace

TEST_CASE("agent_cpython: regression tests pass the same under the agent") {
  // The python3 on PATH (Debian's ships only libregrtest; a full build such
  // as pyenv's carries the tests).
  if (system("python3 -c 'import test.test_signal, test.test_pty' 2>/dev/null") != 0) {
    WARN("python3's regression tests are not installed; skipped");
    return;
  }
  TempDir dir;
  // Signals, ptys, threads, fork/exec/wait, sockets; bounded to about a
  // minute natively (test_subprocess and test_socket alone take minutes).
  const std::vector<std::string> suite = {"/usr/bin/env",    "python3",         "-m",         "test",
                                          "test_signal",     "test_pty",        "test_threading", "test_os",
                                          "test_popen",      "test_fork1",      "test_wait4",
                                          "test_selectors",  "-j2"};
  Child native = Start(dir, suite);
  REQUIRE(native.Wait(std::chrono::seconds(600)));
  // As deployed (alerts only: --lifecycle seccomp), and as a record
  // (--events-out: --lifecycle ptrace).
  for (std::vector<std::string> traced :
       {std::vector<std::string>{AgentPath(), "--alerts-out", dir / "alerts.json", "--"},
        std::vector<std::string>{AgentPath(), "--events-out", dir / "events.json", "--"}}) {
    traced.insert(traced.end(), suite.begin(), suite.end());
    Child agent = Start(dir, traced);
    REQUIRE(agent.Wait(std::chrono::seconds(900)));
    std::string a = Summary(native.Out()), b = Summary(agent.Out());
    INFO("agent flags: " << traced[1]);
    INFO("native:\n" << native.Out().substr(native.Out().size() > 3000 ? native.Out().size() - 3000 : 0));
    INFO("agent:\n" << agent.Out().substr(agent.Out().size() > 3000 ? agent.Out().size() - 3000 : 0));
    REQUIRE(!a.empty());
    CHECK(b == a);
    CHECK(agent.ExitCode() == native.ExitCode());
  }
}
