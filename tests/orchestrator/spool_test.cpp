#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "orchestrator/config.h"
#include "orchestrator/spool.h"
#include "tests/orchestrator/harness.h"

using namespace sidetrace;
using namespace sidetrace::orchestrator;
using namespace sidetrace::testing;

namespace {
Spool::Options Opts(const TempDir& dir, uint32_t batch, uint64_t max_bytes = 1 << 20) {
  return {dir / "spool", max_bytes, batch, std::chrono::milliseconds(50)};
}

void AppendAndWait(Spool& spool, std::vector<std::string> lines) {
  std::atomic<int> done{0};
  spool.Append(std::move(lines), [&](bool ok) { done = ok ? 1 : -1; });
  REQUIRE(WaitFor([&] { return done != 0; }, 10s));
  REQUIRE(done == 1);
}
}  // namespace

TEST_CASE("spool seals batches by count and by delay", "[spool]") {
  TempDir dir;
  Metrics m;
  Spool spool(Opts(dir, 3), &m);
  REQUIRE(spool.Open().ok());
  AppendAndWait(spool, {"{\"uuid\":\"1\"}", "{\"uuid\":\"2\"}", "{\"uuid\":\"3\"}", "{\"uuid\":\"4\"}"});
  AppendAndWait(spool, {"{\"uuid\":\"5\"}"});
  auto a = spool.Take(5s);
  REQUIRE(a);
  CHECK(a->events == 3);
  CHECK(ReadFile(a->path) == "{\"uuid\":\"1\"}\n{\"uuid\":\"2\"}\n{\"uuid\":\"3\"}\n");
  auto b = spool.Take(5s);  // sealed by the 50 ms delay
  REQUIRE(b);
  CHECK(b->events == 2);
  CHECK(m.spool_batches == 2);
  // A failed batch comes back first; a delivered one is deleted.
  spool.Failed(*a);
  auto again = spool.Take(1s);
  REQUIRE(again);
  CHECK(again->id == a->id);
  spool.Delivered(*again);
  spool.Delivered(*b);
  CHECK_FALSE(std::filesystem::exists(a->path));
  CHECK(m.spool_bytes == 0);
  CHECK_FALSE(spool.Take(100ms));
}

TEST_CASE("spool recovery cuts a torn last line and keeps the rest", "[spool]") {
  TempDir dir;
  std::filesystem::create_directories(dir / "spool");
  std::string seg = dir / "spool/seg-00000000000000000007.jsonl";
  WriteFile(seg, "{\"uuid\":\"a\"}\n{\"uuid\":\"b\"}\n{\"uuid\":\"c");
  WriteFile(dir / "spool/seg-00000000000000000009.jsonl", "{\"uui");  // nothing complete
  WriteFile(dir / "spool/unrelated.txt", "x");
  Metrics m;
  Spool spool(Opts(dir, 100), &m);
  REQUIRE(spool.Open().ok());
  auto b = spool.Take(1s);
  REQUIRE(b);
  CHECK(b->id == 7);
  CHECK(b->events == 2);
  CHECK(ReadFile(seg) == "{\"uuid\":\"a\"}\n{\"uuid\":\"b\"}\n");
  CHECK_FALSE(std::filesystem::exists(dir / "spool/seg-00000000000000000009.jsonl"));
  // New segments continue after the highest id found.
  AppendAndWait(spool, {"{\"uuid\":\"d\"}"});
  auto n = spool.Take(5s);
  REQUIRE(n);
  CHECK(n->id == 10);
}

TEST_CASE("spool over its cap drops the oldest batches and counts them", "[spool]") {
  TempDir dir;
  Metrics m;
  std::string line(100, 'x');  // 101 bytes with the newline
  Spool spool(Opts(dir, 10, 2500), &m);
  REQUIRE(spool.Open().ok());
  for (int i = 0; i < 5; ++i) AppendAndWait(spool, std::vector<std::string>(10, line));  // 5 batches of 1010 B
  REQUIRE(WaitFor([&] { return m.spool_dropped_alerts == 30; }, 5s));
  CHECK(m.spool_bytes == 2020);
  auto b = spool.Take(1s);
  REQUIRE(b);
  CHECK(b->events == 10);
}

TEST_CASE("spool append after stop fails so the agent resends", "[spool]") {
  TempDir dir;
  Metrics m;
  Spool spool(Opts(dir, 10), &m);
  REQUIRE(spool.Open().ok());
  spool.Stop();
  std::atomic<int> done{0};
  spool.Append({"{}"}, [&](bool ok) { done = ok ? 1 : -1; });
  CHECK(done == -1);
}

TEST_CASE("orchestrator flags: env, defaults, errors", "[config]") {
  auto parse = [](std::vector<std::string> args) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    return ParseConfig(static_cast<int>(argv.size()), argv.data());
  };
  setenv("SIDETRACE_ACCESS_KEY", "from-env", 1);
  setenv("SIDETRACE_BATCH_MAX_EVENTS", "42", 1);
  auto c = parse({"x", "--backend", "b:6443", "--batch-max-events", "7"});
  REQUIRE(c.ok());
  CHECK(c->access_key == "from-env");
  CHECK(c->batch_max_events == 7);  // the command line wins
  CHECK(c->listen == "0.0.0.0:6667");
  unsetenv("SIDETRACE_BATCH_MAX_EVENTS");
  auto no_backend = parse({"x"});
  REQUIRE_FALSE(no_backend.ok());
  CHECK(no_backend.status().message() == "--backend is required (HOST:PORT of sidetrace-backend)");
  auto bad_port = parse({"x", "--backend", "b:99999"});
  REQUIRE_FALSE(bad_port.ok());
  CHECK(bad_port.status().message() == "--backend 'b:99999': want HOST:PORT with a port 0-65535");
  auto half_tls = parse({"x", "--backend", "b:1", "--tls-cert", "c.pem"});
  REQUIRE_FALSE(half_tls.ok());
  CHECK(half_tls.status().message() == "--tls-cert and --tls-key go together");
  unsetenv("SIDETRACE_ACCESS_KEY");
  auto no_key = parse({"x", "--backend", "b:1"});
  REQUIRE_FALSE(no_key.ok());
  CHECK(no_key.status().message() == "--access-key is required");
}
