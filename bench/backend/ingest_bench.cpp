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
//   (DIR=/dev/shm separates CPU cost from disk cost)
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
// order (asio: one outstanding write and one outstanding read at a time).
class PipelinedSender {
 public:
  PipelinedSender(asio::io_context& io, asio::ssl::context& ctx, std::vector<http::request<http::string_body>>& reqs,
                  size_t window)
      : stream_(io, ctx), reqs_(reqs), window_(window), start_(reqs.size()), latency_(reqs.size()) {}

  std::string Connect(uint16_t port) {
    beast::error_code ec;
    beast::get_lowest_layer(stream_).socket().connect({asio::ip::make_address("127.0.0.1"), port}, ec);
    if (ec) return ec.message();
    beast::get_lowest_layer(stream_).socket().set_option(asio::ip::tcp::no_delay(true));
    if (!tls::SetPeerName(stream_.native_handle(), "127.0.0.1").ok()) return "bad peer name";
    stream_.handshake(asio::ssl::stream_base::client, ec);
    return ec ? ec.message() : "";
  }

  void Start() {
    MaybeWrite();
    Read();
  }
  const std::string& error() const { return error_; }
  const std::vector<double>& latency() const { return latency_; }

 private:
  void MaybeWrite() {
    if (writing_ || sent_ == reqs_.size() || sent_ - received_ >= window_ || !error_.empty()) return;
    writing_ = true;
    start_[sent_] = std::chrono::steady_clock::now();
    http::async_write(stream_, reqs_[sent_], [this](beast::error_code ec, size_t) {
      writing_ = false;
      if (ec) return Fail("write: " + ec.message());
      ++sent_;
      MaybeWrite();
    });
  }
  void Read() {
    parser_.emplace();
    http::async_read(stream_, buffer_, *parser_, [this](beast::error_code ec, size_t) {
      if (ec) return Fail("read: " + ec.message());
      auto res = parser_->release();
      if (res.result_int() != 200)
        return Fail(fmt::format("batch {}: status {} {}", received_, res.result_int(), res.body()));
      latency_[received_] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_[received_]).count();
      ++received_;
      if (received_ == reqs_.size()) return;
      MaybeWrite();
      Read();
    });
  }
  void Fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    beast::get_lowest_layer(stream_).close();
  }

  beast::ssl_stream<beast::tcp_stream> stream_;
  std::vector<http::request<http::string_body>>& reqs_;
  size_t window_, sent_ = 0, received_ = 0;
  bool writing_ = false;
  std::vector<std::chrono::steady_clock::time_point> start_;
  std::vector<double> latency_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::string_body>> parser_;
  std::string error_;
};

}  // namespace

int main(int argc, char** argv) {
  int batches = 100, batch_size = 1000, pipeline = 1;
  std::string encoding, db_dir, sync = "full", uuid = "v7";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batches")) batches = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch-size")) batch_size = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--pipeline")) pipeline = std::max(1, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--sync")) sync = argv[i + 1];
    else if (!std::strcmp(argv[i], "--encoding")) encoding = argv[i + 1];
    else if (!std::strcmp(argv[i], "--db-dir")) db_dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--uuid") && (!std::strcmp(argv[i + 1], "v7") || !std::strcmp(argv[i + 1], "v4")))
      uuid = argv[i + 1];
    else {
      std::fprintf(stderr,
                   "usage: %s [--batches N] [--batch-size N] [--pipeline W] [--sync full|normal] "
                   "[--encoding gzip|zstd] [--db-dir DIR] [--uuid v7|v4]\n",
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
  std::string db = (db_dir.empty() ? dir : db_dir) + "/bench.db";
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
  std::mt19937_64 rng(42);
  std::vector<http::request<http::string_body>> reqs;
  size_t bytes = 0, wire = 0;
  int64_t t0 = NowNs() - 3600LL * 1000000000LL;
  for (int b = 0; b < batches; ++b) {
    std::vector<json> alerts;
    alerts.reserve(batch_size);
    for (int i = 0; i < batch_size; ++i) {
      int64_t t = t0 + (static_cast<int64_t>(b) * batch_size + i) * 1000;
      std::string id = MakeUuid(rng, uuid == "v7", t);
      alerts.push_back(i % 5 == 0 ? MakeMinerAlert(id, t) : MakeAlert(id, "Read sensitive file untrusted", "Warning", t));
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
    reqs.push_back(std::move(req));
  }

  tls::ClientConfig cc;
  cc.ca_file = pki->ca_cert;
  auto ctx = tls::MakeClientContext(cc);
  if (!ctx.ok()) {
    std::fprintf(stderr, "%s\n", ctx.status().message().c_str());
    return 1;
  }
  asio::io_context io;
  PipelinedSender sender(io, *ctx, reqs, static_cast<size_t>(pipeline));
  if (std::string e = sender.Connect(backend.ingest_port()); !e.empty()) {
    std::fprintf(stderr, "connect: %s\n", e.c_str());
    return 1;
  }
  std::string load_before = LoadAverage();
  double cpu0 = CpuSeconds(backend.pid()), commit_cpu0 = CommitterCpuSeconds(backend.pid());
  std::fprintf(stderr, "sending %d batches, backend pid %d\n", batches, static_cast<int>(backend.pid()));
  auto wall0 = std::chrono::steady_clock::now();
  sender.Start();
  io.run();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  double cpu = CpuSeconds(backend.pid()) - cpu0;
  double commit_cpu = CommitterCpuSeconds(backend.pid()) - commit_cpu0;
  if (!sender.error().empty()) {
    std::fprintf(stderr, "%s\n", sender.error().c_str());
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
  std::printf("load average before: %s, after: %s\n", load_before.c_str(), LoadAverage().c_str());
  std::printf("| %s | %s | W=%d | %.0f | %.1f ms | %.1f ms | %.1f ms (%.1f commit) | %s |\n", uuid.c_str(), sync.c_str(), pipeline,
              events / wall, pct(0.50) * 1e3, pct(0.99) * 1e3, cpu / batches * 1e3, commit_cpu / batches * 1e3,
              load_before.c_str());
  int rc = stored == events ? 0 : 1;
  if (rc) std::fprintf(stderr, "stored %.0f of %.0f events\n", stored, events);
  backend.Kill(SIGTERM);
  backend.Wait();
  std::filesystem::remove_all(dir);
  if (!db_dir.empty())
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(db + suffix);
  return rc;
}
