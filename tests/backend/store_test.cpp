// Store on real SQLite files: a database written by schema version 1 is
// migrated in place (its alerts stay readable and searchable), and a group
// commit stores several batches with one result per batch; new files get
// large pages, old ones keep theirs.
#include <sqlite3.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include <fmt/format.h>

#include "backend/store.h"
#include "tests/backend/harness.h"
#include "tests/backend/released_schemas.h"

using namespace sidetrace::backend;
using sidetrace::backend_test::MakeTempDir;
using namespace sidetrace::backend_test;  // the released schemas

namespace {

// Schema version 1 as released (migration 1 of store.cpp), with one alert.
void WriteVersion1(const std::string& path) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  std::string sql = std::string(kEventsTableV1) + kEventIndexesV1 + kContainerTaskIndexesV1 + kAgentsTableV1 + R"sql(
INSERT INTO events VALUES (1, 'old-1', 1000, 'Old rule', 'Warning', 4, 'syscall', 'h', 'c1', 't1', 'a1',
  'cat /etc/shadow', '{"uuid":"old-1","rule":"Old rule","output":"cat /etc/shadow"}', 1000);
PRAGMA user_version = 1;
)sql";
  REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
}

std::string Body(const std::vector<std::string>& uuids) {
  std::string events;
  for (const auto& u : uuids) {
    if (!events.empty()) events += ',';
    events += R"({"uuid":")" + u +
              R"(","time":"2026-11-26T00:00:00Z","rule":"R","priority":"Warning","output_fields":{"container.id":"c2"}})";
  }
  return R"({"events":[)" + events + "]}";
}

}  // namespace

TEST_CASE("backend_store: a version 1 database is migrated and keeps its alerts", "[unit]") {
  std::string dir = MakeTempDir("backend_store_test");
  std::string path = dir + "/v1.db";
  WriteVersion1(path);
  {
    auto store = Store::Open(path);
    REQUIRE(store.ok());
    Store::Query q;
    q.text = "shadow";
    auto page = (*store)->QueryEvents(q);
    REQUIRE(page.ok());
    REQUIRE(page->events.size() == 1);
    CHECK(page->events[0].find("\"old-1\"") != std::string::npos);
    auto batch = ParseBatch(Body({"new-1", "old-1"}));
    REQUIRE(batch.ok());
    auto r = (*store)->InsertBatch(*batch, 2000);
    REQUIRE(r.ok());
    CHECK(r->inserted == 1);
    CHECK(r->duplicates == 1);
  }
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT (SELECT user_version FROM pragma_user_version), "
                                 "(SELECT count(*) FROM pragma_table_info('events') WHERE name='output'), "
                                 "(SELECT count(*) FROM events), (SELECT page_size FROM pragma_page_size)",
                             -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  CHECK(sqlite3_column_int(s, 0) == Store::kSchemaVersion);
  CHECK(sqlite3_column_int(s, 1) == 0);
  CHECK(sqlite3_column_int(s, 2) == 2);
  CHECK(sqlite3_column_int(s, 3) == 4096);  // an existing file keeps its page size
  sqlite3_finalize(s);
  sqlite3_close(db);
  std::filesystem::remove_all(dir);
}

TEST_CASE("backend_store: a new database file uses large pages", "[unit]") {
  std::string dir = MakeTempDir("backend_store_test");
  std::string path = dir + "/new.db";
  REQUIRE(Store::Open(path).ok());
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  CHECK(sqlite3_column_int(s, 0) == Store::kPageSize);
  sqlite3_finalize(s);
  sqlite3_close(db);
  std::filesystem::remove_all(dir);
}

TEST_CASE("backend_store: a group commit gives each batch its own result", "[unit]") {
  std::string dir = MakeTempDir("backend_store_test");
  StoreOptions options;
  options.sync = Sync::kNormal;
  auto store = Store::Open(dir + "/g.db", options);
  REQUIRE(store.ok());
  auto a = ParseBatch(Body({"g-1", "g-2"}));
  auto b = ParseBatch(Body({"g-2", "g-3", "g-4"}));  // g-2 is already in batch a
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  auto r = (*store)->InsertBatches({&*a, &*b}, 1);
  REQUIRE(r.ok());
  REQUIRE(r->size() == 2);
  CHECK((*r)[0].inserted == 2);
  CHECK((*r)[0].new_indexes == std::vector<size_t>{0, 1});
  CHECK((*r)[1].inserted == 2);
  CHECK((*r)[1].duplicates == 1);
  CHECK((*r)[1].new_indexes == std::vector<size_t>{1, 2});
  auto ev = (*store)->GetEvent("g-3");
  REQUIRE(ev.ok());
  REQUIRE(ev->has_value());
  CHECK(**ev == b->alerts[1].json);
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST_CASE("backend_store: batches larger than one INSERT statement count new and duplicate alerts exactly",
          "[unit]") {
  std::string dir = MakeTempDir("backend_store_test");
  auto store = Store::Open(dir + "/chunks.db");
  REQUIRE(store.ok());
  // 2.5 statements' worth: whole chunks, then single rows.
  const size_t n = Store::kInsertChunk * 5 / 2;
  std::vector<std::string> first;
  for (size_t i = 0; i < n; ++i) first.push_back(fmt::format("c-{}", i));
  auto a = ParseBatch(Body(first));
  REQUIRE(a.ok());
  auto ra = (*store)->InsertBatch(*a, 1);
  REQUIRE(ra.ok());
  CHECK(ra->inserted == n);
  CHECK(ra->duplicates == 0);
  REQUIRE(ra->new_indexes.size() == n);
  CHECK(ra->new_indexes.back() == n - 1);
  // A replay overlapping the first batch's second half, with an alert
  // repeated inside one chunk and one repeated across chunks.
  std::vector<std::string> second;
  std::vector<size_t> expected_new;
  for (size_t i = n / 2; i < n; ++i) second.push_back(fmt::format("c-{}", i));  // n - n/2 old
  for (size_t i = 0; second.size() < n + 10; ++i) {
    if (i == 3 || i == Store::kInsertChunk) {
      second.push_back("d-0");  // a repeat of the first new one: a duplicate
      continue;
    }
    expected_new.push_back(second.size());
    second.push_back(fmt::format("d-{}", i));
  }
  auto b = ParseBatch(Body(second));
  REQUIRE(b.ok());
  auto rb = (*store)->InsertBatch(*b, 2);
  REQUIRE(rb.ok());
  CHECK(rb->inserted == expected_new.size());
  CHECK(rb->duplicates == second.size() - expected_new.size());
  CHECK(rb->new_indexes == expected_new);
  Store::Query q;
  q.limit = 10000;
  auto page = (*store)->QueryEvents(q);
  REQUIRE(page.ok());
  CHECK(page->events.size() == n + expected_new.size());
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST_CASE("backend_store: background checkpoints and the writer's restarts keep the WAL bounded", "[unit]") {
  std::string dir = MakeTempDir("backend_store_test");
  std::string path = dir + "/wal.db";
  StoreOptions options;
  options.sync = Sync::kNormal;
  auto store = Store::Open(path, options);
  REQUIRE(store.ok());
  // Far more than 8x kWalCheckpointBytes of WAL frames in all (random
  // uuids dirty about a page per alert): without working checkpoints the
  // WAL would hold every one of them.
  std::string padding(600, 'x');
  int64_t max_wal = 0;
  for (int b = 0; b < 100; ++b) {
    std::string events;
    for (int i = 0; i < 1000; ++i) {
      if (i) events += ',';
      events += fmt::format(
          R"({{"uuid":"{:016x}-{}","time":"2026-11-26T00:00:00Z","rule":"R","priority":"Warning","output":"{}","output_fields":{{"k":{}}}}})",
          std::hash<int>()(b * 1000 + i) * 0x9e3779b97f4a7c15ULL, i, padding, i);
    }
    auto batch = ParseBatch(R"({"events":[)" + events + "]}");
    REQUIRE(batch.ok());
    REQUIRE((*store)->InsertBatch(*batch, 1).ok());
    (*store)->RestartWalIfDue();  // as the committer does between transactions
    std::error_code ec;
    max_wal = std::max<int64_t>(max_wal, static_cast<int64_t>(std::filesystem::file_size(path + "-wal", ec)));
  }
  CHECK((*store)->checkpoints() > 0);
  INFO("largest WAL seen: " << max_wal);
  CHECK(max_wal < 8 * Store::kWalCheckpointBytes);
  store->reset();
  std::filesystem::remove_all(dir);
}

namespace {

// A batch of alerts from named agents ({uuid, agent id} each) and agent
// records (JSON objects).
std::string AgentBody(const std::vector<std::pair<std::string, std::string>>& alerts,
                      const std::vector<std::string>& records = {}) {
  std::string events, agents;
  for (const auto& [uuid, agent] : alerts) {
    if (!events.empty()) events += ',';
    events += fmt::format(
        R"({{"uuid":"{}","agent_id":"{}","time":"2026-11-26T00:00:00Z","rule":"R","priority":"Warning",)"
        R"("output_fields":{{"container.id":"c-{}"}}}})",
        uuid, agent, agent);
  }
  for (const std::string& r : records) agents += (agents.empty() ? "" : ",") + r;
  return fmt::format(R"({{"events":[{}],"agents":[{}]}})", events, agents);
}

// The Agents() entry with this id (null if none).
nlohmann::json AgentEntry(Store& store, const std::string& id) {
  auto agents = store.Agents();
  REQUIRE(agents.ok());
  for (const auto& a : *agents)
    if (a["id"] == id) return a;
  return nullptr;
}

// A connection of the test's own to the same file.
struct RawDb {
  explicit RawDb(const std::string& path) { REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK); }
  ~RawDb() { sqlite3_close(db); }
  void Exec(const std::string& sql) { REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK); }
  int64_t Int(const std::string& sql) {
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(s) == SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
  }
  sqlite3* db = nullptr;
};

}  // namespace

TEST_CASE("backend_store: a schema-3 database is migrated with its agents' activity", "[unit]") {
  std::string dir = MakeTempDir("backend_store_test");
  std::string path = dir + "/v3.db";
  {
    // Schema version 3 as released (migrations 1-3 of store.cpp), with two
    // agents: one that sent a record, one known only from its alerts.
    RawDb raw(path);
    raw.Exec(std::string(kEventsTableV2) + kEventIndexesV1 + kAgentsTableV1 + kSideTablesV3 + R"sql(
INSERT INTO side_index_state VALUES (1, 0);
INSERT INTO agents VALUES ('rec', 'host-1', 'c-rec', 'app', 'arn:t/1', 'prod', '{"id":"rec","hostname":"host-1"}',
  '{"events_seen":50,"alerts":9,"drops":2}', 50, 9, 2, 7, 1000000000, 5000000000);
INSERT INTO agents(id, alerts_stored, first_seen_ns, last_seen_ns) VALUES ('bare', 3, 2000000000, 6000000000);
PRAGMA user_version = 3;
)sql");
  }
  auto store = Store::Open(path);
  REQUIRE(store.ok());
  {
    RawDb raw(path);
    CHECK(raw.Int("PRAGMA user_version") == Store::kSchemaVersion);
    CHECK(raw.Int("SELECT count(*) FROM pragma_table_info('agents') WHERE name IN "
                  "('alerts_stored', 'first_seen_ns', 'last_seen_ns')") == 0);
    CHECK(raw.Int("SELECT count(*) FROM agent_activity") == 2);
    CHECK(raw.Int("SELECT alerts_stored FROM agent_activity WHERE id = 'rec'") == 7);
    CHECK(raw.Int("SELECT last_seen_ns FROM agent_activity WHERE id = 'bare'") == 6000000000);
  }
  auto agents = (*store)->Agents();
  REQUIRE(agents.ok());
  REQUIRE(agents->size() == 2);
  const auto& bare = (*agents)[0];  // seen last
  CHECK(bare["id"] == "bare");
  CHECK(bare["alerts_stored"] == 3);
  CHECK(bare["first_seen"] == FormatRfc3339(2000000000));
  CHECK(bare["last_seen"] == FormatRfc3339(6000000000));
  CHECK(bare["hostname"] == "");
  CHECK(bare["drops"].is_null());
  const auto& rec = (*agents)[1];
  CHECK(rec["id"] == "rec");
  CHECK(rec["hostname"] == "host-1");
  CHECK(rec["aws.ecs.cluster"] == "prod");
  CHECK(rec["alerts_stored"] == 7);
  CHECK(rec["events_seen"] == 50);
  CHECK(rec["drops"] == 2);
  CHECK(rec["stats"]["alerts"] == 9);
  CHECK(rec["metadata"]["hostname"] == "host-1");
  CHECK(rec["first_seen"] == FormatRfc3339(1000000000));
  // New alerts add to the migrated counts; a new agent starts at its first.
  auto b = ParseBatch(AgentBody({{"m-1", "rec"}, {"m-2", "rec"}, {"m-3", "new"}}));
  REQUIRE(b.ok());
  REQUIRE((*store)->InsertBatch(*b, 9000000000).ok());
  CHECK(AgentEntry(**store, "rec")["alerts_stored"] == 9);
  CHECK(AgentEntry(**store, "rec")["last_seen"] == FormatRfc3339(9000000000));
  CHECK(AgentEntry(**store, "rec")["first_seen"] == FormatRfc3339(1000000000));
  CHECK(AgentEntry(**store, "new")["alerts_stored"] == 1);
  CHECK(AgentEntry(**store, "new")["first_seen"] == FormatRfc3339(9000000000));
  store->reset();
  std::filesystem::remove_all(dir);
}

TEST_CASE("backend_store: agents' activity is exact over a group commit; an unchanged record is not rewritten",
          "[unit]") {
  std::string dir = MakeTempDir("backend_store_test");
  std::string path = dir + "/agents.db";
  auto store = Store::Open(path);
  REQUIRE(store.ok());
  // Counts the writes of agents' records (rows updated in place).
  RawDb raw(path);
  raw.Exec("CREATE TABLE record_writes (n INTEGER NOT NULL); INSERT INTO record_writes VALUES (0);"
           "CREATE TRIGGER count_record_writes AFTER UPDATE ON agents "
           "BEGIN UPDATE record_writes SET n = n + 1; END;");
  auto writes = [&] { return raw.Int("SELECT n FROM record_writes"); };
  const std::string record_x = R"({"id":"x","hostname":"hx","stats":{"events_seen":10,"alerts":3,"drops":0}})";
  // One group of three batches: x's and y's alerts in several of them (one
  // of x's repeated: a duplicate), x's record twice, z's record alone.
  auto b1 = ParseBatch(AgentBody({{"u-1", "x"}, {"u-2", "y"}, {"u-3", "x"}}, {record_x}));
  auto b2 = ParseBatch(AgentBody({{"u-3", "x"}, {"u-4", "x"}, {"u-5", "y"}}, {record_x}));
  auto b3 = ParseBatch(AgentBody({}, {R"({"id":"z","hostname":"hz"})"}));
  REQUIRE(b1.ok());
  REQUIRE(b2.ok());
  REQUIRE(b3.ok());
  auto r = (*store)->InsertBatches({&*b1, &*b2, &*b3}, 1000);
  REQUIRE(r.ok());
  CHECK((*r)[1].duplicates == 1);
  CHECK(AgentEntry(**store, "x")["alerts_stored"] == 3);
  CHECK(AgentEntry(**store, "y")["alerts_stored"] == 2);
  CHECK(AgentEntry(**store, "x")["hostname"] == "hx");
  CHECK(AgentEntry(**store, "x")["events_seen"] == 10);
  CHECK(AgentEntry(**store, "y")["hostname"] == "");  // no record: known from its alerts
  CHECK(AgentEntry(**store, "y")["events_seen"].is_null());
  nlohmann::json z = AgentEntry(**store, "z");  // a record, no alert: seen
  CHECK(z["alerts_stored"] == 0);
  CHECK(z["hostname"] == "hz");
  CHECK(z["last_seen"] == FormatRfc3339(1000));
  CHECK(writes() == 0);  // x's record the second time: as stored
  // The same record again, in a later commit: seen, not rewritten.
  auto b4 = ParseBatch(AgentBody({{"u-6", "x"}}, {record_x}));
  REQUIRE(b4.ok());
  REQUIRE((*store)->InsertBatch(*b4, 2000).ok());
  CHECK(writes() == 0);
  CHECK(AgentEntry(**store, "x")["alerts_stored"] == 4);
  CHECK(AgentEntry(**store, "x")["last_seen"] == FormatRfc3339(2000));
  CHECK(AgentEntry(**store, "x")["first_seen"] == FormatRfc3339(1000));
  // Changed stats: written once; empty fields keep the stored values.
  auto b5 = ParseBatch(AgentBody({}, {R"({"id":"x","stats":{"events_seen":20,"alerts":4,"drops":1}})"}));
  REQUIRE(b5.ok());
  REQUIRE((*store)->InsertBatch(*b5, 3000).ok());
  CHECK(writes() == 1);
  nlohmann::json x = AgentEntry(**store, "x");
  CHECK(x["events_seen"] == 20);
  CHECK(x["drops"] == 1);
  CHECK(x["stats"]["alerts"] == 4);
  CHECK(x["hostname"] == "hx");
  CHECK(x["alerts_stored"] == 4);
  CHECK(x["last_seen"] == FormatRfc3339(3000));
  store->reset();
  std::filesystem::remove_all(dir);
}
