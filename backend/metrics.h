// Metrics: process-wide counters exported in the Prometheus text format on
// GET /metrics.
//
// Thread-safety: counters are atomics; the rejected-by-reason map and the
// histogram are guarded by a mutex. Cheap enough for the ingest path (a
// handful of atomic adds per batch, never per event).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace sidetrace::backend {

class Metrics {
 public:
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> commits{0};  // ingest transactions (group commit)
  std::atomic<uint64_t> events_received{0};
  std::atomic<uint64_t> events_stored{0};
  std::atomic<uint64_t> events_duplicate{0};
  std::atomic<uint64_t> connections_open{0};
  std::atomic<uint64_t> connections_rejected{0};
  std::atomic<uint64_t> sse_clients{0};
  std::atomic<uint64_t> retention_deleted{0};
  std::atomic<uint64_t> forward_sent{0};
  std::atomic<uint64_t> forward_failed{0};    // attempts that failed (each retry counts)
  std::atomic<uint64_t> forward_dropped{0};   // gave up: queue full or retries exhausted
  std::atomic<uint64_t> forward_queue{0};

  // Counts one rejected request: reason is a short label (unauthorized,
  // too_large, malformed, invalid_event, bad_encoding, storage).
  void Reject(const std::string& reason);
  // Records the latency of one ingest batch (receive to commit).
  void ObserveBatch(double seconds);

  // Prometheus text exposition; the database figures are sampled by the caller.
  std::string Render(int64_t db_bytes, uint64_t db_checkpoints) const;

 private:
  static constexpr double kBuckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
  static constexpr size_t kBucketCount = sizeof kBuckets / sizeof kBuckets[0];
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> rejected_;   // GUARDED_BY(mu_)
  uint64_t hist_[kBucketCount + 1] = {};        // GUARDED_BY(mu_), last is +Inf
  double hist_sum_ = 0;                          // GUARDED_BY(mu_)
  uint64_t hist_count_ = 0;                      // GUARDED_BY(mu_)
};

}  // namespace sidetrace::backend
