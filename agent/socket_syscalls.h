// bind, listen, accept and accept4 performed by the agent on a tracee's
// socket, so that their events carry exact results and addresses (fd.lip/
// fd.lport for bind and listen; the new fd, fd.cip/fd.cport and fd.sip/
// fd.sport for accept) without a ptrace exit stop.
//
// How: pidfd_getfd gives the agent the tracee's very socket (one open file
// description), so binding, listening or accepting on it acts on the
// tracee's socket, and the call's return value is the tracee's:
//   - bind (inet only): run on the duplicate. A port below 1024 is left to
//     the kernel unless the tracee holds CAP_NET_BIND_SERVICE, since the
//     check would otherwise be made against the agent's capabilities.
//   - listen: run on the duplicate.
//   - accept/accept4 on a non-blocking socket: accept4 on the duplicate
//     returns at once (a connection or EAGAIN); the connection is installed
//     in the tracee with SECCOMP_IOCTL_NOTIF_ADDFD | SEND (SOCK_CLOEXEC ->
//     O_CLOEXEC; SOCK_NONBLOCK set on the new file), and the peer address is
//     written to the tracee's addr/addrlen with process_vm_writev. A blocking
//     accept is never run by the agent (it would stall the single-threaded
//     agent): the kernel runs it and the result is unknown; the new fd is
//     learnt lazily from /proc/PID/fd when a later event names it.
// Difference from the kernel: an accepted connection the tracee cannot take
// (EMFILE) is closed, where the kernel would leave it queued.
// Not emulated: socket (it would be created in the agent's network
// namespace with the agent's capabilities), unix-domain bind (the path
// resolves against the caller's cwd and root).
// Thread-safety: none; the tracer thread calls it.
#pragma once

#include <linux/seccomp.h>
#include <sys/types.h>

#include <cstdint>

#include "agent/syscalls.h"
#include "common/event/event.h"

namespace sidetrace::agent {

struct SocketOutcome {
  int64_t res = 0;     // exact when `known`
  bool known = false;
  bool replied = true;  // false: the caller died before the reply
  // The socket the event is about: the listener (bind, listen, blocking
  // accept) or the accepted connection; described = fd holds something.
  event::FdInfo fd;
  bool described = false;
};

// Answers notification `req` (from thread `tid`, process pidfd `pidfd`,
// effective capabilities `cap_eff`) for bind/listen/accept/accept4.
SocketOutcome HandleSocketCall(int notif_fd, const seccomp_notif& req, pid_t tid, int pidfd, uint64_t cap_eff,
                               Sys sys, bool emulate);

}  // namespace sidetrace::agent
