#include "agent/open_emulator.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace sidetrace::agent {
namespace {

// Capabilities that change the outcome of a path lookup or open.
constexpr uint64_t Cap(int n) { return uint64_t{1} << n; }
constexpr uint64_t kFsCaps = Cap(1) /*DAC_OVERRIDE*/ | Cap(2) /*DAC_READ_SEARCH*/ | Cap(3) /*FOWNER*/ |
                             Cap(4) /*FSETID*/ | Cap(9) /*LINUX_IMMUTABLE*/ | Cap(27) /*MKNOD*/ |
                             Cap(32) /*MAC_OVERRIDE*/;

constexpr uint64_t kKnownOpenFlags = O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NONBLOCK |
                                     O_DSYNC | O_ASYNC | O_DIRECT | O_LARGEFILE | O_DIRECTORY | O_NOFOLLOW |
                                     O_NOATIME | O_CLOEXEC | O_SYNC | O_PATH | O_TMPFILE;
constexpr uint64_t kKnownResolve =
    RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH | RESOLVE_IN_ROOT;

#ifndef OVERLAYFS_SUPER_MAGIC
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#endif
#ifndef XFS_SUPER_MAGIC
#define XFS_SUPER_MAGIC 0x58465342
#endif

// Filesystems whose files mean the same whoever opens them and whose open
// has no side effect beyond the flags' own.
bool DiskLike(long type) {
  switch (static_cast<unsigned long>(type)) {
    case EXT4_SUPER_MAGIC:  // also ext2/ext3
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case OVERLAYFS_SUPER_MAGIC:
    case TMPFS_MAGIC:
    case SQUASHFS_MAGIC:
      return true;
    default:
      return false;
  }
}

int OpenAt2(int dirfd, const char* path, uint64_t flags, uint64_t mode, uint64_t resolve) {
  open_how how{};
  how.flags = flags;
  how.mode = mode;
  how.resolve = resolve;
  return static_cast<int>(syscall(SYS_openat2, dirfd, path, &how, sizeof how));
}

// Errors that say something about the agent (its limits, its own lookup
// restrictions) rather than about the tracee's call.
bool AgentSideError(int err) {
  return err == ELOOP || err == EXDEV || err == EMFILE || err == ENFILE || err == ENOMEM || err == EAGAIN ||
         err == EINTR || err == ENOSYS || err == EPERM;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
  int release() {
    int f = fd;
    fd = -1;
    return f;
  }
};

}  // namespace

std::string_view BelowRoot(std::string_view path) {
  size_t skip = path.find_first_not_of('/');
  return skip == std::string_view::npos ? std::string_view() : path.substr(skip);
}

OpenEmulator::OpenEmulator() {
  if (access("/proc/self/fd", X_OK) != 0) {
    available_ = false;
    why_unavailable_ = "/proc is not mounted";
    return;
  }
  ProcStatus me;
  if (!ReadProcStatus(getpid(), &me)) {
    available_ = false;
    why_unavailable_ = "cannot read /proc/self/status";
    return;
  }
  my_fsuid_ = cur_fsuid_ = me.fsuid;
  my_fsgid_ = cur_fsgid_ = me.fsgid;
  cur_groups_ = me.groups;
  my_fs_caps_ = me.cap_eff & kFsCaps;
  // The root filesystem (usually the container's overlayfs, an anonymous
  // device) cannot go away while the agent runs, so its type is asked once.
  struct stat st{};
  struct statfs sfs{};
  if (stat("/", &st) == 0 && statfs("/", &sfs) == 0) {
    root_dev_ = st.st_dev;
    root_disk_like_ = DiskLike(sfs.f_type);
  }
}

bool OpenEmulator::AdoptCredentials(const ProcStatus& c) {
  // The raw syscalls change only the calling thread's credentials; glibc's
  // wrappers would broadcast them to every thread (setxid). The ids stay
  // adopted after the call (the next open usually comes from the same
  // process); the agent's other work does not depend on its fs ids: /proc
  // entries of other users need CAP_SYS_PTRACE, which an fsuid change keeps.
  if (c.groups != cur_groups_) {
    std::vector<gid_t> g(c.groups.begin(), c.groups.end());
    cur_groups_.clear();  // unknown until the call succeeds
    if (syscall(SYS_setgroups, g.size(), g.data()) != 0) return false;
    cur_groups_ = c.groups;
  }
  if (c.fsgid != cur_fsgid_) {
    syscall(SYS_setfsgid, c.fsgid);
    cur_fsgid_ = static_cast<uint32_t>(syscall(SYS_setfsgid, -1));
    if (cur_fsgid_ != c.fsgid) return false;
  }
  if (c.fsuid != cur_fsuid_) {
    syscall(SYS_setfsuid, c.fsuid);
    cur_fsuid_ = static_cast<uint32_t>(syscall(SYS_setfsuid, -1));
    if (cur_fsuid_ != c.fsuid) return false;
  }
  return true;
}

OpenOutcome OpenEmulator::Open(const OpenRequest& req) {
  OpenOutcome out;
  auto fallback = [&out](const char* why) {
    out.kind = OpenOutcome::kFallback;
    out.why = why;
    return out;
  };
  if (!available_) return fallback("unavailable");
  Proc* proc = req.proc;
  const uint64_t flags = req.flags;
  if ((flags & O_TMPFILE) == O_TMPFILE) return fallback("O_TMPFILE");
  // ADDFD takes its source with fget(), which refuses O_PATH files (EBADF).
  if (flags & O_PATH) return fallback("O_PATH");
  if (req.is_openat2 && ((flags & ~kKnownOpenFlags) || (req.resolve & ~kKnownResolve) ||
                         (req.mode && !(flags & O_CREAT)))) {
    return fallback("openat2 flags");
  }
  if (req.path.empty()) return fallback("empty path");
  if (!proc->same_root) return fallback("chroot");
  if (!proc->creds_valid) {
    if (!ReadProcStatus(req.tid, &proc->creds)) return fallback("status");
    proc->creds_valid = true;
  }
  const ProcStatus& c = proc->creds;
  // What the agent's thread will hold once it runs with the tracee's fsuid:
  // moving fsuid from 0 to non-zero clears the filesystem capabilities
  // (capabilities(7), "Effect of user ID changes on capabilities").
  uint64_t expected_caps = 0;
  if (c.fsuid == my_fsuid_) {
    expected_caps = my_fs_caps_;
  } else if (my_fsuid_ != 0) {
    return fallback("credentials");
  }
  if ((c.cap_eff & kFsCaps) != expected_caps) return fallback("capabilities");

  if (!AdoptCredentials(c)) return fallback("credentials");

  // The directory the path is relative to, and its name for fd.name.
  Fd base;
  std::string base_name;
  // RESOLVE_IN_ROOT makes even an absolute path relative to dirfd (or the
  // cwd), which is then the root of the lookup.
  const bool in_root = req.resolve & RESOLVE_IN_ROOT;
  const bool absolute = req.path[0] == '/' && !in_root;
  if (!absolute) {
    if (req.dirfd == AT_FDCWD) {
      base.fd = open(("/proc/" + std::to_string(req.tid) + "/cwd").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (base.fd < 0) return fallback("cwd");
    } else {
      if (proc->pidfd < 0) return fallback("pidfd");
      base.fd = static_cast<int>(syscall(SYS_pidfd_getfd, proc->pidfd, req.dirfd, 0));
      if (base.fd < 0) {
        if (errno == EBADF) {
          out.kind = OpenOutcome::kFailed;
          out.error = EBADF;
          return out;
        }
        return fallback("dirfd");
      }
    }
    if (!Readlink("/proc/self/fd/" + std::to_string(base.fd), &base_name) || base_name.empty() ||
        base_name[0] != '/') {
      return fallback("dirfd name");
    }
  }
  out.name = absolute ? NormalizePath(req.path) : JoinPath(base_name, BelowRoot(req.path));
  const int dirfd = absolute ? AT_FDCWD : base.fd;


  const uint64_t resolve = req.resolve | RESOLVE_NO_MAGICLINKS;
  Fd looked;
  looked.fd = OpenAt2(dirfd, req.path.c_str(), O_PATH | O_CLOEXEC | (flags & (O_NOFOLLOW | O_DIRECTORY)), 0, resolve);
  if (looked.fd < 0) {
    int err = errno;
    if (err == ENOENT && (flags & O_CREAT)) {
      if (!proc->creds.has_umask) return fallback("umask");
      mode_t old = umask(0);
      Fd created;
      created.fd = OpenAt2(dirfd, req.path.c_str(), flags | O_EXCL | O_CLOEXEC,
                           req.mode & 07777 & ~static_cast<uint64_t>(proc->creds.umask), resolve);
      int cerr = errno;
      umask(old);
      if (created.fd < 0) {
        if (AgentSideError(cerr) || cerr == EEXIST) return fallback("create");
        out.kind = OpenOutcome::kFailed;
        out.error = cerr;
        return out;
      }
      out.kind = OpenOutcome::kOpened;
      out.fd = created.release();
      out.typechar = 'f';
      return out;
    }
    if (AgentSideError(err)) return fallback("lookup");
    out.kind = OpenOutcome::kFailed;
    out.error = err;
    return out;
  }
  struct stat st{};
  if (fstat(looked.fd, &st) != 0) return fallback("fstat");
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return fallback("not a file");
  // Block devices keep their number while mounted; anonymous ones (major 0:
  // tmpfs, overlayfs, procfs...) are reused after an unmount, so those are
  // asked every time.
  bool disk_like = false;
  if (st.st_dev == root_dev_) disk_like = root_disk_like_;
  auto dev = st.st_dev == root_dev_ ? disk_like_dev_.end() : disk_like_dev_.find(st.st_dev);
  if (st.st_dev == root_dev_) {
  } else if (dev != disk_like_dev_.end()) {
    disk_like = dev->second;
  } else {
    struct statfs sfs{};
    if (fstatfs(looked.fd, &sfs) != 0) return fallback("fstatfs");
    disk_like = DiskLike(sfs.f_type);
    if (major(st.st_dev) != 0) disk_like_dev_.emplace(st.st_dev, disk_like);
  }
  if (!disk_like) return fallback("filesystem");
  if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL)) {
    out.kind = OpenOutcome::kFailed;
    out.error = EEXIST;
    return out;
  }
  out.typechar = S_ISDIR(st.st_mode) ? 'd' : 'f';
  // Reopening through the magic link checks permissions again, with the
  // adopted ids, on exactly the inode looked up above.
  int fd = open(("/proc/self/fd/" + std::to_string(looked.fd)).c_str(),
                static_cast<int>((flags & ~static_cast<uint64_t>(O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY)) | O_CLOEXEC));
  if (fd < 0) {
    int err = errno;
    if (AgentSideError(err) && err != EPERM) return fallback("reopen");
    out.kind = OpenOutcome::kFailed;
    out.error = err;
    return out;
  }
  out.kind = OpenOutcome::kOpened;
  out.fd = fd;
  return out;
}

}  // namespace sidetrace::agent
