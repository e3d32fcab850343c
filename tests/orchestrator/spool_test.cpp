#include <catch2/catch.hpp>

#include <fmt/format.h>

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
// Take() merges nothing unless a test asks for it.
Spool::Options Opts(const TempDir& dir, uint32_t batch, uint64_t max_bytes = 1 << 20, uint32_t take_max = 0,
                    std::chrono::milliseconds delay = 50ms) {
  return {dir / "spool", max_bytes, batch, delay, take_max ? take_max : batch};
}

void AppendAndWait(Spool& spool, const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  std::atomic<int> done{0};
  spool.Append(std::move(text), lines.size(), [&](bool ok) { done = ok ? 1 : -1; });
  REQUIRE(WaitFor([&] { return done != 0; }, 10s));
  REQUIRE(done == 1);
}

std::string Lines(const Spool::Batch& b) {
  std::string text;
  REQUIRE(Spool::Read(b, &text).ok());
  return text;
}

std::vector<std::string> Uuids(int from, int to) {
  std::vector<std::string> v;
  for (int i = from; i < to; ++i) v.push_back(fmt::format("{{\"uuid\":\"{}\"}}", i));
  return v;
}

size_t Segments(const TempDir& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir / "spool")) n += e.path().extension() == ".jsonl";
  return n;
}
}  // namespace

TEST_CASE("spool seals batches by count and by delay", "[spool]") {
  TempDir dir;
  Metrics m;
  Spool spool(Opts(dir, 3, 1 << 20, 3, 1s), &m);
  REQUIRE(spool.Open().ok());
  AppendAndWait(spool, {"{\"uuid\":\"1\"}", "{\"uuid\":\"2\"}", "{\"uuid\":\"3\"}", "{\"uuid\":\"4\"}"});
  AppendAndWait(spool, {"{\"uuid\":\"5\"}"});
  auto a = spool.Take(5s);
  REQUIRE(a);
  CHECK(a->events == 3);
  CHECK(Lines(*a) == "{\"uuid\":\"1\"}\n{\"uuid\":\"2\"}\n{\"uuid\":\"3\"}\n");
  auto b = spool.Take(5s);  // sealed by the 1 s delay
  REQUIRE(b);
  CHECK(b->events == 2);
  CHECK(Lines(*b) == "{\"uuid\":\"4\"}\n{\"uuid\":\"5\"}\n");
  CHECK(b->path == a->path);  // one segment file holds both
  CHECK(m.spool_batches == 2);
  // A failed batch comes back first; a delivered one is released.
  spool.Failed(*a);
  auto again = spool.Take(1s);
  REQUIRE(again);
  CHECK(again->id == a->id);
  spool.Delivered(*again);
  spool.Delivered(*b);
  CHECK(m.spool_bytes == 0);
  CHECK(m.spool_batches == 0);
  CHECK_FALSE(spool.Take(100ms));
}

TEST_CASE("spool: a round is one fdatasync whatever it seals; a segment goes only with its last batch",
          "[spool]") {
  TempDir dir;
  Metrics m;
  Spool spool(Opts(dir, 10, 1 << 20, 25), &m);
  REQUIRE(spool.Open().ok());
  AppendAndWait(spool, Uuids(0, 60));  // one round, six batches
  CHECK(m.spool_syncs == 1);
  CHECK(Segments(dir) == 1);
  // Take merges the batches that follow in the same segment, up to 25 alerts.
  auto a = spool.Take(5s);
  REQUIRE(a);
  CHECK(a->events == 20);
  CHECK(a->parts == 2);
  std::string want;
  for (const auto& l : Uuids(0, 20)) want += l + "\n";
  CHECK(Lines(*a) == want);
  auto b = spool.Take(1s);
  auto c = spool.Take(1s);
  REQUIRE(b);
  REQUIRE(c);
  CHECK(b->events + c->events == 40);
  spool.Delivered(*a);
  spool.Delivered(*b);
  spool.Stop();  // the segment is no longer written
  CHECK(Segments(dir) == 1);  // c is not delivered yet: its alerts stay on disk
  spool.Failed(*c);
  CHECK(Segments(dir) == 1);
  spool.Delivered(*c);
  CHECK(Segments(dir) == 0);
  CHECK(m.spool_bytes == 0);
}

TEST_CASE("spool recovery cuts a torn last line and keeps the rest", "[spool]") {
  TempDir dir;
  std::filesystem::create_directories(dir / "spool");
  std::string seg = dir / "spool/seg-00000000000000000007.jsonl";
  WriteFile(seg, "{\"uuid\":\"a\"}\n{\"uuid\":\"b\"}\n{\"uuid\":\"c\"}\n{\"uuid\":\"d");
  WriteFile(dir / "spool/seg-00000000000000000009.jsonl", "{\"uui");  // nothing complete
  WriteFile(dir / "spool/unrelated.txt", "x");
  Metrics m;
  Spool spool(Opts(dir, 2), &m);
  REQUIRE(spool.Open().ok());
  // Cut into batches of --batch-max-events again.
  auto b = spool.Take(1s);
  REQUIRE(b);
  CHECK(b->segment == 7);
  CHECK(b->events == 2);
  CHECK(Lines(*b) == "{\"uuid\":\"a\"}\n{\"uuid\":\"b\"}\n");
  auto b2 = spool.Take(1s);
  REQUIRE(b2);
  CHECK(Lines(*b2) == "{\"uuid\":\"c\"}\n");
  CHECK(ReadFile(seg) == "{\"uuid\":\"a\"}\n{\"uuid\":\"b\"}\n{\"uuid\":\"c\"}\n");
  CHECK_FALSE(std::filesystem::exists(dir / "spool/seg-00000000000000000009.jsonl"));
  // New segments continue after the highest id found.
  AppendAndWait(spool, {"{\"uuid\":\"e\"}"});
  auto n = spool.Take(5s);
  REQUIRE(n);
  CHECK(n->segment == 10);
}

TEST_CASE("spool restart resends every alert not delivered, including a partly delivered segment", "[spool]") {
  TempDir dir;
  Metrics m;
  {
    Spool spool(Opts(dir, 2), &m);
    REQUIRE(spool.Open().ok());
    AppendAndWait(spool, Uuids(0, 5));
    auto a = spool.Take(5s);
    REQUIRE(a);
    CHECK(Lines(*a) == "{\"uuid\":\"0\"}\n{\"uuid\":\"1\"}\n");
    spool.Delivered(*a);
    auto b = spool.Take(5s);  // taken, never answered: the process dies
    REQUIRE(b);
  }
  Metrics m2;
  Spool again(Opts(dir, 100), &m2);
  REQUIRE(again.Open().ok());
  auto all = again.Take(1s);
  REQUIRE(all);
  // The segment still holds the delivered batch too: it is sent again and
  // the backend ignores the uuids it has. Nothing acked is missing.
  std::string want;
  for (const auto& l : Uuids(0, 5)) want += l + "\n";
  CHECK(Lines(*all) == want);
  CHECK(m2.spool_bytes == want.size());
  again.Delivered(*all);
  CHECK(Segments(dir) == 0);
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
  // Segments roll at 1 KiB here (1/16 of the cap, at least 1 KiB): the
  // first holds the two batches dropped first and is gone.
  CHECK_FALSE(std::filesystem::exists(dir / "spool/seg-00000000000000000001.jsonl"));
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
  spool.Append("{}\n", 1, [&](bool ok) { done = ok ? 1 : -1; });
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
  CHECK(c->post_max_events == 2000);
  auto no_post = parse({"x", "--backend", "b:1", "--post-max-events", "0"});
  REQUIRE_FALSE(no_post.ok());
  CHECK(no_post.status().message() == "--post-max-events must be >= 1");
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
