// Ingest throughput of sidetrace-backend from ONE keep-alive TLS connection:
// starts the real binary on a fresh database (TLS certificates generated
// here), sends `--batches` batches of `--batch-size` realistic Falco alerts
// (version 7 uuids, time-ordered, as sidetrace-agent makes them; `--uuid v4`:
// random, as Falco makes them), and reports events/s, batch
// latency percentiles and the backend's CPU time per batch.
//
// --pipeline W: HTTP/1.1 pipelining on that one connection, at most W
// batches sent and not yet answered (1 = send, wait for the reply, send the
// next: what a strictly serial client sees). The server answers in request
// order and only after each batch's transaction committed; a batch's
// latency is from the first byte of its request written to its reply read,
// so with W > 1 it includes time queued behind earlier batches.
// All bodies are built before the clock starts (the client only encrypts
// and sends), and events/s is total events / wall time of the whole run.
//
//   ninja -C build sidetrace-backend backend_ingest_bench
//   SIDETRACE_BUILD_DIR=build build/bench/backend/backend_ingest_bench [--batches N] [--batch-size N]
//       [--pipeline W] [--sync full|normal] [--encoding gzip|zstd] [--db-dir DIR] [--uuid v7|v4]
//       [--containers N] [--rules N] [--db FILE]
// --containers N: alert i comes from container, task and agent i % N
// (default 1, one container and no agent id, the best case for the
// container and task indexes and the agents table; 1,000 is an
// orchestrator's fleet of tasks, one agent per container as on ECS).
// --rules N: alert i's rule is "Bench rule <i % N>" (default: the two
// realistic rules; the rule index's cost with many rules).
// --db FILE: store into FILE and keep it (default: a new file, removed
// after): run again on the same file to measure at a database size (the
// alerts' ids and times then come from the clock, so runs never overlap).
//   (DIR=/dev/shm separates CPU cost from disk cost)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <fmt/format.h>

#include "common/tls/cert_gen.h"
#include "common/tls/tls.h"
#include "tests/backend/harness.h"

using namespace sidetrace;
using namespace sidetrace::backend_test;
using json = nlohmann::json;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// utime + stime in seconds from a /proc/.../stat file.
double CpuSeconds(const std::string& stat_file) {
  std::ifstream in(stat_file);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  size_t p = text.rfind(')');
  if (p == std::string::npos) return 0;
  std::istringstream fields(text.substr(p + 2));
  std::string f;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::stoull(f);
    if (i == 15) stime = std::stoull(f);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double CpuSeconds(pid_t pid) { return CpuSeconds("/proc/" + std::to_string(pid) + "/stat"); }

// This process's own CPU time (the client's: on a 2-core machine it is
// taken from the backend).
double SelfCpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// CPU seconds of the backend's committer thread (named st-committer).
double CommitterCpuSeconds(pid_t pid) {
  std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& t : std::filesystem::directory_iterator(task_dir)) {
    std::ifstream comm(t.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name == "st-committer") return CpuSeconds((t.path() / "stat").string());
  }
  return 0;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string Compress(const std::string& encoding, const std::string& in) {
  if (encoding == "zstd") {
    std::string out(ZSTD_compressBound(in.size()), '\0');
    out.resize(ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 1));
    return out;
  }
  z_stream zs{};
  deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, in.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// An alert id: version 7 (the alert's time in Unix ms, then random bits, as
// sidetrace-agent makes them) or version 4 (all random, as Falco makes them).
std::string MakeUuid(std::mt19937_64& rng, bool v7, int64_t time_ns) {
  uint64_t hi = rng(), lo = rng();
  if (v7) {
    hi = (static_cast<uint64_t>(time_ns / 1000000) << 16) | 0x7000ULL | (hi & 0x0fffULL);
  } else {
    hi = (hi & ~0xf000ULL) | 0x4000ULL;
  }
  lo = (lo & ~(3ULL << 62)) | (2ULL << 62);            // variant 10
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx", static_cast<unsigned long long>(hi >> 32),
                static_cast<unsigned long long>((hi >> 16) & 0xffff), static_cast<unsigned long long>(hi & 0xffff),
                static_cast<unsigned long long>(lo >> 48), static_cast<unsigned long long>(lo & 0xffffffffffffULL));
  return buf;
}

// One TLS connection, up to `window` requests in flight, replies read in
// order. Cheap on purpose (its CPU is taken from the backend on this
// machine): OpenSSL works on the socket itself; each request (header and
// body, serialised before the clock starts) is encrypted with one SSL_write
// into memory and sent in as few send() calls as the socket takes, instead
// of one asio completion and one write per 16 KiB record.
class PipelinedSender {
 public:
  PipelinedSender(SSL_CTX* ctx, const std::vector<std::string>& reqs, size_t window)
      : ctx_(ctx), reqs_(reqs), window_(window), start_(reqs.size()), latency_(reqs.size()) {}
  ~PipelinedSender() {
    SSL_free(ssl_);
    if (fd_ >= 0) close(fd_);
  }

  // Connects and handshakes (blocking): "" or the error.
  std::string Connect(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return std::strerror(errno);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    if (!tls::SetPeerName(ssl_, "127.0.0.1").ok()) return "bad peer name";
    if (SSL_connect(ssl_) != 1) return "handshake: " + tls::LastOpenSslError();
    // From now on the records go to out_ (sent by Flush), replies are read
    // from the non-blocking socket.
    static BIO_METHOD* sink = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "string sink");
      BIO_meth_set_write(m, [](BIO* b, const char* data, int len) {
        static_cast<std::string*>(BIO_get_data(b))->append(data, static_cast<size_t>(len));
        return len;
      });
      BIO_meth_set_ctrl(m, [](BIO*, int cmd, long, void*) -> long { return cmd == BIO_CTRL_FLUSH ? 1 : 0; });
      return m;
    }();
    BIO* out = BIO_new(sink);
    BIO_set_data(out, &out_);
    BIO_set_init(out, 1);
    SSL_set0_wbio(ssl_, out);
    fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
    return "";
  }

  // Sends every request and reads every reply: "" or the error.
  std::string Run() {
    parser_.emplace();
    parser_->eager(true);
    while (received_ < reqs_.size()) {
      bool progress = false;
      if (out_.empty() && sent_ < reqs_.size() && sent_ - received_ < window_) {
        start_[sent_] = std::chrono::steady_clock::now();
        size_t n = 0;
        if (SSL_write_ex(ssl_, reqs_[sent_].data(), reqs_[sent_].size(), &n) != 1) return "SSL_write failed";
        ++sent_;
      }
      if (!out_.empty()) {
        ssize_t n = send(fd_, out_.data() + out_sent_, out_.size() - out_sent_, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) return std::string("send: ") + std::strerror(errno);
        if (n > 0) {
          progress = true;
          out_sent_ += static_cast<size_t>(n);
          if (out_sent_ == out_.size()) out_.clear(), out_sent_ = 0;
        }
      }
      std::string err;
      if (ReadReplies(&progress, &err); !err.empty()) return err;
      if (!progress) {
        pollfd p{fd_, static_cast<short>(POLLIN | (out_.empty() ? 0 : POLLOUT)), 0};
        if (poll(&p, 1, 60000) == 0) return "no progress for 60 s";
      }
    }
    return "";
  }
  const std::vector<double>& latency() const { return latency_; }

 private:
  // Decrypts what has arrived and takes complete replies off it.
  void ReadReplies(bool* progress, std::string* err) {
    for (;;) {
      size_t n = 0;
      auto space = in_.prepare(16384);
      if (SSL_read_ex(ssl_, space.data(), space.size(), &n) != 1) {
        int e = SSL_get_error(ssl_, 0);
        if (e != SSL_ERROR_WANT_READ) *err = "read: " + tls::LastOpenSslError();
        return;
      }
      *progress = true;
      in_.commit(n);
      while (in_.size() > 0) {
        beast::error_code ec;
        in_.consume(parser_->put(in_.data(), ec));
        if (ec == http::error::need_more) break;
        if (ec) return void(*err = "reply: " + ec.message());
        if (!parser_->is_done()) continue;
        auto res = parser_->release();
        if (res.result_int() != 200) return void(*err = fmt::format("batch {}: status {} {}", received_, res.result_int(), res.body()));
        latency_[received_] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_[received_]).count();
        ++received_;
        parser_.emplace();
        parser_->eager(true);
      }
    }
  }

  SSL_CTX* ctx_;
  const std::vector<std::string>& reqs_;
  size_t window_, sent_ = 0, received_ = 0;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::string out_;  // encrypted, not yet sent
  size_t out_sent_ = 0;
  beast::flat_buffer in_;
  std::optional<http::response_parser<http::string_body>> parser_;
  std::vector<std::chrono::steady_clock::time_point> start_;
  std::vector<double> latency_;
};

}  // namespace

int main(int argc, char** argv) {
  int batches = 100, batch_size = 1000, pipeline = 1, containers = 1, rules = 0;
  std::string encoding, db_dir, db_file, sync = "full", uuid = "v7";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batches")) batches = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch-size")) batch_size = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--pipeline")) pipeline = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--sync")) sync = argv[i + 1];
    else if (!std::strcmp(argv[i], "--encoding")) encoding = argv[i + 1];
    else if (!std::strcmp(argv[i], "--db-dir")) db_dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--containers")) containers = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--db")) db_file = argv[i + 1];
    else if (!std::strcmp(argv[i], "--rules")) rules = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--uuid") && (!std::strcmp(argv[i + 1], "v7") || !std::strcmp(argv[i + 1], "v4")))
      uuid = argv[i + 1];
    else {
      std::fprintf(stderr,
                   "usage: %s [--batches N] [--batch-size N] [--pipeline W] [--sync full|normal] "
                   "[--encoding gzip|zstd] [--db-dir DIR] [--uuid v7|v4] [--containers N] [--rules N] [--db FILE]\n",
                   argv[0]);
      return 2;
    }
  }
  if (batches < 1 || batch_size < 1) return 2;
  std::string dir = MakeTempDir("backend_ingest_bench");
  auto pki = tls::GenerateTestPki(dir + "/pki");
  if (!pki.ok()) {
    std::fprintf(stderr, "%s\n", pki.status().message().c_str());
    return 1;
  }
  std::string db = !db_file.empty() ? db_file : (db_dir.empty() ? dir : db_dir) + "/bench.db";
  BackendProcess backend;
  std::string err = backend.Start({"--ingest", "127.0.0.1:0", "--http", "127.0.0.1:0", "--cert", pki->server_cert,
                                   "--key", pki->server_key, "--db", db, "--access-key", "bench-key",
                                   "--max-body-bytes", "67108864", "--sync", sync, "--pipeline",
                                   std::to_string(std::max(pipeline, 1))},
                                  dir + "/backend.log");
  if (!err.empty()) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }

  // Every body first: the client's own work during the run is TLS only.
  std::mt19937_64 rng(db_file.empty() ? 42 : static_cast<uint64_t>(NowNs()));
  std::vector<std::string> reqs;  // each serialised: header and body
  size_t bytes = 0, wire = 0;
  // 1 us apart: with --db, a later run's alerts follow an earlier one's.
  int64_t t0 = NowNs() - 3600LL * 1000000000LL;
  for (int b = 0; b < batches; ++b) {
    std::vector<json> alerts;
    alerts.reserve(batch_size);
    for (int i = 0; i < batch_size; ++i) {
      int64_t t = t0 + (static_cast<int64_t>(b) * batch_size + i) * 1000;
      std::string id = MakeUuid(rng, uuid == "v7", t);
      alerts.push_back(i % 5 == 0 ? MakeMinerAlert(id, t) : MakeAlert(id, "Read sensitive file untrusted", "Warning", t));
      if (rules > 0) alerts.back()["rule"] = fmt::format("Bench rule {}", i % rules);
      if (containers > 1) {
        int c = i % containers;
        auto& fields = alerts.back()["output_fields"];
        fields["container.id"] = fmt::format("{:012x}", 0x3f1c00000000ULL + static_cast<uint64_t>(c));
        fields["aws.ecs.task.arn"] = fmt::format("arn:aws:ecs:us-east-1:123456789012:task/bench/{:032x}", c);
        alerts.back()["agent_id"] = fmt::format("agent-{}", c);
      }
    }
    std::string body = BatchBody(alerts);
    bytes += body.size();
    if (!encoding.empty()) body = Compress(encoding, body);
    wire += body.size();
    http::request<http::string_body> req{http::verb::post, "/api/v1/events:batch", 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::authorization, "Bearer bench-key");
    req.set(http::field::content_type, "application/json");
    if (!encoding.empty()) req.set(http::field::content_encoding, encoding);
    req.keep_alive(true);
    req.body() = std::move(body);
    req.prepare_payload();
    std::ostringstream wire_form;
    wire_form << req;
    reqs.push_back(wire_form.str());
  }

  tls::ClientConfig cc;
  cc.ca_file = pki->ca_cert;
  auto ctx = tls::MakeClientContext(cc);
  if (!ctx.ok()) {
    std::fprintf(stderr, "%s\n", ctx.status().message().c_str());
    return 1;
  }
  PipelinedSender sender(ctx->native_handle(), reqs, static_cast<size_t>(pipeline));
  if (std::string e = sender.Connect(backend.ingest_port()); !e.empty()) {
    std::fprintf(stderr, "connect: %s\n", e.c_str());
    return 1;
  }
  std::string load_before = LoadAverage();
  double cpu0 = CpuSeconds(backend.pid()), commit_cpu0 = CommitterCpuSeconds(backend.pid());
  double client_cpu0 = SelfCpuSeconds();
  std::fprintf(stderr, "sending %d batches, backend pid %d\n", batches, static_cast<int>(backend.pid()));
  auto wall0 = std::chrono::steady_clock::now();
  std::string send_error = sender.Run();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  double client_cpu = SelfCpuSeconds() - client_cpu0;
  double cpu = CpuSeconds(backend.pid()) - cpu0;
  double commit_cpu = CommitterCpuSeconds(backend.pid()) - commit_cpu0;
  if (!send_error.empty()) {
    std::fprintf(stderr, "%s\n", send_error.c_str());
    return 1;
  }
  std::vector<double> sorted = sender.latency();
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double p) { return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()))]; };
  double events = static_cast<double>(batches) * batch_size;

  HttpClient api(backend.http_port());
  std::string m = api.Get("/metrics").body;
  auto metric = [&](const std::string& name) {
    size_t p = m.find("\n" + name + " ");
    return p == std::string::npos ? -1.0 : std::stod(m.substr(p + name.size() + 2));
  };
  double stored = metric("sidetrace_ingest_events_stored_total");
  double commits = metric("sidetrace_ingest_commits_total");
  std::printf("batches=%d batch_size=%d pipeline=%d sync=%s encoding=%s body_avg=%.0f KiB wire_avg=%.0f KiB db=%s\n",
              batches, batch_size, pipeline, sync.c_str(), encoding.empty() ? "identity" : encoding.c_str(),
              bytes / 1024.0 / batches, wire / 1024.0 / batches, db_dir.empty() ? "tmp" : db_dir.c_str());
  std::printf("events/s=%.0f (%.0f events in %.2f s wall; stored %.0f; %.0f commits)\n", events / wall, events, wall,
              stored, commits);
  std::printf("batch latency ms: p50=%.1f p99=%.1f max=%.1f\n", pct(0.50) * 1e3, pct(0.99) * 1e3, sorted.back() * 1e3);
  // The machine is shared: CPU time says what the backend itself spent.
  std::printf("backend CPU: %.1f ms per batch -> %.0f events per CPU-second; of which committer thread (SQLite) %.1f ms, "
              "the rest (TLS, HTTP, JSON, checkpoints) %.1f ms\n",
              cpu / batches * 1e3, events / cpu, commit_cpu / batches * 1e3, (cpu - commit_cpu) / batches * 1e3);
  std::printf("client CPU (this process: TLS encryption, sends): %.1f ms per batch\n", client_cpu / batches * 1e3);
  std::printf("load average before: %s, after: %s\n", load_before.c_str(), LoadAverage().c_str());
  std::string ids = containers > 1 ? fmt::format("{}, {} containers", uuid, containers) : uuid;
  if (rules > 0) ids += fmt::format(", {} rules", rules);
  std::printf("| %s | %s | W=%d | %.0f | %.1f ms | %.1f ms | %.1f ms (%.1f commit) | %s |\n", ids.c_str(), sync.c_str(), pipeline,
              events / wall, pct(0.50) * 1e3, pct(0.99) * 1e3, cpu / batches * 1e3, commit_cpu / batches * 1e3,
              load_before.c_str());
  int rc = stored == events ? 0 : 1;
  if (rc) std::fprintf(stderr, "stored %.0f of %.0f events\n", stored, events);
  backend.Kill(SIGTERM);
  backend.Wait();
  std::filesystem::remove_all(dir);
  if (db_file.empty() && !db_dir.empty())
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(db + suffix);
  return rc;
}
