#include "orchestrator/spool.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>

#include "common/util/log.h"

namespace sidetrace::orchestrator {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kMinRoundInterval = std::chrono::milliseconds(10);

// Writes every piece, in order, with as few writev calls as the kernel
// allows (IOV_MAX pieces each); the pieces point into the appends, so a
// round is not copied into one buffer first.
bool WriteAll(int fd, std::vector<iovec>& pieces) {
  size_t i = 0;
  while (i < pieces.size()) {
    ssize_t n = writev(fd, &pieces[i], static_cast<int>(std::min<size_t>(pieces.size() - i, IOV_MAX)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    for (size_t left = static_cast<size_t>(n); left > 0;) {
      size_t take = std::min(left, pieces[i].iov_len);
      pieces[i].iov_base = static_cast<char*>(pieces[i].iov_base) + take;
      pieces[i].iov_len -= take;
      left -= take;
      if (pieces[i].iov_len == 0) ++i;
    }
    while (i < pieces.size() && pieces[i].iov_len == 0) ++i;
  }
  return true;
}

// Parses "seg-00000000000000000042.jsonl" -> 42; 0 when not a segment name.
uint64_t SegmentId(const std::string& name) {
  if (name.size() != 4 + 20 + 6 || name.rfind("seg-", 0) != 0 || name.substr(24) != ".jsonl") return 0;
  uint64_t id = 0;
  for (size_t i = 4; i < 24; ++i) {
    if (name[i] < '0' || name[i] > '9') return 0;
    id = id * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  return id;
}

// Bytes of the first `n` lines of `text` (each ends with '\n').
size_t LinesPrefix(std::string_view text, uint64_t n) {
  size_t pos = 0;
  for (uint64_t i = 0; i < n; ++i) pos = text.find('\n', pos) + 1;
  return pos;
}

}  // namespace

Spool::Spool(Options options, Metrics* metrics)
    : options_(std::move(options)),
      roll_bytes_(std::clamp<uint64_t>(options_.max_bytes / 16, 1 << 10, 64 << 20)),
      metrics_(metrics) {}

Spool::~Spool() {
  Stop();
  if (dir_fd_ >= 0) close(dir_fd_);
}

Status Spool::Open() {
  std::error_code ec;
  fs::create_directories(options_.dir, ec);
  if (ec) return Status::IoError(fmt::format("--spool-dir {}: {}", options_.dir, ec.message()));
  dir_fd_ = open(options_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) return Status::IoError(fmt::format("--spool-dir {}: {}", options_.dir, std::strerror(errno)));

  // Recovery: every segment left behind is cut into batches again. Lines
  // are only acked after fdatasync, so a last line without '\n' was never
  // acked.
  std::vector<std::pair<uint64_t, std::string>> files;
  for (const auto& entry : fs::directory_iterator(options_.dir, ec)) {
    uint64_t id = SegmentId(entry.path().filename().string());
    if (id != 0) files.emplace_back(id, entry.path().string());
  }
  if (ec) return Status::IoError(fmt::format("--spool-dir {}: {}", options_.dir, ec.message()));
  std::sort(files.begin(), files.end());
  uint64_t events = 0;
  std::lock_guard lock(mu_);
  for (const auto& [id, path] : files) {
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return Status::IoError(fmt::format("{}: {}", path, std::strerror(errno)));
    std::string data;
    char buf[1 << 16];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
    size_t keep = data.rfind('\n');
    keep = keep == std::string::npos ? 0 : keep + 1;
    if (keep != data.size()) {
      log::Warn("spool: cutting a torn last line", "file={} bytes={}", path, data.size() - keep);
      if (ftruncate(fd, static_cast<off_t>(keep)) != 0 || fdatasync(fd) != 0) {
        close(fd);
        return Status::IoError(fmt::format("{}: truncate: {}", path, std::strerror(errno)));
      }
    }
    close(fd);
    next_segment_ = std::max(next_segment_, id + 1);
    if (keep == 0) {
      fs::remove(path, ec);
      continue;
    }
    Segment& seg = segments_[id];
    seg.path = path;
    std::string_view rest(data.data(), keep);
    uint64_t offset = 0;
    while (!rest.empty()) {
      Batch b{next_batch_++, id, path, offset, 0, 0, 1};
      for (; b.events < options_.batch_max_events && b.bytes < rest.size(); ++b.events) {
        b.bytes = rest.find('\n', b.bytes) + 1;
      }
      rest.remove_prefix(b.bytes);
      offset += b.bytes;
      events += b.events;
      total_bytes_ += b.bytes;
      ++total_batches_;
      ++seg.batches;
      ready_.push_back(std::move(b));
    }
  }
  PublishGauges();
  if (!ready_.empty()) {
    log::Info("spool: recovered batches from a previous run", "segments={} batches={} alerts={} dir={}",
              segments_.size(), ready_.size(), events, options_.dir);
  }
  writer_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "st-spool");  // top -H, perf, bench/orchestrator/run.sh
    WriterLoop();
  });
  return Status::Ok();
}

void Spool::Append(std::string lines, uint64_t count, DoneFn done) {
  {
    std::lock_guard lock(mu_);
    if (!stopped_) {
      // Only the first append of a round wakes the writer: with appends
      // pending it waits out kMinRoundInterval, and a wake-up per append
      // (thousands a second) would only send it back to sleep.
      bool first = pending_.empty();
      pending_.push_back(Pending{std::move(lines), count, std::move(done)});
      if (first) writer_cv_.notify_one();
      return;
    }
  }
  done(false);
}

bool Spool::OpenSegment() {
  uint64_t id = next_segment_++;
  std::string path = fmt::format("{}/seg-{:020}.jsonl", options_.dir, id);
  fd_ = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    log::Error("spool: cannot create a segment", "file={} error={}", path, log::Quote(std::strerror(errno)));
    return false;
  }
  segment_id_ = id;
  segment_path_ = std::move(path);
  segment_size_ = 0;
  std::lock_guard lock(mu_);
  segments_[id] = Segment{segment_path_, 0, true};
  return true;
}

void Spool::Release(const Batch& batch) {
  total_bytes_ -= batch.bytes;
  total_batches_ -= batch.parts;
  auto it = segments_.find(batch.segment);
  if (it == segments_.end()) return;
  it->second.batches -= batch.parts;
  MaybeDelete(batch.segment);
}

void Spool::MaybeDelete(uint64_t segment) {
  auto it = segments_.find(segment);
  if (it == segments_.end() || it->second.writing || it->second.batches > 0) return;
  unlink(it->second.path.c_str());
  segments_.erase(it);
}

void Spool::EnforceCap() {
  while (total_bytes_ > options_.max_bytes && !ready_.empty()) {
    Batch victim = ready_.front();
    ready_.pop_front();
    metrics_->spool_dropped_alerts += victim.events;
    log::Warn("spool full: dropped the oldest batch", "alerts={} bytes={} spool_max_bytes={}", victim.events,
              victim.bytes, options_.max_bytes);
    Release(victim);
  }
}

void Spool::PublishGauges() {
  metrics_->spool_bytes = total_bytes_;
  metrics_->spool_batches = total_batches_ + (open_events_ > 0 ? 1 : 0);
}

void Spool::WriterLoop() {
  std::unique_lock lock(mu_);
  // Swapped with pending_ each round and cleared after it, so the two
  // vectors keep their capacity instead of growing again every round.
  std::vector<Pending> work;
  Clock::time_point last_round_;
  for (;;) {
    auto deadline = open_ ? open_since_ + options_.batch_max_delay : Clock::time_point::max();
    writer_cv_.wait_until(lock, deadline, [&] { return stop_ || !pending_.empty(); });
    // Rounds start at most every kMinRoundInterval: at low rates the
    // appends of several reads then share one fdatasync and one wake-up
    // instead of taking one each (at 10k alerts/s: 270 rounds/s before).
    if (!pending_.empty()) {
      writer_cv_.wait_until(lock, last_round_ + kMinRoundInterval, [&] { return stop_; });
    }
    last_round_ = Clock::now();
    work.swap(pending_);
    bool stopping = stop_;
    lock.unlock();

    // The round's lines go to the current segment with one write, cut into
    // batches of batch_max_events, and become durable with one fdatasync
    // (and the folder's fsync if the segment is new) before any ack.
    bool ok = true, created = false;
    if (!work.empty() && fd_ < 0) ok = created = OpenSegment();
    const std::optional<Batch> open_before = open_;
    const uint64_t size_before = segment_size_;
    std::vector<Batch> sealed;
    std::vector<iovec> pieces;
    uint64_t round_bytes = 0;
    for (Pending& p : work) {
      if (!ok) break;
      std::string_view rest = p.lines;
      uint64_t left = p.count;
      while (left > 0) {
        if (!open_) {
          open_ = Batch{next_batch_++, segment_id_, segment_path_, segment_size_ + round_bytes, 0, 0, 1};
          open_since_ = Clock::now();
        }
        uint64_t n = std::min<uint64_t>(left, options_.batch_max_events - open_->events);
        size_t bytes = n == left ? rest.size() : LinesPrefix(rest, n);
        round_bytes += bytes;
        rest.remove_prefix(bytes);
        left -= n;
        open_->events += n;
        open_->bytes += bytes;
        if (open_->events >= options_.batch_max_events) {
          sealed.push_back(std::move(*open_));
          open_.reset();
        }
      }
      if (!p.lines.empty()) pieces.push_back(iovec{p.lines.data(), p.lines.size()});
    }
    if (ok && round_bytes > 0) {
      if (!WriteAll(fd_, pieces)) {
        log::Error("spool: write failed", "file={} error={}", segment_path_, log::Quote(std::strerror(errno)));
        ok = false;
      } else if (fdatasync(fd_) != 0 || (created && fsync(dir_fd_) != 0)) {
        log::Error("spool: fdatasync failed", "file={} error={}", segment_path_, log::Quote(std::strerror(errno)));
        ok = false;
      } else {
        metrics_->spool_syncs++;
      }
    }
    if (ok) {
      segment_size_ += round_bytes;
    } else {
      // Nothing of this round counts: cut the segment back (lines past its
      // end would only be sent again, never lost) and stop writing to it.
      metrics_->spool_write_errors++;
      if (fd_ >= 0 && ftruncate(fd_, static_cast<off_t>(size_before)) != 0) {
        log::Warn("spool: cannot cut a failed write", "file={}", segment_path_);
      }
      open_ = open_before;
      sealed.clear();
      round_bytes = 0;
    }
    // A failed round is reported to every agent in it: they keep their
    // alerts and send them again on a new connection.
    for (Pending& p : work) p.done(ok);

    work.clear();  // the appends' memory goes before the lock is taken
    lock.lock();
    total_bytes_ += round_bytes;
    auto seal = [&](Batch b) {
      ++total_batches_;
      ++segments_[b.segment].batches;
      ready_.push_back(std::move(b));
    };
    for (Batch& b : sealed) seal(std::move(b));
    bool roll = fd_ >= 0 && (stopping || !ok || segment_size_ >= roll_bytes_);
    if (open_ && (roll || Clock::now() >= open_since_ + options_.batch_max_delay)) {
      seal(std::move(*open_));
      open_.reset();
    }
    open_events_ = open_ ? open_->events : 0;
    if (roll) {
      close(fd_);
      fd_ = -1;
      segments_[segment_id_].writing = false;
      MaybeDelete(segment_id_);
    }
    if (!ready_.empty()) ready_cv_.notify_all();
    EnforceCap();
    PublishGauges();
    if (stopping && pending_.empty()) break;
  }
  stopped_ = true;
  // Appends that raced with the stop get a failure: their agents resend.
  std::vector<Pending> late;
  late.swap(pending_);
  ready_cv_.notify_all();
  lock.unlock();
  for (Pending& p : late) p.done(false);
}

std::optional<Spool::Batch> Spool::Take(std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  if (!ready_cv_.wait_for(lock, wait, [&] { return stop_ || !ready_.empty(); }) || ready_.empty()) {
    return std::nullopt;
  }
  if (stop_) return std::nullopt;
  Batch b = ready_.front();
  ready_.pop_front();
  // With a backlog, the batches that follow in the same segment go along.
  while (!ready_.empty()) {
    const Batch& next = ready_.front();
    if (next.segment != b.segment || next.offset != b.offset + b.bytes ||
        b.events + next.events > options_.take_max_events) {
      break;
    }
    b.bytes += next.bytes;
    b.events += next.events;
    b.parts += next.parts;
    ready_.pop_front();
  }
  return b;
}

Status Spool::Read(const Batch& batch, std::string* lines) {
  int fd = open(batch.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IoError(fmt::format("{}: {}", batch.path, std::strerror(errno)));
  size_t at = lines->size();
  lines->resize(at + batch.bytes);
  size_t done = 0;
  while (done < batch.bytes) {
    ssize_t n = pread(fd, lines->data() + at + done, batch.bytes - done, static_cast<off_t>(batch.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(fd);
      return Status::IoError(fmt::format("{}: short read at {}", batch.path, batch.offset + done));
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  return Status::Ok();
}

void Spool::Delivered(const Batch& batch) {
  std::lock_guard lock(mu_);
  Release(batch);
  PublishGauges();
}

void Spool::Dropped(const Batch& batch) { Delivered(batch); }

void Spool::Failed(const Batch& batch) {
  std::lock_guard lock(mu_);
  auto pos = std::find_if(ready_.begin(), ready_.end(), [&](const Batch& b) { return b.id > batch.id; });
  ready_.insert(pos, batch);
  ready_cv_.notify_one();
}

void Spool::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
    writer_cv_.notify_all();
    ready_cv_.notify_all();
  }
  if (writer_.joinable()) writer_.join();
}

}  // namespace sidetrace::orchestrator
