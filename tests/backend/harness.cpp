#include "tests/backend/harness.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>

#include "common/tls/tls.h"

namespace sidetrace::backend_test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + ".XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) return "";
  return buf.data();
}

std::string BackendBinary() {
  const char* dir = getenv("SIDETRACE_BUILD_DIR");
  return std::string(dir ? dir : ".") + "/backend/sidetrace-backend";
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

BackendProcess::~BackendProcess() {
  if (pid_ > 0) {
    Kill(SIGKILL);
    Wait();
  }
}

std::string BackendProcess::Start(const std::vector<std::string>& args, const std::string& log_file,
                                  const std::vector<std::string>& env) {
  std::string bin = BackendBinary();
  // Truncate: the ports are read from this run's lines only.
  int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return "cannot create " + log_file;
  pid_ = fork();
  if (pid_ == 0) {
    dup2(fd, 2);
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(bin.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  ::close(fd);
  if (pid_ < 0) return "fork failed";
  std::regex ingest_re("ingest listening\" addr=[^ ]*:([0-9]+)"), http_re("http listening\" addr=[^ ]*:([0-9]+)");
  std::string text;
  bool up = WaitFor([&] {
    std::ifstream in(log_file);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
    std::smatch m1, m2;
    if (std::regex_search(text, m1, ingest_re) && std::regex_search(text, m2, http_re)) {
      ingest_port_ = static_cast<uint16_t>(std::stoi(m1[1]));
      http_port_ = static_cast<uint16_t>(std::stoi(m2[1]));
      return true;
    }
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return true;
    }
    return false;
  }, 60000);
  if (pid_ < 0) return "backend exited: " + text;
  if (!up) return "backend did not come up: " + text;
  return "";
}

void BackendProcess::Kill(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

int BackendProcess::Wait(int timeout_ms) {
  if (pid_ <= 0) return -1;
  int status = -1;
  bool done = WaitFor([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, timeout_ms);
  if (!done) return -1;
  pid_ = -1;
  return status;
}

HttpClient::HttpClient(uint16_t port, std::string ca_file, std::string peer_name)
    : port_(port), ca_file_(std::move(ca_file)), peer_name_(std::move(peer_name)) {}

std::string HttpClient::Connect() {
  tls_.reset();
  plain_.reset();
  buffer_.clear();
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port_);
  beast::error_code ec;
  if (!ca_file_.empty()) {
    if (!ctx_) {
      tls::ClientConfig cc;
      cc.ca_file = ca_file_;
      auto ctx = tls::MakeClientContext(cc);
      if (!ctx.ok()) return ctx.status().message();
      ctx_.emplace(std::move(ctx.value()));
    }
    tls_.emplace(io_, *ctx_);
    beast::get_lowest_layer(*tls_).socket().connect(ep, ec);
    if (ec) return ec.message();
    if (!tls::SetPeerName(tls_->native_handle(), peer_name_).ok()) return "bad peer name";
    tls_->handshake(asio::ssl::stream_base::client, ec);
    if (ec) return ec.message();
  } else {
    plain_.emplace(io_);
    plain_->socket().connect(ep, ec);
    if (ec) return ec.message();
  }
  return "";
}

HttpResult HttpClient::Request(http::verb verb, const std::string& target, const std::string& body,
                               const std::map<std::string, std::string>& headers) {
  HttpResult out;
  if (!tls_ && !plain_) {
    out.error = Connect();
    if (!out.error.empty()) return out;
  }
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.keep_alive(true);
  req.prepare_payload();
  http::response_parser<http::string_body> parser;
  parser.body_limit(256 << 20);
  beast::error_code ec;
  auto exchange = [&](auto& s) {
    http::write(s, req, ec);
    // A server may answer (413) and close before reading the whole body:
    // still read its reply.
    if (ec && ec != asio::error::broken_pipe && ec != asio::error::connection_reset) return;
    ec = {};
    http::read(s, buffer_, parser, ec);
  };
  if (tls_) exchange(*tls_); else exchange(*plain_);
  if (ec) {
    out.error = ec.message();
    tls_.reset();
    plain_.reset();
    return out;
  }
  auto res = parser.release();
  out.status = res.result_int();
  out.body = res.body();
  for (const auto& f : res) out.headers[std::string(f.name_string())] = std::string(f.value());
  if (!res.keep_alive()) {
    tls_.reset();
    plain_.reset();
    buffer_.clear();
  }
  return out;
}

HttpResult HttpClient::PostBatch(const std::string& body, const std::string& key,
                                 const std::map<std::string, std::string>& headers) {
  auto h = headers;
  if (!key.empty()) h["Authorization"] = "Bearer " + key;
  h["Content-Type"] = "application/json";
  return Request(http::verb::post, "/api/v1/events:batch", body, h);
}

json MakeAlert(const std::string& uuid, const std::string& rule, const std::string& priority, int64_t time_ns) {
  if (time_ns == 0) time_ns = NowNs();
  time_t secs = time_ns / 1000000000LL;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(time_ns % 1000000000LL));
  return {
      {"uuid", uuid},
      {"time", buf},
      {"rule", rule},
      {"priority", priority},
      {"output",
       "08:15:20.123456789: Warning Sensitive file opened for reading by non-trusted program "
       "(file=/etc/shadow gparent=sidetrace-agent ggparent=<NA> gggparent=<NA> evt_type=openat "
       "user=root user_uid=0 user_loginuid=-1 process=python3 proc_exepath=/usr/bin/python3.11 "
       "parent=sidetrace-agent command=python3 /app/app.py terminal=0 container_id=3f1c9e0a5b7d "
       "container_name=playground)"},
      {"output_fields",
       {{"evt.time", time_ns},
        {"evt.type", "openat"},
        {"fd.name", "/etc/shadow"},
        {"proc.name", "python3"},
        {"proc.exepath", "/usr/bin/python3.11"},
        {"proc.cmdline", "python3 /app/app.py"},
        {"proc.pname", "sidetrace-agent"},
        {"proc.pid", 7},
        {"user.name", "root"},
        {"user.uid", 0},
        {"user.loginuid", -1},
        {"container.id", "3f1c9e0a5b7d"},
        {"container.name", "playground"},
        {"container.image.repository", "security-playground"},
        {"aws.ecs.task.arn", "arn:aws:ecs:us-east-1:123456789012:task/demo/3f1c9e0a5b7d4c1e8a9b"},
        {"aws.ecs.cluster", "arn:aws:ecs:us-east-1:123456789012:cluster/demo"}}},
      {"source", "syscall"},
      {"tags", {"T1555", "container", "filesystem", "host", "maturity_stable", "mitre_credential_access"}},
      {"hostname", "ip-10-0-1-23.ec2.internal"}};
}

json MakeMinerAlert(const std::string& uuid, int64_t time_ns) {
  json a = MakeAlert(uuid, "Detect outbound connections to common miner pool ports", "Critical", time_ns);
  a["output"] =
      "Outbound connection to IP/Port flagged by https://cryptoioc.ch (ip=203.0.113.10 port=3333 "
      "command=curl 203.0.113.10:3333 pid=42 container_id=3f1c9e0a5b7d container_name=playground)";
  a["output_fields"]["evt.type"] = "connect";
  a["output_fields"]["fd.name"] = "10.0.1.23:40112->203.0.113.10:3333";
  a["output_fields"]["fd.sip"] = "203.0.113.10";
  a["output_fields"]["fd.sport"] = 3333;
  a["output_fields"]["proc.name"] = "curl";
  a["output_fields"]["proc.cmdline"] = "curl 203.0.113.10:3333";
  a["output_fields"]["proc.pname"] = "sh";
  a["tags"] = {"T1496", "container", "host", "maturity_sandbox", "mitre_impact", "network"};
  return a;
}

std::string BatchBody(const std::vector<json>& alerts, const json& agent) {
  json body = {{"events", alerts}};
  if (!agent.is_null()) body["agent"] = agent;
  return body.dump();
}

}  // namespace sidetrace::backend_test
