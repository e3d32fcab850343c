// --forward-webhook: every stored alert reaches a local HTTP receiver as
// Falco JSON (one POST per alert, as Falcosidekick's POST / takes it), with
// retries after failures; duplicates are not forwarded again; an
// unreachable webhook never blocks ingest and its losses are counted.
#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "common/tls/cert_gen.h"
#include "tests/backend/harness.h"

using namespace sidetrace;
using namespace sidetrace::backend_test;
using json = nlohmann::json;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr char kKey[] = "forward-key";

// A minimal keep-alive HTTP receiver on loopback. The first `fail_first`
// requests get a 500.
class Receiver {
 public:
  explicit Receiver(int fail_first) : fail_left_(fail_first), acceptor_(io_, {asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] { Serve(); });
  }
  ~Receiver() {
    stop_ = true;
    beast::error_code ec;
    // Wake accept() with a connection of our own, then join everything.
    tcp::socket s(io_);
    s.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
    for (auto& t : conns_) t.join();
  }
  uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::vector<json> bodies() {
    std::lock_guard lock(mu_);
    return bodies_;
  }
  int requests() const { return requests_; }

 private:
  void Serve() {
    while (!stop_) {
      tcp::socket s(io_);
      beast::error_code ec;
      acceptor_.accept(s, ec);
      if (ec || stop_) return;
      conns_.emplace_back([this, s = std::move(s)]() mutable { Handle(std::move(s)); });
    }
  }
  void Handle(tcp::socket s) {
    struct timeval tv{10, 0};
    setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    beast::flat_buffer buf;
    for (int i = 0; i < 100000 && !stop_; ++i) {
      http::request<http::string_body> req;
      beast::error_code ec;
      http::read(s, buf, req, ec);
      if (ec) return;
      ++requests_;
      http::response<http::string_body> res{http::status::ok, 11};
      if (fail_left_.fetch_sub(1) > 0) {
        res.result(http::status::internal_server_error);
      } else {
        std::lock_guard lock(mu_);
        bodies_.push_back(json::parse(req.body(), nullptr, false));
        if (req[http::field::content_type] != "application/json") bodies_.back() = "bad content type";
      }
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      http::write(s, res, ec);
      if (ec || !req.keep_alive()) return;
    }
  }

  std::atomic<int> fail_left_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  std::vector<std::thread> conns_;
  std::mutex mu_;
  std::vector<json> bodies_;
};

int64_t Metric(HttpClient& api, const std::string& name) {
  auto m = api.Get("/metrics").body;
  size_t p = m.find("\n" + name + " ");
  if (p == std::string::npos) return -1;
  return std::stoll(m.substr(p + name.size() + 2));
}

}  // namespace

TEST_CASE("backend_forward: stored alerts reach the webhook, with retries", "[integration]") {
  std::string dir = MakeTempDir("backend_forward_test");
  auto pki = tls::GenerateTestPki(dir + "/pki");
  REQUIRE(pki.ok());
  Receiver receiver(/*fail_first=*/3);
  // A second webhook nobody listens on: bind a port, then close it.
  uint16_t dead_port;
  {
    asio::io_context io;
    tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    dead_port = a.local_endpoint().port();
  }
  BackendProcess backend;
  REQUIRE(backend.Start({"--ingest", "127.0.0.1:0", "--http", "127.0.0.1:0", "--cert", pki->server_cert, "--key",
                         pki->server_key, "--db", dir + "/sidetrace.db", "--access-key", kKey, "--forward-webhook",
                         "http://127.0.0.1:" + std::to_string(receiver.port()) + "/", "--forward-webhook",
                         "http://127.0.0.1:" + std::to_string(dead_port) + "/falco"},
                        dir + "/backend.log") == "");
  HttpClient ingest(backend.ingest_port(), pki->ca_cert);
  std::vector<json> alerts;
  for (int i = 0; i < 20; ++i) alerts.push_back(i % 2 ? MakeMinerAlert("fw-" + std::to_string(i)) : MakeAlert("fw-" + std::to_string(i)));
  auto r = ingest.PostBatch(BatchBody(alerts), kKey);
  REQUIRE(r.status == 200);
  // A replay stores nothing new, so nothing more is forwarded.
  REQUIRE(ingest.PostBatch(BatchBody(alerts), kKey).status == 200);

  REQUIRE(WaitFor([&] { return receiver.bodies().size() >= 20; }, 60000));
  auto bodies = receiver.bodies();
  std::set<std::string> uuids;
  for (const auto& b : bodies) {
    REQUIRE(b.is_object());
    // What Falcosidekick requires of a POST /: valid priority, rule, time, output_fields.
    CHECK(b.contains("rule"));
    CHECK(b.contains("time"));
    CHECK(b.contains("priority"));
    CHECK(b["output_fields"].is_object());
    CHECK(b["output_fields"]["evt.time"].is_number_integer());
    uuids.insert(b.value("uuid", ""));
  }
  CHECK(uuids.size() == 20);
  CHECK(receiver.requests() == 23);  // 3 failures retried, then 20 deliveries

  HttpClient api(backend.http_port());
  CHECK(WaitFor([&] { return Metric(api, "sidetrace_forward_sent_total") == 20; }));
  // The dead webhook: every attempt failed; with 5 attempts per alert and
  // backoff, it gives up on them one by one without ever blocking ingest.
  CHECK(Metric(api, "sidetrace_forward_failed_total") >= 3 + 1);
  auto start = std::chrono::steady_clock::now();
  REQUIRE(ingest.PostBatch(BatchBody({MakeAlert("fw-late")}), kKey).status == 200);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
  CHECK(WaitFor([&] { return receiver.bodies().size() == 21; }));
  backend.Kill(SIGTERM);
  CHECK(backend.Wait() == 0);
  std::filesystem::remove_all(dir);
}
