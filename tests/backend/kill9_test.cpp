// kill -9 during ingest loses no acknowledged event: the real backend binary
// is SIGKILLed while two TLS clients stream batches (their batches meet in
// group commits); after a restart on the same database every uuid of every
// 200-acknowledged batch is there, and every batch is all-or-nothing.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sqlite3.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "common/tls/cert_gen.h"
#include "tests/backend/harness.h"

using namespace sidetrace;
using namespace sidetrace::backend_test;
using json = nlohmann::json;

namespace {

constexpr char kKey[] = "kill9-key";
constexpr int kBatch = 200;

struct Sent {
  std::mutex mu;
  std::vector<std::string> acked_batches;  // batch ids answered 200
  std::vector<std::string> all_batches;    // every batch id sent (acked or not)
};

void Sender(uint16_t port, const std::string& ca, const std::string& prefix, Sent* sent, std::atomic<bool>* stop) {
  HttpClient c(port, ca);
  for (int b = 0; !stop->load() && b < 100000; ++b) {
    std::string id = prefix + "-" + std::to_string(b);
    std::vector<json> alerts;
    for (int i = 0; i < kBatch; ++i) alerts.push_back(MakeAlert(id + "-" + std::to_string(i)));
    {
      std::lock_guard lock(sent->mu);
      sent->all_batches.push_back(id);
    }
    auto r = c.PostBatch(BatchBody(alerts), kKey);
    if (r.status != 200) return;  // the backend is gone
    std::lock_guard lock(sent->mu);
    sent->acked_batches.push_back(id);
  }
}

int64_t CountPrefix(sqlite3* db, const std::string& batch_id) {
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT count(*) FROM events WHERE uuid >= ? AND uuid < ?", -1, &s, nullptr) ==
          SQLITE_OK);
  std::string lo = batch_id + "-", hi = batch_id + ".";  // '.' sorts right after '-'
  sqlite3_bind_text(s, 1, lo.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(s, 2, hi.c_str(), -1, SQLITE_TRANSIENT);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  int64_t n = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  return n;
}

}  // namespace

TEST_CASE("backend_kill9: SIGKILL during ingest loses no acknowledged batch", "[integration]") {
  std::string dir = MakeTempDir("backend_kill9_test");
  auto pki = tls::GenerateTestPki(dir + "/pki");
  REQUIRE(pki.ok());
  std::string db = dir + "/sidetrace.db";
  std::vector<std::string> args = {"--ingest", "127.0.0.1:0",     "--http", "127.0.0.1:0", "--cert",
                                    pki->server_cert, "--key", pki->server_key, "--db", db,
                                    "--access-key", kKey};
  Sent sent;
  // Kill at different depths: early, and after the WAL has grown.
  // Round 1 runs with --sync normal: without the per-commit fdatasync an
  // acknowledged batch must still survive the death of the process.
  for (int round = 0; round < 3; ++round) {
    BackendProcess backend;
    std::vector<std::string> round_args = args;
    if (round == 1) round_args.insert(round_args.end(), {"--sync", "normal"});
    REQUIRE(backend.Start(round_args, dir + "/backend.log") == "");
    std::atomic<bool> stop{false};
    size_t acked_before;
    {
      std::lock_guard lock(sent.mu);
      acked_before = sent.acked_batches.size();
    }
    std::thread a(Sender, backend.ingest_port(), pki->ca_cert, "r" + std::to_string(round) + "a", &sent, &stop);
    std::thread b(Sender, backend.ingest_port(), pki->ca_cert, "r" + std::to_string(round) + "b", &sent, &stop);
    size_t target = acked_before + 4 + round * 8;
    bool reached = WaitFor([&] {
      std::lock_guard lock(sent.mu);
      return sent.acked_batches.size() >= target;
    }, 120000);
    backend.Kill(SIGKILL);
    int status = backend.Wait();
    stop = true;
    a.join();
    b.join();
    REQUIRE(reached);
    REQUIRE(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGKILL);
  }

  // Restart: the backend opens the database (WAL recovery) and serves it.
  BackendProcess backend;
  REQUIRE(backend.Start(args, dir + "/backend.log") == "");
  HttpClient api(backend.http_port());
  CHECK(api.Get("/healthz").status == 200);
  backend.Kill(SIGTERM);
  CHECK(backend.Wait() == 0);

  sqlite3* handle = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  {
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(handle, "PRAGMA integrity_check", -1, &s, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(s) == SQLITE_ROW);
    CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 0))) == "ok");
    sqlite3_finalize(s);
  }
  std::set<std::string> acked(sent.acked_batches.begin(), sent.acked_batches.end());
  REQUIRE(acked.size() >= 4 + 12 + 20);
  size_t lost = 0, partial = 0;
  for (const auto& id : sent.all_batches) {
    int64_t n = CountPrefix(handle, id);
    if (acked.count(id) && n != kBatch) ++lost;
    if (n != 0 && n != kBatch) ++partial;
  }
  sqlite3_close(handle);
  CHECK(lost == 0);
  CHECK(partial == 0);
  std::filesystem::remove_all(dir);
}
