// Spool: the orchestrator's on-disk queue of alerts not yet stored by the
// backend. It is what makes "acked to the agent" mean "will reach the
// backend": an alert is acked only after it is written and fdatasync'ed here,
// and its batch is released only after the backend answered 2xx.
//
// Layout: DIR/seg-<20-digit id>.jsonl, one alert (Falco JSON) per line. A
// segment file holds many batches one after the other; a batch is a byte
// range of it, sealed when it holds --batch-max-events alerts or
// --batch-max-delay after its first alert, and then handed to the forwarder.
// The writer starts a new segment once the current one passes its roll size
// (1/16 of --spool-max-bytes, 1 KiB to 64 MiB); a segment is deleted when it
// is no longer written and each of its batches was delivered or dropped.
// After a crash (kill -9) every segment found at start is cut into batches
// again (a torn last line, written but never fsynced, so never acked, is cut
// off); batches that had been delivered are sent again and the backend
// ignores the uuids it has.
//
// Group commit: one writer thread takes everything appended since its last
// round, writes it with writev(2) straight from the appends, makes it
// durable with one fdatasync (plus the folder's fsync when the round created
// a segment) and then runs the callbacks, so the cost of fdatasync is shared
// by all agents and does not grow with the number of batches a round seals.
// Rounds start at most every 10 ms, so that at low rates several reads share
// a round instead of each waking the writer for its own fdatasync.
//
// Upstream batches: Take() hands out the oldest sealed batch merged with the
// ones that follow it in the same segment, up to `take_max_events`: with a
// backlog the forwarder sends fewer, larger POSTs; without one it gets
// single batches as soon as they are sealed.
//
// Bounded: when the batches exceed max_bytes, the oldest that is not being
// sent is dropped and its alerts counted.
//
// Thread-safety: all public methods are thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
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
    uint32_t take_max_events = 2000;   // a Take() merges batches up to this many alerts
  };
  // Alerts [offset, offset + bytes) of segment file `path`, `parts` sealed
  // batches merged (ids id .. id + parts - 1).
  struct Batch {
    uint64_t id = 0;
    uint64_t segment = 0;
    std::string path;
    uint64_t offset = 0;
    uint64_t bytes = 0;
    uint64_t events = 0;
    uint64_t parts = 1;
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

  // Queues `count` alert lines for the next group commit: `lines` is JSON
  // texts, each followed by '\n' (none inside).
  void Append(std::string lines, uint64_t count, DoneFn done);

  // The oldest sealed batches not being sent, waiting up to `wait`; nullopt
  // on timeout or after Stop(). In flight until Delivered/Failed/Dropped.
  std::optional<Batch> Take(std::chrono::milliseconds wait);
  // Appends the alert lines of a batch taken (its byte range of the
  // segment) to *lines.
  static Status Read(const Batch& batch, std::string* lines);
  void Delivered(const Batch& batch);  // releases it (the segment goes with its last batch)
  void Failed(const Batch& batch);     // back in line, first
  void Dropped(const Batch& batch);    // releases it; the backend refused it

  // Writes what is pending, seals the open batch and segment, stops the
  // writer and wakes Take() callers. Idempotent.
  void Stop();

 private:
  struct Pending {
    std::string lines;
    uint64_t count = 0;
    DoneFn done;
  };
  struct Segment {
    std::string path;
    uint64_t batches = 0;  // sealed batches (parts) not yet released
    bool writing = false;  // the writer's current segment
  };
  void WriterLoop();
  bool OpenSegment();                   // writer thread
  void Release(const Batch& batch);     // REQUIRES: mu_ held
  void MaybeDelete(uint64_t segment);   // REQUIRES: mu_ held
  void EnforceCap();                    // REQUIRES: mu_ held
  void PublishGauges();                 // REQUIRES: mu_ held

  Options options_;
  uint64_t roll_bytes_;
  Metrics* metrics_;
  int dir_fd_ = -1;
  std::thread writer_;

  std::mutex mu_;
  std::condition_variable writer_cv_;
  std::condition_variable ready_cv_;
  std::vector<Pending> pending_;          // GUARDED_BY(mu_)
  std::deque<Batch> ready_;               // GUARDED_BY(mu_): sealed, oldest first
  std::map<uint64_t, Segment> segments_;  // GUARDED_BY(mu_)
  uint64_t total_bytes_ = 0;              // GUARDED_BY(mu_): sealed + open batch
  uint64_t total_batches_ = 0;            // GUARDED_BY(mu_): sealed, not released
  uint64_t open_events_ = 0;              // GUARDED_BY(mu_): alerts in the open batch
  bool stop_ = false;                     // GUARDED_BY(mu_)
  bool stopped_ = false;                  // GUARDED_BY(mu_): writer has exited

  // Writer thread only: the segment being written and its open batch.
  int fd_ = -1;
  uint64_t segment_id_ = 0;
  std::string segment_path_;
  uint64_t segment_size_ = 0;
  std::optional<Batch> open_;
  std::chrono::steady_clock::time_point open_since_;
  uint64_t next_segment_ = 1;
  uint64_t next_batch_ = 1;
};

}  // namespace sidetrace::orchestrator
