// Store: the SQLite database of alerts and agents.
//
// Durability: WAL journal with synchronous=FULL, so a COMMIT returns only
// after the WAL frames are fsync'ed; InsertBatch runs one transaction per
// batch and the ingest handler replies 2xx only after it returns OK. A
// kill -9 (or power loss) after the reply cannot lose the batch; a kill
// before COMMIT leaves no trace of it (the orchestrator retries, and the
// uuid key makes the retry idempotent). NORMAL would survive kill -9 too
// (the WAL write reaches the page cache before COMMIT returns) but not a
// power cut, which breaks the "2xx means stored" promise.
//
// Schema: versioned migrations in PRAGMA user_version, applied at Open().
// Indexes on time, rule, priority, container, task and agent.
//
// Thread-safety: all methods are safe to call from any thread. Writes go
// through one connection under a mutex (SQLite has one writer anyway);
// reads use a second connection, which in WAL mode never waits for a writer.
// Failure modes: SQLite errors come back as kIoError with the SQLite message.
#pragma once

#include <sqlite3.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backend/alert.h"
#include "common/util/status.h"

namespace sidetrace::backend {

class Store {
 public:
  // Opens (creating if needed) the database and migrates it to the latest
  // schema version. Fails if the file was written by a newer version.
  static Result<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  static constexpr int kSchemaVersion = 1;

  struct InsertResult {
    size_t inserted = 0;
    size_t duplicates = 0;
    std::vector<size_t> new_indexes;  // indexes into batch.alerts of new rows
  };
  // Stores the batch in one transaction: alerts insert-or-ignore by uuid,
  // agent records upserted. Nothing is stored when it fails.
  Result<InsertResult> InsertBatch(const Batch& batch, int64_t now_ns);

  struct Query {
    int64_t since_ns = 0, until_ns = 0;  // 0: unbounded
    std::vector<std::string> rules;      // any of
    std::vector<int> priorities;         // any of (priority indexes)
    int min_priority = -1;               // at least this severe (index <=)
    std::string text, container, task, agent;
    int limit = 100;
    std::string cursor;  // from a previous Page
  };
  struct Page {
    std::vector<std::string> events;  // Falco JSON, newest first
    std::string next_cursor;          // "" when there is no more
  };
  Result<Page> QueryEvents(const Query& query);
  // The alert's Falco JSON, or nullopt when unknown.
  Result<std::optional<std::string>> GetEvent(const std::string& uuid);

  // Counts per rule, per priority and per time bucket over [since, now], and
  // the agents table.
  Result<nlohmann::json> Summary(int64_t since_ns, int64_t now_ns, int buckets);
  Result<nlohmann::json> Agents();

  // Deletes at most `max_rows` alerts older than `cutoff_ns`; returns how many.
  Result<int64_t> DeleteOlderThan(int64_t cutoff_ns, int max_rows);

  Status Ping();
  int64_t FileBytes() const;  // main file + WAL
  const std::string& path() const { return path_; }

 private:
  explicit Store(std::string path) : path_(std::move(path)) {}
  Status Init();

  std::string path_;
  std::mutex write_mu_;
  sqlite3* writer_ = nullptr;  // GUARDED_BY(write_mu_)
  sqlite3_stmt* insert_event_ = nullptr;  // GUARDED_BY(write_mu_)
  sqlite3_stmt* upsert_agent_ = nullptr;  // GUARDED_BY(write_mu_)
  sqlite3_stmt* touch_agent_ = nullptr;   // GUARDED_BY(write_mu_)
  std::mutex read_mu_;
  sqlite3* reader_ = nullptr;  // GUARDED_BY(read_mu_)
};

}  // namespace sidetrace::backend
