#include "backend/forwarder.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "common/tls/tls.h"
#include "common/util/log.h"

namespace sidetrace::backend {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct Forwarder::Target {
  std::string url, host, port, path;
  bool https = false;
  ForwarderOptions options;
  Metrics* metrics = nullptr;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<const std::string>> queue;  // GUARDED_BY(mu)
  bool stop = false;                                      // GUARDED_BY(mu)
  std::thread worker;

  // Worker-thread state.
  asio::io_context io;
  std::optional<asio::ssl::context> tls_ctx;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;

  void Run();
  bool Post(const std::string& body);
  bool Connect();
  void Disconnect() {
    plain.reset();
    secure.reset();
    buffer.clear();
  }
  bool Stopping() {
    std::lock_guard lock(mu);
    return stop;
  }
  // Runs the io_context until the started operation completes.
  void Drive() {
    io.restart();
    io.run();
  }
};

namespace {

bool ParseUrl(const std::string& url, Forwarder::Target* t) {
  std::string rest;
  if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    rest = url.substr(8);
    t->https = true;
  } else {
    return false;
  }
  size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  t->path = slash == std::string::npos ? "/" : rest.substr(slash);
  if (!hostport.empty() && hostport[0] == '[') {
    size_t rb = hostport.find(']');
    if (rb == std::string::npos) return false;
    t->host = hostport.substr(1, rb - 1);
    if (rb + 1 < hostport.size() && hostport[rb + 1] == ':') t->port = hostport.substr(rb + 2);
  } else if (size_t colon = hostport.rfind(':'); colon != std::string::npos) {
    t->host = hostport.substr(0, colon);
    t->port = hostport.substr(colon + 1);
  } else {
    t->host = hostport;
  }
  if (t->port.empty()) t->port = t->https ? "443" : "80";
  return !t->host.empty() && !t->port.empty();
}

}  // namespace

Result<std::unique_ptr<Forwarder>> Forwarder::Create(const std::vector<std::string>& urls, ForwarderOptions options,
                                                     Metrics* metrics) {
  std::unique_ptr<Forwarder> f(new Forwarder());
  for (const auto& url : urls) {
    auto t = std::make_unique<Target>();
    t->url = url;
    t->options = options;
    t->metrics = metrics;
    if (!ParseUrl(url, t.get()))
      return Status::InvalidArgument(fmt::format("--forward-webhook: not an http(s) URL: \"{}\"", url));
    if (t->https) {
      tls::ClientConfig cc;
      auto ctx = tls::MakeClientContext(cc);
      if (!ctx.ok()) return ctx.status();
      t->tls_ctx.emplace(std::move(ctx.value()));
    }
    f->targets_.push_back(std::move(t));
  }
  for (auto& t : f->targets_) t->worker = std::thread([t = t.get()] { t->Run(); });
  return f;
}

Forwarder::~Forwarder() { Stop(); }

void Forwarder::Enqueue(std::shared_ptr<const std::string> alert_json) {
  for (auto& t : targets_) {
    {
      std::lock_guard lock(t->mu);
      if (t->stop || t->queue.size() >= t->options.queue_max) {
        t->metrics->forward_dropped++;
        continue;
      }
      t->queue.push_back(alert_json);
      t->metrics->forward_queue++;
    }
    t->cv.notify_one();
  }
}

void Forwarder::Stop() {
  for (auto& t : targets_) {
    {
      std::lock_guard lock(t->mu);
      t->stop = true;
    }
    t->cv.notify_one();
  }
  for (auto& t : targets_) {
    if (t->worker.joinable()) t->worker.join();
    std::lock_guard lock(t->mu);
    t->metrics->forward_dropped += t->queue.size();
    t->metrics->forward_queue -= t->queue.size();
    t->queue.clear();
  }
}

void Forwarder::Target::Run() {
  for (;;) {
    std::shared_ptr<const std::string> item;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return stop || !queue.empty(); });
      if (stop) return;
      item = queue.front();
    }
    bool delivered = false;
    auto backoff = std::chrono::milliseconds(200);
    for (int attempt = 1; attempt <= options.max_attempts && !delivered; ++attempt) {
      delivered = Post(*item);
      if (delivered) break;
      metrics->forward_failed++;
      Disconnect();
      if (attempt == options.max_attempts) break;
      std::unique_lock lock(mu);
      if (cv.wait_for(lock, backoff, [&] { return stop; })) return;
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
    {
      std::lock_guard lock(mu);
      queue.pop_front();
      metrics->forward_queue--;
    }
    if (delivered) {
      metrics->forward_sent++;
    } else {
      metrics->forward_dropped++;
      log::Warn("webhook delivery failed, alert dropped", "url={}", log::Quote(url));
    }
  }
}

bool Forwarder::Target::Connect() {
  auto timeout = std::chrono::milliseconds(options.timeout_ms);
  tcp::resolver resolver(io);
  beast::error_code ec;
  auto results = resolver.resolve(host, port, ec);
  if (ec) return false;
  beast::tcp_stream* lowest;
  if (https) {
    secure.emplace(io, *tls_ctx);
    if (!tls::SetPeerName(secure->native_handle(), host).ok()) return false;
    lowest = &beast::get_lowest_layer(*secure);
  } else {
    plain.emplace(io);
    lowest = &*plain;
  }
  lowest->expires_after(timeout);
  lowest->async_connect(results, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
  Drive();
  if (ec) return false;
  if (https) {
    lowest->expires_after(timeout);
    secure->async_handshake(asio::ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
    Drive();
    if (ec) return false;
  }
  return true;
}

bool Forwarder::Target::Post(const std::string& body) {
  if (!plain && !secure && !Connect()) return false;
  http::request<http::string_body> req{http::verb::post, path, 11};
  req.set(http::field::host, host);
  req.set(http::field::user_agent, "sidetrace-backend");
  req.set(http::field::content_type, "application/json");
  req.keep_alive(true);
  req.body() = body;
  req.prepare_payload();
  http::response<http::string_body> res;
  beast::error_code ec;
  auto timeout = std::chrono::milliseconds(options.timeout_ms);
  auto exchange = [&](auto& stream) {
    beast::get_lowest_layer(stream).expires_after(timeout);
    http::async_write(stream, req, [&](beast::error_code e, size_t) { ec = e; });
    Drive();
    if (ec) return;
    beast::get_lowest_layer(stream).expires_after(timeout);
    http::async_read(stream, buffer, res, [&](beast::error_code e, size_t) { ec = e; });
    Drive();
  };
  if (https) exchange(*secure); else exchange(*plain);
  if (ec) return false;
  if (!res.keep_alive()) Disconnect();
  return res.result_int() >= 200 && res.result_int() < 300;
}

}  // namespace sidetrace::backend
