// Ingest throughput of sidetrace-backend from one keep-alive TLS connection:
// starts the real binary on a fresh database (TLS certificates generated
// here), sends `--batches` batches of `--batch-size` realistic Falco alerts
// with unique uuids, and reports events/s and batch latency percentiles
// (p50/p99/max, request sent to 200 received, i.e. including the SQLite
// commit with fsync). Alerts are serialized before each batch's clock starts.
//
//   ninja -C build sidetrace-backend backend_ingest_bench
//   SIDETRACE_BUILD_DIR=build build/bench/backend/backend_ingest_bench [--batches N] [--batch-size N]
//       [--encoding gzip|zstd] [--db-dir DIR]   (DIR=/dev/shm separates CPU cost from disk cost)
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/tls/cert_gen.h"
#include "tests/backend/harness.h"

using namespace sidetrace;
using namespace sidetrace::backend_test;
using json = nlohmann::json;

namespace {

// utime + stime of a process in seconds, from /proc/PID/stat.
double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
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

}  // namespace

int main(int argc, char** argv) {
  int batches = 100, batch_size = 1000;
  std::string encoding, db_dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--batches")) batches = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch-size")) batch_size = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--encoding")) encoding = argv[i + 1];
    else if (!std::strcmp(argv[i], "--db-dir")) db_dir = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s [--batches N] [--batch-size N] [--encoding gzip|zstd] [--db-dir DIR]\n", argv[0]);
      return 2;
    }
  }
  std::string dir = MakeTempDir("backend_ingest_bench");
  auto pki = tls::GenerateTestPki(dir + "/pki");
  if (!pki.ok()) {
    std::fprintf(stderr, "%s\n", pki.status().message().c_str());
    return 1;
  }
  BackendProcess backend;
  std::string err = backend.Start({"--ingest", "127.0.0.1:0", "--http", "127.0.0.1:0", "--cert", pki->server_cert,
                                   "--key", pki->server_key, "--db", (db_dir.empty() ? dir : db_dir) + "/bench.db", "--access-key", "bench-key",
                                   "--max-body-bytes", "67108864"},
                                  dir + "/backend.log");
  if (!err.empty()) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 1;
  }
  HttpClient c(backend.ingest_port(), pki->ca_cert);
  if (std::string e = c.Connect(); !e.empty()) {
    std::fprintf(stderr, "connect: %s\n", e.c_str());
    return 1;
  }
  std::map<std::string, std::string> headers;
  if (!encoding.empty()) headers["Content-Encoding"] = encoding;
  std::vector<double> lat;
  double cpu0 = CpuSeconds(backend.pid());
  size_t bytes = 0, wire = 0;
  int64_t t0 = NowNs() - 3600LL * 1000000000LL;
  for (int b = 0; b < batches; ++b) {
    std::vector<json> alerts;
    alerts.reserve(batch_size);
    for (int i = 0; i < batch_size; ++i) {
      std::string id = "bench-" + std::to_string(b) + "-" + std::to_string(i);
      int64_t t = t0 + (static_cast<int64_t>(b) * batch_size + i) * 1000;
      alerts.push_back(i % 5 == 0 ? MakeMinerAlert(id, t) : MakeAlert(id, "Read sensitive file untrusted", "Warning", t));
    }
    std::string body = BatchBody(alerts);
    bytes += body.size();
    if (!encoding.empty()) body = Compress(encoding, body);
    wire += body.size();
    auto start = std::chrono::steady_clock::now();
    auto r = c.PostBatch(body, "bench-key", headers);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r.status != 200) {
      std::fprintf(stderr, "batch %d: status %d %s %s\n", b, r.status, r.error.c_str(), r.body.c_str());
      return 1;
    }
    lat.push_back(s);
  }
  double cpu = CpuSeconds(backend.pid()) - cpu0;
  double total = 0;
  for (double l : lat) total += l;
  std::vector<double> sorted = lat;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double p) { return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()))]; };
  double events = static_cast<double>(batches) * batch_size;
  std::printf("batches=%d batch_size=%d encoding=%s body_avg=%.0f KiB wire_avg=%.0f KiB\n", batches, batch_size,
              encoding.empty() ? "identity" : encoding.c_str(), bytes / 1024.0 / batches, wire / 1024.0 / batches);
  std::printf("events/s=%.0f (sum of batch latencies %.2f s for %.0f events)\n", events / total, total, events);
  std::printf("batch latency ms: p50=%.1f p99=%.1f max=%.1f\n", pct(0.50) * 1e3, pct(0.99) * 1e3,
              sorted.back() * 1e3);
  // The machine is shared: CPU time says what one idle core would sustain.
  std::printf("backend CPU: %.1f ms per batch -> %.0f events per CPU-second\n", cpu / batches * 1e3, events / cpu);
  // Server side: time from request read to commit (handler only).
  HttpClient api(backend.http_port());
  std::string m = api.Get("/metrics").body;
  auto metric = [&](const std::string& name) {
    size_t p = m.find("\n" + name + " ");
    return p == std::string::npos ? -1.0 : std::stod(m.substr(p + name.size() + 2));
  };
  std::printf("server handler (parse + commit) avg ms: %.1f\n",
              metric("sidetrace_ingest_batch_seconds_sum") / metric("sidetrace_ingest_batch_seconds_count") * 1e3);
  backend.Kill(SIGTERM);
  backend.Wait();
  std::filesystem::remove_all(dir);
  if (!db_dir.empty())
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(db_dir + "/bench.db" + suffix);
  return 0;
}
