#include "orchestrator/forwarder.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/version.hpp>
#include <nlohmann/json.hpp>
#include <openssl/ssl.h>
#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>

#include "common/tls/tls.h"
#include "common/tls/tls_stream.h"
#include "common/util/log.h"

namespace sidetrace::orchestrator {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

namespace {
constexpr auto kIoTimeout = std::chrono::seconds(15);
constexpr auto kHeaderFirstWait = std::chrono::milliseconds(300);
constexpr const char* kBatchTarget = "/api/v1/events:batch";
}  // namespace

struct BackendClient::Impl {
  explicit Impl(const Config& c) : config(c), ctx(ssl::context::tls_client), deadline(ioc) {}

  // Runs one async operation to completion on this thread's io_context; its
  // end cancels the deadline (which would otherwise keep run() busy).
  template <typename Start>
  beast::error_code Run(Start&& start) {
    beast::error_code result = asio::error::would_block;
    if (aborted) return asio::error::operation_aborted;
    start([this, &result](beast::error_code ec, auto&&...) {
      result = ec;
      deadline.cancel();
    });
    ioc.restart();
    ioc.run();
    if (result == asio::error::would_block) result = asio::error::operation_aborted;
    return result;
  }

  // Closes the connection when the operations started next take longer
  // than kIoTimeout together (the socket's close fails them).
  void ArmDeadline(tcp::socket* socket) {
    deadline.expires_after(kIoTimeout);
    deadline.async_wait([socket](beast::error_code ec) {
      if (!ec) socket->close(ec);
    });
  }

  Status Connect() {
    stream.reset();
    tcp::resolver resolver(ioc);
    tcp::resolver::results_type endpoints;
    beast::error_code ec = Run([&](auto handler) {
      resolver.async_resolve(host, std::to_string(port),
                             [&endpoints, handler](beast::error_code e, tcp::resolver::results_type r) mutable {
                               endpoints = std::move(r);
                               handler(e);
                             });
    });
    if (ec) return Status::Unavailable(fmt::format("resolve {}: {}", host, ec.message()));
    tcp::socket socket(ioc);
    ArmDeadline(&socket);
    ec = Run([&](auto handler) {
      asio::async_connect(socket, endpoints,
                          [handler](beast::error_code e, const tcp::endpoint&) mutable { handler(e); });
    });
    if (ec) return Status::Unavailable(fmt::format("connect {}:{}: {}", host, port, ec.message()));
    // The header and the first body bytes share a record; the rest follows
    // at once. Nagle would hold the rest for the delayed ACK of the first.
    socket.set_option(tcp::no_delay(true), ec);
    stream.emplace(std::move(socket), ctx, tls::TlsStream::Role::kClient);
    // SNI for a host name; the certificate must name the host (DNS SAN) or
    // the address (IP SAN).
    if (Status st = tls::SetPeerName(stream->native_handle(), host); !st.ok()) return st;
    ArmDeadline(&stream->socket());
    ec = Run([&](auto handler) { stream->async_handshake(handler); });
    if (ec) {
      long verify = SSL_get_verify_result(stream->native_handle());
      // (Not verified with --insecure-skip-verify: the result is then no reason.)
      std::string why = verify != X509_V_OK && !config.insecure_skip_verify
                            ? std::string("certificate verification failed: ") +
                                  X509_verify_cert_error_string(verify)
                            : ec.message();
      stream.reset();
      return Status::Unavailable(fmt::format("TLS handshake with {}:{}: {}", host, port, why));
    }
    return Status::Ok();
  }

  const Config& config;
  std::atomic<bool> aborted{false};
  std::string host;
  uint16_t port = 0;
  asio::io_context ioc;
  ssl::context ctx;
  asio::steady_timer deadline;
  std::optional<tls::TlsStream> stream;
  beast::flat_buffer buffer;
};

BackendClient::BackendClient(const Config& config) : impl_(std::make_unique<Impl>(config)) {}
BackendClient::~BackendClient() = default;

Status BackendClient::Init() {
  Status st = SplitHostPort("backend", impl_->config.backend, &impl_->host, &impl_->port);
  if (!st.ok()) return st;
  tls::ClientConfig cc;
  cc.ca_file = impl_->config.ca_file;
  cc.insecure_skip_verify = impl_->config.insecure_skip_verify;
  auto ctx = tls::MakeClientContext(cc);
  if (!ctx.ok()) return Status::InvalidArgument(fmt::format("--ca-file: {}", ctx.status().message()));
  impl_->ctx = std::move(*ctx);
  return Status::Ok();
}

void BackendClient::Abort() {
  impl_->aborted = true;
  // Posted, so that it also stops a run() that has not started yet.
  asio::post(impl_->ioc, [this] { impl_->ioc.stop(); });
}

Status BackendClient::Post(const std::string& target, std::string body, bool header_first, std::string* reply,
                           int* http_status) {
  *http_status = 0;
  Impl& s = *impl_;
  http::request<http::string_body> req{http::verb::post, target, 11};
  req.set(http::field::host, s.host);
  req.set(http::field::user_agent, "sidetrace-orchestrator/" SIDETRACE_VERSION);
  req.set(http::field::authorization, "Bearer " + s.config.access_key);
  req.set(http::field::content_type, "application/json");
  req.keep_alive(true);
  req.body() = std::move(body);
  req.prepare_payload();
  // One retry on a reused connection: the backend may have closed it while
  // idle, which shows up only when we write.
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool reused = s.stream.has_value();
    if (!reused) {
      Status st = s.Connect();
      if (!st.ok()) return st;
    }
    if (s.aborted) return Status::Unavailable("stopping");
    // The response is read while the request is written (RFC 9112 9.5): a
    // backend that refuses the body early (413) answers and closes without
    // reading the rest. With header_first the body waits kHeaderFirstWait
    // for such an answer, so that the backend closes with nothing unread.
    s.ArmDeadline(&s.stream->socket());
    http::request_serializer<http::string_body> serializer(req);
    http::response_parser<http::string_body> parser;
    parser.body_limit(1 << 20);
    asio::steady_timer wait(s.ioc);
    beast::error_code read_ec = asio::error::would_block, write_ec = asio::error::would_block;
    bool written = false, answered = false;
    auto write_rest = [&] {
      http::async_write(*s.stream, serializer, [&](beast::error_code e, size_t) {
        write_ec = e;
        written = !e;
      });
    };
    if (header_first) {
      http::async_write_header(*s.stream, serializer, [&](beast::error_code e, size_t) {
        if (e) {
          write_ec = e;
          return;
        }
        wait.expires_after(kHeaderFirstWait);
        wait.async_wait([&](beast::error_code te) {
          if (!te && !answered) write_rest();
        });
      });
    } else {
      write_rest();
    }
    http::async_read(*s.stream, s.buffer, parser, [&](beast::error_code e, size_t) {
      read_ec = e;
      answered = !e;
      wait.cancel();
      s.deadline.cancel();
      // Answered before the request was fully sent: stop writing. Not
      // answered: the connection is done for, and so is the write.
      beast::error_code ignored;
      if (!answered) {
        s.stream->socket().close(ignored);
      } else if (!written) {
        s.stream->socket().cancel(ignored);
      }
    });
    s.ioc.restart();
    s.ioc.run();
    if (!answered) {
      beast::error_code ec = read_ec == asio::error::would_block ? asio::error::operation_aborted : read_ec;
      s.stream.reset();
      s.buffer.clear();
      if (reused && attempt == 0) continue;
      *http_status = kConnectionLost;
      return Status::Unavailable(fmt::format("POST {}: {} (write: {})", target, ec.message(),
                                             written ? "complete" : write_ec.message()));
    }
    http::response<http::string_body> res = parser.release();
    // Half a request is on the wire when the answer came early.
    if (!written || !res.keep_alive()) s.stream.reset();
    *http_status = static_cast<int>(res.result_int());
    *reply = std::move(res.body());
    if (*http_status / 100 != 2) {
      return Status::Unavailable(fmt::format("POST {}: HTTP {} {}", target, *http_status, reply->substr(0, 200)));
    }
    return Status::Ok();
  }
  return Status::Unavailable("unreachable");
}

Forwarder::Forwarder(const Config& config, Spool* spool, AgentRegistry* registry, Metrics* metrics)
    : config_(config), spool_(spool), registry_(registry), metrics_(metrics) {}

Forwarder::~Forwarder() { Stop(); }

Status Forwarder::Start() {
  if (config_.insecure_skip_verify) {
    log::Warn("!!! --insecure-skip-verify: the backend's TLS certificate is NOT verified; anyone on the path can "
              "read and forge alerts. Use only for testing !!!");
  }
  for (uint32_t i = 0; i < config_.backend_connections; ++i) {
    auto client = std::make_unique<BackendClient>(config_);
    Status st = client->Init();
    if (!st.ok()) return st;
    clients_.push_back(std::move(client));
  }
  for (auto& c : clients_) {
    threads_.emplace_back([this, client = c.get()] {
      pthread_setname_np(pthread_self(), "st-forward");  // top -H, perf, bench/orchestrator/run.sh
      Run(client);
    });
  }
  return Status::Ok();
}

void Forwarder::Stop() {
  if (stop_.exchange(true)) return;
  for (auto& c : clients_) c->Abort();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

namespace {

// A batch's alerts: one JSON text per line of `text`.
void SplitLines(std::string_view text, std::vector<std::string_view>* lines) {
  while (!text.empty()) {
    size_t eol = std::min(text.find('\n'), text.size());
    if (eol > 0) lines->push_back(text.substr(0, eol));
    text.remove_prefix(std::min(eol + 1, text.size()));
  }
}

// {"events":[lines[begin..end)],"agents":AGENTS}: the lines are already JSON.
std::string Body(const std::vector<std::string_view>& lines, size_t begin, size_t end, const std::string& agents) {
  size_t size = 32 + agents.size();
  for (size_t i = begin; i < end; ++i) size += lines[i].size() + 1;
  std::string body;
  body.reserve(size);
  body += "{\"events\":[";
  for (size_t i = begin; i < end; ++i) {
    if (i > begin) body += ',';
    body += lines[i];
  }
  body += "],\"agents\":";
  body += agents;
  body += '}';
  return body;
}

// The backend refused this request for what it holds (as opposed to being
// down or refusing our key): sending it again would fail again.
bool Refused(int status) {
  return status >= 400 && status < 500 && status != 401 && status != 403 && status != 408 && status != 429;
}

}  // namespace

// One POST of lines[begin, end) with `*agents` (sent once: "[]" afterwards).
// A refused range is split in halves and each half sent on its own, down to
// single alerts, which are dropped and counted: so one oversize (413) or
// malformed (400) alert costs only itself, never its batch.
Status Forwarder::Deliver(BackendClient* client, const std::vector<std::string_view>& lines, size_t begin, size_t end,
                          std::string* agents, Tally* tally) {
  std::string reply;
  int status = 0;
  Status st = client->Post(kBatchTarget, Body(lines, begin, end, *agents), false, &reply, &status);
  if (status == BackendClient::kConnectionLost) {
    // A backend that refuses a body and closes with the rest unread resets
    // the connection, which can destroy its answer (413) before we read it.
    // Once more with the header first, so that the answer comes before the
    // body: a backend that is really gone fails again.
    st = client->Post(kBatchTarget, Body(lines, begin, end, *agents), true, &reply, &status);
  }
  if (st.ok()) {
    *agents = "[]";
    tally->stored += end - begin;
    return st;
  }
  if (!Refused(status)) return st;
  if (end - begin > 1) {
    size_t mid = begin + (end - begin) / 2;
    st = Deliver(client, lines, begin, mid, agents, tally);
    if (st.ok()) st = Deliver(client, lines, mid, end, agents, tally);
    return st;
  }
  if (*agents != "[]" && begin < end) {
    // The agents' records may be what is refused: the alert goes alone, the
    // records wait for the next POST.
    tally->agents_deferred = true;
    *agents = "[]";
    return Deliver(client, lines, begin, end, agents, tally);
  }
  if (begin == end) {
    log::Error("backend refused the agents' records; not sending them again", "status={} reason={}", status,
               log::Quote(st.message()));
    *agents = "[]";
    return Status::Ok();
  }
  auto alert = json::parse(lines[begin], nullptr, false);
  std::string uuid = alert.is_object() && alert.contains("uuid") && alert["uuid"].is_string()
                         ? alert["uuid"].get<std::string>()
                         : "?";
  (status == 413 ? tally->too_large : tally->refused)++;
  log::Error(status == 413 ? "backend refused an alert as too large on its own; dropping it"
                           : "backend refused an alert; dropping it",
             "uuid={} bytes={} status={} reason={}", log::Quote(uuid), lines[begin].size(), status,
             log::Quote(st.message()));
  return Status::Ok();
}

void Forwarder::Run(BackendClient* client) {
  std::mt19937 rng(std::random_device{}());
  auto backoff = std::chrono::milliseconds(250);
  std::string last_error;
  auto idle_since = std::chrono::steady_clock::now();
  std::string text;
  std::vector<std::string_view> lines;
  while (!stop_) {
    auto batch = spool_->Take(std::chrono::milliseconds(200));
    if (stop_) {
      if (batch) spool_->Failed(*batch);
      break;
    }
    // Agent-only update after a quiet second, so stats and drop counts
    // reach the backend even when no alert flows.
    if (!batch && (std::chrono::steady_clock::now() - idle_since < std::chrono::seconds(1) ||
                   !registry_->HasDirty())) {
      continue;
    }
    std::vector<std::string> ids;
    std::string agents = registry_->TakeDirty(&ids).dump(-1, ' ', false, json::error_handler_t::replace);
    Tally tally;
    Status st;
    lines.clear();
    if (batch) {
      // Nearly always one POST of the whole batch: its bytes become the
      // body with one copy, newlines turned into commas. Only a refused or
      // reset POST needs the lines one by one (Deliver splits and retries).
      std::string body;
      // The whole body in one allocation: growing it as it is built would
      // copy a megabyte once more and hold twice that.
      body.reserve(32 + batch->bytes + agents.size());
      body = "{\"events\":[";
      size_t events_at = body.size();
      Status read = Spool::Read(*batch, &body);
      if (!read.ok()) {
        log::Error("spool: unreadable batch dropped", "reason={}", log::Quote(read.message()));
        metrics_->spool_write_errors++;
        spool_->Dropped(*batch);
        registry_->Restore(ids);
        continue;
      }
      for (char* nl = body.data() + events_at; (nl = static_cast<char*>(std::memchr(
                                                    nl, '\n', static_cast<size_t>(body.data() + body.size() - nl))));) {
        *nl++ = ',';
      }
      if (body.size() > events_at) body.pop_back();
      body += "],\"agents\":";
      body += agents;
      body += '}';
      std::string reply;
      int status = 0;
      st = client->Post(kBatchTarget, std::move(body), false, &reply, &status);
      if (st.ok()) {
        tally.stored = batch->events;
      } else if (status == BackendClient::kConnectionLost || Refused(status)) {
        text.clear();
        read = Spool::Read(*batch, &text);
        if (read.ok()) {
          SplitLines(text, &lines);
          st = Deliver(client, lines, 0, lines.size(), &agents, &tally);
        }
      }
    } else {
      st = Deliver(client, lines, 0, 0, &agents, &tally);
    }
    idle_since = std::chrono::steady_clock::now();
    if (st.ok()) {
      if (tally.agents_deferred) registry_->Restore(ids);
      if (batch) {
        spool_->Delivered(*batch);
        metrics_->alerts_out += tally.stored;
        metrics_->backend_too_large_alerts += tally.too_large;
        metrics_->backend_rejected_alerts += tally.refused;
        metrics_->batches_sent++;
      }
      if (!metrics_->backend_up.exchange(true) || !last_error.empty()) {
        log::Info("backend reachable", "backend={}", config_.backend);
      }
      last_error.clear();
      backoff = std::chrono::milliseconds(250);
      continue;
    }
    // Parts of the batch may be stored already: it is sent again whole, and
    // the backend ignores the uuids it has.
    registry_->Restore(ids);
    metrics_->backend_errors++;
    metrics_->backend_up = false;
    if (batch) spool_->Failed(*batch);
    if (st.message() != last_error) {
      log::Warn("backend unavailable; batches stay in the spool", "backend={} reason={}", config_.backend,
                log::Quote(st.message()));
      last_error = st.message();
    }
    std::uniform_int_distribution<int64_t> jitter(0, backoff.count() / 2);
    auto until = std::chrono::steady_clock::now() + backoff / 2 + std::chrono::milliseconds(jitter(rng));
    while (!stop_ && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(5));
  }
}

}  // namespace sidetrace::orchestrator
