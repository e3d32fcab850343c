// Committer: the single thread that writes ingest batches to the Store,
// with group commit.
//
// Why: parsing a batch (TLS, HTTP, JSON) and committing one (SQLite, WAL
// write, fsync) are both a few milliseconds; with the commit on its own
// thread the I/O threads parse the next batch while the previous one
// commits, and every batch that queued up while a COMMIT was running goes
// into the next transaction. With Sync::kFull the disk wait is a second
// thread's (Store::SyncWal): one fdatasync covers every group committed
// before it, the committer inserts the next group meanwhile, and a group's
// replies go out after the sync that covers it. It also
// fills the store's container and task side tables in bulk
// (Store::IndexSideTables), after a group's replies went out, once
// Store::kSideIndexRows rows wait for it or kSideIndexDelaySeconds after the
// first did; batches arriving meanwhile wait and commit together.
//
// Scheduling: the committer is the one serial stage of ingest, so it may run
// at a lower nice value than the I/O threads and the checkpointer (`nice`;
// needs CAP_SYS_NICE or RLIMIT_NICE, else it keeps its own). Sharing two
// vCPUs with the whole chain at 100k alerts/s it otherwise waits
// runnable for ~15% of its time (bench/RESULTS.md, "Session 6").
//
// Contract: Submit() hands over a parsed batch; `done` is called exactly
// once, on the syncer thread, after the transaction holding the batch
// committed and is on disk (with that batch's result) or failed (with the
// error; nothing of the batch is stored then, or, when only the sync failed,
// it may be, and a retry is harmless). Batches are answered in Submit()
// order. A group
// holds at most `max_group_alerts` alerts (at least one batch).
// Thread-safety: Submit() from any thread. Stop() (also run by the
// destructor) commits what is queued, answers it, then joins the thread;
// call it while everything the `done` callbacks use is still alive.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "backend/metrics.h"
#include "backend/store.h"

namespace sidetrace::backend {

class Committer {
 public:
  using Done = std::function<void(Result<Store::InsertResult>)>;
  Committer(Store* store, Metrics* metrics, std::optional<int> nice = std::nullopt, size_t max_group_alerts = 20000);
  ~Committer();
  Committer(const Committer&) = delete;
  Committer& operator=(const Committer&) = delete;

  void Submit(std::shared_ptr<const Batch> batch, Done done);
  void Stop();

 private:
  struct Item {
    std::shared_ptr<const Batch> batch;
    Done done;
  };
  void Run();
  void RunSyncer();
  // A committed group waiting for the disk.
  struct Committed {
    std::vector<Item> items;
    Result<std::vector<Store::InsertResult>> results;
  };

  Store* store_;
  Metrics* metrics_;
  std::optional<int> nice_;
  size_t max_group_alerts_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;  // GUARDED_BY(mu_)
  bool stopping_ = false;   // GUARDED_BY(mu_)
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  std::deque<Committed> committed_;  // GUARDED_BY(sync_mu_)
  bool committer_done_ = false;      // GUARDED_BY(sync_mu_)
  std::thread syncer_;
  std::thread thread_;
};

}  // namespace sidetrace::backend
