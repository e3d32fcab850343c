#include "orchestrator/http_status.h"

#include <boost/asio/strand.hpp>
#include <fmt/format.h>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <memory>

#include "orchestrator/config.h"

namespace sidetrace::orchestrator {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

class StatusSession : public std::enable_shared_from_this<StatusSession> {
 public:
  StatusSession(tcp::socket socket, const Metrics* m, const AgentRegistry* r)
      : stream_(std::move(socket)), metrics_(m), registry_(r) {}

  void Start() {
    parser_.header_limit(8 * 1024);
    parser_.body_limit(8 * 1024);
    stream_.expires_after(std::chrono::seconds(5));
    http::async_read(stream_, buffer_, parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (!ec) self->Respond();
    });
  }

 private:
  void Respond() {
    const auto& req = parser_.get();
    auto res = std::make_shared<http::response<http::string_body>>();
    res->version(req.version());
    res->keep_alive(false);
    std::string target(req.target());
    if (req.method() != http::verb::get) {
      res->result(http::status::method_not_allowed);
      res->body() = "GET only\n";
    } else if (target == "/healthz") {
      bool degraded = !metrics_->backend_up.load() && metrics_->spool_bytes.load() > 0;
      nlohmann::json j = {{"status", degraded ? "degraded" : "ok"},
                          {"agents_connected", metrics_->agents_connected.load()},
                          {"backend_up", metrics_->backend_up.load()},
                          {"spool_bytes", metrics_->spool_bytes.load()}};
      res->result(degraded ? http::status::service_unavailable : http::status::ok);
      res->set(http::field::content_type, "application/json");
      res->body() = j.dump() + "\n";
    } else if (target == "/metrics") {
      res->result(http::status::ok);
      res->set(http::field::content_type, "text/plain; version=0.0.4");
      res->body() = MetricsText(*metrics_, *registry_);
    } else {
      res->result(http::status::not_found);
      res->body() = "not found: try /healthz or /metrics\n";
    }
    res->prepare_payload();
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code, size_t) {
      beast::error_code ec;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request_parser<http::string_body> parser_;
  const Metrics* metrics_;
  const AgentRegistry* registry_;
};

}  // namespace

HttpStatus::HttpStatus(asio::io_context& ioc, const Metrics* metrics, const AgentRegistry* registry)
    : ioc_(ioc), metrics_(metrics), registry_(registry), acceptor_(asio::make_strand(ioc)) {}

Status HttpStatus::Listen(const std::string& addr) {
  std::string host;
  uint16_t port;
  Status st = SplitHostPort("http", addr, &host, &port);
  if (!st.ok()) return st;
  beast::error_code ec;
  auto ip = asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument(fmt::format("--http {}: '{}' is not an IP address", addr, host));
  tcp::endpoint ep(ip, port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(64, ec);
  if (ec) return Status::IoError(fmt::format("--http {}: {}", addr, ec.message()));
  DoAccept();
  return Status::Ok();
}

tcp::endpoint HttpStatus::local_endpoint() const {
  beast::error_code ec;
  return acceptor_.local_endpoint(ec);
}

void HttpStatus::DoAccept() {
  acceptor_.async_accept(asio::make_strand(ioc_), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) std::make_shared<StatusSession>(std::move(socket), metrics_, registry_)->Start();
    DoAccept();
  });
}

void HttpStatus::Stop() {
  asio::post(acceptor_.get_executor(), [this] {
    beast::error_code ec;
    acceptor_.close(ec);
  });
}

}  // namespace sidetrace::orchestrator
