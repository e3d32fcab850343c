// Test harness for the orchestrator end-to-end tests: temporary folders,
// child processes with their output in a file, certificates generated with
// common/tls (GenerateTestPki), the real sidetrace-backend (TLS ingest,
// SQLite file, read API) and the real sidetrace-orchestrator.
// Everything listens on 127.0.0.1 with ports chosen by the kernel; a restart
// reuses the ports of the first start.
#pragma once

#include <nlohmann/json.hpp>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace sidetrace::testing {

using namespace std::chrono_literals;

std::string BuildDir();
std::string SourceDir();

class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& text);

// Polls `pred` every 50 ms until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

class Child {
 public:
  Child() = default;
  // argv[0] is a path. stdout and stderr go to `log_path`.
  static Child Spawn(const std::vector<std::string>& argv, const std::string& log_path);
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  ~Child();  // SIGKILL + reap if still running

  void Signal(int sig) const;
  // Waits for exit; returns the wait status, or -1 on timeout.
  int Wait(std::chrono::milliseconds timeout);
  void Kill9();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_; }
  // First capture group of `re` in the log, waiting up to `timeout`.
  std::optional<std::string> WaitForLog(const std::string& re, std::chrono::milliseconds timeout) const;
  // Number of matches of `re` in the log now.
  size_t CountLog(const std::string& re) const;

 private:
  pid_t pid_ = -1;
  std::string log_;
};

struct Certs {
  std::string ca, cert, key;
};
// A CA and a server certificate for 127.0.0.1 / localhost signed by it, made
// by tls::GenerateTestPki in `dir`/`name`. Two names give two unrelated CAs.
Certs MakeCerts(const std::string& dir, const std::string& name = "pki");

// GET over HTTP(S) with curl; nullopt when the request fails.
std::optional<std::string> CurlGet(const std::string& url, const std::string& ca_file = "");

// Reads one value from Prometheus text; -1 when absent.
double MetricValue(const std::string& text, const std::string& name);

// The real sidetrace-backend: TLS ingest with `certs`, the access key, a
// SQLite file in `dir`, its read API on plain HTTP.
class Backend {
 public:
  Backend(const TempDir& dir, const Certs& certs, std::string key, std::vector<std::string> extra_args = {});
  ~Backend();
  void Start();  // on the previous ports and database when restarting
  void Kill9();
  std::string addr() const { return "127.0.0.1:" + std::to_string(ingest_port_); }
  std::string db_path() const { return dir_ / "backend.db"; }

  // Read from the SQLite file: the stored alerts' uuids (the column is
  // UNIQUE, so "nothing duplicated" is the row count equal to the set),
  // their number, and the number per rule.
  std::multiset<std::string> Uuids() const;
  uint64_t Count() const;
  std::map<std::string, uint64_t> CountByRule() const;
  // Through the read API: GET /api/agents as {id: record}; /metrics text.
  nlohmann::json Agents() const;
  std::string Metrics() const;

 private:
  const TempDir& dir_;
  Certs certs_;
  std::string key_;
  std::vector<std::string> extra_;
  uint16_t ingest_port_ = 0;
  uint16_t http_port_ = 0;
  Child child_;
  int starts_ = 0;
};

class Orchestrator {
 public:
  Orchestrator(const TempDir& dir, std::vector<std::string> extra_args);
  void Start();  // restarts on the same ports and spool
  void Kill9();
  int Stop();    // SIGTERM; returns the wait status
  uint16_t port() const { return port_; }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Metrics();
  std::string Healthz();
  double Metric(const std::string& name) { return MetricValue(Metrics(), name); }
  Child& child() { return child_; }

 private:
  const TempDir& dir_;
  std::vector<std::string> extra_;
  uint16_t port_ = 0;
  uint16_t http_port_ = 0;
  Child child_;
  int starts_ = 0;
};

// A Falco alert with the given uuid.
nlohmann::json TestAlert(const std::string& uuid);

// The uuids `prefix`-<agent>-<i> for agent in [0, agents), i in [0, per_agent).
std::multiset<std::string> ExpectedUuids(const std::string& prefix, int agents, int per_agent);

// A port that nothing listens on right now (bound then released).
uint16_t FreePort();

}  // namespace sidetrace::testing
