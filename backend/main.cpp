// sidetrace-backend: receives alert batches over TLS, stores them in SQLite,
// serves the read API and the web console. See docs/backend.md.
#include <malloc.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/program_options.hpp>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "backend/alert.h"
#include "backend/forwarder.h"
#include "backend/http_server.h"
#include "backend/service.h"
#include "backend/store.h"
#include "common/tls/cert_gen.h"
#include "common/tls/tls.h"
#include "common/util/log.h"

namespace po = boost::program_options;
using namespace sidetrace;
using namespace sidetrace::backend;

namespace {

struct Options {
  std::string ingest, http, cert, key, db, access_keys_file, log_level, sync;
  std::vector<std::string> access_keys, webhooks;
  bool self_signed = false, http_tls = false;
  int retention_days = 30;
  size_t max_body = 16 << 20, max_connections = 256;
  int timeout_s = 30, threads = 2, committer_nice = -10;
  size_t pipeline = 4;
};

// Reads keys one per line; blank lines and '#' comments are skipped.
Status ReadKeysFile(const std::string& path, std::vector<std::string>* keys) {
  std::ifstream in(path);
  if (!in) return Status::IoError(path + ": cannot open access keys file");
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] == '#') continue;
    keys->push_back(line.substr(start));
  }
  return Status::Ok();
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  log::SetProgram("sidetrace-backend");
  // An ingest body (~1.2 MB per 1,000 alerts) is allocated on an I/O thread
  // and freed after its commit, batch after batch. With glibc's defaults the
  // freed top of a thread's heap goes back to the kernel each time and the
  // next body page-faults it in again; keep up to 64 MB of it instead.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  Options o;
  po::options_description desc(
      "Usage: sidetrace-backend [options]\n\n"
      "Receives alert batches from sidetrace-orchestrator over TLS, stores them\n"
      "in SQLite and serves the read API and the web console. Every option can\n"
      "also be set as an environment variable: --access-key is\n"
      "SIDETRACE_ACCESS_KEY, --db is SIDETRACE_DB, and so on.\n\nOptions");
  desc.add_options()
      ("help,h", "print this help and exit")
      ("ingest", po::value(&o.ingest)->default_value("0.0.0.0:6443"), "TLS ingest listener ADDR:PORT")
      ("cert", po::value(&o.cert), "TLS certificate chain (PEM)")
      ("key", po::value(&o.key), "TLS private key (PEM)")
      ("self-signed", po::bool_switch(&o.self_signed),
       "generate (or reuse) a self-signed certificate next to --db and print its fingerprint (demos)")
      ("access-key", po::value(&o.access_keys)->composing(), "accepted ingest access key (repeatable)")
      ("access-keys-file", po::value(&o.access_keys_file), "file with one access key per line")
      ("db", po::value(&o.db)->default_value("./sidetrace.db"), "SQLite database file")
      ("http", po::value(&o.http)->default_value("127.0.0.1:8080"), "console and read API ADDR:PORT")
      ("http-tls", po::bool_switch(&o.http_tls), "serve --http over TLS with the ingest certificate")
      ("retention-days", po::value(&o.retention_days)->default_value(30), "delete alerts older than N days (0: keep)")
      ("forward-webhook", po::value(&o.webhooks)->composing(),
       "POST each stored alert as Falco JSON to this URL (repeatable)")
      ("max-body-bytes", po::value(&o.max_body)->default_value(16 << 20), "ingest request body limit")
      ("max-connections", po::value(&o.max_connections)->default_value(256), "open connections per listener")
      ("timeout", po::value(&o.timeout_s)->default_value(30), "seconds allowed per request and per idle keep-alive")
      ("threads", po::value(&o.threads)->default_value(2), "I/O threads")
      ("committer-nice", po::value(&o.committer_nice)->default_value(-10),
       "nice value of the thread that writes to the database, the serial stage of ingest (-20..19); "
       "needs CAP_SYS_NICE or RLIMIT_NICE to go below the process's own, else it keeps that")
      ("sync", po::value(&o.sync)->default_value("full"),
       "full: a 2xx batch survives kill -9 and power loss (fdatasync per commit); "
       "normal: survives kill -9 / process crashes, an OS crash or power cut may lose the last batches")
      ("pipeline", po::value(&o.pipeline)->default_value(4),
       "HTTP/1.1 pipelining: ingest requests read ahead of their replies per connection (1: none)")
      ("log-level", po::value(&o.log_level)->default_value("info"), "debug|info|warn|error");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    // Command-line values win: po::store keeps the first value it stored.
    po::store(po::parse_environment(desc,
                                    [&](const std::string& env) -> std::string {
                                      if (env.rfind("SIDETRACE_", 0) != 0) return "";
                                      std::string name = env.substr(10);
                                      for (char& c : name) c = c == '_' ? '-' : static_cast<char>(std::tolower(c));
                                      return desc.find_nothrow(name, false) && name != "help" ? name : "";
                                    }),
              vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "sidetrace-backend: %s (see --help)\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  log::Level level;
  if (!log::ParseLevel(o.log_level, &level)) {
    std::fprintf(stderr, "sidetrace-backend: --log-level: unknown level \"%s\"\n", o.log_level.c_str());
    return 2;
  }
  log::SetLevel(level);
  if (!o.access_keys_file.empty()) {
    Status st = ReadKeysFile(o.access_keys_file, &o.access_keys);
    if (!st.ok()) {
      std::fprintf(stderr, "sidetrace-backend: --access-keys-file: %s\n", st.message().c_str());
      return 2;
    }
  }
  if (o.access_keys.empty()) {
    std::fprintf(stderr, "sidetrace-backend: no access key: give --access-key or --access-keys-file\n");
    return 2;
  }
  if (o.self_signed && o.cert.empty()) {
    o.cert = o.db + ".cert.pem";
    o.key = o.db + ".key.pem";
    if (access(o.cert.c_str(), R_OK) != 0 || access(o.key.c_str(), R_OK) != 0) {
      Status st = tls::GenerateSelfSigned(o.cert, o.key, {});
      if (!st.ok()) {
        std::fprintf(stderr, "sidetrace-backend: --self-signed: %s\n", st.message().c_str());
        return 1;
      }
    }
    auto fp = tls::CertificateFingerprint(o.cert);
    if (fp.ok()) std::printf("self-signed certificate %s\nSHA-256 fingerprint %s\n", o.cert.c_str(), fp->c_str());
    std::fflush(stdout);
  }
  if (o.cert.empty() || o.key.empty()) {
    std::fprintf(stderr, "sidetrace-backend: ingest is TLS only: give --cert and --key, or --self-signed\n");
    return 2;
  }
  tls::ServerConfig sc;
  sc.cert_file = o.cert;
  sc.key_file = o.key;
  auto tls_ctx = tls::MakeServerContext(sc);
  if (!tls_ctx.ok()) {
    std::fprintf(stderr, "sidetrace-backend: %s\n", tls_ctx.status().message().c_str());
    return 1;
  }

  StoreOptions store_opts;
  if (!ParseSync(o.sync, &store_opts.sync)) {
    std::fprintf(stderr, "sidetrace-backend: --sync: expected full or normal, got \"%s\"\n", o.sync.c_str());
    return 2;
  }
  if (o.committer_nice < -20 || o.committer_nice > 19) {
    std::fprintf(stderr, "sidetrace-backend: --committer-nice: must be -20..19, got %d\n", o.committer_nice);
    return 2;
  }
  if (o.pipeline < 1) {
    std::fprintf(stderr, "sidetrace-backend: --pipeline: must be at least 1\n");
    return 2;
  }
  auto store = Store::Open(o.db, store_opts);
  if (!store.ok()) {
    std::fprintf(stderr, "sidetrace-backend: %s\n", store.status().message().c_str());
    return 1;
  }
  Metrics metrics;
  SseHub hub;
  std::unique_ptr<Forwarder> forwarder;
  if (!o.webhooks.empty()) {
    auto f = Forwarder::Create(o.webhooks, ForwarderOptions{}, &metrics);
    if (!f.ok()) {
      std::fprintf(stderr, "sidetrace-backend: %s\n", f.status().message().c_str());
      return 2;
    }
    forwarder = std::move(f.value());
  }
  // A decompressed body may be larger than the wire limit, but not unbounded.
  Committer committer(store->get(), &metrics, o.committer_nice);
  Service service(store->get(), &committer, &metrics, &hub, forwarder.get(), o.access_keys,
                  std::max<size_t>(o.max_body * 8, 64 << 20));

  boost::asio::io_context io(o.threads);
  ServerOptions ingest_opts;
  ingest_opts.name = "ingest";
  ingest_opts.max_body_bytes = o.max_body;
  ingest_opts.max_connections = o.max_connections;
  ingest_opts.read_timeout = std::chrono::seconds(o.timeout_s);
  ServerOptions http_opts = ingest_opts;
  ingest_opts.max_pipeline = o.pipeline;
  ingest_opts.body_padding = kParsePadding;
  HttpServer ingest(io, ingest_opts, &*tls_ctx, [&](Request& r, Respond done) { service.HandleIngest(r, std::move(done)); },
                    &metrics, nullptr);
  http_opts.name = "http";
  http_opts.max_body_bytes = 64 * 1024;
  HttpServer web(io, http_opts, o.http_tls ? &*tls_ctx : nullptr,
                 [&](Request& r, Respond done) { done(service.HandleHttp(r)); }, &metrics, &hub);
  for (auto [server, addr] : {std::pair{&ingest, o.ingest}, std::pair{&web, o.http}}) {
    Status st = server->Start(addr);
    if (!st.ok()) {
      std::fprintf(stderr, "sidetrace-backend: %s\n", st.message().c_str());
      return 1;
    }
  }
  auto ep = [](const boost::asio::ip::tcp::endpoint& e) {
    return e.address().is_v6() ? fmt::format("[{}]:{}", e.address().to_string(), e.port())
                               : fmt::format("{}:{}", e.address().to_string(), e.port());
  };
  log::Info("ingest listening", "addr={} keys={} db={} sync={} pipeline={}", ep(ingest.local_endpoint()),
            o.access_keys.size(), log::Quote(o.db), o.sync, o.pipeline);
  log::Info("http listening", "addr={} tls={}", ep(web.local_endpoint()), o.http_tls);

  // Retention: deletes in chunks so that ingest never waits long for the
  // write lock; runs at start and then hourly.
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stopping = false;
  std::thread retention([&] {
    if (o.retention_days <= 0) return;
    std::unique_lock lock(stop_mu);
    do {
      lock.unlock();
      int64_t cutoff = NowNs() - int64_t{o.retention_days} * 86400 * 1000000000LL;
      for (;;) {
        auto n = (*store)->DeleteOlderThan(cutoff, 5000);
        if (!n.ok()) {
          log::Warn("retention failed", "error={}", log::Quote(n.status().message()));
          break;
        }
        metrics.retention_deleted += *n;
        if (*n < 5000) break;
      }
      lock.lock();
    } while (!stop_cv.wait_for(lock, std::chrono::hours(1), [&] { return stopping; }));
  });

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int sig) {
    log::Info("shutting down", "signal={}", sig);
    ingest.Stop();
    web.Stop();
    io.stop();
  });
  std::vector<std::thread> threads;
  for (int i = 1; i < o.threads; ++i) threads.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();
  // Batches parsed before the stop are committed and answered (into the
  // stopped io_context) while the Service and the io_context still exist.
  committer.Stop();
  {
    std::lock_guard lock(stop_mu);
    stopping = true;
  }
  stop_cv.notify_all();
  retention.join();
  if (forwarder) forwarder->Stop();
  return 0;
}
