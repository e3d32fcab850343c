#include "common/ecs/http_get.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include <charconv>
#include <optional>

namespace sidetrace::ecs {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

Result<HttpUrl> ParseHttpUrl(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    return Status::InvalidArgument(fmt::format("metadata URL \"{}\": only http:// is supported", url));
  }
  std::string_view rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  HttpUrl out;
  out.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return Status::InvalidArgument(fmt::format("metadata URL \"{}\": unterminated IPv6 address", url));
    }
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') {
        return Status::InvalidArgument(fmt::format("metadata URL \"{}\": bad port", url));
      }
      port = after.substr(1);
    }
  } else if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) {
    return Status::InvalidArgument(fmt::format("metadata URL \"{}\": no host", url));
  }
  if (!port.empty()) {
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || ptr != port.data() + port.size() || value == 0 || value > 65535) {
      return Status::InvalidArgument(fmt::format("metadata URL \"{}\": bad port \"{}\"", url, port));
    }
    out.port = static_cast<uint16_t>(value);
  }
  out.host = host == "localhost" ? "127.0.0.1" : std::string(host);
  boost::system::error_code ec;
  asio::ip::make_address(out.host, ec);
  if (ec) {
    return Status::InvalidArgument(
        fmt::format("metadata URL \"{}\": host must be an IP address, not \"{}\"", url, host));
  }
  return out;
}

void HttpCanceller::Cancel() {
  // stop_ runs under the lock: Detach() takes it too, so the io_context that
  // stop_ points at cannot be destroyed while it runs.
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  if (stop_) stop_();
}

bool HttpCanceller::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

bool HttpCanceller::Attach(std::function<void()> stop) {
  std::lock_guard<std::mutex> lock(mu_);
  if (cancelled_) return false;
  stop_ = std::move(stop);
  return true;
}

void HttpCanceller::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = nullptr;
}

Result<std::string> HttpGet(std::string_view url, std::chrono::milliseconds timeout,
                            HttpCanceller* canceller, size_t max_body_bytes) {
  Result<HttpUrl> parsed = ParseHttpUrl(url);
  if (!parsed.ok()) return parsed.status();
  const HttpUrl& u = *parsed;

  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  beast::flat_buffer buffer;
  http::request<http::empty_body> request{http::verb::get, u.target, 11};
  std::string host_header = u.host.find(':') != std::string::npos ? "[" + u.host + "]" : u.host;
  if (u.port != 80) host_header += ":" + std::to_string(u.port);
  request.set(http::field::host, host_header);
  request.set(http::field::user_agent, "sidetrace/" SIDETRACE_VERSION);
  request.set(http::field::connection, "close");
  http::response_parser<http::string_body> parser;
  parser.body_limit(max_body_bytes);

  // One deadline for the whole exchange: tcp_stream applies the expiry to
  // every asynchronous operation started until it is changed.
  stream.expires_after(timeout);
  std::optional<beast::error_code> done;
  const char* step = "connect";
  asio::ip::tcp::endpoint endpoint(asio::ip::make_address(u.host), u.port);
  stream.async_connect(endpoint, [&](beast::error_code ec) {
    if (ec) { done = ec; return; }
    step = "send request";
    http::async_write(stream, request, [&](beast::error_code ec, size_t) {
      if (ec) { done = ec; return; }
      step = "read response";
      http::async_read(stream, buffer, parser, [&](beast::error_code ec, size_t) { done = ec; });
    });
  });

  if (canceller != nullptr && !canceller->Attach([&ioc] { ioc.stop(); })) {
    return Status::Unavailable(fmt::format("GET {}: cancelled", url));
  }
  // The guard below bounds run() even if a handler misbehaves; the stream's
  // own timer normally ends the exchange first.
  ioc.run_for(timeout + std::chrono::milliseconds(100));
  if (canceller != nullptr) canceller->Detach();

  if (!done.has_value()) {
    if (canceller != nullptr && canceller->cancelled()) {
      return Status::Unavailable(fmt::format("GET {}: cancelled", url));
    }
    return Status::Unavailable(fmt::format("GET {}: timed out after {} ms ({})", url,
                                           timeout.count(), step));
  }
  if (*done) {
    if (*done == beast::error::timeout) {
      return Status::Unavailable(fmt::format("GET {}: timed out after {} ms ({})", url,
                                             timeout.count(), step));
    }
    return Status::Unavailable(fmt::format("GET {}: {}: {}", url, step, done->message()));
  }
  const auto& response = parser.get();
  unsigned status = response.result_int();
  if (status < 200 || status > 299) {
    return Status::Unavailable(fmt::format("GET {}: HTTP {}", url, status));
  }
  return std::string(response.body());
}

}  // namespace sidetrace::ecs
