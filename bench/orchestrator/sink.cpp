// sidetrace-bench-sink: a minimal HTTPS receiver of the backend's ingest
// contract (POST /api/v1/events:batch) for the orchestrator benchmark. It
// dedupes by uuid in memory, records for each new alert the latency from its
// creation (output_fields["evt.time"], ns) to its arrival here, and answers
// 200. It does not store anything: the numbers measure the orchestrator, not
// a database. GET /stats -> {"unique","received","batches","first_ns",
// "last_ns","p50_ms","p99_ms","max_ms"}. Thread per connection.
//
// To stay cheap at 100k alerts/s it does not parse the JSON: it scans for
// "uuid":"..." and "evt.time":N, which the orchestrator writes once per
// alert (its spool lines are nlohmann dumps).
// <utility> first: Boost 1.74's asio.hpp uses std::exchange without it in C++20.
#include <utility>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

namespace {

std::mutex g_mu;
std::unordered_set<std::string> g_seen;
std::vector<double> g_latency_ms;
uint64_t g_received = 0, g_batches = 0, g_first_ns = 0, g_last_ns = 0;

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

nlohmann::json Ingest(const std::string& body) {
  uint64_t now = NowNs();
  std::vector<std::pair<std::string, uint64_t>> events;
  size_t pos = 0;
  static const std::string kUuid = "\"uuid\":\"", kTime = "\"evt.time\":";
  // Per alert: "evt.time" comes before "uuid" (keys are sorted), so pair
  // each uuid with the last evt.time seen.
  uint64_t last_time = 0;
  for (;;) {
    size_t t = body.find(kTime, pos), u = body.find(kUuid, pos);
    if (u == std::string::npos) break;
    if (t != std::string::npos && t < u) {
      last_time = std::strtoull(body.c_str() + t + kTime.size(), nullptr, 10);
      pos = t + kTime.size();
      continue;
    }
    size_t end = body.find('"', u + kUuid.size());
    events.emplace_back(body.substr(u + kUuid.size(), end - u - kUuid.size()), last_time);
    pos = end;
  }
  size_t fresh = 0;
  std::lock_guard lock(g_mu);
  for (auto& [uuid, t] : events) {
    if (g_seen.insert(uuid).second) {
      ++fresh;
      if (t > 0 && now > t) g_latency_ms.push_back(static_cast<double>(now - t) / 1e6);
    }
  }
  g_received += events.size();
  ++g_batches;
  if (g_first_ns == 0 && !events.empty()) g_first_ns = now;
  if (!events.empty()) g_last_ns = now;
  return {{"accepted", events.size()}, {"new", fresh}, {"duplicates", events.size() - fresh}};
}

nlohmann::json Stats() {
  std::lock_guard lock(g_mu);
  std::vector<double> l = g_latency_ms;
  std::sort(l.begin(), l.end());
  auto pct = [&](double p) { return l.empty() ? 0.0 : l[std::min(l.size() - 1, static_cast<size_t>(p * l.size()))]; };
  return {{"unique", g_seen.size()}, {"received", g_received}, {"batches", g_batches}, {"first_ns", g_first_ns},
          {"last_ns", g_last_ns},    {"p50_ms", pct(0.50)},    {"p99_ms", pct(0.99)},   {"max_ms", l.empty() ? 0 : l.back()}};
}

void Serve(tcp::socket socket, ssl::context& ctx) {
  beast::error_code ec;
  beast::ssl_stream<tcp::socket> stream(std::move(socket), ctx);
  stream.handshake(ssl::stream_base::server, ec);
  if (ec) return;
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read(stream, buffer, parser, ec);
    if (ec) return;
    auto req = parser.release();
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    if (req.method() == http::verb::post && req.target() == "/api/v1/events:batch") {
      res.body() = Ingest(req.body()).dump();
    } else if (req.method() == http::verb::get && req.target() == "/stats") {
      res.body() = Stats().dump();
    } else {
      res.result(http::status::not_found);
    }
    res.prepare_payload();
    http::write(stream, res, ec);
    if (ec || !res.keep_alive()) return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: sidetrace-bench-sink PORT CERT KEY   (prints 'listening PORT')\n";
    return 2;
  }
  ssl::context ctx(ssl::context::tls_server);
  ctx.use_certificate_chain_file(argv[2]);
  ctx.use_private_key_file(argv[3], ssl::context::pem);
  asio::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(std::stoi(argv[1]))));
  std::cout << "listening " << acceptor.local_endpoint().port() << std::endl;
  for (;;) {
    tcp::socket s(ioc);
    acceptor.accept(s);
    std::thread(Serve, std::move(s), std::ref(ctx)).detach();
  }
}
