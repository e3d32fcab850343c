#include "tests/orchestrator/harness.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/tls/cert_gen.h"

namespace sidetrace::testing {

namespace fs = std::filesystem;

std::string BuildDir() {
  const char* d = std::getenv("SIDETRACE_BUILD_DIR");
  return d != nullptr ? d : "build";
}
std::string SourceDir() {
  const char* d = std::getenv("SIDETRACE_SOURCE_DIR");
  return d != nullptr ? d : ".";
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "sidetrace-orch-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}
TempDir::~TempDir() {
  std::error_code ec;
  if (std::getenv("SIDETRACE_KEEP_TMP") == nullptr) fs::remove_all(path_, ec);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return pred();
}

Child Child::Spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  Child c;
  c.log_ = log_path;
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    int null = open("/dev/null", O_RDONLY);
    dup2(null, 0);
    setpgid(0, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  c.pid_ = pid;
  return c;
}

Child::Child(Child&& other) noexcept : pid_(other.pid_), log_(std::move(other.log_)) { other.pid_ = -1; }
Child& Child::operator=(Child&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0) Kill9();
    pid_ = other.pid_;
    log_ = std::move(other.log_);
    other.pid_ = -1;
  }
  return *this;
}
Child::~Child() {
  if (pid_ > 0) Kill9();
}

void Child::Signal(int sig) const {
  if (pid_ > 0) kill(pid_, sig);
}

int Child::Wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (pid_ > 0) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return status;
    }
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(10ms);
  }
  return -1;
}

void Child::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::optional<std::string> Child::WaitForLog(const std::string& re, std::chrono::milliseconds timeout) const {
  std::regex rx(re);
  std::optional<std::string> found;
  WaitFor(
      [&] {
        std::smatch m;
        std::string text = ReadFile(log_);
        if (std::regex_search(text, m, rx)) found = m.size() > 1 ? m[1].str() : m[0].str();
        return found.has_value();
      },
      timeout);
  return found;
}

size_t Child::CountLog(const std::string& re) const {
  std::regex rx(re);
  std::string text = ReadFile(log_);
  return static_cast<size_t>(std::distance(std::sregex_iterator(text.begin(), text.end(), rx), std::sregex_iterator()));
}

Certs MakeCerts(const std::string& dir, const std::string& name) {
  auto pki = tls::GenerateTestPki(dir + "/" + name, {}, "sidetrace orchestrator test CA " + name);
  if (!pki.ok()) throw std::runtime_error("GenerateTestPki: " + pki.status().message());
  return Certs{pki->ca_cert, pki->server_cert, pki->server_key};
}

std::optional<std::string> CurlGet(const std::string& url, const std::string& ca_file) {
  std::string cmd = "curl -sS --max-time 10 ";
  if (!ca_file.empty()) cmd += "--cacert " + ca_file + " ";
  cmd += "'" + url + "' 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  if (pclose(p) != 0) return std::nullopt;
  return out;
}

double MetricValue(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

Backend::Backend(const TempDir& dir, const Certs& certs, std::string key, std::vector<std::string> extra_args)
    : dir_(dir), certs_(certs), key_(std::move(key)), extra_(std::move(extra_args)) {}
Backend::~Backend() { Kill9(); }

void Backend::Start() {
  ++starts_;
  std::string log = dir_ / ("backend-" + std::to_string(starts_) + ".log");
  std::vector<std::string> argv = {BuildDir() + "/backend/sidetrace-backend",
                                   "--ingest", "127.0.0.1:" + std::to_string(ingest_port_),
                                   "--http", "127.0.0.1:" + std::to_string(http_port_),
                                   "--cert", certs_.cert, "--key", certs_.key, "--access-key", key_,
                                   "--db", db_path(), "--log-level", "info"};
  argv.insert(argv.end(), extra_.begin(), extra_.end());
  child_ = Child::Spawn(argv, log);
  auto ingest = child_.WaitForLog("msg=\"ingest listening\" addr=127\\.0\\.0\\.1:(\\d+)", 30s);
  auto http = child_.WaitForLog("msg=\"http listening\" addr=127\\.0\\.0\\.1:(\\d+)", 5s);
  if (!ingest || !http) throw std::runtime_error("backend did not start: " + ReadFile(log));
  ingest_port_ = static_cast<uint16_t>(std::stoi(*ingest));
  http_port_ = static_cast<uint16_t>(std::stoi(*http));
}

void Backend::Kill9() { child_.Kill9(); }

namespace {
// Runs a one-column query on the backend's SQLite file (WAL: readers never
// block the backend's writer, and see only committed batches).
std::vector<std::string> Query(const std::string& db_path, const char* sql) {
  std::vector<std::string> rows;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return rows;  // not created yet
  }
  sqlite3_busy_timeout(db, 10000);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK) {
    while (sqlite3_step(st) == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(st, 0);
      rows.emplace_back(t != nullptr ? reinterpret_cast<const char*>(t) : "");
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rows;
}
}  // namespace

std::multiset<std::string> Backend::Uuids() const {
  auto rows = Query(db_path(), "SELECT uuid FROM events");
  return {rows.begin(), rows.end()};
}

uint64_t Backend::Count() const {
  auto rows = Query(db_path(), "SELECT count(*) FROM events");
  return rows.empty() ? 0 : std::stoull(rows[0]);
}

std::map<std::string, uint64_t> Backend::CountByRule() const {
  std::map<std::string, uint64_t> out;
  for (const auto& row : Query(db_path(), "SELECT rule || char(9) || count(*) FROM events GROUP BY rule")) {
    auto tab = row.rfind('\t');
    out[row.substr(0, tab)] = std::stoull(row.substr(tab + 1));
  }
  return out;
}

nlohmann::json Backend::Agents() const {
  auto body = CurlGet("http://127.0.0.1:" + std::to_string(http_port_) + "/api/agents");
  nlohmann::json out = nlohmann::json::object();
  if (!body) return out;
  auto j = nlohmann::json::parse(*body, nullptr, false);
  if (!j.is_object() || !j["agents"].is_array()) return out;
  for (auto& a : j["agents"]) out[a["id"].get<std::string>()] = a;
  return out;
}

std::string Backend::Metrics() const {
  return CurlGet("http://127.0.0.1:" + std::to_string(http_port_) + "/metrics").value_or("");
}

Orchestrator::Orchestrator(const TempDir& dir, std::vector<std::string> extra_args)
    : dir_(dir), extra_(std::move(extra_args)) {}

void Orchestrator::Start() {
  // Instances share a folder in some tests: number the logs globally.
  static std::atomic<int> instance{0};
  ++starts_;
  std::string log = dir_ / ("orchestrator-" + std::to_string(++instance) + ".log");
  // Defaults for what the test did not set; a restart reuses the ports.
  std::vector<std::string> argv = {BuildDir() + "/orchestrator/sidetrace-orchestrator"};
  auto has = [&](const char* flag) { return std::find(extra_.begin(), extra_.end(), flag) != extra_.end(); };
  if (!has("--listen")) argv.insert(argv.end(), {"--listen", "127.0.0.1:" + std::to_string(port_)});
  if (!has("--http")) argv.insert(argv.end(), {"--http", "127.0.0.1:" + std::to_string(http_port_)});
  if (!has("--spool-dir")) argv.insert(argv.end(), {"--spool-dir", dir_ / "spool"});
  argv.insert(argv.end(), extra_.begin(), extra_.end());
  child_ = Child::Spawn(argv, log);
  auto ports = child_.WaitForLog("msg=listening agents=[0-9.]+:(\\d+ tls=\\w+ http=[0-9.]+:\\d+)", 30s);
  if (!ports) throw std::runtime_error("orchestrator did not start: " + ReadFile(log));
  std::smatch m;
  std::regex rx("(\\d+) tls=\\w+ http=[0-9.]+:(\\d+)");
  std::regex_search(*ports, m, rx);
  port_ = static_cast<uint16_t>(std::stoi(m[1].str()));
  http_port_ = static_cast<uint16_t>(std::stoi(m[2].str()));
}

void Orchestrator::Kill9() { child_.Kill9(); }

int Orchestrator::Stop() {
  child_.Signal(SIGTERM);
  return child_.Wait(30s);
}

std::string Orchestrator::Metrics() {
  return CurlGet("http://127.0.0.1:" + std::to_string(http_port_) + "/metrics").value_or("");
}

std::string Orchestrator::Healthz() {
  return CurlGet("http://127.0.0.1:" + std::to_string(http_port_) + "/healthz").value_or("");
}

std::multiset<std::string> ExpectedUuids(const std::string& prefix, int agents, int per_agent) {
  std::multiset<std::string> out;
  for (int a = 0; a < agents; ++a) {
    for (int i = 0; i < per_agent; ++i) out.insert(prefix + "-" + std::to_string(a) + "-" + std::to_string(i));
  }
  return out;
}

nlohmann::json TestAlert(const std::string& uuid) {
  return {{"uuid", uuid},
          {"time", "2026-11-26T00:00:00.000000000Z"},
          {"rule", "Read sensitive file untrusted"},
          {"priority", "Warning"},
          {"output", "Sensitive file opened for reading by non-trusted program (file=/etc/shadow)"},
          {"output_fields", {{"fd.name", "/etc/shadow"}, {"proc.name", "cat"}, {"evt.time", 1764115200000000000}}},
          {"source", "syscall"},
          {"tags", {"filesystem", "mitre_credential_access"}},
          {"hostname", "test"}};
}

}  // namespace sidetrace::testing
