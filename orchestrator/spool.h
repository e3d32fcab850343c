// Spool: the orchestrator's on-disk queue of alerts not yet stored by the
// backend. It is what makes "acked to the agent" mean "will reach the
// backend": an alert is acked only after it is written and fdatasync'ed here,
// and a batch file is deleted only after the backend answered 2xx.
//
// Layout: DIR/seg-<20-digit id>.jsonl, one alert (Falco JSON) per line. A
// segment is one batch: it is sealed when it holds --batch-max-events alerts
// or --batch-max-delay after its first alert, and then handed to the
// forwarder. After a crash (kill -9) every segment found at start is a sealed
// batch; a torn last line (written, never fsynced, so never acked) is cut.
//
// Group commit: one writer thread takes everything appended since its last
// round, writes it, makes it durable (fdatasync of each file it wrote and
// fsync of the folder when it created a file, issued in parallel so the
// journal commits them together) and then runs the callbacks, so the cost
// of fdatasync is shared by all agents.
//
// Bounded: when the sealed batches exceed max_bytes, the oldest that is not
// being sent is deleted and its alerts counted as dropped.
//
// Thread-safety: all public methods are thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/util/status.h"
#include "orchestrator/metrics.h"

namespace sidetrace::orchestrator {

class Spool {
 public:
  struct Options {
    std::string dir;
    uint64_t max_bytes = 1ull << 30;
    uint32_t batch_max_events = 1000;
    std::chrono::milliseconds batch_max_delay{200};
  };
  struct Batch {
    uint64_t id = 0;
    std::string path;
    uint64_t events = 0;
    uint64_t bytes = 0;
  };
  // Called on the writer thread once the lines are durable (true) or their
  // write failed (false). Must not block.
  using DoneFn = std::function<void(bool durable)>;

  Spool(Options options, Metrics* metrics);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Creates the folder, recovers batches left by a previous run, starts the
  // writer. Error names the folder or file.
  Status Open();

  // Queues alert lines (JSON without newlines) for the next group commit.
  void Append(std::vector<std::string> lines, DoneFn done);

  // The oldest sealed batch not being sent, waiting up to `wait`; nullopt on
  // timeout or after Stop(). The batch is "in flight" until Delivered/Failed.
  std::optional<Batch> Take(std::chrono::milliseconds wait);
  void Delivered(const Batch& batch);  // deletes the file
  void Failed(const Batch& batch);     // back in line, first
  void Dropped(const Batch& batch);    // deletes the file; the backend refused it

  // Writes what is pending, seals the open segment, stops the writer and
  // wakes Take() callers. Idempotent.
  void Stop();

 private:
  struct Pending {
    std::vector<std::string> lines;
    DoneFn done;
  };
  void WriterLoop();
  bool OpenSegment();  // writer thread
  void SealCurrent();  // REQUIRES: mu_ held
  void EnforceCap();   // REQUIRES: mu_ held
  void PublishGauges();  // REQUIRES: mu_ held
  bool SyncAll(const std::vector<int>& fds);  // writer thread; also the folder if dir_dirty_

  Options options_;
  Metrics* metrics_;
  int dir_fd_ = -1;
  std::thread writer_;

  std::mutex mu_;
  std::condition_variable writer_cv_;
  std::condition_variable ready_cv_;
  std::vector<Pending> pending_;  // GUARDED_BY(mu_)
  std::deque<Batch> ready_;       // GUARDED_BY(mu_): sealed, oldest first
  size_t in_flight_ = 0;          // GUARDED_BY(mu_)
  uint64_t total_bytes_ = 0;      // GUARDED_BY(mu_): sealed + open segment
  uint64_t total_batches_ = 0;    // GUARDED_BY(mu_)
  bool stop_ = false;             // GUARDED_BY(mu_)
  bool stopped_ = false;          // GUARDED_BY(mu_): writer has exited

  // The open segment; touched by the writer thread only (sealed under mu_).
  std::optional<Batch> current_;
  int current_fd_ = -1;
  std::chrono::steady_clock::time_point current_opened_;
  uint64_t next_id_ = 1;
  bool dir_dirty_ = false;  // a segment was created since the folder's last fsync
};

}  // namespace sidetrace::orchestrator
