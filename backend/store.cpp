#include "backend/store.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string_view>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "common/util/log.h"

namespace sidetrace::backend {

using json = nlohmann::json;

namespace {

// Migration N (1-based) brings the schema from version N-1 to N. Never edit
// a released migration; append a new one.
const char* const kMigrations[] = {
    // 1: alerts and agents.
    R"sql(
CREATE TABLE events (
  id            INTEGER PRIMARY KEY,
  uuid          TEXT NOT NULL UNIQUE,
  time_ns       INTEGER NOT NULL,
  rule          TEXT NOT NULL,
  priority      TEXT NOT NULL,
  priority_num  INTEGER NOT NULL,
  source        TEXT NOT NULL,
  hostname      TEXT NOT NULL,
  container_id  TEXT NOT NULL,
  task_arn      TEXT NOT NULL,
  agent_id      TEXT NOT NULL,
  output        TEXT NOT NULL,
  json          TEXT NOT NULL,
  received_ns   INTEGER NOT NULL
);
CREATE INDEX events_time ON events(time_ns, id);
CREATE INDEX events_rule ON events(rule, time_ns);
CREATE INDEX events_priority ON events(priority_num, time_ns);
CREATE INDEX events_container ON events(container_id, time_ns);
CREATE INDEX events_task ON events(task_arn, time_ns);
CREATE TABLE agents (
  id             TEXT PRIMARY KEY,
  hostname       TEXT NOT NULL DEFAULT '',
  container_id   TEXT NOT NULL DEFAULT '',
  container_name TEXT NOT NULL DEFAULT '',
  task_arn       TEXT NOT NULL DEFAULT '',
  cluster        TEXT NOT NULL DEFAULT '',
  metadata       TEXT,
  stats          TEXT,
  events_seen    INTEGER NOT NULL DEFAULT -1,
  alerts         INTEGER NOT NULL DEFAULT -1,
  drops          INTEGER NOT NULL DEFAULT -1,
  alerts_stored  INTEGER NOT NULL DEFAULT 0,
  first_seen_ns  INTEGER NOT NULL,
  last_seen_ns   INTEGER NOT NULL
);
)sql",
    // 2: drop the columns that only repeated the stored JSON (a third of
    // each row's bytes: every alert's output was stored twice).
    R"sql(
ALTER TABLE events DROP COLUMN output;
ALTER TABLE events DROP COLUMN priority;
ALTER TABLE events DROP COLUMN source;
ALTER TABLE events DROP COLUMN hostname;
)sql",
    // 3: container and task side index tables instead of per-row indexes
    // (Store::IndexSideTables). Task ARNs (~90 characters on ECS) are keyed
    // by a number from `tasks`: a side row of ~20 bytes instead of ~100.
    // Existing rows are indexed here, in key order, so the watermark starts
    // at the top.
    R"sql(
CREATE TABLE events_by_container (
  container_id  TEXT NOT NULL,
  time_ns       INTEGER NOT NULL,
  id            INTEGER NOT NULL,
  PRIMARY KEY (container_id, time_ns, id)
) WITHOUT ROWID;
CREATE TABLE tasks (
  id            INTEGER PRIMARY KEY,
  task_arn      TEXT NOT NULL UNIQUE
);
CREATE TABLE events_by_task (
  task          INTEGER NOT NULL,
  time_ns       INTEGER NOT NULL,
  id            INTEGER NOT NULL,
  PRIMARY KEY (task, time_ns, id)
) WITHOUT ROWID;
CREATE TABLE side_index_state (
  one           INTEGER PRIMARY KEY CHECK (one = 1),
  indexed_to    INTEGER NOT NULL
);
INSERT INTO events_by_container SELECT container_id, time_ns, id FROM events WHERE container_id <> ''
  ORDER BY container_id, time_ns, id;
INSERT INTO tasks(task_arn) SELECT DISTINCT task_arn FROM events WHERE task_arn <> '' ORDER BY 1;
INSERT INTO events_by_task SELECT t.id, e.time_ns, e.id FROM events e CROSS JOIN tasks t ON t.task_arn = e.task_arn
  ORDER BY 1, 2, 3;
INSERT INTO side_index_state VALUES (1, (SELECT coalesce(max(id), 0) FROM events));
DROP INDEX events_container;
DROP INDEX events_task;
)sql",
    // 4: each agent's activity (when seen, alerts stored), written on every
    // commit that has its alerts, in a narrow table of its own; `agents`
    // keeps the agent's record (metadata, stats: up to KBs), rewritten only
    // when the record changes.
    R"sql(
CREATE TABLE agent_activity (
  id             TEXT PRIMARY KEY,
  first_seen_ns  INTEGER NOT NULL,
  last_seen_ns   INTEGER NOT NULL,
  alerts_stored  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO agent_activity SELECT id, first_seen_ns, last_seen_ns, alerts_stored FROM agents ORDER BY id;
ALTER TABLE agents DROP COLUMN first_seen_ns;
ALTER TABLE agents DROP COLUMN last_seen_ns;
ALTER TABLE agents DROP COLUMN alerts_stored;
)sql",
};

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return s_; }
  int Step() { return sqlite3_step(s_); }
  std::string Text(int col) {
    auto* p = sqlite3_column_text(s_, col);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s_, col)) : std::string();
  }
  int64_t Int(int col) { return sqlite3_column_int64(s_, col); }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

// How long a connection retries a lock another holds before SQLITE_BUSY.
constexpr int kBusyTimeoutMs = 10000;

Status Err(sqlite3* db, std::string_view what) {
  return Status::IoError(fmt::format("sqlite {}: {}", what, sqlite3_errmsg(db)));
}

Status Exec(sqlite3* db, const char* sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    Status st = Status::IoError(fmt::format("sqlite: {}", msg ? msg : "error"));
    sqlite3_free(msg);
    return st;
  }
  return Status::Ok();
}

void BindText(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
}

Result<sqlite3*> OpenConnection(const std::string& path, bool readonly) {
  sqlite3* db = nullptr;
  int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
              SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Status::IoError(fmt::format("{}: cannot open database: {}", path, msg));
  }
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  return db;
}

}  // namespace


bool ParseSync(std::string_view name, Sync* sync) {
  if (name == "full") *sync = Sync::kFull;
  else if (name == "normal") *sync = Sync::kNormal;
  else return false;
  return true;
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& path, StoreOptions options) {
  // SQLite's memory statistics take a global mutex on every allocation;
  // nothing reads them. Must precede SQLite's initialisation.
  static std::once_flag configured;
  std::call_once(configured, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
  std::unique_ptr<Store> store(new Store(path, options));
  Status st = store->Init();
  if (!st.ok()) return st;
  return store;
}

Status Store::Init() {
  auto w = OpenConnection(path_, false);
  if (!w.ok()) return w.status();
  writer_ = *w;
  // WAL: readers never block the writer and vice versa. synchronous: see
  // the header. No automatic checkpoints: they would run inside a COMMIT
  // (every ~4 MB of WAL, i.e. every few batches); Checkpointer() does them.
  // page_size applies to a new file only (kPageSize).
  // With Sync::kFull the WAL is synced by SyncWal, outside the COMMIT.
  Status st = Exec(writer_, fmt::format("PRAGMA page_size={}; PRAGMA journal_mode=WAL; PRAGMA synchronous=normal;"
                                        "PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=0;"
                                        "PRAGMA journal_size_limit={};",
                                        kPageSize, kWalKeepBytes)
                                .c_str());
  if (!st.ok()) return Status::IoError(path_ + ": " + st.message());
  int version = 0;
  {
    Stmt s(writer_, "PRAGMA user_version");
    if (s.ok() && s.Step() == SQLITE_ROW) version = static_cast<int>(s.Int(0));
  }
  constexpr int kLatest = static_cast<int>(sizeof kMigrations / sizeof kMigrations[0]);
  static_assert(kLatest == kSchemaVersion);
  if (version > kLatest)
    return Status::Unsupported(
        fmt::format("{}: schema version {} is newer than this binary's {}", path_, version, kLatest));
  for (int v = version; v < kLatest; ++v) {
    // Each migration and its version bump commit together.
    st = Exec(writer_, "BEGIN IMMEDIATE");
    if (st.ok()) st = Exec(writer_, kMigrations[v]);
    if (st.ok()) st = Exec(writer_, fmt::format("PRAGMA user_version={}", v + 1).c_str());
    if (st.ok()) st = Exec(writer_, "COMMIT");
    if (!st.ok()) {
      (void)Exec(writer_, "ROLLBACK");
      return Status::IoError(fmt::format("{}: migration {} failed: {}", path_, v + 1, st.message()));
    }
  }
  std::string insert_sql =
      "INSERT OR IGNORE INTO events(uuid,time_ns,rule,priority_num,container_id,task_arn,agent_id,json,"
      "received_ns) VALUES(?,?,?,?,?,?,?,?,?)";
  std::string insert_chunk_sql = insert_sql;
  for (size_t i = 1; i < kInsertChunk; ++i) insert_chunk_sql += ",(?,?,?,?,?,?,?,?,?)";
  // An agent's record: written only if one of its values changes (the
  // WHERE of the upsert), so a record sent again as it was costs no write.
  // Empty strings and negative counters leave the stored value.
  const char* record_cols =
      "hostname,container_id,container_name,task_arn,cluster,metadata,stats,events_seen,alerts,drops";
  std::string record_values;
  for (std::string_view col : {"hostname", "container_id", "container_name", "task_arn", "cluster"})
    record_values += fmt::format("CASE WHEN excluded.{0}<>'' THEN excluded.{0} ELSE {0} END,", col);
  record_values += "excluded.metadata,coalesce(excluded.stats,stats),";
  for (std::string_view col : {"events_seen", "alerts", "drops"})
    record_values += fmt::format("CASE WHEN excluded.{0}>=0 THEN excluded.{0} ELSE {0} END,", col);
  record_values.pop_back();
  std::string upsert_sql = fmt::format(
      "INSERT INTO agents(id,{0}) VALUES(?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET ({0})=({1}) "
      "WHERE ({0}) IS NOT ({1})",
      record_cols, record_values);
  const char* touch_sql =
      "INSERT INTO agent_activity(id,first_seen_ns,last_seen_ns,alerts_stored) VALUES(?1,?2,?2,?3) "
      "ON CONFLICT(id) DO UPDATE SET last_seen_ns=excluded.last_seen_ns,"
      "alerts_stored=alerts_stored+excluded.alerts_stored";
  if (sqlite3_prepare_v2(writer_, insert_sql.c_str(), -1, &insert_event_, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(writer_, insert_chunk_sql.c_str(), -1, &insert_chunk_, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(writer_, "SELECT max(id) FROM events", -1, &max_id_, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(writer_, "SELECT id FROM events WHERE uuid = ?", -1, &find_id_, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(writer_, upsert_sql.c_str(), -1, &upsert_agent_, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(writer_, touch_sql, -1, &touch_agent_, nullptr) != SQLITE_OK)
    return Err(writer_, "prepare");
  {
    Stmt ps(writer_, "PRAGMA page_size");
    if (ps.ok() && ps.Step() == SQLITE_ROW) page_size_ = ps.Int(0);
  }
  {
    std::lock_guard lock(write_mu_);
    st = ReadIds();
    if (!st.ok()) return st;
    side_rows_from_ = top_id_;  // rows from here on are kept in side_rows_ as they are inserted
  }
  auto r = OpenConnection(path_, true);
  if (!r.ok()) return r.status();
  reader_ = *r;
  auto c = OpenConnection(path_, false);
  if (!c.ok()) return c.status();
  checkpointer_db_ = *c;
  // A connection opens the WAL lazily; until it has, checkpoints do nothing.
  st = Exec(checkpointer_db_, "PRAGMA journal_mode=WAL");
  if (!st.ok()) return Status::IoError(path_ + ": " + st.message());
  sqlite3_wal_hook(writer_, &Store::OnWalCommit, this);
  checkpointer_ = std::thread([this] { Checkpointer(); });
  return Status::Ok();
}

int Store::OnWalCommit(void* self, sqlite3*, const char*, int frames) {
  auto* store = static_cast<Store*>(self);
  store->wal_frames_ = frames;
  int64_t wal_bytes = static_cast<int64_t>(frames) * store->page_size_;
  if (wal_bytes >= kWalCheckpointBytes) store->checkpoint_cv_.notify_one();
  if (wal_bytes >= 8 * kWalCheckpointBytes) store->restart_due_ = true;
  return SQLITE_OK;
}

void Store::Checkpointer() {
  pthread_setname_np(pthread_self(), "st-checkpoint");
  // At most this many passes in a row: each copies what the writer appended
  // during the one before, which takes less time than appending it did.
  constexpr int kMaxPasses = 4;
  std::unique_lock lock(checkpoint_mu_);
  while (!stopping_) {
    checkpoint_cv_.wait_for(lock, std::chrono::seconds(1));
    if (stopping_) break;
    int frames = wal_frames_.load();
    if (frames < copied_frames_) copied_frames_ = 0;  // the WAL was started over
    // Each pass writes every page changed since the last one once and syncs
    // the database file: waiting for 16 MB of new frames lets pages that
    // many commits touch (index leaves) be written once.
    if (static_cast<int64_t>(frames - copied_frames_) * page_size_ < kWalCheckpointBytes) continue;
    for (int pass = 0; pass < kMaxPasses && !stopping_; ++pass) {
      lock.unlock();
      int log = 0, copied = 0;  // frames in the WAL, frames copied so far
      int rc = sqlite3_wal_checkpoint_v2(checkpointer_db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
      lock.lock();
      if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        log::Warn("checkpoint failed", "error={}", log::Quote(sqlite3_errmsg(checkpointer_db_)));
      log::Debug("checkpoint", "rc={} wal_frames={} copied={}", rc, log, copied);
      checkpoints_++;
      if (rc != SQLITE_OK) break;
      copied_frames_ = std::max(copied, 0);
      if (static_cast<int64_t>(log - copied) * page_size_ <= kRestartTailBytes) {
        if (static_cast<int64_t>(log) * page_size_ >= 4 * kWalCheckpointBytes) restart_due_ = true;
        break;
      }
    }
  }
}

void Store::RestartWalIfDue() {
  if (!restart_due_.load(std::memory_order_relaxed)) return;
  std::lock_guard write(write_mu_);
  auto now = std::chrono::steady_clock::now();
  if (now < restart_retry_at_) return;
  std::lock_guard lock(checkpoint_mu_);  // copied_frames_ changes with the WAL
  // A busy checkpoint lock (a pass running) or a reader on old frames:
  // SQLITE_BUSY at once, and a transaction kRestartRetry later tries again
  // (a RESTART that found a reader has still copied, and synced, the frames
  // the group added: not after every group while a long query runs).
  sqlite3_busy_timeout(writer_, 0);
  int log = 0, copied = 0;
  int rc = sqlite3_wal_checkpoint_v2(writer_, nullptr, SQLITE_CHECKPOINT_RESTART, &log, &copied);
  sqlite3_busy_timeout(writer_, kBusyTimeoutMs);
  if (rc == SQLITE_BUSY) {
    restart_retry_at_ = now + kRestartRetry;
    return;
  }
  if (rc != SQLITE_OK) log::Warn("WAL restart failed", "error={}", log::Quote(sqlite3_errmsg(writer_)));
  log::Debug("WAL restart", "rc={} wal_frames={} copied={}", rc, log, copied);
  checkpoints_++;
  restart_due_ = false;
  if (rc == SQLITE_OK) {
    wal_frames_ = 0;  // the next commit starts the WAL over (and reports its size)
    copied_frames_ = 0;
  }
}

Store::~Store() {
  {
    std::lock_guard lock(checkpoint_mu_);
    stopping_ = true;
  }
  checkpoint_cv_.notify_all();
  if (checkpointer_.joinable()) checkpointer_.join();
  sqlite3_close(checkpointer_db_);
  sqlite3_finalize(insert_event_);
  sqlite3_finalize(insert_chunk_);
  sqlite3_finalize(max_id_);
  sqlite3_finalize(find_id_);
  sqlite3_finalize(upsert_agent_);
  sqlite3_finalize(touch_agent_);
  sqlite3_close(reader_);
  sqlite3_close(writer_);
  if (wal_fd_ >= 0) close(wal_fd_);
}

Status Store::SyncWal() {
  if (options_.sync != Sync::kFull) return Status::Ok();
  std::lock_guard lock(wal_mu_);
  // The WAL keeps its inode while the writer is open (a checkpoint restarts
  // it in place and journal_size_limit truncates it); reopened if not.
  const std::string wal = path_ + "-wal";
  struct stat named{}, held{};
  if (wal_fd_ >= 0 && (stat(wal.c_str(), &named) != 0 || fstat(wal_fd_, &held) != 0 || named.st_ino != held.st_ino ||
                       named.st_dev != held.st_dev)) {
    close(wal_fd_);
    wal_fd_ = -1;
  }
  if (wal_fd_ < 0) wal_fd_ = open(wal.c_str(), O_RDONLY | O_CLOEXEC);
  if (wal_fd_ < 0) return Status::IoError(fmt::format("{}: {}", wal, strerror(errno)));
  if (fdatasync(wal_fd_) != 0) return Status::IoError(fmt::format("{}: fdatasync: {}", wal, strerror(errno)));
  return Status::Ok();
}

Result<Store::InsertResult> Store::InsertBatch(const Batch& batch, int64_t now_ns) {
  auto r = InsertBatches({&batch}, now_ns);
  if (!r.ok()) return r.status();
  if (Status st = SyncWal(); !st.ok()) return st;
  return std::move(r->front());
}

Result<std::vector<Store::InsertResult>> Store::InsertBatches(const std::vector<const Batch*>& batches,
                                                              int64_t now_ns) {
  std::lock_guard lock(write_mu_);
  Status st = Exec(writer_, "BEGIN IMMEDIATE");
  if (!st.ok()) return st;
  const size_t side_mark = side_rows_.size();
  std::vector<InsertResult> results(batches.size());
  // New alerts per agent over the whole group: each agent's activity is
  // written once per transaction, however many batches carry its alerts.
  std::map<std::string_view, int64_t> per_agent;
  for (size_t i = 0; i < batches.size(); ++i) {
    st = InsertOne(*batches[i], now_ns, &results[i], &per_agent);
    if (!st.ok()) break;
  }
  if (st.ok()) st = TouchAgents(per_agent, now_ns);
  int64_t max_id = 0;
  if (st.ok()) {
    if (sqlite3_step(max_id_) == SQLITE_ROW) max_id = sqlite3_column_int64(max_id_, 0);
    else st = Err(writer_, "max id");
    sqlite3_reset(max_id_);
  }
  if (st.ok() && sqlite3_exec(writer_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) st = Err(writer_, "commit");
  if (!st.ok()) {
    (void)Exec(writer_, "ROLLBACK");
    side_rows_.Truncate(side_mark);
    return st;
  }
  top_id_ = max_id;
  if (side_rows_.size() > kSideRowsMax) {  // bulks keep failing: IndexSideTables reads the rows back
    side_rows_.Clear();
    side_rows_from_ = -1;
  }
  return results;
}

Status Store::ReadIds() {
  Stmt m(writer_, "SELECT coalesce(max(id), 0), (SELECT indexed_to FROM side_index_state) FROM events");
  if (!m.ok() || m.Step() != SQLITE_ROW) return Err(writer_, "watermark");
  top_id_ = m.Int(0);
  indexed_to_ = m.Int(1);
  return Status::Ok();
}

int64_t Store::UnindexedRows() {
  std::lock_guard lock(write_mu_);
  return top_id_ - indexed_to_;
}

Result<int64_t> Store::IndexSideTables() {
  std::lock_guard lock(write_mu_);
  Status st = Exec(writer_, "BEGIN IMMEDIATE");
  if (!st.ok()) return st;
  st = ReadIds();
  int64_t from = indexed_to_, to = top_id_;
  std::unordered_map<std::string, int64_t> new_tasks;
  if (st.ok()) st = side_rows_from_ == from ? WriteSideRows(&new_tasks) : ReadSideRows(from, to);
  if (st.ok()) {
    Stmt s(writer_, "UPDATE side_index_state SET indexed_to = ?");
    sqlite3_bind_int64(s.get(), 1, to);
    if (!s.ok() || s.Step() != SQLITE_DONE) st = Err(writer_, "side index");
  }
  if (st.ok() && sqlite3_exec(writer_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) st = Err(writer_, "commit");
  if (!st.ok()) {
    (void)Exec(writer_, "ROLLBACK");
    (void)ReadIds();
    return st;
  }
  indexed_to_ = to;
  side_rows_.Clear();
  side_rows_from_ = to;
  task_ids_.merge(new_tasks);
  return to - from;
}

// Sorted by key, so each container's (task's) new entries go into its
// leaves together. OR IGNORE: a row is only ever indexed once (the watermark
// commits with its side rows), but an entry already present must not stop
// the watermark for good.
Status Store::ReadSideRows(int64_t from, int64_t to) {
  const char* sql[] = {
      "INSERT OR IGNORE INTO events_by_container SELECT container_id, time_ns, id FROM events "
      "WHERE id > ?1 AND id <= ?2 AND container_id <> '' ORDER BY 1, 2, 3",
      "INSERT OR IGNORE INTO tasks(task_arn) SELECT DISTINCT task_arn FROM events "
      "WHERE id > ?1 AND id <= ?2 AND task_arn <> ''",
      "INSERT OR IGNORE INTO events_by_task SELECT t.id, e.time_ns, e.id FROM events e CROSS JOIN tasks t "
      "ON t.task_arn = e.task_arn WHERE e.id > ?1 AND e.id <= ?2 ORDER BY 1, 2, 3",
  };
  for (const char* q : sql) {
    Stmt s(writer_, q);
    if (!s.ok()) return Err(writer_, "side index");
    sqlite3_bind_int64(s.get(), 1, from);
    sqlite3_bind_int64(s.get(), 2, to);
    if (s.Step() != SQLITE_DONE) return Err(writer_, "side index");
  }
  return Status::Ok();
}

Status Store::WriteSideRows(std::unordered_map<std::string, int64_t>* new_tasks) {
  // Rows of three values, kSideChunk per statement while that many are
  // left, then one by one (as InsertOne does).
  auto insert_sorted = [&](const char* table, size_t rows, auto bind_row) -> Status {
    std::string one = fmt::format("INSERT OR IGNORE INTO {} VALUES (?,?,?)", table), chunk = one;
    for (size_t i = 1; i < kSideChunk; ++i) chunk += ",(?,?,?)";
    Stmt many(writer_, chunk.c_str()), single(writer_, one.c_str());
    if (!many.ok() || !single.ok()) return Err(writer_, "side index");
    for (size_t first = 0; first < rows;) {
      size_t n = rows - first >= kSideChunk ? kSideChunk : 1;
      sqlite3_stmt* s = n == kSideChunk ? many.get() : single.get();
      for (size_t k = 0; k < n; ++k) bind_row(s, static_cast<int>(k) * 3, first + k);
      if (sqlite3_step(s) != SQLITE_DONE) {
        sqlite3_reset(s);
        return Err(writer_, "side index");
      }
      sqlite3_reset(s);
      first += n;
    }
    return Status::Ok();
  };
  std::vector<const SideRows::Entry*> by_container = side_rows_.ByContainer();
  Status st = insert_sorted("events_by_container", by_container.size(), [&](sqlite3_stmt* s, int p, size_t i) {
    const SideRows::Entry& e = *by_container[i];
    BindText(s, p + 1, side_rows_.container(e.container));
    sqlite3_bind_int64(s, p + 2, e.time_ns);
    sqlite3_bind_int64(s, p + 3, e.id);
  });
  if (!st.ok()) return st;
  // Each task ARN's number, from the cache or `tasks` (new ones inserted).
  std::vector<int64_t> task_number(side_rows_.task_count());
  Stmt add(writer_, "INSERT OR IGNORE INTO tasks(task_arn) VALUES (?)"), find(writer_, "SELECT id FROM tasks WHERE task_arn = ?");
  if (!add.ok() || !find.ok()) return Err(writer_, "side index");
  for (uint32_t k = 0; k < task_number.size(); ++k) {
    const std::string& arn = side_rows_.task(k);
    if (auto it = task_ids_.find(arn); it != task_ids_.end()) {
      task_number[k] = it->second;
      continue;
    }
    for (Stmt* s : {&add, &find}) {
      sqlite3_reset(s->get());
      BindText(s->get(), 1, arn);
    }
    if (add.Step() != SQLITE_DONE || find.Step() != SQLITE_ROW) return Err(writer_, "side index");
    task_number[k] = find.Int(0);
    new_tasks->emplace(arn, task_number[k]);
  }
  struct TaskRow {
    int64_t task, time_ns, id;
    auto operator<=>(const TaskRow&) const = default;
  };
  std::vector<TaskRow> by_task;
  by_task.reserve(side_rows_.size());
  for (const SideRows::Entry& e : side_rows_.entries())
    if (e.task != SideRows::kNone) by_task.push_back({task_number[e.task], e.time_ns, e.id});
  std::sort(by_task.begin(), by_task.end());
  return insert_sorted("events_by_task", by_task.size(), [&](sqlite3_stmt* s, int p, size_t i) {
    sqlite3_bind_int64(s, p + 1, by_task[i].task);
    sqlite3_bind_int64(s, p + 2, by_task[i].time_ns);
    sqlite3_bind_int64(s, p + 3, by_task[i].id);
  });
}

Status Store::InsertOne(const Batch& batch, int64_t now_ns, InsertResult* result,
                        std::map<std::string_view, int64_t>* per_agent) {
  sqlite3_stmt* s = nullptr;
  auto done = [&](const char* what) {
    Status e = Err(writer_, what);
    sqlite3_reset(s);
    return e;
  };
  // The largest id before a statement: SQLite gives a new row the largest
  // id + 1, so the rows a statement inserted are the ones with larger ids.
  s = max_id_;
  if (sqlite3_step(s) != SQLITE_ROW) return done("max id");
  int64_t last_id = sqlite3_column_int64(s, 0);
  sqlite3_reset(s);
  const std::vector<Alert>& alerts = batch.alerts;
  for (size_t first = 0; first < alerts.size();) {
    // kInsertChunk rows per statement while that many are left, then one.
    size_t n = alerts.size() - first >= kInsertChunk ? kInsertChunk : 1;
    s = n == kInsertChunk ? insert_chunk_ : insert_event_;
    for (size_t k = 0; k < n; ++k) {
      const Alert& a = alerts[first + k];
      int p = static_cast<int>(k) * 9;
      BindText(s, p + 1, a.uuid);
      sqlite3_bind_int64(s, p + 2, a.time_ns);
      BindText(s, p + 3, a.rule);
      sqlite3_bind_int(s, p + 4, a.priority_index);
      BindText(s, p + 5, a.container_id);
      BindText(s, p + 6, a.task_arn);
      BindText(s, p + 7, a.agent_id);
      BindText(s, p + 8, a.json);
      sqlite3_bind_int64(s, p + 9, now_ns);
    }
    if (sqlite3_step(s) != SQLITE_DONE) return done("insert event");
    sqlite3_reset(s);
    size_t inserted = static_cast<size_t>(sqlite3_changes(writer_));
    auto count_new = [&](size_t i, int64_t id) {
      ++result->inserted;
      result->new_indexes.push_back(i);
      if (!alerts[i].agent_id.empty()) ++(*per_agent)[alerts[i].agent_id];
      if (side_rows_from_ >= 0) side_rows_.Add(id, alerts[i].time_ns, alerts[i].container_id, alerts[i].task_arn);
    };
    if (inserted == n) {
      for (size_t k = 0; k < n; ++k) count_new(first + k, last_id + 1 + static_cast<int64_t>(k));
    } else {
      // Some were duplicates (a replay): an alert is new if its row has an
      // id this statement gave out, and only its first copy in the chunk.
      std::vector<int64_t> claimed;
      s = find_id_;
      for (size_t k = 0; k < n; ++k) {
        BindText(s, 1, alerts[first + k].uuid);
        if (sqlite3_step(s) != SQLITE_ROW) return done("find event");
        int64_t id = sqlite3_column_int64(s, 0);
        sqlite3_reset(s);
        if (id > last_id && std::find(claimed.begin(), claimed.end(), id) == claimed.end()) {
          claimed.push_back(id);
          count_new(first + k, id);
        } else {
          ++result->duplicates;
        }
      }
    }
    if (inserted > 0) last_id = sqlite3_last_insert_rowid(writer_);
    first += n;
  }
  sqlite3_reset(s);
  s = upsert_agent_;
  for (const AgentRecord& a : batch.agents) {
    sqlite3_reset(s);
    BindText(s, 1, a.id);
    BindText(s, 2, a.hostname);
    BindText(s, 3, a.container_id);
    BindText(s, 4, a.container_name);
    BindText(s, 5, a.task_arn);
    BindText(s, 6, a.cluster);
    BindText(s, 7, a.metadata_json);
    if (a.stats_json.empty()) sqlite3_bind_null(s, 8); else BindText(s, 8, a.stats_json);
    sqlite3_bind_int64(s, 9, a.events_seen);
    sqlite3_bind_int64(s, 10, a.alerts);
    sqlite3_bind_int64(s, 11, a.drops);
    if (sqlite3_step(s) != SQLITE_DONE) return done("upsert agent");
    per_agent->try_emplace(a.id, 0);  // seen now, even without alerts
  }
  sqlite3_reset(s);
  return Status::Ok();
}

Status Store::TouchAgents(const std::map<std::string_view, int64_t>& per_agent, int64_t now_ns) {
  sqlite3_stmt* s = touch_agent_;
  for (const auto& [id, n] : per_agent) {
    sqlite3_reset(s);
    BindText(s, 1, id);
    sqlite3_bind_int64(s, 2, now_ns);
    sqlite3_bind_int64(s, 3, n);
    if (sqlite3_step(s) != SQLITE_DONE) {
      Status e = Err(writer_, "touch agent");
      sqlite3_reset(s);
      return e;
    }
  }
  sqlite3_reset(s);
  return Status::Ok();
}

Result<Store::Sql> Store::BuildQuery(const Query& q) {
  // Every parameter is numbered ("?N") so that one value can be used in
  // both parts of a side-table query.
  Sql out;
  int pos = 0;
  auto bind_text = [&](std::string v) {
    int p = ++pos;
    out.binds.push_back([p, v](sqlite3_stmt* s) {
      sqlite3_bind_text(s, p, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    });
    return fmt::format("?{}", p);
  };
  auto bind_int = [&](int64_t v) {
    int p = ++pos;
    out.binds.push_back([p, v](sqlite3_stmt* s) { sqlite3_bind_int64(s, p, v); });
    return fmt::format("?{}", p);
  };
  // Conditions on the event row's own columns (`e`: its table alias, or "").
  std::string since, until, cursor_t, cursor_id;
  if (q.since_ns > 0) since = bind_int(q.since_ns);
  if (q.until_ns > 0) until = bind_int(q.until_ns);
  if (!q.cursor.empty()) {
    long long ct = 0, cid = 0;
    if (std::sscanf(q.cursor.c_str(), "%lld_%lld", &ct, &cid) != 2)
      return Status::InvalidArgument("cursor: malformed");
    cursor_t = bind_int(ct);
    cursor_id = bind_int(cid);
  }
  // Time and cursor: on the side table's key when it drives the query.
  auto time_conds = [&](const std::string& t) {
    std::string c;
    if (!since.empty()) c += fmt::format(" AND {}time_ns >= {}", t, since);
    if (!until.empty()) c += fmt::format(" AND {}time_ns < {}", t, until);
    if (!cursor_t.empty()) c += fmt::format(" AND ({0}time_ns, {0}id) < ({1}, {2})", t, cursor_t, cursor_id);
    return c;
  };
  std::string rest;  // with "{e}" where the table alias goes
  if (!q.rules.empty()) {
    rest += " AND {e}rule IN (";
    for (size_t i = 0; i < q.rules.size(); ++i) {
      if (i) rest += ',';
      rest += bind_text(q.rules[i]);
    }
    rest += ")";
  }
  if (!q.priorities.empty()) {
    rest += " AND {e}priority_num IN (";
    for (size_t i = 0; i < q.priorities.size(); ++i) {
      if (i) rest += ',';
      rest += bind_int(q.priorities[i]);
    }
    rest += ")";
  }
  if (q.min_priority >= 0) rest += " AND {e}priority_num <= " + bind_int(q.min_priority);
  if (!q.agent.empty()) rest += " AND {e}agent_id = " + bind_text(q.agent);
  if (!q.text.empty()) {
    std::string like = "%";
    for (char c : q.text) {
      if (c == '%' || c == '_' || c == '\\') like += '\\';
      like += c;
    }
    like += "%";
    std::string p = bind_text(like);
    rest += fmt::format(" AND ({{e}}rule LIKE {0} ESCAPE '\\' OR {{e}}json LIKE {0} ESCAPE '\\')", p);
  }
  std::string container = q.container.empty() ? "" : bind_text(q.container);
  std::string task = q.task.empty() ? "" : bind_text(q.task);
  auto with_alias = [&](const std::string& e) { return fmt::format(fmt::runtime(rest), fmt::arg("e", e)); };
  out.limit = std::clamp(q.limit, 1, 10000);
  int fetch = out.limit + 1;  // one more: tells whether there is a next page
  if (container.empty() && task.empty()) {
    // Condition order: the time index serves time, cursor and order.
    out.text = "SELECT json,time_ns,id FROM events WHERE 1" + time_conds("") + with_alias("") +
               fmt::format(" ORDER BY time_ns DESC, id DESC LIMIT {}", fetch);
    return out;
  }
  // Container and/or task: the rows up to the watermark through a side
  // table (container's when both are given), the ones above it by row id
  // (NOT INDEXED: the time index would scan every row for `id > W`), each
  // part ordered and limited, then merged.
  bool by_container = !container.empty();
  std::string side = by_container ? "events_by_container" : "events_by_task";
  std::string key = by_container ? "container_id" : "task";
  std::string side_rest = with_alias("e.");
  if (by_container && !task.empty()) side_rest += " AND e.task_arn = " + task;
  std::string recent_rest = with_alias("");
  if (!container.empty()) recent_rest += " AND container_id = " + container;
  if (!task.empty()) recent_rest += " AND task_arn = " + task;
  out.text = fmt::format(
      "SELECT json,time_ns,id FROM ("
      "SELECT * FROM (SELECT e.json AS json, s.time_ns AS time_ns, s.id AS id FROM {side} s CROSS JOIN events e "
      "ON e.id = s.id WHERE s.{key} = {value}{side_time}{side_rest} ORDER BY s.time_ns DESC, s.id DESC LIMIT {n}) "
      "UNION ALL "
      "SELECT * FROM (SELECT json, time_ns, id FROM events NOT INDEXED "
      "WHERE id > (SELECT indexed_to FROM side_index_state){recent_time}{recent_rest} "
      "ORDER BY time_ns DESC, id DESC LIMIT {n})"
      ") ORDER BY time_ns DESC, id DESC LIMIT {n}",
      fmt::arg("side", side), fmt::arg("key", key),
      fmt::arg("value", by_container ? container : "(SELECT id FROM tasks WHERE task_arn = " + task + ")"),
      fmt::arg("side_time", time_conds("s.")), fmt::arg("side_rest", side_rest),
      fmt::arg("recent_time", time_conds("")), fmt::arg("recent_rest", recent_rest), fmt::arg("n", fetch));
  return out;
}

Result<Store::Page> Store::QueryEvents(const Query& q) {
  auto sql = BuildQuery(q);
  if (!sql.ok()) return sql.status();
  std::lock_guard lock(read_mu_);
  Stmt s(reader_, sql->text.c_str());
  if (!s.ok()) return Err(reader_, "query");
  for (auto& b : sql->binds) b(s.get());
  Page page;
  int rc;
  int64_t last_t = 0, last_id = 0;
  while ((rc = s.Step()) == SQLITE_ROW) {
    if (static_cast<int>(page.events.size()) == sql->limit) {
      page.next_cursor = fmt::format("{}_{}", last_t, last_id);
      break;
    }
    page.events.push_back(s.Text(0));
    last_t = s.Int(1);
    last_id = s.Int(2);
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Err(reader_, "query");
  return page;
}

Result<std::vector<std::string>> Store::ExplainQueryEvents(const Query& q) {
  auto sql = BuildQuery(q);
  if (!sql.ok()) return sql.status();
  std::lock_guard lock(read_mu_);
  Stmt s(reader_, ("EXPLAIN QUERY PLAN " + sql->text).c_str());
  if (!s.ok()) return Err(reader_, "explain");
  for (auto& b : sql->binds) b(s.get());
  std::vector<std::string> plan;
  while (s.Step() == SQLITE_ROW) plan.push_back(s.Text(3));
  return plan;
}

Result<std::optional<std::string>> Store::GetEvent(const std::string& uuid) {
  std::lock_guard lock(read_mu_);
  Stmt s(reader_, "SELECT json FROM events WHERE uuid = ?");
  if (!s.ok()) return Err(reader_, "get");
  BindText(s.get(), 1, uuid);
  int rc = s.Step();
  if (rc == SQLITE_ROW) return std::optional<std::string>(s.Text(0));
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  return Err(reader_, "get");
}

Result<json> Store::Summary(int64_t since_ns, int64_t now_ns, int buckets) {
  buckets = std::clamp(buckets, 1, 500);
  int64_t span = std::max<int64_t>(now_ns - since_ns, 1);
  int64_t bucket_ns = (span + buckets - 1) / buckets;
  json out;
  out["since"] = FormatRfc3339(since_ns);
  out["until"] = FormatRfc3339(now_ns);
  out["bucket_seconds"] = static_cast<double>(bucket_ns) / 1e9;
  json by_rule = json::array(), by_priority = json::object();
  json timeline = json::object();
  int64_t total = 0;
  {
    std::lock_guard lock(read_mu_);
    Stmt s(reader_,
           "SELECT rule, MIN(priority_num), COUNT(*), MAX(time_ns) FROM events WHERE time_ns >= ? AND time_ns <= ? "
           "GROUP BY rule ORDER BY 3 DESC");
    if (!s.ok()) return Err(reader_, "summary");
    sqlite3_bind_int64(s.get(), 1, since_ns);
    sqlite3_bind_int64(s.get(), 2, now_ns);
    while (s.Step() == SQLITE_ROW) {
      by_rule.push_back({{"rule", s.Text(0)},
                         {"priority", std::string(kPriorityNames[std::clamp<int64_t>(s.Int(1), 0, 7)])},
                         {"count", s.Int(2)},
                         {"last", FormatRfc3339(s.Int(3))}});
      total += s.Int(2);
    }
    Stmt p(reader_,
           "SELECT priority_num, COUNT(*) FROM events WHERE time_ns >= ? AND time_ns <= ? GROUP BY priority_num");
    if (!p.ok()) return Err(reader_, "summary");
    sqlite3_bind_int64(p.get(), 1, since_ns);
    sqlite3_bind_int64(p.get(), 2, now_ns);
    while (p.Step() == SQLITE_ROW)
      by_priority[std::string(kPriorityNames[std::clamp<int64_t>(p.Int(0), 0, 7)])] = p.Int(1);
    Stmt t(reader_,
           "SELECT rule, (time_ns - ?1) / ?2, COUNT(*) FROM events WHERE time_ns >= ?1 AND time_ns <= ?3 "
           "GROUP BY 1, 2");
    if (!t.ok()) return Err(reader_, "summary");
    sqlite3_bind_int64(t.get(), 1, since_ns);
    sqlite3_bind_int64(t.get(), 2, bucket_ns);
    sqlite3_bind_int64(t.get(), 3, now_ns);
    while (t.Step() == SQLITE_ROW) {
      std::string rule = t.Text(0);
      if (!timeline.contains(rule)) timeline[rule] = std::vector<int64_t>(buckets, 0);
      int64_t b = std::clamp<int64_t>(t.Int(1), 0, buckets - 1);
      timeline[rule][b] = timeline[rule][b].get<int64_t>() + t.Int(2);
    }
  }
  out["total"] = total;
  out["by_rule"] = std::move(by_rule);
  out["by_priority"] = std::move(by_priority);
  out["timeline"] = std::move(timeline);
  auto agents = Agents();
  if (!agents.ok()) return agents.status();
  out["agents"] = std::move(agents.value());
  return out;
}

Result<json> Store::Agents() {
  std::lock_guard lock(read_mu_);
  // Every agent has activity (its first alert or record made it); one that
  // never sent a record has no `agents` row: empty fields, unknown counters.
  Stmt s(reader_,
         "SELECT v.id,g.hostname,g.container_id,g.container_name,g.task_arn,g.cluster,g.metadata,g.stats,"
         "coalesce(g.events_seen,-1),coalesce(g.alerts,-1),coalesce(g.drops,-1),v.alerts_stored,v.first_seen_ns,"
         "v.last_seen_ns FROM agent_activity v LEFT JOIN agents g ON g.id = v.id "
         "ORDER BY v.last_seen_ns DESC LIMIT 1000");
  if (!s.ok()) return Err(reader_, "agents");
  json out = json::array();
  while (s.Step() == SQLITE_ROW) {
    json a = {{"id", s.Text(0)},           {"hostname", s.Text(1)},     {"container.id", s.Text(2)},
              {"container.name", s.Text(3)}, {"aws.ecs.task.arn", s.Text(4)}, {"aws.ecs.cluster", s.Text(5)},
              {"alerts_stored", s.Int(11)},  {"first_seen", FormatRfc3339(s.Int(12))},
              {"last_seen", FormatRfc3339(s.Int(13))}};
    auto counter = [&](const char* key, int col) { a[key] = s.Int(col) >= 0 ? json(s.Int(col)) : json(nullptr); };
    counter("events_seen", 8);
    counter("alerts", 9);
    counter("drops", 10);
    std::string stats = s.Text(7);
    a["stats"] = stats.empty() ? json(nullptr) : json::parse(stats, nullptr, false);
    std::string meta = s.Text(6);
    a["metadata"] = meta.empty() ? json(nullptr) : json::parse(meta, nullptr, false);
    out.push_back(std::move(a));
  }
  return out;
}

Result<int64_t> Store::DeleteOlderThan(int64_t cutoff_ns, int max_rows) {
  std::lock_guard lock(write_mu_);
  Status st = Exec(writer_, "BEGIN IMMEDIATE");
  if (!st.ok()) return st;
  int64_t deleted = 0;
  {
    // Each victim's side rows by their exact key, then the row itself.
    Stmt pick(writer_, "SELECT id, time_ns, container_id, task_arn FROM events WHERE time_ns < ? LIMIT ?");
    Stmt del_c(writer_, "DELETE FROM events_by_container WHERE container_id = ?1 AND time_ns = ?2 AND id = ?3");
    Stmt del_t(writer_,
               "DELETE FROM events_by_task WHERE task = (SELECT id FROM tasks WHERE task_arn = ?1) AND time_ns = ?2 "
               "AND id = ?3");
    Stmt del_e(writer_, "DELETE FROM events WHERE id = ?");
    // A new row gets the largest id + 1: once the rows at the top are gone
    // that can be at or below the watermark, so the watermark comes down to
    // the largest id left (the side tables hold nothing above it then).
    Stmt lower(writer_,
               "UPDATE side_index_state SET indexed_to = min(indexed_to, (SELECT coalesce(max(id), 0) FROM events))");
    if (!pick.ok() || !del_c.ok() || !del_t.ok() || !del_e.ok() || !lower.ok()) st = Err(writer_, "retention");
    struct Victim {
      int64_t id, time_ns;
      std::string container, task;
    };
    std::vector<Victim> victims;
    if (st.ok()) {
      sqlite3_bind_int64(pick.get(), 1, cutoff_ns);
      sqlite3_bind_int(pick.get(), 2, max_rows);
      int rc;
      while ((rc = pick.Step()) == SQLITE_ROW) victims.push_back({pick.Int(0), pick.Int(1), pick.Text(2), pick.Text(3)});
      if (rc != SQLITE_DONE) st = Err(writer_, "retention");
    }
    for (const Victim& v : victims) {
      if (v.id > indexed_to_) {  // side_rows_ would index a deleted row: the next bulk reads the rows instead
        side_rows_.Clear();
        side_rows_from_ = -1;
      }
      if (!st.ok()) break;
      for (auto [del, key] : {std::pair{&del_c, &v.container}, std::pair{&del_t, &v.task}}) {
        sqlite3_reset(del->get());
        BindText(del->get(), 1, *key);
        sqlite3_bind_int64(del->get(), 2, v.time_ns);
        sqlite3_bind_int64(del->get(), 3, v.id);
        if (del->Step() != SQLITE_DONE) st = Err(writer_, "retention");
      }
      sqlite3_reset(del_e.get());
      sqlite3_bind_int64(del_e.get(), 1, v.id);
      if (st.ok() && del_e.Step() != SQLITE_DONE) st = Err(writer_, "retention");
      ++deleted;
    }
    if (st.ok() && lower.Step() != SQLITE_DONE) st = Err(writer_, "retention");
  }
  if (st.ok() && sqlite3_exec(writer_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) st = Err(writer_, "commit");
  if (!st.ok()) (void)Exec(writer_, "ROLLBACK");
  Status ids = ReadIds();
  if (!st.ok()) return st;
  if (!ids.ok()) return ids;
  return deleted;
}

Status Store::Ping() {
  std::lock_guard lock(read_mu_);
  Stmt s(reader_, "SELECT count(*) FROM sqlite_master");
  if (!s.ok() || s.Step() != SQLITE_ROW) return Err(reader_, "ping");
  return Status::Ok();
}

int64_t Store::FileBytes() const {
  int64_t total = 0;
  struct stat st;
  for (const std::string& p : {path_, path_ + "-wal", path_ + "-shm"})
    if (::stat(p.c_str(), &st) == 0) total += st.st_size;
  return total;
}

}  // namespace sidetrace::backend
