#include "backend/metrics.h"

#include <fmt/format.h>

namespace sidetrace::backend {

void Metrics::Reject(const std::string& reason) {
  std::lock_guard lock(mu_);
  ++rejected_[reason];
}

void Metrics::ObserveBatch(double seconds) {
  std::lock_guard lock(mu_);
  size_t i = 0;
  while (i < kBucketCount && seconds > kBuckets[i]) ++i;
  ++hist_[i];
  hist_sum_ += seconds;
  ++hist_count_;
}

std::string Metrics::Render(int64_t db_bytes, uint64_t db_checkpoints) const {
  std::string out;
  auto counter = [&](const char* name, const char* help, uint64_t v, const char* type = "counter") {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}\n", name, help, type, v);
  };
  counter("sidetrace_ingest_batches_total", "Ingest batches committed.", batches.load());
  counter("sidetrace_ingest_commits_total", "SQLite transactions that committed ingest batches (group commit: one may hold several batches).", commits.load());
  counter("sidetrace_ingest_events_received_total", "Alerts received in committed batches.", events_received.load());
  counter("sidetrace_ingest_events_stored_total", "Alerts stored (new uuids).", events_stored.load());
  counter("sidetrace_ingest_events_duplicate_total", "Alerts ignored as duplicates (uuid already stored).",
          events_duplicate.load());
  counter("sidetrace_connections_open", "Open client connections.", connections_open.load(), "gauge");
  counter("sidetrace_connections_rejected_total", "Connections closed at accept: connection cap reached.",
          connections_rejected.load());
  counter("sidetrace_sse_clients", "Connected live-stream clients.", sse_clients.load(), "gauge");
  counter("sidetrace_retention_deleted_total", "Alerts deleted by retention.", retention_deleted.load());
  counter("sidetrace_forward_sent_total", "Alerts delivered to forward webhooks.", forward_sent.load());
  counter("sidetrace_forward_failed_total", "Failed webhook delivery attempts.", forward_failed.load());
  counter("sidetrace_forward_dropped_total", "Alerts given up on: queue full or retries exhausted.",
          forward_dropped.load());
  counter("sidetrace_forward_queue", "Alerts waiting for webhook delivery.", forward_queue.load(), "gauge");
  out += fmt::format("# HELP sidetrace_db_bytes Database size on disk (main file, WAL, shm).\n"
                     "# TYPE sidetrace_db_bytes gauge\nsidetrace_db_bytes {}\n", db_bytes);
  counter("sidetrace_db_checkpoints_total", "Background WAL checkpoints run.", db_checkpoints);
  std::lock_guard lock(mu_);
  out += "# HELP sidetrace_ingest_rejected_total Ingest requests rejected, by reason.\n"
         "# TYPE sidetrace_ingest_rejected_total counter\n";
  for (const auto& [reason, n] : rejected_)
    out += fmt::format("sidetrace_ingest_rejected_total{{reason=\"{}\"}} {}\n", reason, n);
  out += "# HELP sidetrace_ingest_batch_seconds Batch latency from request read to commit.\n"
         "# TYPE sidetrace_ingest_batch_seconds histogram\n";
  uint64_t cum = 0;
  for (size_t i = 0; i < kBucketCount; ++i) {
    cum += hist_[i];
    out += fmt::format("sidetrace_ingest_batch_seconds_bucket{{le=\"{}\"}} {}\n", kBuckets[i], cum);
  }
  cum += hist_[kBucketCount];
  out += fmt::format("sidetrace_ingest_batch_seconds_bucket{{le=\"+Inf\"}} {}\n", cum);
  out += fmt::format("sidetrace_ingest_batch_seconds_sum {}\nsidetrace_ingest_batch_seconds_count {}\n", hist_sum_,
                     hist_count_);
  return out;
}

}  // namespace sidetrace::backend
