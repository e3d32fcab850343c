// Descriptor duplication (dup, dup2, dup3, fcntl F_DUPFD/F_DUPFD_CLOEXEC)
// answered by the agent for a tracee, so that evt.rawres is the exact new
// descriptor without a ptrace exit stop.
//
// dup2 and dup3 return newfd on success, and with the old descriptor open
// (pidfd_getfd succeeds) they can only fail above the tracee's
// RLIMIT_NOFILE (EBADF, answered by the agent) or with EBUSY (another thread
// is opening that very number) or ENOMEM: the agent checks the first two and
// lets the kernel run the call (CONTINUE, one synchronous round trip), and
// reports newfd. Only the EBUSY race and ENOMEM would make that report
// wrong. Argument errors (dup3 with old == new or bad flags: EINVAL; dup2
// onto itself) are answered without running anything.
//
// dup and fcntl(F_DUPFD, 0) return the lowest free number, which only the
// kernel knows: the agent takes the old descriptor with pidfd_getfd (the
// same open file description, as dup shares it) and installs it with
// SECCOMP_IOCTL_NOTIF_ADDFD | SECCOMP_ADDFD_FLAG_SEND, which allocates the
// lowest free number in the tracee's own context (its RLIMIT_NOFILE
// applies) and completes the syscall with it; F_DUPFD_CLOEXEC becomes
// newfd_flags. ADDFD costs two cross-CPU wake-ups (no synchronous wake-up in
// the kernel). When prlimit fails, dup2/dup3 take the same path with
// SECCOMP_ADDFD_FLAG_SETFD, which installs with replace_fd(), the function
// dup2 itself uses.
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
