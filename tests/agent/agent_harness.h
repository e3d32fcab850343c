// Test harness: runs the built sidetrace-agent (from SIDETRACE_BUILD_DIR)
// as a real process with captured stdout/stderr, deadlines instead of
// sleeps, and a reader for its --events-out JSON lines.
#pragma once

#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace agent_test {

inline std::string BuildDir() {
  const char* d = getenv("SIDETRACE_BUILD_DIR");
  return d ? d : "build";
}
inline std::string AgentPath() { return BuildDir() + "/agent/sidetrace-agent"; }
inline std::string WorkloadPath() { return BuildDir() + "/tests/agent/agent_test_workload"; }

// A private scratch directory, removed at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/sidetrace-agent-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { (void)!system(("rm -rf '" + path + "'").c_str()); }
  std::string operator/(const std::string& leaf) const { return path + "/" + leaf; }
};

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Child {
  pid_t pid = -1;
  std::string out_path, err_path;
  int status = -1;

  // Waits up to `timeout`; kills the agent and returns false on expiry.
  bool Wait(std::chrono::seconds timeout = std::chrono::seconds(60)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pid_t r = waitpid(pid, &status, WNOHANG);
      if (r == pid) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return false;
  }
  int ExitCode() const {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
  }
  std::string Out() const { return ReadFile(out_path); }
  std::string Err() const { return ReadFile(err_path); }
};

// Starts `argv` with stdout/stderr in files under `dir` and stdin from
// `stdin_path` (/dev/null by default). `setup` runs in the child before exec.
inline Child Start(const TempDir& dir, const std::vector<std::string>& argv, const std::string& stdin_path = "/dev/null",
                   const std::function<void()>& setup = nullptr) {
  static int counter = 0;
  Child c;
  ++counter;
  c.out_path = dir / ("out" + std::to_string(counter));
  c.err_path = dir / ("err" + std::to_string(counter));
  c.pid = fork();
  if (c.pid == 0) {
    int in = open(stdin_path.c_str(), O_RDONLY);
    int out = open(c.out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = open(c.err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    close_range(3, ~0U, 0);  // the test's own descriptors stay out
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (setup) setup();
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(120);
  }
  return c;
}

// Runs the agent with `agent_args` then "--" then `program`, to completion.
inline Child RunAgent(const TempDir& dir, std::vector<std::string> agent_args, const std::vector<std::string>& program,
                      const std::string& stdin_path = "/dev/null") {
  std::vector<std::string> argv{AgentPath()};
  argv.insert(argv.end(), agent_args.begin(), agent_args.end());
  argv.push_back("--");
  argv.insert(argv.end(), program.begin(), program.end());
  Child c = Start(dir, argv, stdin_path);
  c.Wait();
  return c;
}

inline std::vector<nlohmann::json> ReadEvents(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

// Polls `pred` every 10 ms until it holds or `timeout` passes.
inline bool WaitFor(const std::function<bool()>& pred, std::chrono::seconds timeout = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

// Process state letter from /proc/PID/stat ('S', 'T', 't', 'Z'...), or 0.
inline char ProcState(pid_t pid) {
  std::string s = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t p = s.rfind(')');
  return p != std::string::npos && p + 2 < s.size() ? s[p + 2] : 0;
}

// The counter `name` from the agent's "tracing finished" line (logged at
// --log-level info), -1 if absent.
inline long Counter(const std::string& log, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(log, m, std::regex("tracing finished.* " + name + "=([0-9]+)"))) return -1;
  return std::stol(m[1]);
}

}  // namespace agent_test
