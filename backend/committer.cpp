#include "backend/committer.h"

#include <pthread.h>

#include <chrono>
#include <vector>

namespace sidetrace::backend {

namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Committer::Committer(Store* store, Metrics* metrics, size_t max_group_alerts)
    : store_(store), metrics_(metrics), max_group_alerts_(max_group_alerts), thread_([this] { Run(); }) {}

Committer::~Committer() { Stop(); }

void Committer::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
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
  std::vector<Item> group;
  std::vector<const Batch*> batches;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      size_t alerts = 0;
      while (!queue_.empty() && (group.empty() || alerts + queue_.front().batch->alerts.size() <= max_group_alerts_)) {
        alerts += queue_.front().batch->alerts.size();
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    for (const Item& item : group) batches.push_back(item.batch.get());
    auto results = store_->InsertBatches(batches, NowNs());
    metrics_->commits++;
    for (size_t i = 0; i < group.size(); ++i) {
      if (results.ok()) group[i].done(std::move((*results)[i]));
      else group[i].done(results.status());
    }
    group.clear();
    batches.clear();
  }
}

}  // namespace sidetrace::backend
