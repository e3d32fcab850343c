// Descriptor duplication (dup, dup2, dup3, fcntl F_DUPFD/F_DUPFD_CLOEXEC)
// performed by the agent on a tracee's behalf, so that evt.rawres is the
// exact new descriptor without a ptrace exit stop.
//
// How: the agent takes the tracee's old descriptor with pidfd_getfd (the
// same open file description, as dup shares it) and installs it with
// SECCOMP_IOCTL_NOTIF_ADDFD | SECCOMP_ADDFD_FLAG_SEND, which also completes
// the syscall with the installed number. dup and fcntl(F_DUPFD, 0) take the
// lowest free number, as the kernel does for ADDFD without SETFD; dup2/dup3
// add SECCOMP_ADDFD_FLAG_SETFD with the target, which the kernel installs
// with replace_fd(), the very function dup2 uses (same EBADF above
// RLIMIT_NOFILE, same EBUSY). dup3's O_CLOEXEC becomes newfd_flags. The
// install runs in the tracee's own context, so its RLIMIT_NOFILE applies.
// Argument errors (dup3 with old == new or bad flags, dup2 onto itself) are
// answered without installing anything.
//
// Not emulated (CONTINUE, result not observed): fcntl(F_DUPFD, min) with
// min > 0 (ADDFD cannot ask for "lowest >= min"), and everything when
// emulation is off or the kernel lacks SECCOMP_ADDFD_FLAG_SEND (5.14).
// Thread-safety: none; the tracer thread calls it.
#pragma once

#include <linux/seccomp.h>

#include <cstdint>

#include "agent/syscalls.h"

namespace sidetrace::agent {

struct DupOutcome {
  int oldfd = -1;
  // Exact return value (new fd, or -errno) when `known`; otherwise the
  // notification was CONTINUEd and `res` is what the arguments imply (dup2
  // and dup3 return newfd on success; -1 when nothing is implied).
  int64_t res = -1;
  bool known = false;
  bool cloexec = false;  // the new descriptor has FD_CLOEXEC
  bool replied = true;   // false: the tracee died before the reply
};

// Answers notification `req` for dup-family syscall `sys` of the process
// whose pidfd is `pidfd`, emulating it when `emulate` allows. Always replies
// (or finds the caller gone).
DupOutcome HandleDup(int notif_fd, const seccomp_notif& req, int pidfd, Sys sys, bool emulate);

}  // namespace sidetrace::agent
