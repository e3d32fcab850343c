// Container metadata for the agent without ever delaying the workload.
//
// SharedContainerInfo holds the current ContainerInfo; the agent publishes
// the environment-derived one at start (ContainerInfoFromEnvironment, a few
// file reads, no network) and the tracer reads snapshots. MetadataFetcher
// runs FetchEcsMetadata on its own thread and publishes the merged result.
//
// Retries: attempt 1 at once, then after 250 ms, 500 ms, 1 s, 2 s, 4 s, 8 s,
// 16 s, 30 s, 30 s... (doubling, capped at max_backoff) until one succeeds or
// max_attempts (default 10, so about 2 minutes) have failed; each attempt is
// bounded by `timeout` per GET. Early failures are normal: the ECS agent may
// not serve a container's metadata until the container has started. Every
// failure is logged at debug level, the last one at warning level.
//
// The fetcher's thread is named "st-ecs-metadata" and blocks every signal,
// so that signals sent to the agent always reach its main thread.
//
// Thread-safety: SharedContainerInfo is safe from any thread; Get() is a
// short mutex hold and a shared_ptr copy, version() one atomic load, so a
// hot path can poll version() and take a new snapshot only when it changed.
// MetadataFetcher's Stop() and destructor may be called from any thread but
// one; they cancel an HTTP exchange in progress and join the thread at once
// (no wait for a timeout).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/ecs/http_get.h"
#include "common/event/event.h"

namespace sidetrace::ecs {

class SharedContainerInfo {
 public:
  SharedContainerInfo();
  explicit SharedContainerInfo(event::ContainerInfo initial);

  // Replaces the current info; readers holding an old snapshot keep it valid.
  void Publish(event::ContainerInfo info);
  std::shared_ptr<const event::ContainerInfo> Get() const;
  // Incremented by each Publish (0 before the first).
  uint64_t version() const { return version_.load(std::memory_order_acquire); }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const event::ContainerInfo> current_;  // guarded by mu_, never null
  std::atomic<uint64_t> version_{0};
};

class MetadataFetcher {
 public:
  static constexpr const char* kThreadName = "st-ecs-metadata";  // at most 15 characters

  struct Options {
    std::string uri;  // ${ECS_CONTAINER_METADATA_URI_V4}
    std::chrono::milliseconds timeout{2000};  // per GET
    int max_attempts = 10;
    std::chrono::milliseconds first_backoff{250};
    std::chrono::milliseconds max_backoff{30000};
  };

  // Starts the thread. On success it publishes MergeContainerInfo(current
  // value of `target`, fetched) into `target`, which must outlive this object.
  MetadataFetcher(Options options, SharedContainerInfo* target);
  ~MetadataFetcher();
  MetadataFetcher(const MetadataFetcher&) = delete;
  MetadataFetcher& operator=(const MetadataFetcher&) = delete;

  // Stops retrying, cancels an exchange in progress, joins. Idempotent.
  void Stop();
  // True once the thread has finished (success, attempts exhausted or Stop).
  bool done() const { return done_.load(std::memory_order_acquire); }
  // True once metadata was fetched and published.
  bool succeeded() const { return succeeded_.load(std::memory_order_acquire); }
  int attempts() const { return attempts_.load(std::memory_order_acquire); }

 private:
  void Run();

  const Options options_;
  SharedContainerInfo* const target_;
  HttpCanceller canceller_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::atomic<bool> done_{false};
  std::atomic<bool> succeeded_{false};
  std::atomic<int> attempts_{0};
  std::thread thread_;  // last member: started after the others exist
};

// The agent's start-up in one call: publishes ContainerInfoFromEnvironment()
// into `target` now and, when ECS_CONTAINER_METADATA_URI_V4 is set, returns
// a MetadataFetcher working in the background (else nullptr).
std::unique_ptr<MetadataFetcher> StartContainerMetadata(SharedContainerInfo* target);

}  // namespace sidetrace::ecs
