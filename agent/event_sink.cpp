#include "agent/event_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "common/event/event_json.h"

namespace sidetrace::agent {
namespace {
constexpr size_t kFlushAt = 64 * 1024;
constexpr size_t kMaxBuffered = 8 * 1024 * 1024;
}  // namespace

EventSink::~EventSink() {
  Flush();
  if (owns_fd_) close(fd_);
}

Status EventSink::OpenOutput(const std::string& path) {
  if (path == "-") {
    fd_ = STDERR_FILENO;
    return Status::Ok();
  }
  fd_ = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) return Status::IoError(fmt::format("--events-out {}: {}", path, strerror(errno)));
  owns_fd_ = true;
  return Status::Ok();
}

void EventSink::StampContainer(event::Event& e) {
  if (container_source_ && container_source_->version() != container_version_) {
    container_version_ = container_source_->version();
    container_ = container_source_->Get();
  }
  e.container = container_.get();
}

void EventSink::Emit(event::Event& e, bool may_alert) {
  e.num = ++num_;
  StampContainer(e);
  if (fd_ >= 0) {
    if (buf_.size() > kMaxBuffered) {
      ++dropped_;
    } else {
      event::AppendEventJson(e, &buf_);
      buf_.push_back('\n');
      if (buf_.size() >= kFlushAt) Flush();
    }
  }
  if (consumer_) consumer_(e, may_alert);
}

void EventSink::Flush() {
  size_t off = 0;
  while (off < buf_.size()) {
    ssize_t n = write(fd_, buf_.data() + off, buf_.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  buf_.erase(0, off);
}

}  // namespace sidetrace::agent
