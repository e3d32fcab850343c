#include "backend/committer.h"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <vector>

#include "common/util/log.h"

namespace sidetrace::backend {

namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Committer::Committer(Store* store, Metrics* metrics, std::optional<int> nice, size_t max_group_alerts)
    : store_(store),
      metrics_(metrics),
      nice_(nice),
      max_group_alerts_(max_group_alerts),
      syncer_([this] { RunSyncer(); }),
      thread_([this] { Run(); }) {}

Committer::~Committer() { Stop(); }

void Committer::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard lock(sync_mu_);
    committer_done_ = true;
  }
  sync_cv_.notify_all();
  if (syncer_.joinable()) syncer_.join();
}

// Answers committed groups once a WAL sync started after their COMMIT has
// returned: every group waiting when a sync starts is covered by it.
void Committer::RunSyncer() {
  pthread_setname_np(pthread_self(), "st-walsync");
  std::deque<Committed> ready;
  for (;;) {
    {
      std::unique_lock lock(sync_mu_);
      sync_cv_.wait(lock, [&] { return committer_done_ || !committed_.empty(); });
      if (committed_.empty()) return;  // committer_done_
      ready.swap(committed_);
    }
    bool any_ok = false;
    for (const Committed& c : ready) any_ok |= c.results.ok();
    Status synced = any_ok ? store_->SyncWal() : Status::Ok();
    if (!synced.ok()) log::Error("WAL sync failed; the batches it covers are answered as failed", "error={}",
                                 log::Quote(synced.message()));
    for (Committed& c : ready) {
      for (size_t i = 0; i < c.items.size(); ++i) {
        if (!c.results.ok()) c.items[i].done(c.results.status());
        else if (!synced.ok()) c.items[i].done(synced);
        else c.items[i].done(std::move((*c.results)[i]));
      }
    }
    ready.clear();
  }
}

void Committer::Submit(std::shared_ptr<const Batch> batch, Done done) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(Item{std::move(batch), std::move(done)});
  }
  cv_.notify_one();
}

void Committer::Run() {
  pthread_setname_np(pthread_self(), "st-committer");  // per-thread CPU in top and the bench
  if (nice_) {
    // This thread only: setpriority on a thread id.
    if (setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), *nice_) == 0)
      log::Info("committer scheduling", "nice={}", *nice_);
    else
      log::Info("cannot change the committer's nice value; it keeps its own (allow it with CAP_SYS_NICE or ulimit nice)",
                "nice={} error={}", *nice_, log::Quote(std::strerror(errno)));
  }
  std::vector<Item> group;
  std::vector<const Batch*> batches;
  // When rows were first seen above the side tables' watermark; after a
  // failed bulk, none before retry_at.
  bool unindexed = false;
  std::chrono::steady_clock::time_point unindexed_since, retry_at;
  const auto delay = std::chrono::seconds(Store::kSideIndexDelaySeconds);
  for (;;) {
    {
      std::unique_lock lock(mu_);
      auto ready = [&] { return stopping_ || !queue_.empty(); };
      if (unindexed) cv_.wait_until(lock, std::max(unindexed_since + delay, retry_at), ready);
      else cv_.wait(lock, ready);
      if (queue_.empty() && stopping_) return;  // nothing left
      size_t alerts = 0;
      while (!queue_.empty() && (group.empty() || alerts + queue_.front().batch->alerts.size() <= max_group_alerts_)) {
        alerts += queue_.front().batch->alerts.size();
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    if (!group.empty()) {
      for (const Item& item : group) batches.push_back(item.batch.get());
      auto results = store_->InsertBatches(batches, NowNs());
      metrics_->commits++;
      {
        std::lock_guard lock(sync_mu_);
        committed_.push_back(Committed{std::move(group), std::move(results)});
      }
      sync_cv_.notify_one();
      group.clear();
      batches.clear();
      store_->RestartWalIfDue();
    }
    // Side tables: in bulk, after the group's replies went out.
    int64_t rows = store_->UnindexedRows();
    auto now = std::chrono::steady_clock::now();
    if (rows > 0 && !unindexed) unindexed_since = now;
    unindexed = rows > 0;
    if (unindexed && now >= retry_at && (rows >= Store::kSideIndexRows || now >= unindexed_since + delay)) {
      auto n = store_->IndexSideTables();
      if (n.ok()) {
        log::Debug("side tables indexed", "rows={} ms={}", *n,
                   std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - now).count());
        unindexed = false;
      } else {
        log::Warn("side index failed", "error={}", log::Quote(n.status().message()));
        retry_at = now + delay;
      }
    }
  }
}

}  // namespace sidetrace::backend
