// Store: the SQLite database of alerts and agents.
//
// Durability: WAL journal; InsertBatches commits its batches in one
// transaction and the ingest handler replies 2xx only after it returns OK.
// A kill before COMMIT leaves no trace of a batch (the orchestrator retries,
// and the uuid key makes the retry idempotent). The sync option chooses what
// a COMMIT waits for (StoreOptions::sync):
//   kFull (default): the WAL is fdatasync'ed before COMMIT returns, so an
//     acknowledged batch survives kill -9, an OS crash and a power cut.
//   kNormal: COMMIT returns once the WAL is written to the OS (page cache);
//     an acknowledged batch survives kill -9 / any process crash, but an OS
//     crash or power cut may lose the last transactions (never corrupts).
// Checkpoints (copying the WAL into the database file) run on a background
// thread with its own connection once the WAL passes kWalCheckpointBytes,
// never inside an ingest COMMIT.
//
// Schema: versioned migrations in PRAGMA user_version, applied at Open().
// An alert row holds the indexed fields and the alert's JSON as sent.
// Indexes on time, rule, priority, container, task; uuid unique.
//
// Thread-safety: all methods are safe to call from any thread. Writes go
// through one connection under a mutex (SQLite has one writer anyway);
// reads use a second connection, which in WAL mode never waits for a writer.
// Failure modes: SQLite errors come back as kIoError with the SQLite message.
#pragma once

#include <sqlite3.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "backend/alert.h"
#include "common/util/status.h"

namespace sidetrace::backend {

enum class Sync { kFull, kNormal };
struct StoreOptions {
  Sync sync = Sync::kFull;
};

class Store {
 public:
  // Opens (creating if needed) the database and migrates it to the latest
  // schema version. Fails if the file was written by a newer version.
  static Result<std::unique_ptr<Store>> Open(const std::string& path, StoreOptions options = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  static constexpr int kSchemaVersion = 2;
  // Background checkpoints: PASSIVE (copies what it can, never blocks the
  // writer) once the WAL holds this much; RESTART (holds the next commit
  // back while it copies the few frames left, so the WAL is reused from its
  // start instead of growing) at 4x.
  static constexpr int64_t kWalCheckpointBytes = 16 << 20;
  // Page size of a new database file. An ingest commit writes mostly new
  // table pages, so larger pages mean fewer WAL writes, b-tree splits and
  // checkpoint copies (per 1,000 alerts from one container: 4 KiB 32 ms of
  // backend CPU, 16 and 64 KiB ~17-19 ms with time-ordered ids). But alerts
  // from many containers dirty one leaf per container in the container and
  // task indexes, each written whole: with 1,000 containers and 2M rows a
  // commit costs 154 ms at 64 KiB and still rising, 75 ms at 16 KiB
  // (bench/RESULTS.md, "Session 4, storage"). An existing file keeps its
  // page size.
  static constexpr int kPageSize = 16384;
  // Alerts per INSERT statement. One statement opens the table's and each
  // index's cursor once for all its rows, and a cursor left at an index's
  // right edge appends the next row without a descent from the root: per
  // 1,000 alerts ~3 ms less SQLite CPU than a statement per row
  // (bench/RESULTS.md, "Session 4, storage").
  static constexpr size_t kInsertChunk = 100;

  struct InsertResult {
    size_t inserted = 0;
    size_t duplicates = 0;
    std::vector<size_t> new_indexes;  // indexes into batch.alerts of new rows
  };
  // Stores the batches in one transaction (group commit): alerts
  // insert-or-ignore by uuid, agent records upserted; one result per batch.
  // Nothing of any of them is stored when it fails.
  Result<std::vector<InsertResult>> InsertBatches(const std::vector<const Batch*>& batches, int64_t now_ns);
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
  uint64_t checkpoints() const { return checkpoints_.load(); }

 private:
  Store(std::string path, StoreOptions options) : path_(std::move(path)), options_(options) {}
  Status Init();
  static int OnWalCommit(void* self, sqlite3* db, const char* name, int frames);
  void Checkpointer();
  Status InsertOne(const Batch& batch, int64_t now_ns, InsertResult* result);  // REQUIRES: write_mu_, in a transaction

  std::string path_;
  StoreOptions options_;
  int64_t page_size_ = 4096;
  std::mutex write_mu_;
  sqlite3* writer_ = nullptr;  // GUARDED_BY(write_mu_)
  sqlite3_stmt* insert_event_ = nullptr;  // GUARDED_BY(write_mu_)
  sqlite3_stmt* insert_chunk_ = nullptr;  // GUARDED_BY(write_mu_): kInsertChunk rows
  sqlite3_stmt* max_id_ = nullptr;        // GUARDED_BY(write_mu_)
  sqlite3_stmt* find_id_ = nullptr;       // GUARDED_BY(write_mu_)
  sqlite3_stmt* upsert_agent_ = nullptr;  // GUARDED_BY(write_mu_)
  sqlite3_stmt* touch_agent_ = nullptr;   // GUARDED_BY(write_mu_)
  std::mutex read_mu_;
  sqlite3* reader_ = nullptr;  // GUARDED_BY(read_mu_)

  // Background checkpoints: OnWalCommit (in the writer's COMMIT) records the
  // WAL size and wakes the thread when it is over kWalCheckpointBytes.
  std::atomic<int> wal_frames_{0};
  std::atomic<uint64_t> checkpoints_{0};
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool stopping_ = false;                // GUARDED_BY(checkpoint_mu_)
  sqlite3* checkpointer_db_ = nullptr;   // used by checkpointer_ only
  std::thread checkpointer_;
};

// "full" / "normal" <-> Sync.
const char* SyncName(Sync sync);
bool ParseSync(std::string_view name, Sync* sync);

}  // namespace sidetrace::backend
