#include "agent/fd_syscalls.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace sidetrace::agent {
namespace {

void Send(int notif_fd, uint64_t id, int64_t val, int error, uint32_t flags) {
  seccomp_notif_resp resp{};
  resp.id = id;
  resp.val = val;
  resp.error = error;
  resp.flags = flags;
  ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_SEND, &resp);  // ENOENT: the caller is gone
}

}  // namespace

DupOutcome HandleDup(int notif_fd, const seccomp_notif& req, int pidfd, Sys sys, bool emulate) {
  const auto& a = req.data.args;
  DupOutcome out;
  out.oldfd = static_cast<int>(a[0]);
  // The kernel takes these as unsigned int: compare as it does.
  const uint32_t oldfd = static_cast<uint32_t>(a[0]);
  const uint32_t newfd = static_cast<uint32_t>(a[1]);
  bool setfd = false;
  auto fail = [&](int err) {
    Send(notif_fd, req.id, 0, -err, 0);
    out.res = -err;
    out.known = true;
    return out;
  };
  auto cont = [&](int64_t implied) {
    Send(notif_fd, req.id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
    out.res = implied;
    out.known = false;
    return out;
  };
  switch (sys) {
    case Sys::kDup:
      break;
    case Sys::kDup2:
      setfd = true;
      break;
    case Sys::kDup3:
      if (a[2] & ~static_cast<uint64_t>(O_CLOEXEC)) return fail(EINVAL);
      if (oldfd == newfd) return fail(EINVAL);
      setfd = true;
      out.cloexec = a[2] & O_CLOEXEC;
      break;
    case Sys::kFcntl:
      out.cloexec = static_cast<uint32_t>(a[1]) == F_DUPFD_CLOEXEC;
      if (a[2] != 0) return cont(-1);
      break;
    default:
      return cont(-1);
  }
  const int64_t implied = setfd ? static_cast<int64_t>(newfd) : -1;
  if (!emulate || pidfd < 0) return cont(implied);
  int src = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, static_cast<int>(oldfd), 0));
  if (src < 0) {
    if (errno == EBADF) return fail(EBADF);
    return cont(implied);  // EPERM from an LSM, ESRCH...: the kernel decides
  }
  if (sys == Sys::kDup2 && oldfd == newfd) {
    // dup2(fd, fd) returns fd when it is open and changes nothing.
    close(src);
    Send(notif_fd, req.id, newfd, 0, 0);
    out.res = newfd;
    out.known = true;
    return out;
  }
  rlimit rl{};
  if (setfd && prlimit(static_cast<pid_t>(req.pid), RLIMIT_NOFILE, nullptr, &rl) == 0) {
    // With the old fd open, dup2/dup3 fail only above RLIMIT_NOFILE (EBADF),
    // or with EBUSY/ENOMEM (see the header): the kernel runs the call on a
    // CONTINUE, one synchronous round trip where ADDFD costs two wake-ups.
    close(src);
    if (newfd >= rl.rlim_cur) return fail(EBADF);
    Send(notif_fd, req.id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE);
    out.res = newfd;
    out.known = true;
    return out;
  }
  seccomp_notif_addfd addfd{};
  addfd.id = req.id;
  addfd.flags = SECCOMP_ADDFD_FLAG_SEND | (setfd ? SECCOMP_ADDFD_FLAG_SETFD : 0);
  addfd.srcfd = static_cast<uint32_t>(src);
  addfd.newfd = setfd ? newfd : 0;
  addfd.newfd_flags = out.cloexec ? O_CLOEXEC : 0;
  int rc = ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
  int err = errno;
  close(src);
  if (rc >= 0) {
    out.res = rc;
    out.known = true;
    return out;
  }
  if (err == ENOENT) {
    out.replied = false;  // the caller was killed meanwhile
    return out;
  }
  // The install failed in the tracee (EMFILE, EBADF above RLIMIT_NOFILE,
  // EBUSY): that is the syscall's result, and SEND did not answer it.
  return fail(err);
}

}  // namespace sidetrace::agent
