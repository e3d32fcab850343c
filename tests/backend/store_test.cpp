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

using namespace sidetrace::backend;
using sidetrace::backend_test::MakeTempDir;

namespace {

// Schema version 1 as released (migration 1 of store.cpp), with one alert.
void WriteVersion1(const std::string& path) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  const char* sql = R"sql(
CREATE TABLE events (
  id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, time_ns INTEGER NOT NULL, rule TEXT NOT NULL,
  priority TEXT NOT NULL, priority_num INTEGER NOT NULL, source TEXT NOT NULL, hostname TEXT NOT NULL,
  container_id TEXT NOT NULL, task_arn TEXT NOT NULL, agent_id TEXT NOT NULL, output TEXT NOT NULL,
  json TEXT NOT NULL, received_ns INTEGER NOT NULL);
CREATE INDEX events_time ON events(time_ns, id);
CREATE INDEX events_rule ON events(rule, time_ns);
CREATE INDEX events_priority ON events(priority_num, time_ns);
CREATE INDEX events_container ON events(container_id, time_ns);
CREATE INDEX events_task ON events(task_arn, time_ns);
CREATE TABLE agents (
  id TEXT PRIMARY KEY, hostname TEXT NOT NULL DEFAULT '', container_id TEXT NOT NULL DEFAULT '',
  container_name TEXT NOT NULL DEFAULT '', task_arn TEXT NOT NULL DEFAULT '', cluster TEXT NOT NULL DEFAULT '',
  metadata TEXT, stats TEXT, events_seen INTEGER NOT NULL DEFAULT -1, alerts INTEGER NOT NULL DEFAULT -1,
  drops INTEGER NOT NULL DEFAULT -1, alerts_stored INTEGER NOT NULL DEFAULT 0,
  first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL);
INSERT INTO events VALUES (1, 'old-1', 1000, 'Old rule', 'Warning', 4, 'syscall', 'h', 'c1', 't1', 'a1',
  'cat /etc/shadow', '{"uuid":"old-1","rule":"Old rule","output":"cat /etc/shadow"}', 1000);
PRAGMA user_version = 1;
)sql";
  REQUIRE(sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK);
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
