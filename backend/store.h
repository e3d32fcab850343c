// Store: the SQLite database of alerts and agents.
//
// Durability: WAL journal; InsertBatches commits its batches in one
// transaction and the ingest handler replies 2xx only after it returns OK.
// A kill before COMMIT leaves no trace of a batch (the orchestrator retries,
// and the uuid key makes the retry idempotent). The sync option chooses what
// a COMMIT waits for (StoreOptions::sync):
//   kFull (default): an acknowledged batch survives kill -9, an OS crash
//     and a power cut. COMMIT writes the WAL to the OS and SyncWal()
//     fdatasyncs it, covering every transaction committed before it; the
//     committer overlaps that wait with the next group's inserts and
//     replies after it (InsertBatch syncs before it returns).
//   kNormal: COMMIT returns once the WAL is written to the OS (page cache);
//     an acknowledged batch survives kill -9 / any process crash, but an OS
//     crash or power cut may lose the last transactions (never corrupts).
// Checkpoints (copying the WAL into the database file) run on a background
// thread with its own connection once the WAL passes kWalCheckpointBytes,
// never inside an ingest COMMIT.
//
// Schema: versioned migrations in PRAGMA user_version, applied at Open().
// An alert row holds the indexed fields and the alert's JSON as sent.
// Indexes on time, rule, priority; uuid unique.
// Agents: `agents` holds an agent's record (metadata, stats; rewritten
// only when it changes), `agent_activity` the narrow part every commit with
// the agent's alerts updates (first/last seen, alerts stored), once per
// agent per transaction.
//
// Container and task are indexed in side tables (container, time, id) and
// (task, time, id), written in bulk (IndexSideTables) rather than per row:
// a per-row index on them dirties one leaf per container in every commit
// (1,000 containers: ~1,700 pages of WAL per 1,000 alerts). The side tables
// hold every row up to a watermark (side_index_state.indexed_to, the highest
// id indexed), committed in the same transaction as the side rows, so a
// crash at any point leaves both or neither. Rows above the watermark are
// few and recent: a container/task query reads them by row id and merges
// them with the side table's, so results are exact at any moment.
//
// Thread-safety: all methods are safe to call from any thread. Writes go
// through one connection under a mutex (SQLite has one writer anyway);
// reads use a second connection, which in WAL mode never waits for a writer.
// Failure modes: SQLite errors come back as kIoError with the SQLite message.
#pragma once

#include <sqlite3.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backend/alert.h"
#include "backend/side_rows.h"
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

  static constexpr int kSchemaVersion = 4;
  // Background checkpoints: PASSIVE passes (copy what they can, never block
  // the writer) once the WAL holds this much that no checkpoint copied yet.
  // The WAL is started over from its beginning (instead of growing) by the
  // writer itself, between two transactions (RestartWalIfDue), once it is 4x
  // this size and the passes have left at most kRestartTailBytes to copy:
  // no commit waits in a busy handler for a checkpointer holding the WAL,
  // which cost the committer ~10% of its time under a 100k alerts/s burst.
  static constexpr int64_t kWalCheckpointBytes = 16 << 20;
  static constexpr int64_t kRestartTailBytes = 1 << 20;
  // A restart truncates a WAL larger than this (journal_size_limit). After
  // a side-table bulk the WAL reaches 150-300 MB before the passes catch
  // up; truncating it to 128 MB cost the committer ~5% of its time (ext4
  // discards the blocks, the next writes allocate them again), so the file
  // keeps up to 512 MB.
  static constexpr int64_t kWalKeepBytes = 32 * kWalCheckpointBytes;
  // Page size of a new database file. An ingest commit writes mostly new
  // table pages, so larger pages mean fewer WAL writes, b-tree splits and
  // checkpoint copies (per 1,000 alerts from one container: 4 KiB 32 ms of
  // backend CPU, 16 and 64 KiB ~17-19 ms with time-ordered ids). While
  // container and task had per-row indexes, alerts from many containers
  // dirtied one leaf per container in them, each written whole: with 1,000
  // containers and 2M rows a commit cost 154 ms at 64 KiB, 75 ms at 16 KiB
  // (bench/RESULTS.md, "Session 4, storage"). An existing file keeps its
  // page size.
  static constexpr int kPageSize = 16384;
  // Alerts per INSERT statement. One statement opens the table's and each
  // index's cursor once for all its rows, and a cursor left at an index's
  // right edge appends the next row without a descent from the root: per
  // 1,000 alerts ~3 ms less SQLite CPU than a statement per row
  // (bench/RESULTS.md, "Session 4, storage").
  static constexpr size_t kInsertChunk = 100;

  // The committer indexes the side tables once this many rows are above the
  // watermark (or after kSideIndexDelay with fewer). A bulk writes each
  // container's (task's) last leaves whole, with their splits, whatever the
  // bulk's size: with 1,000 of each that grows with the tables to ~6,100
  // pages (~100 MB of WAL, then as much checkpointed) by the ninth bulk of
  // 200,000 rows. So larger bulks cost less per alert: of 120k alerts/s
  // offered for 60 s end to end, 400,000-row bulks (with kWalKeepBytes)
  // stored 107-120k/s, 200,000-row bulks (WAL truncated) 99-107k.
  // Queries read at most about this many unindexed rows by id: a container
  // query over 400,000 of them takes ~150 ms (bench/RESULTS.md, "Session 7").
  static constexpr int64_t kSideIndexRows = 400000;
  static constexpr int kSideIndexDelaySeconds = 10;
  // Side rows per INSERT statement in a bulk (see kInsertChunk).
  static constexpr size_t kSideChunk = 100;
  // The writer keeps at most this many rows' side keys in memory; past it
  // (bulks failing) the next bulk reads the rows back from `events`.
  static constexpr size_t kSideRowsMax = 2 * kSideIndexRows;

  struct InsertResult {
    size_t inserted = 0;
    size_t duplicates = 0;
    std::vector<size_t> new_indexes;  // indexes into batch.alerts of new rows
  };
  // Stores the batches in one transaction (group commit): alerts
  // insert-or-ignore by uuid, agent records upserted; one result per batch.
  // Nothing of any of them is stored when it fails.
  // Sync::kFull: committed, on disk only after SyncWal().
  Result<std::vector<InsertResult>> InsertBatches(const std::vector<const Batch*>& batches, int64_t now_ns);
  // One batch, on disk when it returns OK (SyncWal included).
  Result<InsertResult> InsertBatch(const Batch& batch, int64_t now_ns);
  // Sync::kFull: makes every transaction committed so far durable
  // (fdatasync of the WAL file). Sync::kNormal: nothing to do. Safe to call
  // from another thread than the writer's, concurrently with commits.
  Status SyncWal();
  // Called by the writer's thread between transactions: when due (see
  // kWalCheckpointBytes), copies the few frames left and starts the WAL
  // over. Never waits for a reader: while one still reads old frames it is
  // tried again after a later transaction. Past 8x kWalCheckpointBytes it
  // is due however much is left, so the WAL stays bounded.
  void RestartWalIfDue();

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

  // Rows above the side tables' watermark (not yet in them). Cheap: kept in
  // memory by the writer.
  int64_t UnindexedRows();
  // Adds every row above the watermark to the side tables, sorted by key,
  // and moves the watermark to the highest id, in one transaction. Returns
  // how far the watermark moved (ids; rows, but for deleted ones).
  Result<int64_t> IndexSideTables();
  // The plan of QueryEvents(query) (EXPLAIN QUERY PLAN), one line per step.
  Result<std::vector<std::string>> ExplainQueryEvents(const Query& query);

  // Deletes at most `max_rows` alerts older than `cutoff_ns` (and their side
  // table rows); returns how many.
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
  // Inserts the batch's alerts and upserts its changed agent records; adds
  // its new alerts per agent id to `per_agent` (views into `batch`; an
  // agent with a record and no new alert with 0).
  // REQUIRES: write_mu_, in a transaction.
  Status InsertOne(const Batch& batch, int64_t now_ns, InsertResult* result,
                   std::map<std::string_view, int64_t>* per_agent);
  // Each agent's activity: last_seen = now, alerts_stored += n (first seen
  // now if new), one statement per agent. REQUIRES: write_mu_, in a
  // transaction.
  Status TouchAgents(const std::map<std::string_view, int64_t>& per_agent, int64_t now_ns);
  Status ReadIds();  // REQUIRES: write_mu_; sets top_id_ and indexed_to_ from the database
  // The side rows of ids (from, to]: read back from `events` (ReadSideRows)
  // or, when side_rows_ holds exactly those, written from it with new task
  // numbers returned (WriteSideRows). REQUIRES: write_mu_, in a transaction.
  Status ReadSideRows(int64_t from, int64_t to);
  Status WriteSideRows(std::unordered_map<std::string, int64_t>* new_tasks);
  struct Sql {
    std::string text;
    std::vector<std::function<void(sqlite3_stmt*)>> binds;
    int limit = 0;
  };
  Result<Sql> BuildQuery(const Query& query);

  std::string path_;
  StoreOptions options_;
  std::mutex wal_mu_;
  int wal_fd_ = -1;  // GUARDED_BY(wal_mu_): the -wal file, for SyncWal
  int64_t page_size_ = 4096;
  std::mutex write_mu_;
  sqlite3* writer_ = nullptr;  // GUARDED_BY(write_mu_)
  sqlite3_stmt* insert_event_ = nullptr;  // GUARDED_BY(write_mu_)
  sqlite3_stmt* insert_chunk_ = nullptr;  // GUARDED_BY(write_mu_): kInsertChunk rows
  sqlite3_stmt* max_id_ = nullptr;        // GUARDED_BY(write_mu_)
  sqlite3_stmt* find_id_ = nullptr;       // GUARDED_BY(write_mu_)
  sqlite3_stmt* upsert_agent_ = nullptr;  // GUARDED_BY(write_mu_)
  sqlite3_stmt* touch_agent_ = nullptr;   // GUARDED_BY(write_mu_)
  int64_t top_id_ = 0;      // GUARDED_BY(write_mu_): largest row id committed
  int64_t indexed_to_ = 0;  // GUARDED_BY(write_mu_): the side tables' watermark
  // GUARDED_BY(write_mu_): the side keys of every row with an id in
  // (side_rows_from_, top_id_]; -1: not kept (a retention run deleted a row
  // above the watermark, or kSideRowsMax was passed) until the next bulk.
  SideRows side_rows_;
  int64_t side_rows_from_ = -1;
  std::unordered_map<std::string, int64_t> task_ids_;  // GUARDED_BY(write_mu_): tasks' numbers (never pruned)
  std::mutex read_mu_;
  sqlite3* reader_ = nullptr;  // GUARDED_BY(read_mu_)

  // Background checkpoints: OnWalCommit (in the writer's COMMIT) records the
  // WAL size and wakes the thread when it is over kWalCheckpointBytes.
  std::atomic<int> wal_frames_{0};
  int copied_frames_ = 0;                // GUARDED_BY(checkpoint_mu_): of the current WAL, by the passes
  std::atomic<bool> restart_due_{false};
  static constexpr std::chrono::milliseconds kRestartRetry{50};
  std::chrono::steady_clock::time_point restart_retry_at_;  // GUARDED_BY(write_mu_)
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
