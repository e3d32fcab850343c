// Container and task side index tables (schema 3) on real SQLite files:
// queries filtered by container and/or task give exactly the rows a full
// scan gives, in order, through cursor pages that cross the watermark (rows
// below, above and exactly at it, and a watermark that moves between two
// pages); both parts of such a query use an index; a schema-2 file is
// indexed when migrated; retention removes side rows with their events and
// lowers the watermark when the newest rows go; kill -9 at any moment of
// ingest and bulk indexing leaves side rows and watermark consistent.
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "backend/store.h"
#include "tests/backend/harness.h"
#include "tests/backend/released_schemas.h"

using namespace sidetrace::backend;
using sidetrace::backend_test::MakeTempDir;
using namespace sidetrace::backend_test;  // the released schemas

namespace {

constexpr int64_t kT0 = 1764115200LL * 1000000000LL;  // 2025-11-26T00:00:00Z

struct Spec {
  std::string uuid;
  int64_t time_ns;
  std::string container, task, rule = "R";
};

std::string Body(const std::vector<Spec>& specs) {
  std::string events;
  for (const Spec& s : specs) {
    if (!events.empty()) events += ',';
    events += fmt::format(
        R"({{"uuid":"{}","time":"{}","rule":"{}","priority":"Warning","output":"o",)"
        R"("output_fields":{{"container.id":"{}","aws.ecs.task.arn":"{}"}}}})",
        s.uuid, FormatRfc3339(s.time_ns), s.rule, s.container, s.task);
  }
  return R"({"events":[)" + events + "]}";
}

void Insert(Store& store, const std::vector<Spec>& specs) {
  auto batch = ParseBatch(Body(specs));
  REQUIRE(batch.ok());
  auto r = store.InsertBatch(*batch, kT0);
  REQUIRE(r.ok());
}

// n alerts over `containers` containers (and containers / 2 + 1 tasks),
// times scattered around `center` (some equal), as late arrivals make them.
std::vector<Spec> Scattered(std::mt19937& rng, const std::string& prefix, int n, int containers, int64_t center) {
  std::vector<Spec> out;
  std::uniform_int_distribution<int64_t> dt(-50, 50);
  for (int i = 0; i < n; ++i) {
    int c = static_cast<int>(rng() % containers);
    out.push_back({fmt::format("{}-{}", prefix, i), center + dt(rng) * 1000, fmt::format("c{}", c),
                   fmt::format("arn:task/{}", c / 2), i % 3 ? "R" : "S"});
  }
  return out;
}

// A plain connection to the same file: the truth by full scan, and the side
// tables' consistency with their events.
class Raw {
 public:
  explicit Raw(const std::string& path) { REQUIRE(sqlite3_open(path.c_str(), &db_) == SQLITE_OK); }
  ~Raw() { sqlite3_close(db_); }
  int64_t Int(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(s) == SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
  }
  struct Row {
    std::string json;
    int64_t time_ns, id;
  };
  // Rows matching `where` (NOT INDEXED: a full scan of the table), newest first.
  std::vector<Row> Rows(const std::string& where) {
    sqlite3_stmt* s = nullptr;
    std::string sql = "SELECT json, time_ns, id FROM events NOT INDEXED WHERE " + where + " ORDER BY time_ns DESC, id DESC";
    REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
    std::vector<Row> out;
    while (sqlite3_step(s) == SQLITE_ROW)
      out.push_back({reinterpret_cast<const char*>(sqlite3_column_text(s, 0)), sqlite3_column_int64(s, 1),
                     sqlite3_column_int64(s, 2)});
    sqlite3_finalize(s);
    return out;
  }
  // Every row up to the watermark has exactly its side rows, and no side
  // row is above it or without its event.
  void CheckConsistent() {
    int64_t w = Watermark();
    // Task side rows name the task by its number in `tasks`.
    for (auto [table, join] :
         {std::pair{"events_by_container", "events e ON e.id = s.id AND e.container_id = s.container_id"},
          std::pair{"events_by_task", "tasks t ON t.id = s.task JOIN events e ON e.id = s.id AND e.task_arn = t.task_arn"}}) {
      INFO(table);
      std::string key = table == std::string("events_by_task") ? "task_arn" : "container_id";
      int64_t side = Int(fmt::format("SELECT count(*) FROM {}", table));
      CHECK(side == Int(fmt::format("SELECT count(*) FROM events WHERE id <= {} AND {} <> ''", w, key)));
      CHECK(side == Int(fmt::format("SELECT count(*) FROM {} s JOIN {} AND e.time_ns = s.time_ns", table, join)));
      CHECK(Int(fmt::format("SELECT count(*) FROM {} WHERE id > {}", table, w)) == 0);
    }
  }
  int64_t Watermark() { return Int("SELECT indexed_to FROM side_index_state"); }

 private:
  sqlite3* db_ = nullptr;
};

std::string Q(const std::string& v) { return "'" + v + "'"; }

// All pages of `q` (limit `limit`), following cursors; `between` runs after
// the first page.
std::vector<std::string> AllPages(Store& store, Store::Query q, int limit,
                                  const std::function<void()>& between = {}) {
  q.limit = limit;
  std::vector<std::string> out;
  for (int pages = 0; pages < 10000; ++pages) {
    auto page = store.QueryEvents(q);
    REQUIRE(page.ok());
    CHECK(static_cast<int>(page->events.size()) <= limit);
    out.insert(out.end(), page->events.begin(), page->events.end());
    if (page->next_cursor.empty()) break;
    CHECK(static_cast<int>(page->events.size()) == limit);
    q.cursor = page->next_cursor;
    if (pages == 0 && between) between();
  }
  return out;
}

std::vector<std::string> Jsons(const std::vector<Raw::Row>& rows) {
  std::vector<std::string> out;
  for (const auto& r : rows) out.push_back(r.json);
  return out;
}

// Every container, task, and a few combinations with other filters: the
// store's pages equal the full scan.
void CheckQueries(Store& store, Raw& raw, int containers) {
  CHECK(AllPages(store, {}, 9) == Jsons(raw.Rows("1")));  // no filter: the time index, ties on time by id
  for (int c = 0; c < containers; ++c) {
    std::string cid = fmt::format("c{}", c), task = fmt::format("arn:task/{}", c / 2);
    INFO("container " << cid);
    Store::Query q;
    q.container = cid;
    CHECK(AllPages(store, q, 7) == Jsons(raw.Rows("container_id = " + Q(cid))));
    q.container.clear();
    q.task = task;
    CHECK(AllPages(store, q, 5) == Jsons(raw.Rows("task_arn = " + Q(task))));
    q.container = cid;
    q.rules = {"S"};
    CHECK(AllPages(store, q, 3) ==
          Jsons(raw.Rows(fmt::format("container_id = {} AND task_arn = {} AND rule = 'S'", Q(cid), Q(task)))));
    q = {};
    q.container = cid;
    q.since_ns = kT0 - 20000;
    q.until_ns = kT0 + 20000;
    CHECK(AllPages(store, q, 4) == Jsons(raw.Rows(fmt::format("container_id = {} AND time_ns >= {} AND time_ns < {}",
                                                              Q(cid), q.since_ns, q.until_ns))));
  }
}

}  // namespace

TEST_CASE("backend_side_index: container and task filters are exact across the watermark", "[unit]") {
  std::string dir = MakeTempDir("backend_side_index_test");
  std::string path = dir + "/w.db";
  auto store = Store::Open(path);
  REQUIRE(store.ok());
  std::mt19937 rng(7);
  const int containers = 7;
  Insert(**store, Scattered(rng, "a", 300, containers, kT0));
  auto n = (*store)->IndexSideTables();
  REQUIRE(n.ok());
  CHECK(*n == 300);
  CHECK((*store)->UnindexedRows() == 0);
  // Above the watermark: times interleaved with the indexed rows' (older,
  // newer and equal ones), so pages mix both parts.
  Insert(**store, Scattered(rng, "b", 200, containers, kT0));
  CHECK((*store)->UnindexedRows() == 200);
  Raw raw(path);
  CHECK(raw.Watermark() == 300);
  raw.CheckConsistent();
  CheckQueries(**store, raw, containers);

  // A cursor exactly at the watermark's row (id 300): the rest, from both parts.
  auto rows = raw.Rows("container_id = (SELECT container_id FROM events WHERE id = 300)");
  auto at = std::find_if(rows.begin(), rows.end(), [](const Raw::Row& r) { return r.id == 300; });
  REQUIRE(at != rows.end());
  REQUIRE(at + 1 != rows.end());
  bool above_after = false, below_after = false;
  for (auto it = at + 1; it != rows.end(); ++it) (it->id > 300 ? above_after : below_after) = true;
  CHECK(above_after);  // the data set really has both parts after it
  CHECK(below_after);
  Store::Query q;
  q.container = fmt::format("c{}", raw.Int("SELECT substr(container_id, 2) FROM events WHERE id = 300"));
  q.cursor = fmt::format("{}_{}", at->time_ns, at->id);
  std::vector<Raw::Row> rest(at + 1, rows.end());
  CHECK(AllPages(**store, q, 6) == Jsons(rest));

  // The watermark moves between two pages of one listing: still every row once.
  q = {};
  q.container = "c3";
  auto expected = Jsons(raw.Rows("container_id = 'c3'"));
  CHECK(AllPages(**store, q, 4, [&] { REQUIRE((*store)->IndexSideTables().ok()); }) == expected);
  CHECK(raw.Watermark() == 500);
  raw.CheckConsistent();
  CheckQueries(**store, raw, containers);
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST_CASE("backend_side_index: both parts of a container or task query use an index", "[unit]") {
  std::string dir = MakeTempDir("backend_side_index_test");
  auto store = Store::Open(dir + "/p.db");
  REQUIRE(store.ok());
  std::mt19937 rng(1);
  Insert(**store, Scattered(rng, "p", 200, 5, kT0));
  REQUIRE((*store)->IndexSideTables().ok());
  Insert(**store, Scattered(rng, "q", 100, 5, kT0));
  Store::Query by_container, by_task, both, filtered;
  by_container.container = "c1";
  by_task.task = "arn:task/1";
  both.container = "c1";
  both.task = "arn:task/0";
  filtered.container = "c2";
  filtered.since_ns = kT0 - 1000;
  filtered.rules = {"R"};
  filtered.text = "o";
  filtered.cursor = fmt::format("{}_{}", kT0, 250);
  for (const auto& [q, side] : {std::pair{by_container, "(container_id=?"}, std::pair{by_task, "(task=?"},
                               std::pair{both, "(container_id=?"}, std::pair{filtered, "(container_id=?"}}) {
    auto plan = (*store)->ExplainQueryEvents(q);
    REQUIRE(plan.ok());
    std::string all;
    for (const auto& line : *plan) all += line + "\n";
    INFO(all);
    // Up to the watermark: the side table's key, then each event by id.
    CHECK(all.find(std::string("SEARCH s USING PRIMARY KEY ") + side) != std::string::npos);
    CHECK(all.find("SEARCH e USING INTEGER PRIMARY KEY (rowid=?)") != std::string::npos);
    // Above it: a range of row ids.
    CHECK(all.find("SEARCH events USING INTEGER PRIMARY KEY (rowid>?)") != std::string::npos);
    // No full scan of a table: the only scans are of the parts' own
    // results and of the one-row watermark table.
    for (const auto& line : *plan)
      if (line.rfind("SCAN", 0) == 0) CHECK((line.rfind("SCAN (subquery-", 0) == 0 || line == "SCAN side_index_state"));
  }
  // Without container or task: the time index, cursor included.
  Store::Query plain;
  plain.cursor = fmt::format("{}_{}", kT0, 250);
  auto plan = (*store)->ExplainQueryEvents(plain);
  REQUIRE(plan.ok());
  REQUIRE(plan->size() == 1);
  CHECK(plan->front().rfind("SEARCH events USING INDEX events_time (", 0) == 0);
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST_CASE("backend_side_index: a schema-2 database is migrated with its rows indexed", "[unit]") {
  std::string dir = MakeTempDir("backend_side_index_test");
  std::string path = dir + "/v2.db";
  {
    // Schema version 2 as released (migrations 1 and 2 of store.cpp).
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    std::string schema = std::string(kEventsTableV2) + kEventIndexesV1 + kContainerTaskIndexesV1 + kAgentsTableV1 +
                         "PRAGMA user_version = 2;";
    REQUIRE(sqlite3_exec(db, schema.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db,
                               "INSERT INTO events(uuid,time_ns,rule,priority_num,container_id,task_arn,agent_id,"
                               "json,received_ns) VALUES(?,?,?,4,?,?,'',?,0)",
                               -1, &s, nullptr) == SQLITE_OK);
    std::mt19937 rng(2);
    for (const Spec& a : Scattered(rng, "old", 400, 6, kT0)) {
      sqlite3_reset(s);
      sqlite3_bind_text(s, 1, a.uuid.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(s, 2, a.time_ns);
      sqlite3_bind_text(s, 3, a.rule.c_str(), -1, SQLITE_TRANSIENT);
      // A few rows without container or task: they have no side rows.
      bool bare = a.uuid.back() == '7';
      sqlite3_bind_text(s, 4, bare ? "" : a.container.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(s, 5, bare ? "" : a.task.c_str(), -1, SQLITE_TRANSIENT);
      std::string json = fmt::format(R"({{"uuid":"{}"}})", a.uuid);
      sqlite3_bind_text(s, 6, json.c_str(), -1, SQLITE_TRANSIENT);
      REQUIRE(sqlite3_step(s) == SQLITE_DONE);
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
  }
  auto store = Store::Open(path);
  REQUIRE(store.ok());
  Raw raw(path);
  CHECK(raw.Int("PRAGMA user_version") == Store::kSchemaVersion);
  CHECK(raw.Int("SELECT count(*) FROM sqlite_master WHERE name IN ('events_container', 'events_task')") == 0);
  CHECK(raw.Watermark() == 400);
  CHECK(raw.Int("SELECT count(*) FROM events_by_container") == 400 - 40);
  CHECK((*store)->UnindexedRows() == 0);
  raw.CheckConsistent();
  std::mt19937 rng(3);
  Insert(**store, Scattered(rng, "new", 100, 6, kT0));
  CheckQueries(**store, raw, 6);
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST_CASE("backend_side_index: retention deletes side rows and lowers the watermark with the newest rows",
          "[unit]") {
  std::string dir = MakeTempDir("backend_side_index_test");
  std::string path = dir + "/r.db";
  auto store = Store::Open(path);
  REQUIRE(store.ok());
  std::mt19937 rng(4);
  const int64_t day = 86400LL * 1000000000LL;
  Insert(**store, Scattered(rng, "old", 300, 5, kT0 - 3 * day));
  Insert(**store, Scattered(rng, "mid", 300, 5, kT0 - day));
  REQUIRE((*store)->IndexSideTables().ok());
  Insert(**store, Scattered(rng, "late-old", 100, 5, kT0 - 3 * day));  // above the watermark, old
  Insert(**store, Scattered(rng, "new", 100, 5, kT0));
  Raw raw(path);
  int64_t deleted = 0;
  for (;;) {
    auto n = (*store)->DeleteOlderThan(kT0 - 2 * day, 64);
    REQUIRE(n.ok());
    deleted += *n;
    if (*n < 64) break;
  }
  CHECK(deleted == 400);
  CHECK(raw.Int("SELECT count(*) FROM events") == 400);
  CHECK(raw.Watermark() == 600);
  raw.CheckConsistent();
  CheckQueries(**store, raw, 5);

  // Everything goes, the newest rows too: a new row then gets id 1 again,
  // which must not count as indexed.
  REQUIRE((*store)->DeleteOlderThan(kT0 + day, 100000).ok());
  CHECK(raw.Int("SELECT count(*) FROM events") == 0);
  CHECK(raw.Watermark() == 0);
  raw.CheckConsistent();
  Insert(**store, Scattered(rng, "again", 50, 5, kT0));
  CHECK(raw.Int("SELECT min(id) FROM events") == 1);
  CHECK((*store)->UnindexedRows() == 50);
  CheckQueries(**store, raw, 5);
  REQUIRE((*store)->IndexSideTables().ok());
  raw.CheckConsistent();
  CheckQueries(**store, raw, 5);
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST_CASE("backend_side_index: kill -9 during ingest and bulk indexing leaves a consistent state", "[unit]") {
  std::string dir = MakeTempDir("backend_side_index_test");
  std::string path = dir + "/k.db";
  const int containers = 300;
  std::mt19937 parent_rng(5);
  for (int round = 0; round < 4; ++round) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // Child: batches from many containers, a bulk index after every
      // third, and every batch sent twice (a replay: duplicates).
      StoreOptions options;
      options.sync = Sync::kNormal;
      auto store = Store::Open(path, options);
      if (!store.ok()) _exit(1);
      std::mt19937 rng(100 + round);
      for (int b = 0; b < 1000000; ++b) {
        auto batch = ParseBatch(Body(Scattered(rng, fmt::format("k{}-{}", round, b), 1000, containers, kT0 + b * 100000)));
        if (!batch.ok() || !(*store)->InsertBatch(*batch, kT0).ok() || !(*store)->InsertBatch(*batch, kT0).ok())
          _exit(1);
        if (b % 3 == 2 && !(*store)->IndexSideTables().ok()) _exit(1);
      }
      _exit(0);
    }
    // Let it get going (opening, a few bulks), then kill it at a random moment.
    std::this_thread::sleep_for(std::chrono::milliseconds(400 + parent_rng() % 600));
    REQUIRE(kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFSIGNALED(status));
    Raw raw(path);
    INFO("round " << round);
    CHECK(raw.Int("SELECT count(*) FROM events_by_container") ==
          raw.Int("SELECT count(DISTINCT id) FROM events_by_container"));
    raw.CheckConsistent();
  }
  auto store = Store::Open(path);
  REQUIRE(store.ok());
  Raw raw(path);
  CHECK(raw.Int("SELECT count(*) FROM events") > 1000);  // the child did store batches
  CHECK(raw.Watermark() > 0);                            // and index some
  for (int c = 0; c < containers; c += 37) {
    Store::Query q;
    q.container = fmt::format("c{}", c);
    CHECK(AllPages(**store, q, 500) == Jsons(raw.Rows("container_id = " + Q(q.container))));
  }
  REQUIRE((*store)->IndexSideTables().ok());
  raw.CheckConsistent();
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST_CASE("backend_side_index: side rows kept by the writer equal side rows read back, across restarts and retention",
          "[unit]") {
  std::string dir = MakeTempDir("backend_side_index_test");
  std::string path = dir + "/m.db";
  std::mt19937 rng(11);
  const int64_t day = 86400LL * 1000000000LL;
  auto store = Store::Open(path);
  REQUIRE(store.ok());
  Raw raw(path);
  // Kept in memory from the start, a replayed batch among them (its copies
  // must not count twice).
  auto first = Scattered(rng, "a", 400, 20, kT0);
  Insert(**store, first);
  Insert(**store, {first.begin() + 100, first.begin() + 200});
  auto more = Scattered(rng, "b", 300, 20, kT0 + 1000000);
  Insert(**store, {first.begin() + 150, first.begin() + 250});
  Insert(**store, more);
  REQUIRE((*store)->IndexSideTables().ok());
  CHECK(raw.Watermark() == 700);
  raw.CheckConsistent();
  CheckQueries(**store, raw, 20);

  // Rows inserted before a restart are read back; later ones join them.
  Insert(**store, Scattered(rng, "c", 200, 20, kT0));
  store->reset();
  store = Store::Open(path);
  REQUIRE(store.ok());
  Insert(**store, Scattered(rng, "d", 200, 20, kT0));
  CHECK((*store)->UnindexedRows() == 400);
  REQUIRE((*store)->IndexSideTables().ok());
  raw.CheckConsistent();
  CheckQueries(**store, raw, 20);

  // Retention deleting rows the writer still keeps: none of them may get a
  // side row.
  Insert(**store, Scattered(rng, "old", 100, 20, kT0 - 3 * day));
  Insert(**store, Scattered(rng, "e", 100, 20, kT0));
  auto deleted = (*store)->DeleteOlderThan(kT0 - 2 * day, 1000);
  REQUIRE(deleted.ok());
  CHECK(*deleted == 100);
  Insert(**store, Scattered(rng, "f", 100, 20, kT0));
  REQUIRE((*store)->IndexSideTables().ok());
  raw.CheckConsistent();
  CheckQueries(**store, raw, 20);
  // And the bulk after that one is kept in memory again.
  Insert(**store, Scattered(rng, "g", 300, 20, kT0));
  REQUIRE((*store)->IndexSideTables().ok());
  CHECK((*store)->UnindexedRows() == 0);
  raw.CheckConsistent();
  CheckQueries(**store, raw, 20);
  store->reset();
  std::filesystem::remove_all(dir);
}
