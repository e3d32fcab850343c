// Test harness for the backend's integration tests: runs the real
// sidetrace-backend binary as a child process and talks to it over real TLS
// (certificates from tls::GenerateTestPki) and plain HTTP on loopback.
//
// BackendProcess: fork/exec with stderr captured to a file; Start() waits
// (deadline 60 s) for the "ingest listening"/"http listening" log lines and
// reads the ephemeral ports from them (tests pass 127.0.0.1:0).
// HttpClient: one keep-alive connection, TLS or plain, synchronous.
// Thread-safety: none; one test thread per object.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <utility>  // before Boost 1.74 Asio: its awaitable.hpp uses std::exchange

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sidetrace::backend_test {

std::string MakeTempDir(const std::string& prefix);
std::string BackendBinary();

class BackendProcess {
 public:
  BackendProcess() = default;
  ~BackendProcess();
  // Starts the backend with `args` (argv[1..]) and waits until it listens.
  // Returns "" or the reason it did not come up (with its stderr).
  std::string Start(const std::vector<std::string>& args, const std::string& log_file,
                    const std::vector<std::string>& env = {});
  void Kill(int sig);
  // Waits for exit; returns the wait status or -1 on timeout.
  int Wait(int timeout_ms = 30000);
  uint16_t ingest_port() const { return ingest_port_; }
  uint16_t http_port() const { return http_port_; }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  uint16_t ingest_port_ = 0, http_port_ = 0;
};

struct HttpResult {
  int status = 0;         // 0: transport error
  std::string error;      // transport error text
  std::string body;
  std::map<std::string, std::string> headers;
};

class HttpClient {
 public:
  // TLS when ca_file is set; peer_name is checked against the certificate.
  HttpClient(uint16_t port, std::string ca_file = "", std::string peer_name = "127.0.0.1");
  // Connects (and handshakes); "" or the error.
  std::string Connect();
  HttpResult Request(boost::beast::http::verb verb, const std::string& target, const std::string& body = "",
                     const std::map<std::string, std::string>& headers = {});
  HttpResult Get(const std::string& target) { return Request(boost::beast::http::verb::get, target); }
  // POST /api/v1/events:batch with a bearer key.
  HttpResult PostBatch(const std::string& body, const std::string& key,
                       const std::map<std::string, std::string>& headers = {});

 private:
  uint16_t port_;
  std::string ca_file_, peer_name_;
  boost::asio::io_context io_;
  std::optional<boost::asio::ssl::context> ctx_;
  std::optional<boost::beast::ssl_stream<boost::beast::tcp_stream>> tls_;
  std::optional<boost::beast::tcp_stream> plain_;
  boost::beast::flat_buffer buffer_;
};

// A realistic Falco alert (the playground's two scenario rules look like this).
nlohmann::json MakeAlert(const std::string& uuid, const std::string& rule = "Read sensitive file untrusted",
                         const std::string& priority = "Warning", int64_t time_ns = 0);
nlohmann::json MakeMinerAlert(const std::string& uuid, int64_t time_ns = 0);
std::string BatchBody(const std::vector<nlohmann::json>& alerts, const nlohmann::json& agent = nullptr);

// Polls `pred` every 50 ms until it holds or `timeout_ms` passes.
template <class Pred>
bool WaitFor(Pred pred, int timeout_ms = 30000) {
  for (int waited = 0; waited < timeout_ms; waited += 50) {
    if (pred()) return true;
    usleep(50 * 1000);
  }
  return pred();
}

int64_t NowNs();

}  // namespace sidetrace::backend_test
