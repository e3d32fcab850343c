#include "agent/exe_cache.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "agent/overlay.h"

namespace sidetrace::agent {

namespace {

bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

}  // namespace

const ExeCache::Entry* ExeCache::Inspect(const std::string& path, pid_t pid) {
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_NO_MAGICLINKS;
  int pfd = static_cast<int>(syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how));
  if (pfd < 0) return nullptr;
  struct stat st{};
  if (fstat(pfd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(pfd);
    errno = EACCES;
    return nullptr;
  }
  if (auto it = entries_.find(path); it != entries_.end() && SameFile(it->second.st, st)) {
    struct stat named{};
    const Entry& e = it->second;
    if (e.exepath.empty() || (stat(e.exepath.c_str(), &named) == 0 && FileId{named.st_dev, named.st_ino} == e.file)) {
      close(pfd);
      return &e;
    }
  }
  // Reopened for reading through the O_PATH descriptor: the file checked
  // above is the one read.
  int fd = open(fmt::format("/proc/self/fd/{}", pfd).c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  close(pfd);
  if (fd < 0) {
    errno = EACCES;
    return nullptr;
  }
  Entry e;
  e.file = {st.st_dev, st.st_ino};
  e.st = st;
  if (pread(fd, e.head, sizeof e.head - 1, 0) < 4) {
    close(fd);
    errno = ENOEXEC;
    return nullptr;
  }
  if (memcmp(e.head, "\x7f" "ELF", 4) == 0 && Readlink(fmt::format("/proc/self/fd/{}", fd), &e.exepath)) {
    if (e.exepath.empty() || e.exepath[0] != '/') e.exepath.clear();  // unreachable from the agent's root
    if (!e.exepath.empty()) e.upper_layer = FileOnUpperLayer(pid, fd, e.exepath);
  }
  close(fd);
  if (entries_.size() >= kMaxEntries) entries_.clear();
  return &(entries_[path] = std::move(e));
}

}  // namespace sidetrace::agent
