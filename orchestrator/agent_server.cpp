#include "orchestrator/agent_server.h"

#include <boost/asio/defer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <openssl/crypto.h>

#include <array>
#include <deque>

#include "common/util/log.h"

namespace sidetrace::orchestrator {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using nlohmann::json;

namespace {
using Clock = std::chrono::steady_clock;
constexpr auto kHelloTimeout = std::chrono::seconds(10);
constexpr auto kWriteTimeout = std::chrono::seconds(30);
constexpr auto kLinger = std::chrono::seconds(2);
constexpr size_t kReadBuffer = 16 * 1024;
constexpr size_t kMaxOutbox = 4096;  // frames queued to a slow agent before we give up on it

bool KeyMatches(const std::string& got, const std::string& want) {
  return got.size() == want.size() && CRYPTO_memcmp(got.data(), want.data(), want.size()) == 0;
}
}  // namespace

class Session : public std::enable_shared_from_this<Session> {
 public:
  friend class AgentServer;  // RunCompletions: OnSpooled on the strand

  Session(tcp::socket socket, AgentServer* server, ssl::context* tls)
      : server_(server),
        tls_(tls != nullptr),
        socket_(std::move(socket)),
        watchdog_(socket_.get_executor()),
        started_(Clock::now()),
        last_read_(started_) {
    if (tls != nullptr) stream_ = std::make_unique<ssl::stream<tcp::socket&>>(socket_, *tls);
    beast::error_code ec;
    auto ep = Socket().remote_endpoint(ec);
    peer_ = ec ? "?" : fmt::format("{}:{}", ep.address().to_string(), ep.port());
    Socket().set_option(tcp::no_delay(true), ec);
  }

  ~Session() {
    if (welcomed_) {
      server_->metrics_->agents_connected--;
      server_->registry_->Disconnected(agent_id_);
    }
    server_->Unregister(this);
  }

  void Start() {
    ArmWatchdog();
    if (tls_) {
      stream_->async_handshake(ssl::stream_base::server,
                              [self = shared_from_this()](beast::error_code ec) {
                                if (ec) return self->Close(fmt::format("TLS handshake: {}", ec.message()), false);
                                self->DoRead();
                              });
    } else {
      DoRead();
    }
  }

  // Queues a frame; called on the strand.
  void Send(std::string frame) {
    if (closing_) return;
    if (outbox_.size() >= kMaxOutbox) return Close("agent does not read its acks", false);
    outbox_.push_back(std::move(frame));
    if (!writing_) DoWrite();
  }

  void PushFrame(std::string frame) {
    asio::post(socket_.get_executor(), [self = shared_from_this(), f = std::move(frame)]() mutable {
      if (self->welcomed_) self->Send(std::move(f));
    });
  }

  void Shutdown() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->Close("orchestrator stopping", false); });
  }

 private:
  void DoRead() {
    if (closing_) return;
    waiting_spool_ = false;
    auto handler = [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnRead(ec, n); };
    // Straight into the decoder's buffer, after the partial frame left over.
    auto room = asio::buffer(decoder_.Prepare(kReadBuffer), decoder_.room());
    if (tls_) {
      stream_->async_read_some(room, handler);
    } else {
      Socket().async_read_some(room, handler);
    }
  }

  void OnRead(beast::error_code ec, size_t n) {
    if (closing_) return;
    last_read_ = Clock::now();
    if (ec) {
      return Close(ec == asio::error::eof || ec == ssl::error::stream_truncated ? "agent closed the connection"
                                                                                 : ec.message(),
                   false);
    }
    decoder_.Commit(n);
    // This read's alerts, one JSON text per line, for one spool append. An
    // alert's JSON is about 1.2 times its CBOR (quotes, separators, the
    // agent_id added): one allocation, not much more than needed while a
    // thousand reads wait for the same group commit.
    std::string lines;
    lines.reserve(decoder_.buffered() * 3 / 2 + 512);
    uint64_t count = 0, max_seq = 0;
    for (;;) {
      auto body = decoder_.NextBody();
      if (!body.ok()) {
        server_->metrics_->bad_frames++;
        return Close("bad frame: " + body.status().message(), true);
      }
      if (!body->has_value()) break;
      // Alerts, nearly every frame, go straight from CBOR to JSON text.
      uint64_t seq = 0;
      if (welcomed_ && link::AlertToJson(**body, agent_id_, &seq, &lines)) {
        if (seq <= last_seq_) {
          server_->metrics_->bad_frames++;
          return Close(fmt::format("alert seq {} after seq {}: not increasing", seq, last_seq_), true);
        }
        last_seq_ = max_seq = seq;
        lines += '\n';
        ++count;
        continue;
      }
      auto msg = link::DecodeBody(**body);
      if (!msg.ok()) {
        server_->metrics_->bad_frames++;
        return Close("bad frame: " + msg.status().message(), true);
      }
      link::Message& m = *msg;
      if (!welcomed_) {
        if (m.type != link::MessageType::kHello) {
          server_->metrics_->bad_frames++;
          return Close(fmt::format("expected hello, got {}", link::MessageTypeName(m.type)), true);
        }
        if (!OnHello(m)) return;
        continue;
      }
      switch (m.type) {
        case link::MessageType::kAlert: {
          uint64_t seq = m.body["seq"].get<uint64_t>();
          if (seq <= last_seq_) {
            server_->metrics_->bad_frames++;
            return Close(fmt::format("alert seq {} after seq {}: not increasing", seq, last_seq_), true);
          }
          last_seq_ = max_seq = seq;
          // A batch mixes agents: each alert names its own for the backend.
          json& alert = m.body["alert"];
          if (!alert.contains("agent_id")) alert["agent_id"] = agent_id_;
          lines += link::DumpJson(alert);
          lines += '\n';
          ++count;
          break;
        }
        case link::MessageType::kStats:
          server_->registry_->UpdateStats(agent_id_, std::move(m.body["stats"]));
          break;
        case link::MessageType::kHeartbeat: {
          auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::system_clock::now().time_since_epoch()).count();
          Send(link::EncodeFrame(link::MakeHeartbeat(static_cast<uint64_t>(ns))));
          break;
        }
        default:
          server_->metrics_->bad_frames++;
          return Close(fmt::format("unexpected {} from an agent", link::MessageTypeName(m.type)), true);
      }
    }
    if (count == 0) return DoRead();
    waiting_spool_ = true;
    spooled_seq_ = max_seq;
    spooled_count_ = count;
    // Only `self` captured: small enough for std::function to keep inline.
    server_->spool_->Append(std::move(lines), count, [self = shared_from_this()](bool durable) {
      self->server_->Completed(AgentServer::Completion{self, durable});
    });
  }

  // The spool made this read's alerts durable (or failed to): ack them and
  // read on. Posted to the strand by AgentServer::RunCompletions.
  void OnSpooled(bool durable) {
    if (!durable) return Close("spool write failed; the agent will resend", false);
    server_->metrics_->alerts_in += spooled_count_;
    Send(link::EncodeAckFrame(spooled_seq_));
    DoRead();
  }

  bool OnHello(const link::Message& m) {
    agent_id_ = m.body["agent_id"].get<std::string>();
    if (!KeyMatches(m.body["access_key"].get<std::string>(), server_->config_.access_key)) {
      server_->metrics_->agents_rejected++;
      Close("wrong access key", true);
      return false;
    }
    welcomed_ = true;
    server_->metrics_->agents_connected++;
    server_->registry_->Connected(agent_id_, m.body["hostname"].get<std::string>(),
                                  m.body["version"].get<std::string>(), peer_,
                                  m.body.value("metadata", json::object()));
    log::Info("agent connected", "agent_id={} peer={} hostname={}", log::Quote(agent_id_), peer_,
              log::Quote(m.body["hostname"].get<std::string>()));
    Send(link::EncodeFrame(link::MakeWelcome(*server_->policies(), server_->config_.heartbeat_ms)));
    return true;
  }

  void DoWrite() {
    writing_ = true;
    write_started_ = Clock::now();
    auto handler = [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWrite(ec); };
    if (tls_) {
      asio::async_write(*stream_, asio::buffer(outbox_.front()), handler);
    } else {
      asio::async_write(Socket(), asio::buffer(outbox_.front()), handler);
    }
  }

  void OnWrite(beast::error_code ec) {
    writing_ = false;
    if (ec) {
      outbox_.clear();
      if (!closing_) return Close("write: " + ec.message(), false);
      CloseSocket();
      return;
    }
    outbox_.pop_front();
    if (!outbox_.empty()) return DoWrite();
    if (closing_) Linger();
  }

  // After the reject: half-close, then read and discard until the agent
  // closes too (the watchdog ends this after kLinger). Closing with unread
  // input would send a RST, which can destroy the reject before the agent
  // reads it.
  void Linger() {
    beast::error_code ec;
    if (!tls_) Socket().shutdown(tcp::socket::shutdown_send, ec);
    auto handler = [self = shared_from_this()](beast::error_code e, size_t) {
      if (e) return self->CloseSocket();
      self->Linger();
    };
    // Read into the decoder's room: nothing is decoded any more.
    auto discard = asio::buffer(decoder_.Prepare(kReadBuffer), kReadBuffer);
    if (tls_) {
      stream_->async_read_some(discard, handler);
    } else {
      Socket().async_read_some(discard, handler);
    }
  }

  tcp::socket& Socket() { return socket_; }

  void CloseSocket() {
    beast::error_code ec;
    Socket().close(ec);
    watchdog_.cancel();
  }

  // One timer per session enforces every deadline: hello (and TLS
  // handshake), agent silence (3 heartbeats + 10 s), a write the agent does
  // not drain, and the linger after a reject. A single timer avoids
  // per-operation timeouts that go stale between reads and writes.
  void ArmWatchdog() {
    watchdog_.expires_after(std::chrono::seconds(1));
    watchdog_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || !self->Socket().is_open()) return;
      self->OnWatchdog();
    });
  }

  void OnWatchdog() {
    auto now = Clock::now();
    auto idle_limit = std::chrono::milliseconds(3 * server_->config_.heartbeat_ms) + std::chrono::seconds(10);
    if (closing_) {
      if (now - closing_since_ > kLinger) return CloseSocket();
    } else if (!welcomed_ && now - started_ > kHelloTimeout) {
      return Close("timed out waiting for hello", true);
    } else if (welcomed_ && !waiting_spool_ && now - last_read_ > idle_limit) {
      return Close("agent silent for too long", false);
    } else if (writing_ && now - write_started_ > kWriteTimeout) {
      return Close("agent does not read (write timed out)", false);
    }
    ArmWatchdog();
  }

  // Logs why the connection ends; with `tell`, sends a reject carrying the
  // reason first, so the agent's log says why too.
  void Close(const std::string& reason, bool tell) {
    if (closing_) return;
    if (tell) {
      log::Warn("closing agent connection", "peer={} agent_id={} reason={}", peer_, log::Quote(agent_id_),
                log::Quote(reason));
    } else {
      log::Info("agent disconnected", "peer={} agent_id={} reason={}", peer_, log::Quote(agent_id_),
                log::Quote(reason));
    }
    closing_ = true;
    closing_since_ = Clock::now();
    if (!tell) return CloseSocket();
    // Keep a frame that is being written (its bytes are partly out), drop
    // the rest, then the reject.
    if (writing_) {
      outbox_.erase(outbox_.begin() + 1, outbox_.end());
    } else {
      outbox_.clear();
    }
    outbox_.push_back(link::EncodeFrame(link::MakeReject(reason)));
    if (!writing_) DoWrite();
  }

  AgentServer* server_;
  bool tls_;
  // Plain sessions have no SSL object: asio's costs ~40 KiB per connection
  // (SSL state and its BIO pair), too much for thousands of agents.
  tcp::socket socket_;
  std::unique_ptr<ssl::stream<tcp::socket&>> stream_;  // null without TLS
  asio::steady_timer watchdog_;
  Clock::time_point started_, last_read_, write_started_, closing_since_;
  bool waiting_spool_ = false;  // a read group is in the spool; no read pending
  uint64_t spooled_seq_ = 0;    // while waiting_spool_: that group's last seq
  uint64_t spooled_count_ = 0;  // and its alerts
  std::string peer_;
  std::string agent_id_;
  link::FrameDecoder decoder_;
  std::deque<std::string> outbox_;
  bool writing_ = false;
  bool welcomed_ = false;
  bool closing_ = false;
  uint64_t last_seq_ = 0;
};

AgentServer::AgentServer(asio::io_context& ioc, const Config& config, Spool* spool, AgentRegistry* registry,
                         Metrics* metrics)
    : ioc_(ioc),
      config_(config),
      spool_(spool),
      registry_(registry),
      metrics_(metrics),
      acceptor_(asio::make_strand(ioc)),
      policies_(std::make_shared<const std::vector<link::Policy>>()) {}

AgentServer::~AgentServer() = default;

Status AgentServer::Listen() {
  if (!config_.tls_cert.empty()) {
    tls_ = std::make_unique<ssl::context>(ssl::context::tls_server);
    SSL_CTX_set_min_proto_version(tls_->native_handle(), TLS1_2_VERSION);
    beast::error_code ec;
    tls_->use_certificate_chain_file(config_.tls_cert, ec);
    if (ec) return Status::InvalidArgument(fmt::format("--tls-cert {}: {}", config_.tls_cert, ec.message()));
    tls_->use_private_key_file(config_.tls_key, ssl::context::pem, ec);
    if (ec) return Status::InvalidArgument(fmt::format("--tls-key {}: {}", config_.tls_key, ec.message()));
  }
  std::string host;
  uint16_t port;
  Status st = SplitHostPort("listen", config_.listen, &host, &port);
  if (!st.ok()) return st;
  beast::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument(fmt::format("--listen {}: '{}' is not an IP address", config_.listen, host));
  tcp::endpoint ep(addr, port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IoError(fmt::format("--listen {}: {}", config_.listen, ec.message()));
  DoAccept();
  return Status::Ok();
}

tcp::endpoint AgentServer::local_endpoint() const {
  beast::error_code ec;
  return acceptor_.local_endpoint(ec);
}

void AgentServer::DoAccept() {
  acceptor_.async_accept(asio::make_strand(ioc_), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    {
      std::lock_guard lock(mu_);
      if (stopped_) return;
    }
    if (!ec) {
      metrics_->sessions_total++;
      auto session = std::make_shared<Session>(std::move(socket), this, tls_.get());
      Register(session);
      session->Start();
    } else {
      // EMFILE and friends: log and keep accepting (a short pause would be
      // kinder, but the next accept fails fast and cheaply).
      log::Warn("accept failed", "error={}", log::Quote(ec.message()));
    }
    DoAccept();
  });
}

void AgentServer::Completed(Completion completion) {
  bool first;
  {
    std::lock_guard lock(completions_mu_);
    first = completions_.empty();
    completions_.push_back(std::move(completion));
  }
  if (first) asio::post(ioc_, [this] { RunCompletions(); });
}

void AgentServer::RunCompletions() {
  std::vector<Completion> work;
  {
    std::lock_guard lock(completions_mu_);
    work.swap(completions_);
  }
  // Deferred (a continuation of this handler), these go to this thread's
  // own queue without waking anyone: posted, each would wake the other I/O
  // thread (an eventfd write and an epoll return per agent and round). The
  // scheduler moves them to the shared queue when this handler returns,
  // where the other thread takes its share when it next looks.
  for (Completion& c : work) {
    Session* s = c.session.get();
    asio::defer(s->socket_.get_executor(),
                [c = std::move(c)] { c.session->OnSpooled(c.durable); });
  }
}

void AgentServer::Register(const std::shared_ptr<Session>& session) {
  std::lock_guard lock(mu_);
  sessions_[session.get()] = session;
}

void AgentServer::Unregister(Session* session) {
  std::lock_guard lock(mu_);
  sessions_.erase(session);
}

std::shared_ptr<const std::vector<link::Policy>> AgentServer::policies() const {
  std::lock_guard lock(mu_);
  return policies_;
}

void AgentServer::SetPolicies(std::vector<link::Policy> policies) {
  std::string frame = link::EncodeFrame(link::MakePolicyUpdate(policies));
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(mu_);
    policies_ = std::make_shared<const std::vector<link::Policy>>(std::move(policies));
    for (auto& [ptr, weak] : sessions_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) s->PushFrame(frame);
  metrics_->policy_pushes++;
  log::Info("policies pushed", "sessions={}", live.size());
}

void AgentServer::Stop() {
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    for (auto& [ptr, weak] : sessions_) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  asio::post(acceptor_.get_executor(), [this] {
    beast::error_code ec;
    acceptor_.close(ec);
  });
  for (auto& s : live) s->Shutdown();
}

}  // namespace sidetrace::orchestrator
