// HttpServer: an HTTP/1.1 server on Boost.Beast, over TLS or plain TCP, and
// SseHub, the fan-out of live alerts to Server-Sent-Events clients.
//
// Shape (after Beast's advanced_server_flex example; TLS through TlsStream,
// see tls_stream.h): a listener accepts on a strand per connection; a
// session reads requests with a deadline (read_timeout, so slow-loris
// clients and idle keep-alive connections are closed), a header cap (16
// KiB) and a body cap (max_body_bytes, over it: 413 and close; a TLS body
// of known length is decrypted straight into the request's body), hands
// each to the handler, and writes the replies while
// keep-alive holds. The handler answers through a callback, from any
// thread, so a slow reply (an ingest commit) does not hold an I/O thread.
// HTTP/1.1 pipelining: up to max_pipeline requests of one connection are
// read and handed to the handler before the first is answered; replies are
// always written in request order. TLS sessions handshake under
// handshake_timeout and end with a TLS close_notify. At max_connections the
// listener closes new connections at once (counted in metrics).
//
// A handler may turn its connection into an event stream (Reply::sse): the
// session then writes "text/event-stream" headers and every message the hub
// publishes, plus a comment line every 15 s so that dead peers are noticed.
// A client that falls 1,000 messages behind is disconnected; it never slows
// ingest.
//
// Thread-safety: Start/Stop from one thread; the handler is called on the
// connection's strand, concurrently for different connections. SseHub
// methods are thread-safe.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>

#include "backend/metrics.h"
#include "common/util/status.h"

namespace sidetrace::backend {

namespace http = boost::beast::http;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

struct Reply {
  Response response;
  bool sse = false;  // switch the connection to an event stream (REQUIRES: max_pipeline == 1)
};
// Called exactly once per request, from any thread.
using Respond = std::function<void(Reply reply)>;
using Handler = std::function<void(Request& request, Respond respond)>;

// Receives published messages on behalf of one SSE connection.
class SseSink {
 public:
  virtual ~SseSink() = default;
  virtual void Push(std::shared_ptr<const std::string> message) = 0;
};

class SseHub {
 public:
  void Subscribe(std::weak_ptr<SseSink> sink);
  // Sends `event` with `data` (one line of JSON) to every live subscriber.
  void Publish(const std::string& event, std::string_view data);

 private:
  std::mutex mu_;
  std::list<std::weak_ptr<SseSink>> sinks_;  // GUARDED_BY(mu_)
};

struct ServerOptions {
  std::string name;  // "ingest" or "http", in logs
  size_t max_body_bytes = 16 << 20;
  size_t max_connections = 256;
  std::chrono::seconds read_timeout{30};
  std::chrono::seconds handshake_timeout{10};
  size_t max_pipeline = 1;  // requests read ahead of their replies, per connection
  // Spare capacity reserved after a request body of known length, for a
  // handler whose parser reads past the end (simdjson): it parses in place.
  size_t body_padding = 0;
};

class HttpServer {
 public:
  // `tls` may be null (plain HTTP); it must outlive the server. `hub` may be
  // null when no handler of this server asks for SSE.
  HttpServer(boost::asio::io_context& io, ServerOptions options, boost::asio::ssl::context* tls,
             Handler handler, Metrics* metrics, SseHub* hub);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens on host:port ("0.0.0.0:6443", "[::1]:0"), then accepts.
  Status Start(const std::string& address);
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  // Stops accepting; open connections end at their next timeout or when the
  // io_context stops.
  void Stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// Splits "host:port" / "[v6]:port". False when malformed.
bool SplitHostPort(const std::string& address, std::string* host, uint16_t* port);

}  // namespace sidetrace::backend
