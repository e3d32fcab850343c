#include "common/link/agent_link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "common/util/log.h"

namespace sidetrace::link {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::string RandomHex(size_t bytes) {
  std::random_device rd;
  std::string out;
  for (size_t i = 0; i < bytes; ++i) out += fmt::format("{:02x}", rd() & 0xff);
  return out;
}

int MillisUntil(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return ms < 0 ? 0 : static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

std::string SslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return errno != 0 ? std::strerror(errno) : "connection closed";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// Discards a SIGPIPE that a TLS write to a closed socket left pending on this
// thread (OpenSSL writes with write(2), which has no MSG_NOSIGNAL).
void DrainSigpipe() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  timespec zero{};
  while (sigtimedwait(&set, nullptr, &zero) > 0) {
  }
}

// Splits "host:port" or "[v6]:port"; the port defaults to 6667.
Status SplitHostPort(const std::string& addr, std::string* host, std::string* port) {
  if (addr.empty()) return Status::InvalidArgument("orchestrator address is empty (want HOST:PORT)");
  std::string h = addr, p = std::to_string(kDefaultPort);
  if (addr[0] == '[') {
    auto close = addr.find(']');
    if (close == std::string::npos) return Status::InvalidArgument("orchestrator address '" + addr + "': missing ']'");
    h = addr.substr(1, close - 1);
    if (close + 1 < addr.size()) {
      if (addr[close + 1] != ':') return Status::InvalidArgument("orchestrator address '" + addr + "': junk after ']'");
      p = addr.substr(close + 2);
    }
  } else if (auto colon = addr.rfind(':'); colon != std::string::npos) {
    h = addr.substr(0, colon);
    p = addr.substr(colon + 1);
  }
  char* end = nullptr;
  long n = std::strtol(p.c_str(), &end, 10);
  if (h.empty() || p.empty() || *end != '\0' || n < 1 || n > 65535) {
    return Status::InvalidArgument("orchestrator address '" + addr + "': want HOST:PORT with a port 1-65535");
  }
  *host = h;
  *port = p;
  return Status::Ok();
}

}  // namespace

// One TCP (optionally TLS) connection with a non-blocking socket; every
// operation waits with poll() up to a deadline.
class AgentLink::Connection {
 public:
  ~Connection() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (fd_ >= 0) close(fd_);
  }

  static Result<std::unique_ptr<Connection>> Open(const std::string& host, const std::string& port,
                                                  SSL_CTX* ctx, Clock::time_point deadline) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) return Status::Unavailable(fmt::format("resolve {}: {}", host, gai_strerror(rc)));
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
    Status last = Status::Unavailable("no address");
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
      auto conn = std::make_unique<Connection>();
      conn->fd_ = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
      if (conn->fd_ < 0) {
        last = Status::IoError(fmt::format("socket: {}", std::strerror(errno)));
        continue;
      }
      int one = 1;
      setsockopt(conn->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      setsockopt(conn->fd_, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
      if (connect(conn->fd_, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
        last = Status::Unavailable(fmt::format("connect: {}", std::strerror(errno)));
        continue;
      }
      pollfd p{conn->fd_, POLLOUT, 0};
      int n = poll(&p, 1, MillisUntil(deadline));
      int err = 0;
      socklen_t len = sizeof err;
      if (n <= 0) {
        last = Status::Unavailable("connect: timed out");
        continue;
      }
      getsockopt(conn->fd_, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        last = Status::Unavailable(fmt::format("connect: {}", std::strerror(err)));
        continue;
      }
      if (ctx != nullptr) {
        Status st = conn->Handshake(host, ctx, deadline);
        if (!st.ok()) return st;
      }
      return conn;
    }
    return last;
  }

  Status WriteAll(std::string_view data, Clock::time_point deadline) {
    while (!data.empty()) {
      ssize_t n;
      short want = POLLOUT;
      if (ssl_ != nullptr) {
        ERR_clear_error();
        int r = SSL_write(ssl_, data.data(), static_cast<int>(std::min<size_t>(data.size(), 1 << 20)));
        if (r > 0) {
          n = r;
        } else {
          int e = SSL_get_error(ssl_, r);
          if (e == SSL_ERROR_WANT_READ) want = POLLIN;
          else if (e != SSL_ERROR_WANT_WRITE) {
            DrainSigpipe();
            return Status::Unavailable("tls write: " + SslError());
          }
          n = -1;
        }
      } else {
        n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
          return Status::Unavailable(fmt::format("write: {}", std::strerror(errno)));
        }
      }
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      pollfd p{fd_, want, 0};
      if (poll(&p, 1, MillisUntil(deadline)) == 0) return Status::Unavailable("write: timed out");
    }
    return Status::Ok();
  }

  // Reads what is available: >0 bytes, 0 when nothing is (would block), or an
  // error on EOF / failure.
  Result<size_t> Read(char* buf, size_t size) {
    if (ssl_ != nullptr) {
      ERR_clear_error();
      int r = SSL_read(ssl_, buf, static_cast<int>(size));
      if (r > 0) return static_cast<size_t>(r);
      int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return size_t{0};
      if (e == SSL_ERROR_ZERO_RETURN) return Status::Unavailable("orchestrator closed the connection");
      return Status::Unavailable("tls read: " + SslError());
    }
    ssize_t n = recv(fd_, buf, size, 0);
    if (n > 0) return static_cast<size_t>(n);
    if (n == 0) return Status::Unavailable("orchestrator closed the connection");
    if (errno == EAGAIN || errno == EINTR) return size_t{0};
    return Status::Unavailable(fmt::format("read: {}", std::strerror(errno)));
  }

  bool Pending() const { return ssl_ != nullptr && SSL_pending(ssl_) > 0; }
  int fd() const { return fd_; }

 private:
  Status Handshake(const std::string& host, SSL_CTX* ctx, Clock::time_point deadline) {
    ssl_ = SSL_new(ctx);
    if (ssl_ == nullptr) return Status::Internal("SSL_new: " + SslError());
    SSL_set_fd(ssl_, fd_);
    SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    in6_addr ip6;
    in_addr ip4;
    bool is_ip = inet_pton(AF_INET, host.c_str(), &ip4) == 1 || inet_pton(AF_INET6, host.c_str(), &ip6) == 1;
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl_, host.c_str());
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
    }
    for (;;) {
      ERR_clear_error();
      int r = SSL_connect(ssl_);
      if (r == 1) return Status::Ok();
      int e = SSL_get_error(ssl_, r);
      short want;
      if (e == SSL_ERROR_WANT_READ) want = POLLIN;
      else if (e == SSL_ERROR_WANT_WRITE) want = POLLOUT;
      else {
        long verify = SSL_get_verify_result(ssl_);
        DrainSigpipe();
        if (verify != X509_V_OK) {
          return Status::Unavailable(fmt::format("tls handshake: certificate verification failed: {}",
                                                 X509_verify_cert_error_string(verify)));
        }
        return Status::Unavailable("tls handshake: " + SslError());
      }
      pollfd p{fd_, want, 0};
      if (poll(&p, 1, MillisUntil(deadline)) == 0) return Status::Unavailable("tls handshake: timed out");
    }
  }

  int fd_ = -1;
  SSL* ssl_ = nullptr;
};

AgentLink::AgentLink(Options options) : options_(std::move(options)), heartbeat_(options_.heartbeat) {
  if (options_.agent_id.empty()) options_.agent_id = RandomHex(16);
  if (options_.hostname.empty()) {
    char buf[256] = {};
    gethostname(buf, sizeof buf - 1);
    options_.hostname = buf;
  }
  if (options_.queue_max == 0) options_.queue_max = 1;
}

AgentLink::~AgentLink() {
  Stop();
  if (ssl_ctx_ != nullptr) SSL_CTX_free(static_cast<SSL_CTX*>(ssl_ctx_));
  if (wake_fd_ >= 0) close(wake_fd_);
}

void AgentLink::SetPolicyCallback(PolicyCallback callback) { on_policies_ = std::move(callback); }

Status AgentLink::Start() {
  Status st = SplitHostPort(options_.orchestrator, &host_, &port_);
  if (!st.ok()) return st;
  if (options_.tls) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr) return Status::Internal("SSL_CTX_new: " + SslError());
    ssl_ctx_ = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    int ok = options_.ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx)
                                      : SSL_CTX_load_verify_locations(ctx, options_.ca_file.c_str(), nullptr);
    if (ok != 1) {
      return Status::InvalidArgument(fmt::format("--ca-file {}: cannot load CA certificates: {}",
                                                 options_.ca_file, SslError()));
    }
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) return Status::IoError(fmt::format("eventfd: {}", std::strerror(errno)));
  // The thread inherits a full signal mask: process-directed signals go to
  // the agent's init loop, never to this thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] { Run(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return Status::Ok();
}

void AgentLink::SubmitAlert(json alert) {
  auto shared = std::make_shared<const json>(std::move(alert));
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= options_.queue_max) {
      queue_.pop_front();
      ++counters_.dropped;
      stats_dirty_ = true;
    }
    queue_.push_back(Entry{next_seq_++, std::move(shared)});
    ++counters_.submitted;
  }
  Wake();
}

void AgentLink::UpdateStats(json stats) {
  std::lock_guard lock(mu_);
  user_stats_ = std::move(stats);
  stats_dirty_ = true;
}

bool AgentLink::Flush(std::chrono::milliseconds timeout) {
  ++flushing_;
  if (wake_fd_ >= 0) Wake();
  std::unique_lock lock(mu_);
  // Stats are written by the link thread, which signals cv_ when it does.
  bool done = cv_.wait_for(lock, timeout, [&] {
    return (queue_.empty() && (!stats_dirty_ || !counters_.connected)) || stop_;
  });
  --flushing_;
  return done && queue_.empty();
}

void AgentLink::Stop() {
  {
    // Under mu_, so that a waiter between its predicate check and its wait
    // cannot miss the notification.
    std::lock_guard lock(mu_);
    if (stop_.exchange(true)) return;
  }
  cv_.notify_all();
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
}

AgentLink::Counters AgentLink::counters() const {
  std::lock_guard lock(mu_);
  Counters c = counters_;
  c.queued = queue_.size();
  return c;
}

void AgentLink::Wake() {
  // One eventfd write per burst: the link thread clears the flag before it
  // drains the queue, so an alert queued after that wakes it again.
  if (!wake_pending_.exchange(true)) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
  }
}

void AgentLink::SleepFor(std::chrono::milliseconds delay) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, delay, [&] { return stop_.load(); });
}

json AgentLink::StatsSnapshot() {
  std::lock_guard lock(mu_);
  json stats = user_stats_.is_object() ? user_stats_ : json::object();
  stats["link"] = {{"alerts_submitted", counters_.submitted}, {"alerts_sent", counters_.sent},
                   {"alerts_resent", counters_.resent},       {"alerts_acked", counters_.acked},
                   {"alerts_dropped", counters_.dropped},     {"alerts_queued", queue_.size()},
                   {"connects", counters_.connects}};
  stats_dirty_ = false;
  return stats;
}

void AgentLink::Run() {
  std::mt19937_64 rng(std::random_device{}());
  int attempt = 0;
  std::string last_error;
  while (!stop_) {
    uint64_t connects_before = counters().connects;
    Status st = Session();
    {
      std::lock_guard lock(mu_);
      counters_.connected = false;
    }
    if (stop_) break;
    if (counters().connects != connects_before) attempt = 0;
    if (st.message() != last_error) {
      log::Warn("orchestrator link down", "addr={} reason={}", options_.orchestrator, log::Quote(st.message()));
      last_error = st.message();
    }
    // Exponential backoff with "equal jitter": half fixed, half random, so a
    // fleet of agents restarted together does not reconnect in lockstep.
    auto cap = options_.backoff_max.count();
    auto delay = std::min<int64_t>(cap, options_.backoff_initial.count() << std::min(attempt, 20));
    ++attempt;
    std::uniform_int_distribution<int64_t> jitter(0, std::max<int64_t>(1, delay / 2));
    SleepFor(std::chrono::milliseconds(delay / 2 + jitter(rng)));
  }
}

Status AgentLink::Session() {
  auto deadline = Clock::now() + options_.io_timeout;
  auto opened = Connection::Open(host_, port_, static_cast<SSL_CTX*>(ssl_ctx_), deadline);
  if (!opened.ok()) return opened.status();
  Connection& conn = **opened;
  FrameDecoder decoder;
  Status st = conn.WriteAll(EncodeFrame(MakeHello(options_.agent_id, options_.version, options_.access_key,
                                                  options_.hostname, options_.metadata)),
                            deadline);
  if (!st.ok()) return st;

  bool welcomed = false;
  auto last_rx = Clock::now();
  auto next_heartbeat = Clock::now() + heartbeat_;
  auto next_stats = Clock::now();
  char buf[64 * 1024];
  std::string out;
  std::vector<Entry> batch;
  while (!stop_) {
    // 1. Read and handle whatever arrived.
    for (;;) {
      auto n = conn.Read(buf, sizeof buf);
      if (!n.ok()) return n.status();
      if (*n == 0) break;
      last_rx = Clock::now();
      decoder.Append(buf, *n);
      for (;;) {
        auto msg = decoder.Next();
        if (!msg.ok()) return Status::Unavailable("bad frame from orchestrator: " + msg.status().message());
        if (!msg->has_value()) break;
        if (!welcomed) {
          if ((*msg)->type == MessageType::kReject) {
            std::lock_guard lock(mu_);
            ++counters_.rejects;
            return Status::PermissionDenied("orchestrator rejected us: " + (*msg)->body["reason"].get<std::string>());
          }
          if ((*msg)->type != MessageType::kWelcome) {
            return Status::Unavailable(fmt::format("expected welcome, got {}", MessageTypeName((*msg)->type)));
          }
          welcomed = true;
          auto settings = (*msg)->body.value("settings", json::object());
          if (settings.contains("heartbeat_ms") && settings["heartbeat_ms"].is_number_unsigned() &&
              settings["heartbeat_ms"].get<uint64_t>() >= 100) {
            heartbeat_ = std::chrono::milliseconds(settings["heartbeat_ms"].get<uint64_t>());
          }
          {
            std::lock_guard lock(mu_);
            ++counters_.connects;
            counters_.connected = true;
            // Everything still queued was not acked: send it (again).
            sent_upto_ = queue_.empty() ? next_seq_ - 1 : queue_.front().seq - 1;
            stats_dirty_ = true;
          }
          log::Info("orchestrator link up", "addr={} agent_id={}", options_.orchestrator, options_.agent_id);
          auto policies = PoliciesOf(**msg);
          if (!policies.empty() && on_policies_) on_policies_(std::move(policies));
          continue;
        }
        st = HandleMessage(**msg, conn);
        if (!st.ok()) return st;
      }
    }
    if (!welcomed) {
      if (Clock::now() > deadline) return Status::Unavailable("no welcome from the orchestrator in time");
    } else {
      // 2. Send new alerts, stats and heartbeats.
      wake_pending_ = false;
      uint64_t wake_value;
      (void)!read(wake_fd_, &wake_value, sizeof wake_value);
      out.clear();
      batch.clear();
      bool want_stats = false;
      {
        std::lock_guard lock(mu_);
        if (!queue_.empty()) {
          size_t first = sent_upto_ >= queue_.front().seq ? sent_upto_ - queue_.front().seq + 1 : 0;
          for (size_t i = first; i < queue_.size() && batch.size() < 512; ++i) batch.push_back(queue_[i]);
        }
        want_stats = stats_dirty_;
      }
      uint64_t resent = 0, max_sent = 0;
      for (const Entry& e : batch) {
        out += EncodeFrame(MakeAlert(e.seq, *e.alert));
        max_sent = e.seq;
        if (e.seq <= highest_sent_) ++resent;
      }
      auto now = Clock::now();
      bool stats_written = false;
      if (want_stats && (now >= next_stats || flushing_ > 0)) {
        out += EncodeFrame(MakeStats(StatsSnapshot()));
        next_stats = now + options_.stats_interval;
        stats_written = true;
      }
      if (now >= next_heartbeat) {
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count();
        out += EncodeFrame(MakeHeartbeat(static_cast<uint64_t>(ns)));
        next_heartbeat = now + heartbeat_;
      }
      if (!out.empty()) {
        st = conn.WriteAll(out, Clock::now() + options_.io_timeout);
        if (!st.ok()) return st;
        if (stats_written) {
          std::lock_guard lock(mu_);  // see Stop(): no waiter misses it
          cv_.notify_all();
        }
        if (!batch.empty()) {
          std::lock_guard lock(mu_);
          sent_upto_ = std::max(sent_upto_, max_sent);
          highest_sent_ = std::max(highest_sent_, max_sent);
          counters_.sent += batch.size();
          counters_.resent += resent;
        }
        if (batch.size() == 512) continue;  // more may be waiting: no poll
      }
      // An orchestrator that stopped answering heartbeats is gone even if
      // TCP has not noticed (a load balancer can hold a dead flow open).
      if (now - last_rx > 3 * heartbeat_ + options_.io_timeout) {
        return Status::Unavailable("orchestrator silent for too long");
      }
    }
    // 3. Wait for input, a new alert, or the next timer.
    if (conn.Pending()) continue;
    pollfd fds[2] = {{conn.fd(), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int timeout = welcomed ? MillisUntil(std::min(next_heartbeat, next_stats)) : MillisUntil(deadline);
    poll(fds, 2, std::max(timeout, 10));
  }
  return Status::Ok();
}

Status AgentLink::HandleMessage(const Message& message, Connection&) {
  switch (message.type) {
    case MessageType::kAck: {
      uint64_t seq = message.body["seq"].get<uint64_t>();
      std::lock_guard lock(mu_);
      if (seq >= next_seq_) return Status::Unavailable(fmt::format("ack {} for an alert never sent", seq));
      while (!queue_.empty() && queue_.front().seq <= seq) {
        queue_.pop_front();
        ++counters_.acked;
      }
      if (queue_.empty()) cv_.notify_all();
      return Status::Ok();
    }
    case MessageType::kHeartbeat:
      return Status::Ok();
    case MessageType::kPolicyUpdate: {
      {
        std::lock_guard lock(mu_);
        ++counters_.policy_updates;
      }
      log::Info("policy update received", "policies={}", message.body["policies"].size());
      if (on_policies_) on_policies_(PoliciesOf(message));
      return Status::Ok();
    }
    case MessageType::kReject:
      return Status::PermissionDenied("orchestrator rejected us: " + message.body["reason"].get<std::string>());
    default:
      return Status::Unavailable(fmt::format("unexpected {} from the orchestrator", MessageTypeName(message.type)));
  }
}

}  // namespace sidetrace::link
