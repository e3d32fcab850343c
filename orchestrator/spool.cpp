#include "orchestrator/spool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/util/log.h"

namespace sidetrace::orchestrator {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

bool WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<size_t>(n);
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

}  // namespace

Spool::Spool(Options options, Metrics* metrics) : options_(std::move(options)), metrics_(metrics) {}

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

  // Recovery: every segment left behind is a sealed batch. Lines are only
  // acked after fdatasync, so a last line without '\n' was never acked.
  std::vector<Batch> found;
  for (const auto& entry : fs::directory_iterator(options_.dir, ec)) {
    uint64_t id = SegmentId(entry.path().filename().string());
    if (id == 0) continue;
    Batch b{id, entry.path().string(), 0, 0};
    int fd = open(b.path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return Status::IoError(fmt::format("{}: {}", b.path, std::strerror(errno)));
    std::string data;
    char buf[1 << 16];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
    size_t keep = data.rfind('\n');
    keep = keep == std::string::npos ? 0 : keep + 1;
    if (keep != data.size()) {
      log::Warn("spool: cutting a torn last line", "file={} bytes={}", b.path, data.size() - keep);
      if (ftruncate(fd, static_cast<off_t>(keep)) != 0 || fdatasync(fd) != 0) {
        close(fd);
        return Status::IoError(fmt::format("{}: truncate: {}", b.path, std::strerror(errno)));
      }
    }
    close(fd);
    b.bytes = keep;
    b.events = static_cast<uint64_t>(std::count(data.begin(), data.begin() + static_cast<long>(keep), '\n'));
    next_id_ = std::max(next_id_, id + 1);
    if (b.events == 0) {
      fs::remove(b.path, ec);
      continue;
    }
    found.push_back(b);
  }
  if (ec) return Status::IoError(fmt::format("--spool-dir {}: {}", options_.dir, ec.message()));
  std::sort(found.begin(), found.end(), [](const Batch& a, const Batch& b) { return a.id < b.id; });
  uint64_t events = 0;
  {
    std::lock_guard lock(mu_);
    for (const Batch& b : found) {
      ready_.push_back(b);
      total_bytes_ += b.bytes;
      ++total_batches_;
      events += b.events;
    }
    PublishGauges();
  }
  if (!found.empty()) {
    log::Info("spool: recovered batches from a previous run", "batches={} alerts={} dir={}", found.size(), events,
              options_.dir);
  }
  writer_ = std::thread([this] { WriterLoop(); });
  return Status::Ok();
}

void Spool::Append(std::vector<std::string> lines, DoneFn done) {
  {
    std::lock_guard lock(mu_);
    if (!stopped_) {
      pending_.push_back(Pending{std::move(lines), std::move(done)});
      writer_cv_.notify_one();
      return;
    }
  }
  done(false);
}

bool Spool::OpenSegment() {
  Batch b;
  b.id = next_id_++;
  b.path = fmt::format("{}/seg-{:020}.jsonl", options_.dir, b.id);
  current_fd_ = open(b.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (current_fd_ < 0) {
    log::Error("spool: cannot create a segment", "file={} error={}", b.path, log::Quote(std::strerror(errno)));
    return false;
  }
  // The new name must survive a crash too, or its fsynced lines are lost:
  // the round that wrote into it fsyncs the folder before any ack.
  dir_dirty_ = true;
  current_ = b;
  current_opened_ = Clock::now();
  return true;
}

void Spool::SealCurrent() {
  if (!current_) return;
  close(current_fd_);
  current_fd_ = -1;
  if (current_->events > 0) {
    ready_.push_back(*current_);
    ++total_batches_;
    ready_cv_.notify_one();
  } else {
    unlink(current_->path.c_str());
  }
  current_.reset();
}

void Spool::EnforceCap() {
  while (total_bytes_ > options_.max_bytes && !ready_.empty()) {
    Batch victim = ready_.front();
    ready_.pop_front();
    unlink(victim.path.c_str());
    total_bytes_ -= victim.bytes;
    --total_batches_;
    metrics_->spool_dropped_alerts += victim.events;
    log::Warn("spool full: dropped the oldest batch", "alerts={} bytes={} spool_max_bytes={}", victim.events,
              victim.bytes, options_.max_bytes);
  }
}

void Spool::PublishGauges() {
  metrics_->spool_bytes = total_bytes_;
  metrics_->spool_batches = total_batches_ + (current_ && current_->events > 0 ? 1 : 0);
}

bool Spool::SyncAll(const std::vector<int>& fds) {
  bool dir = dir_dirty_;
  dir_dirty_ = false;
  size_t n = fds.size() + (dir ? 1 : 0);
  std::vector<char> ok(n, 1);
  auto sync = [&](size_t i) {
    ok[i] = i < fds.size() ? fdatasync(fds[i]) == 0 : fsync(dir_fd_) == 0;
  };
  std::vector<std::thread> helpers;
  for (size_t i = 1; i < n; ++i) helpers.emplace_back(sync, i);
  sync(0);
  for (auto& t : helpers) t.join();
  return std::all_of(ok.begin(), ok.end(), [](char c) { return c != 0; });
}

void Spool::WriterLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    auto deadline = current_ ? current_opened_ + options_.batch_max_delay : Clock::time_point::max();
    writer_cv_.wait_until(lock, deadline, [&] { return stop_ || !pending_.empty(); });
    std::vector<Pending> work;
    work.swap(pending_);
    bool stopping = stop_;
    lock.unlock();

    // Write everything, sealing segments that fill up; then make the round
    // durable with the fsyncs of every file it touched and of the folder
    // (if a segment was created), issued in parallel: the filesystem's
    // journal commits concurrent fsyncs together, one after the other it
    // commits each alone.
    std::vector<Batch> sealed;
    std::vector<int> sealed_fds;
    std::string buf;
    bool ok = true;
    uint64_t added_bytes = 0;
    auto flush = [&]() {
      if (buf.empty()) return;
      if (!WriteAll(current_fd_, buf)) {
        if (ok) log::Error("spool: write failed", "file={} error={}", current_->path, log::Quote(std::strerror(errno)));
        ok = false;
      }
      buf.clear();
    };
    for (Pending& p : work) {
      for (std::string& line : p.lines) {
        if (!ok) break;
        if (!current_ && !OpenSegment()) {
          ok = false;
          break;
        }
        buf += line;
        buf += '\n';
        current_->events++;
        current_->bytes += line.size() + 1;
        added_bytes += line.size() + 1;
        if (current_->events >= options_.batch_max_events) {
          flush();
          sealed_fds.push_back(current_fd_);
          current_fd_ = -1;
          sealed.push_back(*current_);
          current_.reset();
        }
      }
    }
    std::vector<int> to_sync = sealed_fds;
    if (current_) {
      flush();
      if (!work.empty()) to_sync.push_back(current_fd_);
    }
    if (ok && !to_sync.empty() && !SyncAll(to_sync)) {
      log::Error("spool: fdatasync failed", "dir={} error={}", options_.dir, log::Quote(std::strerror(errno)));
      ok = false;
    }
    for (int fd : sealed_fds) close(fd);
    if (!ok) metrics_->spool_write_errors++;
    // A failed round is reported to every agent in it: they keep their
    // alerts and send them again on a new connection. Lines that did reach
    // the disk are sent too; the backend dedupes by uuid.
    for (Pending& p : work) p.done(ok);

    lock.lock();
    total_bytes_ += added_bytes;
    for (Batch& b : sealed) {
      ready_.push_back(std::move(b));
      ++total_batches_;
    }
    if (!sealed.empty()) ready_cv_.notify_all();
    if (current_ && (stopping || Clock::now() >= current_opened_ + options_.batch_max_delay || !ok)) SealCurrent();
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
  ++in_flight_;
  return b;
}

void Spool::Delivered(const Batch& batch) {
  unlink(batch.path.c_str());
  std::lock_guard lock(mu_);
  --in_flight_;
  total_bytes_ -= batch.bytes;
  --total_batches_;
  PublishGauges();
}

void Spool::Dropped(const Batch& batch) { Delivered(batch); }

void Spool::Failed(const Batch& batch) {
  std::lock_guard lock(mu_);
  --in_flight_;
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
