#include "backend/http_server.h"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <array>
#include <cstring>
#include <deque>
#include <map>

#include "common/tls/tls_stream.h"
#include "common/util/log.h"

namespace sidetrace::backend {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

namespace {

constexpr size_t kHeaderLimit = 16 * 1024;
// After refusing a body it did not read, the server reads and drops what the
// client still sends, at most this much for at most this long, before closing.
constexpr size_t kDrainMaxBytes = 64 << 20;
constexpr auto kDrainTime = std::chrono::seconds(5);
constexpr size_t kSseBacklog = 1000;
constexpr std::chrono::seconds kSseHeartbeat{15};

}  // namespace

void SseHub::Subscribe(std::weak_ptr<SseSink> sink) {
  std::lock_guard lock(mu_);
  sinks_.push_back(std::move(sink));
}

void SseHub::Publish(const std::string& event, std::string_view data) {
  std::lock_guard lock(mu_);
  if (sinks_.empty()) return;
  auto msg = std::make_shared<const std::string>(fmt::format("event: {}\ndata: {}\n\n", event, data));
  for (auto it = sinks_.begin(); it != sinks_.end();) {
    if (auto s = it->lock()) {
      s->Push(msg);
      ++it;
    } else {
      it = sinks_.erase(it);
    }
  }
}

bool SplitHostPort(const std::string& address, std::string* host, uint16_t* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 >= address.size()) return false;
  std::string h = address.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  char* end = nullptr;
  long p = std::strtol(address.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || p < 0 || p > 65535 || h.empty()) return false;
  *host = h;
  *port = static_cast<uint16_t>(p);
  return true;
}

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& io, ServerOptions o, asio::ssl::context* t, Handler h, Metrics* m, SseHub* hb)
      : io(io), options(std::move(o)), tls(t), handler(std::move(h)), metrics(m), hub(hb),
        acceptor(asio::make_strand(io)) {}

  void Accept();

  asio::io_context& io;
  ServerOptions options;
  asio::ssl::context* tls;
  Handler handler;
  Metrics* metrics;
  SseHub* hub;
  tcp::acceptor acceptor;
  std::atomic<size_t> open{0};
  std::atomic<bool> stopped{false};
};

namespace {

// Common session logic; Derived provides stream(), socket(), Run() and
// DoEof(). A stream with ReadSome() (TlsStream) gets request bodies of known
// length read straight into the body, without Beast's parser in between.
template <class Derived>
class Session : public SseSink {
 public:
  explicit Session(std::shared_ptr<HttpServer::Impl> server) : server_(std::move(server)) {
    server_->open++;
    server_->metrics->connections_open++;
  }
  ~Session() override {
    server_->open--;
    server_->metrics->connections_open--;
    if (sse_) server_->metrics->sse_clients--;
  }

  void Push(std::shared_ptr<const std::string> message) override {
    asio::post(derived().stream().get_executor(),
               [self = derived().shared_from_this(), message = std::move(message)] {
                 self->Enqueue(std::move(message));
               });
  }

 protected:
  Derived& derived() { return static_cast<Derived&>(*this); }

  // The connection's one deadline: armed per request, reply, handshake or
  // shutdown; when it passes, the socket is closed and the pending operation
  // fails. Not beast::tcp_stream's expiry: the stream arms and cancels a
  // timer around every socket read, i.e. per TLS record (~75 per 1.2 MB
  // batch), each a timer-queue update plus a cancelled completion.
  void ArmDeadline(std::chrono::steady_clock::duration timeout) {
    if (!deadline_) deadline_.emplace(derived().stream().get_executor());
    deadline_->expires_after(timeout);
    deadline_->async_wait([weak = derived().weak_from_this()](beast::error_code ec) {
      auto self = weak.lock();
      // A wait that completed just before a re-arm is stale: check the time.
      if (ec || !self || self->deadline_->expiry() > std::chrono::steady_clock::now()) return;
      beast::error_code ignored;
      self->socket().close(ignored);
    });
  }

  // Reads the next request unless one is being read, the pipeline is full
  // or the connection is closing.
  void DoRead() {
    if (reading_ || stop_reading_ || in_flight_ >= server_->options.max_pipeline) return;
    reading_ = true;
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(server_->options.max_body_bytes);
    ArmDeadline(server_->options.read_timeout);
    http::async_read_header(derived().stream(), buffer_, *parser_,
                            beast::bind_front_handler(&Session::OnHeader, derived().shared_from_this()));
  }

  // The header is in: the body gets its whole size (plus the padding) at
  // once, then is read into it.
  void OnHeader(beast::error_code ec, size_t) {
    if (ec || close_after_read_ || parser_->is_done()) return OnRead(ec, 0);
    if (auto length = parser_->content_length(); length && *length <= server_->options.max_body_bytes) {
      if constexpr (kDirectBody) return StartBody(*length);
      parser_->get().body().reserve(*length + server_->options.body_padding);
    }
    http::async_read(derived().stream(), buffer_, *parser_,
                     beast::bind_front_handler(&Session::OnRead, derived().shared_from_this()));
  }

  static constexpr bool kDirectBody = requires(Derived& d, beast::error_code& ec) {
    d.stream().ReadSome(nullptr, size_t{0}, ec);
  };

  // A body of known length: what the header read already buffered, then
  // decrypted straight into the body's storage until it is complete.
  void StartBody(size_t length) {
    body_req_.emplace(parser_->release());
    std::string& body = body_req_->body();
    body.reserve(length + server_->options.body_padding);
    body.resize(length);
    size_t have = std::min(buffer_.size(), length);
    std::memcpy(body.data(), buffer_.data().data(), have);
    buffer_.consume(have);
    body_have_ = have;
    ReadBody();
  }

  void ReadBody() {
    std::string& body = body_req_->body();
    while (body_have_ < body.size()) {
      beast::error_code ec;
      body_have_ += derived().stream().ReadSome(body.data() + body_have_, body.size() - body_have_, ec);
      if (ec == asio::error::would_block) {
        derived().stream().AsyncWait([self = derived().shared_from_this()](beast::error_code ec) {
          if (ec || self->close_after_read_) return self->OnRead(ec, 0);
          self->ReadBody();
        });
        return;
      }
      if (ec) return OnRead(ec, 0);
    }
    Request req = std::move(*body_req_);
    body_req_.reset();
    reading_ = false;
    Dispatch(std::move(req));
  }

  void OnRead(beast::error_code ec, size_t) {
    reading_ = false;
    body_req_.reset();
    if (close_after_read_) return derived().DoEof();
    if (ec == http::error::end_of_stream) {
      stop_reading_ = true;
      if (in_flight_ == 0) derived().DoEof();  // else after the last reply
      return;
    }
    if (ec == http::error::body_limit) {
      server_->metrics->Reject("too_large");
      drain_ = true;
      return SendError(http::status::payload_too_large, "body exceeds the size limit");
    }
    if (ec == http::error::header_limit) return SendError(http::status::request_header_fields_too_large, "headers too large");
    if (ec.category() == http::make_error_code(http::error::bad_method).category())  // HTTP parse error
      return SendError(http::status::bad_request, "malformed HTTP request");
    if (ec) {  // timeout, reset, TLS truncation: drop the connection
      stop_reading_ = true;
      return;
    }
    Dispatch(parser_->release());
  }

  // Hands a complete request to the handler; its reply comes back through
  // OnReply on the connection's executor.
  void Dispatch(Request req) {
    uint64_t seq = next_seq_++;
    ++in_flight_;
    unsigned version = req.version();
    bool keep_alive = req.keep_alive();
    if (!keep_alive) stop_reading_ = true;
    server_->handler(req, [self = derived().shared_from_this(), seq, version, keep_alive](Reply reply) {
      asio::post(self->stream().get_executor(), [self, seq, version, keep_alive, reply = std::move(reply)]() mutable {
        self->OnReply(seq, version, keep_alive, std::move(reply));
      });
    });
    DoRead();  // pipelining: read the next request while this one is handled
  }

  void OnReply(uint64_t seq, unsigned version, bool keep_alive, Reply reply) {
    if (reply.sse && server_->hub) {
      stop_reading_ = true;
      return StartSse();
    }
    reply.response.version(version);
    reply.response.keep_alive(keep_alive && reply.response.keep_alive());
    ready_.emplace(seq, std::move(reply.response));
    WriteReply();
  }

  void SendError(http::status status, const std::string& why) {
    Response res{status, 11};
    res.set(http::field::content_type, "application/json");
    res.body() = std::string("{\"error\":\"") + why + "\"}";
    res.keep_alive(false);
    stop_reading_ = true;
    ++in_flight_;
    ready_.emplace(next_seq_++, std::move(res));
    WriteReply();
  }

  // Writes the reply to the oldest unanswered request once it is ready.
  void WriteReply() {
    if (writing_) return;
    auto it = ready_.find(write_seq_);
    if (it == ready_.end()) return;
    res_ = std::make_shared<Response>(std::move(it->second));
    ready_.erase(it);
    res_->set(http::field::server, "sidetrace-backend");
    res_->prepare_payload();
    writing_ = true;
    ArmDeadline(server_->options.read_timeout);
    http::async_write(derived().stream(), *res_,
                      beast::bind_front_handler(&Session::OnWrite, derived().shared_from_this(),
                                                res_->need_eof()));
  }

  void OnWrite(bool close, beast::error_code ec, size_t) {
    writing_ = false;
    if (ec) return;
    res_.reset();
    ++write_seq_;
    --in_flight_;
    if (close || (stop_reading_ && in_flight_ == 0 && !reading_)) return Close();
    WriteReply();
    DoRead();
  }

  // Ends the connection after the last reply; a read-ahead still pending is
  // cancelled first (a TLS shutdown must not overlap a read).
  void Close() {
    stop_reading_ = true;
    if (!reading_) return drain_ ? Drain(0) : derived().DoEof();
    close_after_read_ = true;
    derived().socket().cancel();
  }

  // A body refused unread (413) may still be arriving: closing now would
  // make the kernel reset the connection and drop the reply before the
  // client reads it. So the rest is read and dropped first, bounded.
  void Drain(size_t drained) {
    if (drained == 0) {
      ArmDeadline(kDrainTime);
      drain_buf_ = std::make_unique<std::array<char, 16384>>();
    }
    derived().stream().async_read_some(
        asio::buffer(*drain_buf_), [self = derived().shared_from_this(), drained](beast::error_code ec, size_t n) {
          if (ec || drained + n > kDrainMaxBytes) return self->derived().DoEof();
          self->Drain(drained + n);
        });
  }

  // --- Server-Sent Events ---
  void StartSse() {
    sse_ = true;
    server_->metrics->sse_clients++;
    Enqueue(std::make_shared<const std::string>(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        "Connection: close\r\nX-Accel-Buffering: no\r\nServer: sidetrace-backend\r\n\r\n"
        "retry: 2000\n: connected\n\n"));
    server_->hub->Subscribe(derived().weak_from_this());
    heartbeat_.emplace(derived().stream().get_executor());
    ArmHeartbeat();
  }

  void ArmHeartbeat() {
    heartbeat_->expires_after(kSseHeartbeat);
    heartbeat_->async_wait([self = derived().shared_from_this()](beast::error_code ec) {
      if (ec || self->closed_) return;
      self->Enqueue(std::make_shared<const std::string>(": heartbeat\n\n"));
      self->ArmHeartbeat();
    });
  }

  void Enqueue(std::shared_ptr<const std::string> message) {
    if (closed_) return;
    if (queue_.size() >= kSseBacklog) {
      // Too slow a reader: drop it rather than buffer without bound.
      CloseSse();
      return;
    }
    queue_.push_back(std::move(message));
    if (queue_.size() == 1) WriteNext();
  }

  void WriteNext() {
    ArmDeadline(server_->options.read_timeout);
    asio::async_write(derived().stream(), asio::buffer(*queue_.front()),
                      [self = derived().shared_from_this()](beast::error_code ec, size_t) {
                        if (ec) return self->CloseSse();
                        self->queue_.pop_front();
                        if (!self->queue_.empty()) self->WriteNext();
                      });
  }

  void CloseSse() {
    if (closed_) return;
    closed_ = true;
    queue_.clear();
    if (heartbeat_) heartbeat_->cancel();
    derived().socket().cancel();
    beast::error_code ec;
    derived().socket().shutdown(tcp::socket::shutdown_both, ec);
  }

  std::shared_ptr<HttpServer::Impl> server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<Request> body_req_;  // its body being read by ReadBody
  size_t body_have_ = 0;
  std::shared_ptr<Response> res_;  // the reply being written
  // Pipelining: requests are numbered as read; replies wait in ready_ until
  // every earlier one was written.
  uint64_t next_seq_ = 0, write_seq_ = 0;
  size_t in_flight_ = 0;  // read and not yet answered
  std::map<uint64_t, Response> ready_;
  bool reading_ = false, writing_ = false;
  bool stop_reading_ = false;     // no more requests on this connection
  bool close_after_read_ = false;  // Close() cancelled a pending read
  bool drain_ = false;             // a refused body may still be arriving
  std::unique_ptr<std::array<char, 16384>> drain_buf_;
  bool sse_ = false;
  bool closed_ = false;
  std::deque<std::shared_ptr<const std::string>> queue_;
  std::optional<asio::steady_timer> heartbeat_;
  std::optional<asio::steady_timer> deadline_;  // see ArmDeadline
};

class PlainSession : public Session<PlainSession>, public std::enable_shared_from_this<PlainSession> {
 public:
  PlainSession(tcp::socket&& socket, std::shared_ptr<HttpServer::Impl> server)
      : Session(std::move(server)), stream_(std::move(socket)) {}
  beast::tcp_stream& stream() { return stream_; }
  tcp::socket& socket() { return stream_.socket(); }
  void Run() {
    asio::dispatch(stream_.get_executor(), beast::bind_front_handler(&PlainSession::DoRead, shared_from_this()));
  }
  void DoEof() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

 private:
  beast::tcp_stream stream_;
};

class TlsSession : public Session<TlsSession>, public std::enable_shared_from_this<TlsSession> {
 public:
  TlsSession(tcp::socket&& socket, asio::ssl::context& ctx, std::shared_ptr<HttpServer::Impl> server)
      : Session(std::move(server)), stream_(std::move(socket), ctx) {}
  tls::TlsStream& stream() { return stream_; }
  tcp::socket& socket() { return stream_.socket(); }
  void Run() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->ArmDeadline(self->server_->options.handshake_timeout);
      self->stream_.async_handshake([self](beast::error_code ec) {
        if (ec) {
          log::Debug("tls handshake failed", "error={}", log::Quote(ec.message()));
          return;
        }
        self->DoRead();
      });
    });
  }
  void DoEof() {
    ArmDeadline(std::chrono::seconds(5));
    stream_.async_shutdown([self = shared_from_this()](beast::error_code) {});
  }

 private:
  tls::TlsStream stream_;
};

}  // namespace

void HttpServer::Impl::Accept() {
  acceptor.async_accept(asio::make_strand(io), [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
    if (self->stopped) return;
    if (!ec) {
      beast::error_code ignored;
      // Replies are small and written once: never hold one back (Nagle).
      socket.set_option(tcp::no_delay(true), ignored);
      if (self->open.load() >= self->options.max_connections) {
        self->metrics->connections_rejected++;
        socket.close(ignored);
      } else if (self->tls) {
        std::make_shared<TlsSession>(std::move(socket), *self->tls, self)->Run();
      } else {
        std::make_shared<PlainSession>(std::move(socket), self)->Run();
      }
    } else if (ec == asio::error::operation_aborted) {
      return;
    }
    self->Accept();
  });
}

HttpServer::HttpServer(asio::io_context& io, ServerOptions options, asio::ssl::context* tls, Handler handler,
                       Metrics* metrics, SseHub* hub)
    : impl_(std::make_shared<Impl>(io, std::move(options), tls, std::move(handler), metrics, hub)) {}

HttpServer::~HttpServer() { Stop(); }

Status HttpServer::Start(const std::string& address) {
  std::string host;
  uint16_t port;
  if (!SplitHostPort(address, &host, &port))
    return Status::InvalidArgument(fmt::format("{}: expected ADDR:PORT, got \"{}\"", impl_->options.name, address));
  beast::error_code ec;
  auto ip = asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument(fmt::format("{}: bad address \"{}\"", impl_->options.name, host));
  tcp::endpoint ep(ip, port);
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IoError(fmt::format("{}: cannot listen on {}: {}", impl_->options.name, address, ec.message()));
  impl_->Accept();
  return Status::Ok();
}

tcp::endpoint HttpServer::local_endpoint() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec);
}

void HttpServer::Stop() {
  if (impl_->stopped.exchange(true)) return;
  asio::post(impl_->acceptor.get_executor(), [impl = impl_] {
    beast::error_code ec;
    impl->acceptor.close(ec);
  });
}

}  // namespace sidetrace::backend
