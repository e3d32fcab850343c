// sidetrace tracer: how the agent watches a workload.
//
// Overview
// --------
// The agent forks the workload and becomes its tracer and its init. Three
// kernel mechanisms are combined, each for what it does cheapest:
//
//  1. A seccomp BPF filter, installed in the child just before exec and
//     inherited by every descendant, sorts syscalls in the kernel. Anything
//     not monitored returns SECCOMP_RET_ALLOW and runs at native speed (the
//     filter itself costs ~50-100 ns per syscall, the price of any seccomp
//     tracer). Monitored syscalls return SECCOMP_RET_USER_NOTIF: the calling
//     thread sleeps and the agent reads a notification from the listener fd.
//     The filter covers the x86-64, i386 and x32 ABIs.
//
//  2. Seccomp user notification carries every monitored syscall. With
//     SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6) the tracee hands its CPU
//     straight to the agent and back, instead of waking a thread on the other
//     vCPU: measured here, +12.7 us per openat against +165 us for plain
//     notification and +176/+253 us for a ptrace entry/entry+exit stop.
//     Without the flag (older kernels) notification runs unsynchronised.
//
//  3. The process lifecycle comes from one of two places (--lifecycle):
//     - kSeccomp (the default when alerts are all that is wanted): execve
//       and execveat are trapped like any monitored call, fork, clone and
//       exit are not, and no process is ptraced. See "Process lifecycle"
//       below: an exec costs one synchronous notification instead of three
//       ptrace stops per fork+exec (each a pair of cross-vCPU wake-ups at
//       rest, ~250 us here).
//     - kPtrace (the default with --events-out, a complete record):
//       PTRACE_SEIZE with TRACEFORK|TRACEVFORK|TRACECLONE|TRACEEXEC|EXITKILL
//       on every process: fork/clone events name the new pid before it runs,
//       exec events arrive only for successful execs with the new image in
//       place (/proc/PID/exe, cmdline), and waitpid reports every exit.
//       EXITKILL means no descendant can outlive or detach from the agent.
//     Either way the agent is the workload's ancestor (or holds
//     CAP_SYS_PTRACE), which gives it the right to read tracee memory
//     (process_vm_readv), /proc entries and descriptors (pidfd_getfd), and
//     the main child dies with it (PR_SET_PDEATHSIG).
//
// Process lifecycle without ptrace (Lifecycle::kSeccomp)
// ------------------------------------------------------
// An exec is judged at its entry like an open: the image it will install is
// known from its arguments and its file: proc.name is the path's base name
// (as the kernel sets comm), proc.exe/args come from argv, proc.exepath is
// the canonical path of the file, or of the "#!" interpreter, opened by the
// agent without /proc's magic links (PredictExe); only the environment and
// credentials are left unknown (rules::IsResultField). MayMatch false (an
// exec of /bin/true): CONTINUE, and the process is marked image_stale, so
// exe, comm and argv are re-read from /proc before anything it does next is
// judged (the exec may have failed: a failed exec never renames a process
// in the table). MayMatch true (a shell spawned by a web server): the thread
// is PTRACE_SEIZEd with TRACEEXEC only, the call CONTINUEd, and the exec
// event with its alert comes from the exec stop with the real image, where
// the thread is detached again; a failed exec makes no stop and raises
// nothing. Where ptrace is refused (the agent is itself traced), the event
// is judged at the process's next trapped call instead, if its image
// changed. A file that cannot be named cheaply (another root, /proc,
// binfmt_misc) is judged the exact way. The window between the agent's look
// at the file and the kernel's exec is the open fast path's TOCTOU window.
// New processes enter the table at their first trapped call, copying their
// parent's entry as fork does (the image marked stale, cwd re-read when
// needed, credentials, tty and session read then). Exits: every process in
// the table has a pidfd in an epoll set polled after the listener, so an
// exit that happened before a notification was sent is seen before the
// notification is read and a reused pid is never taken for its former
// owner; a thread that is not its group's leader is checked with
// tgkill(pid, tid, 0). Job-control stops of the main child come from
// wait(WUNTRACED), so stops and continues are the kernel's own. What is
// given up: fork, clone and exit events (no rule in the bundled policies
// uses them), and descendants that outlive a killed agent when it is not
// PID 1 (as PID 1 of a container, its death ends them all).

// Results: the design decision
// ----------------------------
// SECCOMP_USER_NOTIF_FLAG_CONTINUE lets the kernel run the call but hides its
// result, and Falco's rules need results (an open that failed is not an
// open; `fd.num >= 0`). Three ways to learn a result were weighed:
//   (a) emulate the call in the agent and return its result (files via
//       SECCOMP_IOCTL_NOTIF_ADDFD with SECCOMP_ADDFD_FLAG_SEND): exact, one
//       round trip, and no TOCTOU, since the tracee receives the very file the
//       agent opened; but it must reproduce the tracee's view (credentials,
//       cwd/dirfd, root, umask, /proc/self) and must not block the agent;
//   (b) CONTINUE and infer the result later from /proc: cheap, but a file
//       that was opened and closed in between is indistinguishable from a
//       failed open, so fd.num is a guess;
//   (c) RET_TRACE plus a ptrace exit stop where a result matters: exact but
//       +253 us per call here, 20 times the notification cost.
// (a) is the only exact one that is not a ptrace stop, but it is not cheap
// either: the kernel's ADDFD path has no synchronous wake-up (only
// NOTIF_SEND honours SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP). The agent wakes the
// tracee with a plain complete() and then sleeps until the tracee has
// installed the fd: two cross-CPU wake-ups, and an emulated openat+close
// measured 51 us where a CONTINUEd one took 15-24 us (bench/RESULTS.md).
// Most opens interest no rule (a web server's document root, libraries), so
// the agent pays for a result only when a rule could care about it
// (EmulateMode::kRules, the default):
//   1. At entry the event is built with everything but the result: the path
//      (one process_vm_readv, resolved against the cached cwd), flags, mode,
//      the process from the table. The rules engine is asked
//      Engine::MayMatch, a three-valued evaluation in which every check on a
//      result field (evt.res, fd.num, fd.typechar...) is "maybe".
//   2. False: no rule can match whatever the call returns. The agent replies
//      CONTINUE at once (NOTIF_SEND, synchronous wake-up, one round trip) and
//      raises no alert; the event still counts in the stats (and is written
//      with evt.arg.res=unknown under --events-out --emulate=rules). This path
//      allocates nothing, reads no /proc file and formats no JSON in steady
//      state.
//   3. True (/etc/shadow read by an untrusted program, a write below /etc):
//      the call is emulated as in (a) and the event carries the exact result.
// A path relative to a directory the agent cannot name cheaply is paid for.
// --events-out makes kAll the default (an events file is a record: every
// open in it has its exact result); --emulate=off never emulates.
// The calls, inside provable bounds:
//   - open, openat, openat2, creat: OpenEmulator (open_emulator.h lists the
//     conditions) opens the file with the tracee's fsuid/fsgid/groups on the
//     agent's thread and sends it with ADDFD|SEND, so evt.res and fd.num are
//     the tracee's real fd number. Outside the bounds (procfs, devices,
//     FIFOs, chroot, capability mismatch, O_TMPFILE...) it CONTINUEs and
//     reports fd.num = -1 with evt.arg.res=unknown.
//   - connect on a non-blocking inet socket: the agent duplicates the socket
//     (pidfd_getfd) and connects it itself; both hold the same socket, so
//     the tracee's socket is connected, and the result (0, EINPROGRESS,
//     ECONNREFUSED...) is exact. The reply is a NOTIF_SEND (synchronous), so
//     this costs no extra wake-up and is done whatever the rules. Blocking
//     and unix sockets CONTINUE (a blocking connect would stall the
//     single-threaded agent; a unix path resolves against the caller's root
//     and cwd).
//   - bind, listen, and accept/accept4 on a non-blocking socket: performed
//     on a pidfd_getfd duplicate of the tracee's socket (socket_syscalls.h);
//     an accepted connection is installed with ADDFD|SEND. Blocking accepts
//     CONTINUE (they would stall the agent).
//   - dup, dup2, dup3, fcntl(F_DUPFD*): trapped only when a rule looks at
//     them; emulated with pidfd_getfd + ADDFD (fd_syscalls.h), so
//     evt.rawres is the exact new fd.
//   - everything else (chdir, unlink, setuid, socket...) CONTINUEs and
//     is reported at entry, with the arguments read before the call runs.
// The price of the fast path: after a CONTINUE the kernel reads the path
// again, so a workload thread that rewrites the buffer between the agent's
// read and the kernel's opens something the rules never judged (the TOCTOU
// seccomp_unotify(2) warns about; Falco's kernel probes, which read
// arguments at syscall exit, have the same window); so can a chdir racing in
// another thread against a relative path named from the cached cwd. An
// emulated open has no such window.
// The filter is loaded with SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (5.19),
// so once the agent has read a notification only a fatal signal interrupts
// the tracee's wait: an emulated O_CREAT|O_EXCL is never run twice by a
// signal-restarted call. Memory read from the tracee is validated with
// SECCOMP_IOCTL_NOTIF_ID_VALID before the agent acts on it, as
// seccomp_unotify(2) requires (the pid may have been reused); on the fast
// open path the CONTINUE reply itself is the check (it reaches the caller
// only while the caller waits, so its pid was not reused), and the event is
// emitted only when the reply succeeded. The raw ioctls are used rather than
// libseccomp 2.5.4's notify helpers, which do not zero the request and
// report every failure as -ECANCELED.
//
// Close and the other fcntl commands are not trapped: each one would cost a
// round trip on very hot paths. The fd table is filled from /proc at start
// and by the events above, and fd names are re-read from /proc/PID/fd when a
// socket or file needs describing.
//
// PID-1 duties (like tini)
// ------------------------
// All signals but synchronous faults are blocked and read from a signalfd;
// each one except SIGCHLD is forwarded to the workload. Every SIGCHLD wake-up
// drains waitpid(-1, __WALL|WNOHANG), which both reaps orphans (the agent is
// PID 1 or a child subreaper) and reports ptrace stops. When the main child
// exits, the agent exits with its status (128+N when killed by signal N).
// Without ptrace (kSeccomp) signals and job control are the kernel's own.
// Under ptrace, signal-delivery stops re-inject the signal; group stops
// (SEIZE reports them as PTRACE_EVENT_STOP) are resumed with PTRACE_LISTEN,
// so SIGSTOP/SIGTSTP stop the tracee until SIGCONT as without a tracer. When
// stdin is a terminal the workload gets its own process group and the
// foreground; if the workload is stopped by a job-control signal and the
// agent runs under an interactive shell, the agent stops itself too, so that
// the shell sees the job stop, and hands the terminal back on SIGCONT.
//
// Threading and order
// -------------------
// One thread does everything: poll(2) on the signalfd, the listener fd and
// the exit set (poll, not epoll: the synchronous wake-up is passed through
// poll's wait queue entries and lost by epoll's), ptrace requests (which
// must come from the tracer thread), emulation and event emission. A notification may come
// from a thread whose clone event has not been read yet (or, without ptrace,
// has none); the process table then builds the entry from the parent's and
// /proc. The agent never waits for a tracee.
#include "agent/tracer.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <linux/audit.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <unordered_set>

#include <fmt/format.h>

#include "agent/exe_cache.h"
#include "agent/fd_syscalls.h"
#include "agent/open_emulator.h"
#include "agent/process_table.h"
#include "agent/procfs.h"
#include "agent/socket_syscalls.h"
#include "common/util/log.h"

// Not in Debian 12's kernel headers (Linux 6.6 UAPI).
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif
#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif

namespace sidetrace::agent {

using event::EventType;

constexpr long kLifecycleOptions =
    PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL;

int ExitCodeFromStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

namespace {

constexpr size_t kMaxPath = 4096;

bool HasCapSysAdmin() {
  ProcStatus st;
  return ReadProcStatus(getpid(), &st) && (st.cap_eff & (uint64_t{1} << 21));
}

// Falco's rendering of open flags ("O_RDONLY|O_CLOEXEC"), into *out (its
// capacity is reused: the open path allocates nothing in steady state).
void FormatOpenFlags(uint64_t flags, std::string* out) {
  switch (flags & O_ACCMODE) {
    case O_RDONLY: out->assign("O_RDONLY"); break;
    case O_WRONLY: out->assign("O_WRONLY"); break;
    default: out->assign("O_RDWR"); break;
  }
  static constexpr std::pair<uint64_t, const char*> kFlags[] = {
      {O_CREAT, "O_CREAT"},     {O_EXCL, "O_EXCL"},       {O_TRUNC, "O_TRUNC"},       {O_APPEND, "O_APPEND"},
      {O_NONBLOCK, "O_NONBLOCK"}, {O_DIRECTORY, "O_DIRECTORY"}, {O_NOFOLLOW, "O_NOFOLLOW"}, {O_CLOEXEC, "O_CLOEXEC"},
      {O_PATH, "O_PATH"},       {O_TMPFILE & ~O_DIRECTORY, "O_TMPFILE"}};
  for (auto [bit, name] : kFlags) {
    if (flags & bit) {
      out->push_back('|');
      out->append(name);
    }
  }
}

// True when `path` is absolute and lexically normal already (NormalizePath
// would return it unchanged), so that it can be used without a copy.
bool IsNormalAbsolute(std::string_view path) {
  if (path.empty() || path[0] != '/') return false;
  if (path.size() == 1) return true;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i + 1);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i + 1, j - i - 1);
    if (part.empty() || part == "." || part == "..") return false;
    i = j;
  }
  return true;
}

// fd.name of `path` relative to the directory `base` (absolute, or empty for
// an absolute path), into *out without allocating in the usual case.
void ResolveName(std::string_view base, std::string_view path, std::string* out) {
  if (path.empty() || path[0] == '/' || base.empty()) {
    out->assign(path);
  } else {
    out->assign(base);
    if (out->back() != '/') out->push_back('/');
    out->append(path);
  }
  if (!IsNormalAbsolute(*out)) *out = NormalizePath(*out);
}

void FillAddress(const sockaddr_storage& ss, socklen_t len, event::SocketAddress* a) {
  *a = event::SocketAddress();
  if (ss.ss_family == AF_INET && len >= sizeof(sockaddr_in)) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    a->family = AF_INET;
    memcpy(a->ip.data(), &in->sin_addr, 4);
    a->port = ntohs(in->sin_port);
  } else if (ss.ss_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    a->family = AF_INET6;
    memcpy(a->ip.data(), &in6->sin6_addr, 16);
    a->port = ntohs(in6->sin6_port);
  } else if (ss.ss_family == AF_UNIX) {
    a->family = AF_UNIX;
    size_t off = offsetof(sockaddr_un, sun_path);
    if (len > off) {
      const char* p = reinterpret_cast<const sockaddr_un*>(&ss)->sun_path;
      a->unix_path.assign(p, strnlen(p, len - off));
    }
  }
}

std::string Endpoint(const event::SocketAddress& a) {
  if (a.family == AF_INET6) return fmt::format("[{}]:{}", a.IpString(), a.port);
  return fmt::format("{}:{}", a.IpString(), a.port);
}

}  // namespace

struct Tracer::Impl {
  TracerOptions opt;
  SysTable sys_table;
  ProcessTable procs;
  OpenEmulator emulator;
  EventSink* sink = nullptr;
  event::Event ev;
  Proc* ev_owner_ = nullptr;  // the process ev is about (NewEvent)
  std::string path_;     // the path argument of the open being handled
  std::string scratch_;  // text formatted for ev, reused
  // What the open path did, logged at exit (--log-level info).
  struct {
    uint64_t notifications = 0;
    uint64_t opens = 0;
    uint64_t opens_fast = 0;      // no rule could match: CONTINUE, result not learnt
    uint64_t opens_emulated = 0;  // performed by the agent: exact result
    uint64_t opens_fallback = 0;  // wanted but not emulable (or emulation off): CONTINUE
    uint64_t execs = 0;           // execve/execveat trapped (Lifecycle::kSeccomp)
    uint64_t execs_fast = 0;      // no rule could match: CONTINUE
    uint64_t execs_exact = 0;     // a rule may match: the result from a ptrace exec stop
    uint64_t execs_deferred = 0;  // ...but ptrace was refused: judged at the process's next call
    uint64_t sends_unaddressed = 0;  // sendmsg to a connected socket's peer: CONTINUE
  } stats_;

  // Lifecycle::kSeccomp: pidfds of the processes in the table, readable when
  // one exits; threads seized (PTRACE_O_TRACEEXEC) for an exec's result.
  int exits_fd = -1;
  std::unordered_set<pid_t> seized_;
  std::unordered_set<pid_t> detaching_;  // seized for an exec that failed: PTRACE_INTERRUPT sent
  bool nnp = false;                 // the workload runs with no_new_privs (set-user-ID images gain nothing)
  bool warned_no_pidfd_ = false;
  event::ProcessInfo exec_image_;   // the image an exec will install, judged at its entry
  ExeCache exe_cache_;              // the files execs named, while unchanged
  std::vector<std::string> exec_argv_;

  sigset_t old_mask{};
  int sigfd = -1;
  int notif_fd = -1;
  bool addfd_send = false;
  pid_t child = -1;
  bool tty_mode = false;       // child has its own process group and the terminal
  bool interactive = false;    // under a job-control shell: mirror stops
  bool child_stopped = false;  // the main child is in a job-control stop
  bool traced = false;
  int exit_code = -1;

  explicit Impl(TracerOptions o) : opt(std::move(o)) { sink = opt.sink; }

  // --- start-up -------------------------------------------------------------

  bool SetupSignals() {
    sigset_t all;
    sigfillset(&all);
    for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS}) sigdelset(&all, s);
    if (sigprocmask(SIG_SETMASK, &all, &old_mask) != 0) return false;
    sigfd = signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK);
    return sigfd >= 0;
  }

  // Runs in the forked child: process group, handshake, filter, exec.
  [[noreturn]] void ChildMain(int sock, const FilterProgram* prog, bool need_nnp) {
    if (tty_mode) {
      setpgid(0, 0);
      tcsetpgrp(STDIN_FILENO, getpgrp());  // SIGTTOU is blocked here
    }
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);  // the agent died already
    char cmd = 0;
    if (write(sock, "R", 1) != 1 || read(sock, &cmd, 1) != 1) _exit(1);
    int notif = -1;
    if (cmd == 'F') {
      int32_t reply[2] = {-EINVAL, 0};
      if (need_nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        reply[0] = -errno;
      } else {
        sock_fprog fprog{static_cast<unsigned short>(prog->bytes.size() / sizeof(sock_filter)),
                         reinterpret_cast<sock_filter*>(const_cast<uint8_t*>(prog->bytes.data()))};
        unsigned long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        notif = static_cast<int>(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog));
        if (notif < 0 && errno == EINVAL) {
          flags &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
          notif = static_cast<int>(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog));
        } else {
          reply[1] = 1;
        }
        reply[0] = notif >= 0 ? notif : -errno;
      }
      if (write(sock, reply, sizeof reply) != sizeof reply || read(sock, &cmd, 1) != 1) _exit(1);
    }
    if (notif >= 0) close(notif);
    close(sock);
    sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    std::vector<char*> argv;
    for (auto& a : opt.argv) argv.push_back(a.data());
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    int err = errno;
    std::string msg = fmt::format("sidetrace-agent: {}: {}\n", opt.argv[0], err == ENOENT ? "not found" : strerror(err));
    (void)!write(STDERR_FILENO, msg.data(), msg.size());
    _exit(err == ENOENT ? 127 : 126);
  }

  // Returns false when the agent must exit (fail-closed).
  bool Start() {
    if (!SetupSignals()) {
      log::Error("cannot set up signal handling", "error={}", log::Quote(strerror(errno)));
      return false;
    }
    if (getpid() != 1 && prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
      log::Warn("cannot become a child subreaper; orphaned zombies will not be reaped",
                "error={}", log::Quote(strerror(errno)));
    }
    if (isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) == getpgrp()) {
      tty_mode = true;
      interactive = getpid() != 1 && getsid(0) != getpid();
    }
    Result<FilterProgram> prog = Status::Unsupported("not built");
    bool want_filter = opt.mode == TraceMode::kAuto && !opt.trapped.empty();
    // Under Lifecycle::kSeccomp exec is a trapped call like open; otherwise
    // ptrace reports it.
    for (Sys s : {Sys::kExecve, Sys::kExecveat}) {
      if (opt.lifecycle == Lifecycle::kSeccomp) opt.trapped.Add(s);
      else opt.trapped.Remove(s);
    }
    if (want_filter) {
      prog = BuildFilter(opt.trapped, opt.unaddressed_sends);
      if (!prog.ok()) {
        log::Error("cannot build the seccomp filter", "error={}", log::Quote(prog.status().message()));
        want_filter = false;
        if (opt.fail_closed) return false;
      }
    }
    // Without CAP_SYS_ADMIN the kernel only accepts a filter from a process
    // with no_new_privs, which then also stops setuid binaries from gaining
    // privileges (see docs/agent.md).
    bool need_nnp = !HasCapSysAdmin();

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      log::Error("socketpair failed", "error={}", log::Quote(strerror(errno)));
      return false;
    }
    child = fork();
    if (child < 0) {
      log::Error("fork failed", "error={}", log::Quote(strerror(errno)));
      return false;
    }
    if (child == 0) {
      close(sv[0]);
      ChildMain(sv[1], want_filter ? &prog.value() : nullptr, need_nnp);
    }
    close(sv[1]);
    SetTracerNice();
    // The agent holds a pidfd per traced process: let it use its hard
    // descriptor limit (the workload, forked already, keeps its own).
    rlimit nofile{};
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
      nofile.rlim_cur = nofile.rlim_max;
      setrlimit(RLIMIT_NOFILE, &nofile);
    }
    const int sock_in_child = sv[1];  // the child's end keeps its number there
    int sock = sv[0];
    struct CloseSock {
      int fd;
      ~CloseSock() { close(fd); }
    } close_sock{sock};
    char ready = 0;
    if (read(sock, &ready, 1) != 1) return true;  // child died; its status is reaped below

    if (opt.mode == TraceMode::kOff) {
      log::Info("tracing is off; running the workload untraced", "pid={}", child);
      return write(sock, "X", 1) == 1 || true;
    }
    const bool seccomp_lifecycle = want_filter && opt.lifecycle == Lifecycle::kSeccomp;
    if (!seccomp_lifecycle) opt.lifecycle = Lifecycle::kPtrace;
    nnp = want_filter && need_nnp;
    const char* no_ptrace = "cannot trace the workload (no ptrace permission; add SYS_PTRACE)";
    if (seccomp_lifecycle) {
      // Taking the listener needs the same permission as ptrace: check it on
      // a descriptor of the child before it installs a filter that would
      // fail every trapped call once nobody listens.
      int pidfd = static_cast<int>(syscall(SYS_pidfd_open, child, 0));
      int probe = pidfd >= 0 ? static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, sock_in_child, 0)) : -1;
      int err = errno;
      if (pidfd >= 0) close(pidfd);
      if (probe < 0) return Untraceable(no_ptrace, err, sock);
      close(probe);
    } else if (ptrace(PTRACE_SEIZE, child, 0, kLifecycleOptions) != 0) {
      return Untraceable(no_ptrace, errno, sock);
    }
    traced = true;
    const char* mode = "ptrace-only";
    bool waitkill = false;
    if (want_filter) {
      int32_t reply[2] = {0, 0};
      if (write(sock, "F", 1) != 1 || read(sock, reply, sizeof reply) != sizeof reply) return true;
      if (reply[0] < 0) {
        if (seccomp_lifecycle) return Untraceable("cannot install the seccomp filter", -reply[0], sock);
        log::Error(opt.fail_closed ? "cannot install the seccomp filter"
                                   : "cannot install the seccomp filter; tracing process lifecycle only",
                   "error={}", log::Quote(strerror(-reply[0])));
        if (opt.fail_closed) {
          kill(child, SIGKILL);
          return false;
        }
      } else {
        waitkill = reply[1] != 0;
        int pidfd = static_cast<int>(syscall(SYS_pidfd_open, child, 0));
        notif_fd = pidfd >= 0 ? static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, reply[0], 0)) : -1;
        if (pidfd >= 0) close(pidfd);
        if (notif_fd < 0) {
          log::Error("cannot take the seccomp listener from the child (pidfd_getfd needs Linux 5.6)",
                     "error={}", log::Quote(strerror(errno)));
          if (opt.fail_closed || seccomp_lifecycle) {
            kill(child, SIGKILL);
            return false;
          }
        } else {
          fcntl(notif_fd, F_SETFD, FD_CLOEXEC);
          mode = seccomp_lifecycle ? "notify" : "notify+ptrace";
          if (ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) == 0) {
            mode = seccomp_lifecycle ? "notify-sync" : "notify-sync+ptrace";
          }
          // ADDFD with SEND on a bogus id: ENOENT means the flag is known.
          seccomp_notif_addfd probe{};
          probe.flags = SECCOMP_ADDFD_FLAG_SEND;
          probe.srcfd = static_cast<uint32_t>(STDERR_FILENO);
          addfd_send = ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_ADDFD, &probe) < 0 && errno == ENOENT;
        }
      }
    }
    if (opt.lifecycle == Lifecycle::kSeccomp) {
      exits_fd = epoll_create1(EPOLL_CLOEXEC);
      if (exits_fd < 0) {
        log::Error("epoll_create1 failed", "error={}", log::Quote(strerror(errno)));
        kill(child, SIGKILL);
        return false;
      }
    }
    std::string emulation = opt.emulate == EmulateMode::kAll ? "all" : "rules";
    if (opt.emulate == EmulateMode::kOff) emulation = "off";
    else if (!addfd_send) emulation = "off (kernel lacks SECCOMP_ADDFD_FLAG_SEND)";
    else if (!emulator.available()) emulation = "off (" + emulator.why_unavailable() + ")";
    if (emulation.rfind("off", 0) == 0) opt.emulate = EmulateMode::kOff;
    std::string trapped;
    for (size_t i = 0; i < kSysCount && notif_fd >= 0; ++i) {
      if (!opt.trapped.Has(static_cast<Sys>(i))) continue;
      if (!trapped.empty()) trapped.push_back(',');
      trapped.append(SysName(static_cast<Sys>(i)));
    }
    log::Info("tracing the workload", "mode={} emulation={} wait_killable={} no_new_privs={} pid={} trapped={}", mode,
              log::Quote(emulation), waitkill, nnp, child, trapped.empty() ? "none" : trapped);
    if (write(sock, "X", 1) != 1) return true;
    Proc* p = procs.AddProcess(child, nullptr);
    ProcessTable::Refresh(child, p);
    p->pidfd = static_cast<int>(syscall(SYS_pidfd_open, child, 0));
    ProcessTable::LoadFds(child, p);
    if (exits_fd >= 0) WatchExit(p);
    return true;
  }

  // --nice, for the tracer thread only (the workload, forked already, and
  // threads started earlier keep theirs). Why: the workload's thread wakes
  // the tracer on its own CPU and the tracer's reply wakes it back there;
  // at equal weight the tracer, which has run while the workload waited,
  // is preempted by that wake-up and is still runnable when the workload
  // continues. An exec then finds its CPU busy and is moved to the other
  // one by the migration thread (sched_exec): 194 of 200 fork+execs here.
  // With a larger weight the tracer finishes and sleeps first (23 of 200
  // at nice -10). Measured in bench/RESULTS.md ("Session 5").
  void SetTracerNice() {
    if (!opt.nice) return;
    const pid_t self = static_cast<pid_t>(syscall(SYS_gettid));
    if (setpriority(PRIO_PROCESS, static_cast<id_t>(self), *opt.nice) == 0) {
      log::Info("tracer scheduling", "nice={}", *opt.nice);
      return;
    }
    log::Info("cannot change the tracer's nice value; it keeps its own (allow it with CAP_SYS_NICE or ulimit nice)",
              "nice={} error={}", *opt.nice, log::Quote(strerror(errno)));
  }

  // Tracing is impossible: one error line, then the workload runs untraced
  // (true), or with --fail-closed it is killed and the agent fails (false).
  bool Untraceable(const char* what, int err, int sock) {
    log::Error(opt.fail_closed ? std::string(what) : std::string(what) + "; running it untraced", "error={}",
               log::Quote(strerror(err)));
    if (opt.fail_closed) {
      kill(child, SIGKILL);
      return false;
    }
    return write(sock, "X", 1) == 1 || true;
  }

  // --- events ---------------------------------------------------------------

  // `creds`: read the credentials if stale (an exec judged at entry does
  // without: its user fields are known only from its result).
  event::Event& NewEvent(EventType type, pid_t tid, Proc* p, bool creds = true) {
    ev.Clear();
    ev.type = type;
    ev.time_ns = NowNs();
    ev.tid = tid;
    ev_owner_ = p;
    if (p) {
      // A working directory (a /proc path walk on a new process) is read
      // for a record and for events that a rule looks at with proc.cwd,
      // except an exec at its entry: there MayMatch treats it as unknown,
      // and an exec a rule may match is judged at its ptrace stop, where
      // the whole process is read again.
      if (!p->cwd_valid && (sink->records() || !opt.reads_cwd ||
                            (type != EventType::kExecve && type != EventType::kExecveat && opt.reads_cwd(type)))) {
        LoadCwd(tid, p);
      }
      ev.proc_cwd_unknown = !p->cwd_valid;
      if (creds && !p->ids_valid) LoadIds(tid, p);
      ev.proc = p->info.get();
    }
    return ev;
  }

  // The event, complete, to the rules and the record. (An exec judged at
  // the process's next call, where ptrace was refused, completes its cwd
  // here, while the process waits for the reply.)
  void Emit() {
    if (ev.proc_cwd_unknown && ev_owner_ && opt.reads_cwd && opt.reads_cwd(ev.type)) {
      ev.proc_cwd_unknown = !LoadCwd(ev.tid, ev_owner_);
    }
    sink->Emit(ev);
  }

  // proc.cwd of `tid`'s process, from /proc (a path walk: ~20 us on a fresh
  // process here), kept until a chdir, fchdir, chroot or exec. True when
  // known.
  static bool LoadCwd(pid_t tid, Proc* p) {
    if (p->cwd_valid) return true;
    std::string cwd;
    if (!Readlink("/proc/" + std::to_string(tid) + "/cwd", &cwd)) return false;
    if (cwd.empty() || cwd.back() != '/') cwd += '/';
    p->info->cwd = std::move(cwd);
    p->cwd_valid = true;
    return true;
  }

  // user.uid, user.gid and thread.cap_effective of `tid`'s process: for a
  // leader, from its pidfd (PIDFD_GET_INFO) and capget, a hundred times
  // cheaper than /proc/PID/status, which is the fallback (and also fills
  // the credentials the open emulator needs).
  static void LoadIds(pid_t tid, Proc* p) {
    PidfdInfo kinfo;
    uint64_t cap_eff = 0;
    if (tid == p->info->pid && p->pidfd >= 0 && ReadPidfdInfo(p->pidfd, &kinfo) && ReadCapEffective(tid, &cap_eff)) {
      p->info->uid = kinfo.euid;
      p->info->gid = kinfo.egid;
      p->info->cap_effective = cap_eff;
      p->ids_valid = true;
      return;
    }
    if (!p->creds_valid && ReadProcStatus(tid, &p->creds)) p->creds_valid = true;
    if (!p->creds_valid) return;
    p->info->uid = p->creds.euid;
    p->info->gid = p->creds.egid;
    p->info->cap_effective = p->creds.cap_eff;
    p->ids_valid = true;
  }

  // --- ptrace ---------------------------------------------------------------

  void DrainWait() {
    const bool seccomp_lifecycle = opt.lifecycle == Lifecycle::kSeccomp;
    // Untraced (kSeccomp), the main child's job-control stops and continues
    // come from wait(2) itself.
    const int flags = __WALL | WNOHANG | (seccomp_lifecycle ? WUNTRACED | WCONTINUED : 0);
    while (true) {
      int status = 0;
      pid_t tid = waitpid(-1, &status, flags);
      if (tid <= 0) return;
      if (WIFEXITED(status) || WIFSIGNALED(status)) {
        OnExit(tid, status);
      } else if (WIFSTOPPED(status)) {
        // An event stop (exec from a non-leader thread reports the leader's
        // id) or any stop of a seized thread is ptrace's.
        if (!seccomp_lifecycle || (status >> 16) != 0 || seized_.count(tid)) OnStop(tid, status);
        else if (tid == child) OnChildJobStop(WSTOPSIG(status));
      } else if (WIFCONTINUED(status) && tid == child) {
        child_stopped = false;
      }
    }
  }

  void OnExit(pid_t tid, int status) {
    seized_.erase(tid);
    detaching_.erase(tid);
    std::shared_ptr<Proc> gone = procs.RemoveThread(tid);
    if (gone && sink->wanted()) {
      NewEvent(EventType::kProcExit, tid, nullptr);
      ev.proc = gone->info.get();
      ev.res = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      Emit();
    }
    if (tid == child) exit_code = ExitCodeFromStatus(status);
  }

  void OnStop(pid_t tid, int status) {
    int sig = WSTOPSIG(status);
    int event = status >> 16;
    unsigned long msg = 0;
    switch (event) {
      case PTRACE_EVENT_FORK:
      case PTRACE_EVENT_VFORK:
      case PTRACE_EVENT_CLONE:
        ptrace(PTRACE_GETEVENTMSG, tid, 0, &msg);
        OnClone(tid, static_cast<pid_t>(msg), event);
        ptrace(PTRACE_CONT, tid, 0, 0);
        return;
      case PTRACE_EVENT_EXEC:
        OnExec(tid);
        if (opt.lifecycle == Lifecycle::kSeccomp) {
          // Seized for this exec's result only (OnExecEntry).
          ptrace(PTRACE_GETEVENTMSG, tid, 0, &msg);
          for (pid_t t : {static_cast<pid_t>(msg), tid}) {
            seized_.erase(t);
            detaching_.erase(t);
          }
          ptrace(PTRACE_DETACH, tid, 0, 0);
        } else {
          ptrace(PTRACE_CONT, tid, 0, 0);
        }
        return;
      case PTRACE_EVENT_STOP:
        if (detaching_.erase(tid) && sig == SIGTRAP) {
          seized_.erase(tid);
          ptrace(PTRACE_DETACH, tid, 0, 0);
          return;
        }
        if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
          // Group stop: stay stopped until SIGCONT, but keep reporting.
          ptrace(PTRACE_LISTEN, tid, 0, 0);
          if (tid == child) OnChildJobStop(sig);
        } else {
          ptrace(PTRACE_CONT, tid, 0, 0);
        }
        return;
      case 0:
        // Signal-delivery stop: deliver the signal as if untraced.
        ptrace(PTRACE_CONT, tid, 0, sig);
        return;
      default:
        ptrace(PTRACE_CONT, tid, 0, 0);
        return;
    }
  }

  void OnClone(pid_t parent_tid, pid_t new_tid, int event) {
    Proc* parent = procs.ByTid(parent_tid);
    if (!parent) return;
    bool thread = false;
    if (event == PTRACE_EVENT_CLONE) {
      ProcStatus st;
      thread = ReadProcStatus(new_tid, &st) && st.tgid == parent->info->pid;
    }
    if (thread) {
      procs.AddThread(new_tid, parent);
    } else {
      procs.AddProcess(new_tid, parent);
    }
    if (!sink->wanted()) return;
    EventType type = event == PTRACE_EVENT_FORK ? EventType::kFork
                     : event == PTRACE_EVENT_VFORK ? EventType::kVfork
                                                   : EventType::kClone;
    if (type == EventType::kClone) {
      user_regs_struct regs{};
      if (ptrace(PTRACE_GETREGS, parent_tid, 0, &regs) == 0 && regs.orig_rax == SYS_clone3) type = EventType::kClone3;
    }
    NewEvent(type, parent_tid, parent);
    ev.res = new_tid;
    if (thread) ev.SetArg("flags", "CLONE_THREAD");
    Emit();
  }

  void OnExec(pid_t pid) {
    Proc* p = procs.Exec(pid);
    if (!p) return;
    p->image_stale = false;
    p->exec_deferred = false;
    p->expected_image.reset();
    if (p->pidfd < 0) p->pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (!sink->wanted()) return;
    EventType type = EventType::kExecve;
    user_regs_struct regs{};
    if (ptrace(PTRACE_GETREGS, pid, 0, &regs) == 0 && regs.orig_rax == SYS_execveat) type = EventType::kExecveat;
    NewEvent(type, pid, p);
    ev.res = 0;
    ev.SetArg("filename", p->info->exepath);
    Emit();
  }

  void OnChildJobStop(int sig) {
    child_stopped = true;
    if (!interactive) return;
    // Under a job-control shell: give the terminal back and stop too, so the
    // shell sees the job stop; SIGCONT (read from the signalfd) resumes both.
    tcsetpgrp(STDIN_FILENO, getpgrp());
    log::Debug("workload stopped; stopping the agent too", "signal={}", sig);
    kill(getpid(), SIGSTOP);
  }

  // --- signals --------------------------------------------------------------

  void DrainSignals() {
    signalfd_siginfo si{};
    while (read(sigfd, &si, sizeof si) == sizeof si) {
      int sig = static_cast<int>(si.ssi_signo);
      if (sig == SIGCHLD) continue;
      if (sig == SIGCONT && tty_mode && child_stopped) {
        tcsetpgrp(STDIN_FILENO, child);
        kill(-child, SIGCONT);
        child_stopped = false;
        continue;
      }
      if (sig == SIGCONT) child_stopped = false;
      if (child > 0 && exit_code < 0) kill(child, sig);
    }
  }

  // --- seccomp notifications ------------------------------------------------

  // False when the reply did not reach the caller (ENOENT: it was killed,
  // and its notification with it).
  bool Reply(uint64_t id, int64_t val, int error, uint32_t flags) {
    seccomp_notif_resp resp{};
    resp.id = id;
    resp.val = val;
    resp.error = error;
    resp.flags = flags;
    if (ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_SEND, &resp) == 0) return true;
    if (errno != ENOENT) log::Debug("notification reply failed", "error={}", log::Quote(strerror(errno)));
    return false;
  }
  bool Continue(uint64_t id) { return Reply(id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE); }
  bool StillValid(uint64_t id) { return ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0; }

  void HandleNotification() {
    seccomp_notif req;
    memset(&req, 0, sizeof req);  // the kernel rejects a non-zeroed request
    if (ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) return;  // ENOENT: the caller died
    ++stats_.notifications;
    std::optional<Sys> sys = sys_table.Lookup(req.data.arch, req.data.nr);
    Proc* p = sys ? Caller(static_cast<pid_t>(req.pid)) : nullptr;
    if (!sys || !p) {
      Continue(req.id);
      return;
    }
    const pid_t tid = static_cast<pid_t>(req.pid);
    const auto& a = req.data.args;
    // (An exec replaces the image anyway: its old one is never judged.)
    if (p->image_stale && *sys != Sys::kExecve && *sys != Sys::kExecveat) RefreshImage(tid, p);
    if (exits_fd >= 0) {
      RefreshStaleAncestors(p);
      // Seized for an exec that failed (it would have stopped): let go at
      // the next stop rather than keep stopping at its signals.
      if (!seized_.empty() && *sys != Sys::kExecve && *sys != Sys::kExecveat && seized_.count(tid) &&
          detaching_.insert(tid).second) {
        ptrace(PTRACE_INTERRUPT, tid, 0, 0);
      }
    }
    switch (*sys) {
      case Sys::kOpen: return OnOpen(req, p, EventType::kOpen, AT_FDCWD, a[0], a[1], a[2], 0, false);
      case Sys::kCreat:
        return OnOpen(req, p, EventType::kCreat, AT_FDCWD, a[0], O_CREAT | O_WRONLY | O_TRUNC, a[1], 0, false);
      case Sys::kOpenat:
        return OnOpen(req, p, EventType::kOpenat, static_cast<int>(a[0]), a[1], a[2], a[3], 0, false);
      case Sys::kOpenat2: {
        open_how how{};
        if (a[3] < sizeof how || ReadTraceeMemory(tid, a[2], &how, sizeof how) != 0) {
          Continue(req.id);  // the kernel gives the exact EINVAL/EFAULT/E2BIG
          return;
        }
        return OnOpen(req, p, EventType::kOpenat2, static_cast<int>(a[0]), a[1], how.flags, how.mode, how.resolve,
                      true);
      }
      case Sys::kConnect: return OnConnect(req, p);
      case Sys::kDup: case Sys::kDup2: case Sys::kDup3: case Sys::kFcntl: return OnDup(req, p, *sys);
      case Sys::kBind: case Sys::kListen: case Sys::kAccept: case Sys::kAccept4: return OnSocketCall(req, p, *sys);
      case Sys::kExecve: case Sys::kExecveat: return OnExecEntry(req, p, *sys);
      default: return OnOther(req, p, *sys);
    }
  }

  // --- process lifecycle without ptrace (Lifecycle::kSeccomp) ---------------

  // The process a notifying thread belongs to. Untraced processes report no
  // exit: a process's exit arrives through its pidfd (DrainExits, which the
  // loop runs before a notification can be read from a reused pid), and a
  // thread that is not the leader is checked with tgkill(pid, tid, 0), since
  // its number may have been reused since it was last seen.
  Proc* Caller(pid_t tid) {
    Proc* p = procs.ByTid(tid);
    if (!p || exits_fd < 0) return p;
    if (tid != p->info->pid && syscall(SYS_tgkill, p->info->pid, tid, 0) != 0 && errno == ESRCH) {
      procs.RemoveThread(tid);
      p = procs.ByTid(tid);
      if (!p) return nullptr;
    }
    if (!p->exit_watched) WatchExit(p);
    return p;
  }

  void WatchExit(Proc* p) {
    p->exit_watched = true;
    if (p->pidfd < 0) p->pidfd = static_cast<int>(syscall(SYS_pidfd_open, p->info->pid, 0));
    if (p->pidfd < 0) {
      // ESRCH: gone already, and a later lookup finds no /proc entry.
      if (errno != ESRCH && !warned_no_pidfd_) {
        warned_no_pidfd_ = true;
        log::Warn("cannot watch a process's exit; a reused pid may be taken for it", "error={}",
                  log::Quote(strerror(errno)));
      }
      return;
    }
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u64 = static_cast<uint64_t>(static_cast<uint32_t>(p->info->pid)) << 32 | static_cast<uint32_t>(p->pidfd);
    epoll_ctl(exits_fd, EPOLL_CTL_ADD, p->pidfd, &e);
  }

  // Drops the processes whose pidfd says they exited (closing the pidfd
  // takes it out of the epoll set).
  void DrainExits() {
    epoll_event evs[64];
    int n = 0;
    do {
      n = epoll_wait(exits_fd, evs, 64, 0);
      for (int i = 0; i < n; ++i) {
        pid_t pid = static_cast<pid_t>(evs[i].data.u64 >> 32);
        int fd = static_cast<int>(evs[i].data.u64 & 0xffffffffu);
        Proc* p = procs.Find(pid);
        if (p && p->pidfd == fd) {
          std::shared_ptr<Proc> gone = procs.RemoveProcess(pid);
          seized_.erase(pid);
        } else {
          epoll_ctl(exits_fd, EPOLL_CTL_DEL, fd, nullptr);
        }
      }
    } while (n == 64);
  }

  // An execve was let through earlier: the process runs the new image, or
  // the call failed and it runs the old one. /proc says which.
  void RefreshImage(pid_t tid, Proc* p) {
    p->image_stale = false;
    const bool deferred = p->exec_deferred;
    p->exec_deferred = false;
    std::string old_exepath, old_name;
    std::vector<std::string> old_args;
    if (deferred) {
      old_exepath = p->info->exepath;
      old_name = p->info->name;
      old_args = p->info->args;
    }
    const pid_t pid = p->info->pid;
    // An exec leaves one thread, which then has the leader's id.
    if (tid == pid) procs.KeepOnlyThread(p, tid);
    if (!ProcessTable::AdoptExpectedImage(pid, p)) ProcessTable::RefreshImage(pid, p);
    // A set-user-ID image (without no_new_privs) changes the ids, and an
    // exec recomputes the capabilities of any image.
    p->creds_valid = p->ids_valid = false;
    p->info->start_ns = NowNs();
    if (deferred && sink->wanted() &&
        (p->info->exepath != old_exepath || p->info->name != old_name || p->info->args != old_args)) {
      NewEvent(EventType::kExecve, pid, p);
      ev.res = 0;
      ev.SetArg("filename", p->info->exepath);
      Emit();
    }
  }

  // proc.pname and proc.aname[N] name ancestors as they run now: one that
  // exec'd and has not trapped since is re-read first.
  void RefreshStaleAncestors(Proc* p) {
    int depth = 0;
    for (const event::ProcessInfo* a = p->info->parent.get(); a && depth < 8; a = a->parent.get(), ++depth) {
      Proc* ap = procs.Find(a->pid);
      if (ap && ap->info.get() == a && ap->image_stale) RefreshImage(a->pid, ap);
    }
  }

  // execve/execveat at entry. The image it will install is known from its
  // arguments (name, argv); the rules are asked whether any may match an
  // exec of it whatever the result. None: CONTINUE, and the table re-reads
  // the image from /proc before the process is next judged. One may: the
  // thread is ptrace-seized for this exec only, so that the exec event (and
  // its alert) comes from the exec stop with the real result and image, and
  // is detached there. A failed exec raises nothing.
  void OnExecEntry(const seccomp_notif& req, Proc* p, Sys sys) {
    const pid_t tid = static_cast<pid_t>(req.pid);
    ++stats_.execs;
    p->image_stale = true;
    p->expected_image.reset();
    bool may_match = sink->wanted();
    // Only the native execve's arguments are read here; execveat (names by
    // descriptor, AT_EMPTY_PATH) and the 32-bit ABIs go the exact way.
    const bool native = sys == Sys::kExecve && req.data.arch == AUDIT_ARCH_X86_64 && req.data.nr == SYS_execve;
    if (may_match && native && ReadExecArgs(tid, req.data.args[0], req.data.args[1]) && StillValid(req.id)) {
      NewEvent(EventType::kExecve, tid, p, /*creds=*/false);
      exec_image_ = *p->info;
      std::string_view base = path_;
      if (size_t slash = base.rfind('/'); slash != std::string_view::npos) base.remove_prefix(slash + 1);
      exec_image_.name.assign(base.substr(0, 15));  // TASK_COMM_LEN - 1, as the kernel names it
      exec_image_.exe = exec_argv_.empty() ? path_ : exec_argv_[0];
      exec_image_.args.assign(exec_argv_.begin() + (exec_argv_.empty() ? 0 : 1), exec_argv_.end());
      FileId file;
      switch (PredictExe(p, &exec_image_, &file)) {
        case Prediction::kImage:
          p->expected_image = ExecImage{exec_image_.name, exec_image_.exe,    exec_image_.exepath,
                                        exec_image_.args, exec_image_.exe_upper_layer, file};
          // A relative path made PredictExe read the cwd: judge with it.
          exec_image_.cwd = p->info->cwd;
          ev.proc_cwd_unknown = !p->cwd_valid;
          ev.proc = &exec_image_;
          ev.SetArg("filename", exec_image_.exepath);
          sink->StampContainer(ev);
          ev.num = sink->emitted() + 1;
          may_match = opt.may_match && opt.may_match(ev);
          break;
        case Prediction::kFails: may_match = false; break;  // a failed exec raises nothing
        case Prediction::kUnknown: break;
      }
    }
    if (!may_match) {
      if (Continue(req.id)) ++stats_.execs_fast;
      return;
    }
    if (seized_.count(tid) || ptrace(PTRACE_SEIZE, tid, 0, PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL) == 0) {
      seized_.insert(tid);
      ++stats_.execs_exact;
    } else {
      if (stats_.execs_deferred == 0) {
        log::Warn("cannot ptrace an exec to learn its result; exec events are judged at the process's next call",
                  "error={}", log::Quote(strerror(errno)));
      }
      p->exec_deferred = true;
      ++stats_.execs_deferred;
    }
    Continue(req.id);
  }

  // kImage: the file an exec of path_ will run, named as /proc/PID/exe will
  // name it (the canonical path of the file, or of its "#!" interpreter),
  // filled into image's exepath, is_exe_from_memfd and is_exe_upper_layer
  // (and, for a script, exe and args as the kernel rewrites them), and its
  // identity into `file`. kFails:
  // the path names nothing (a shell trying each PATH entry). kUnknown: the
  // agent cannot tell cheaply and exactly (another root, a relative path
  // with an unknown cwd, a path through /proc's magic links, a file that is
  // neither ELF nor a script on an ELF interpreter: binfmt_misc).
  enum class Prediction { kImage, kFails, kUnknown };
  Prediction PredictExe(Proc* p, event::ProcessInfo* image, FileId* file) {
    if (!p->same_root || path_.empty() || (path_[0] != '/' && !LoadCwd(p->info->pid, p))) return Prediction::kUnknown;
    ResolveName(path_[0] == '/' ? std::string_view() : std::string_view(p->info->cwd), path_, &scratch_);
    const ExeCache::Entry* e = exe_cache_.Inspect(scratch_, p->info->pid);
    if (!e) return errno == ENOENT || errno == ENOTDIR ? Prediction::kFails : Prediction::kUnknown;
    if (memcmp(e->head, "#!", 2) == 0) {
      // The kernel's rule: the interpreter is the first word after "#!".
      std::string_view line(e->head + 2, strnlen(e->head + 2, sizeof e->head - 2));
      line = line.substr(0, line.find('\n'));
      size_t start = line.find_first_not_of(" \t");
      if (start == std::string_view::npos || line[start] != '/') return Prediction::kUnknown;
      line.remove_prefix(start);
      size_t end = line.find_first_of(" \t");
      std::string interp(line.substr(0, end));
      // The kernel runs "interp [arg] path argv[1]...": the rest of the
      // line (trimmed) is one argument, and the script is named as given.
      std::string_view rest = end == std::string_view::npos ? std::string_view() : line.substr(end);
      rest.remove_prefix(std::min(rest.size(), rest.find_first_not_of(" \t")));
      rest = rest.substr(0, rest.find_last_not_of(" \t\r") + 1);
      std::vector<std::string> args;
      if (!rest.empty()) args.emplace_back(rest);
      args.push_back(path_);
      args.insert(args.end(), image->args.begin(), image->args.end());
      image->args = std::move(args);
      image->exe = interp;
      e = exe_cache_.Inspect(interp, p->info->pid);  // (e's line is no longer used)
      if (!e) return Prediction::kUnknown;
    }
    if (memcmp(e->head, "\x7f" "ELF", 4) != 0 || e->exepath.empty()) return Prediction::kUnknown;
    image->exepath = e->exepath;
    image->exe_from_memfd = false;
    image->exe_upper_layer = e->upper_layer;
    *file = e->file;
    return Prediction::kImage;
  }

  // execve's path into path_ and argv into exec_argv_ (at most 4096
  // arguments of 128 KiB in all; the rest is cut, as Falco cuts it).
  bool ReadExecArgs(pid_t tid, uint64_t path_addr, uint64_t argv_addr) {
    if (ReadTraceeString(tid, path_addr, kMaxPath, &path_) != 0) return false;
    exec_argv_.clear();
    size_t total = 0;
    uint64_t ptrs[32];
    for (size_t i = 0; argv_addr && i < 4096 && total < 128 * 1024;) {
      // Never read across a page end the array may not cross.
      uint64_t at = argv_addr + i * 8;
      size_t n = std::min<size_t>(32, (4096 - (at & 4095)) / 8);
      if (n == 0 || ReadTraceeMemory(tid, at, ptrs, n * 8) != 0) return false;
      for (size_t k = 0; k < n; ++k, ++i) {
        if (ptrs[k] == 0 || total >= 128 * 1024) return true;
        std::string& arg = exec_argv_.emplace_back();
        if (ReadTraceeString(tid, ptrs[k], 128 * 1024 - total, &arg) != 0) return false;
        total += arg.size() + 1;
      }
    }
    return true;
  }

  // The open family. With EmulateMode::kRules the event is built first, with
  // its result unknown, and the rules are asked whether any of them may match
  // it: when none can, the kernel runs the call (CONTINUE, one synchronous
  // round trip) and the result is never learnt; otherwise the agent performs
  // the open (OpenEmulator) for the exact result. Nothing on the first path
  // allocates, reads /proc or formats JSON in steady state.
  void OnOpen(const seccomp_notif& req, Proc* p, EventType type, int dirfd, uint64_t path_addr, uint64_t flags,
              uint64_t mode, uint64_t resolve, bool is_openat2) {
    const pid_t tid = static_cast<pid_t>(req.pid);
    if (ReadTraceeString(tid, path_addr, kMaxPath, &path_) != 0) {
      Continue(req.id);  // bad pointer or gone: the kernel answers
      return;
    }
    ++stats_.opens;
    const bool wanted = sink->wanted();
    if (opt.emulate == EmulateMode::kRules) {
      bool may_match = false;
      if (wanted) {
        NewOpenEvent(type, tid, p, flags, mode);
        sink->StampContainer(ev);  // container.* and evt.num as the rules will see them
        ev.num = sink->emitted() + 1;
        // A name the agent cannot tell cheaply is paid for: the emulator
        // resolves it exactly.
        may_match = !NameAtEntry(p, dirfd, resolve) || (opt.may_match && opt.may_match(ev));
      }
      if (!may_match) {
        // A reply that reaches the caller proves the memory read above was
        // the caller's (its pid cannot be reused while it waits), which
        // saves SECCOMP_IOCTL_NOTIF_ID_VALID here.
        if (!Continue(req.id)) return;
        ++stats_.opens_fast;
        if (wanted) {
          ev.SetArg("res", "unknown");
          sink->Emit(ev, /*may_alert=*/false);
        }
        return;
      }
    }
    if (!StillValid(req.id)) {
      Continue(req.id);
      return;
    }
    OpenRequest r;
    r.tid = tid;
    r.proc = p;
    r.dirfd = dirfd;
    r.path = path_;
    r.flags = flags;
    r.mode = mode;
    r.resolve = resolve;
    r.is_openat2 = is_openat2;
    if (p->pidfd < 0) p->pidfd = static_cast<int>(syscall(SYS_pidfd_open, p->info->pid, 0));
    OpenOutcome out;
    if (opt.emulate != EmulateMode::kOff) out = emulator.Open(r);
    // The process state an event shows is read before the reply: once
    // answered, the caller may run on and exit before the agent looks.
    if (wanted) NewOpenEvent(type, tid, p, flags, mode);
    int64_t res = 0;
    bool known = true;
    switch (out.kind) {
      case OpenOutcome::kOpened: {
        seccomp_notif_addfd addfd{};
        addfd.id = req.id;
        addfd.flags = SECCOMP_ADDFD_FLAG_SEND;
        addfd.srcfd = static_cast<uint32_t>(out.fd);
        addfd.newfd_flags = flags & O_CLOEXEC;
        int rc = ioctl(notif_fd, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
        int err = errno;
        close(out.fd);
        ++stats_.opens_emulated;
        if (rc < 0) {
          // ENOENT: the caller was killed meanwhile. Anything else (EMFILE
          // against the tracee's RLIMIT_NOFILE...) is the caller's error.
          if (err == ENOENT) return;
          Reply(req.id, 0, -err, 0);
          res = -err;
        } else {
          res = rc;
        }
        break;
      }
      case OpenOutcome::kFailed:
        Reply(req.id, 0, -out.error, 0);
        ++stats_.opens_emulated;
        res = -out.error;
        break;
      case OpenOutcome::kFallback:
        log::Debug("open not emulated", "path={} why={}", log::Quote(r.path), out.why);
        Continue(req.id);
        ++stats_.opens_fallback;
        known = false;
        if (out.name.empty()) {
          if (r.path[0] == '/' && !(resolve & RESOLVE_IN_ROOT)) {
            out.name = NormalizePath(r.path);
          } else {
            std::string base;
            std::string link = dirfd == AT_FDCWD ? fmt::format("/proc/{}/cwd", tid)
                                                 : fmt::format("/proc/{}/fd/{}", p->info->pid, dirfd);
            if (Readlink(link, &base)) out.name = JoinPath(base, BelowRoot(r.path));
          }
        }
        break;
    }
    if (res >= 0 && known) {
      event::FdInfo& fd = p->fds[static_cast<int>(res)];
      fd.Clear();
      fd.num = res;
      fd.typechar = out.typechar;
      fd.name = out.name;
      fd.open_flags = static_cast<uint32_t>(flags);
    }
    if (!wanted) return;
    ev.res = res;
    ev.fd.num = known && res >= 0 ? res : -1;
    ev.fd.typechar = out.typechar;
    ev.fd.name = out.name;
    ev.SetArg("name", out.name);
    if (!known) ev.SetArg("res", "unknown");
    Emit();
  }

  // An open event as known at syscall entry: everything but the result
  // (evt.res 0, fd.num -1, fd.typechar 'f' as for the usual regular file).
  void NewOpenEvent(EventType type, pid_t tid, Proc* p, uint64_t flags, uint64_t mode) {
    NewEvent(type, tid, p);
    ev.fd.typechar = 'f';
    ev.fd.open_flags = static_cast<uint32_t>(flags);
    ev.SetArg("name", "");
    FormatOpenFlags(flags, &scratch_);
    ev.SetArg("flags", scratch_);
    char buf[24] = {'0'};
    char* end = std::to_chars(buf + 1, buf + sizeof buf, mode, 8).ptr;
    ev.SetArg("mode", std::string_view(buf, static_cast<size_t>(end - buf)));
  }

  // Sets the entry event's fd.name and evt.arg.name from path_; false when
  // the directory it is relative to is not known without a /proc read that
  // may not even describe what the kernel will use.
  bool NameAtEntry(Proc* p, int dirfd, uint64_t resolve) {
    // openat2's RESOLVE_IN_ROOT reads even "/etc/shadow" below dirfd, and
    // ".." cannot leave it: not a lexical join.
    if (resolve & RESOLVE_IN_ROOT) return false;
    std::string_view base;
    if (!path_.empty() && path_[0] != '/') {
      if (dirfd == AT_FDCWD) {
        if (!LoadCwd(p->info->pid, p)) return false;
        base = p->info->cwd;
      } else {
        if (!Readlink(fmt::format("/proc/{}/fd/{}", p->info->pid, dirfd), &scratch_) || scratch_.empty() ||
            scratch_[0] != '/') {
          return false;
        }
        base = scratch_;
      }
    }
    ResolveName(base, path_, &ev.fd.name);
    ev.SetArg("name", ev.fd.name);
    return true;
  }

  void OnConnect(const seccomp_notif& req, Proc* p) {
    const pid_t tid = static_cast<pid_t>(req.pid);
    const int sockfd = static_cast<int>(req.data.args[0]);
    const uint64_t len = req.data.args[2];
    sockaddr_storage ss{};
    if (len > sizeof ss || len == 0 || ReadTraceeMemory(tid, req.data.args[1], &ss, len) != 0 ||
        !StillValid(req.id)) {
      Continue(req.id);
      return;
    }
    if (p->pidfd < 0) p->pidfd = static_cast<int>(syscall(SYS_pidfd_open, p->info->pid, 0));
    int dup = p->pidfd >= 0 ? static_cast<int>(syscall(SYS_pidfd_getfd, p->pidfd, sockfd, 0)) : -1;
    if (dup < 0) {
      Continue(req.id);
      return;
    }
    int domain = 0, type = 0;
    socklen_t olen = sizeof domain;
    getsockopt(dup, SOL_SOCKET, SO_DOMAIN, &domain, &olen);
    olen = sizeof type;
    getsockopt(dup, SOL_SOCKET, SO_TYPE, &type, &olen);
    int fl = fcntl(dup, F_GETFL);
    bool inet = domain == AF_INET || domain == AF_INET6;
    const bool wanted = sink->wanted();
    if (wanted) NewEvent(EventType::kConnect, tid, p);
    int64_t res = 0;
    bool known = false;
    if (opt.emulate != EmulateMode::kOff && inet && fl >= 0 && (fl & O_NONBLOCK)) {
      // Same socket, non-blocking: connecting our duplicate connects the
      // tracee's socket, and returns at once with the exact result.
      int rc = connect(dup, reinterpret_cast<sockaddr*>(&ss), static_cast<socklen_t>(len));
      res = rc == 0 ? 0 : -errno;
      known = true;
      Reply(req.id, 0, rc == 0 ? 0 : static_cast<int>(res), 0);
    } else {
      Continue(req.id);
    }
    event::FdInfo& fd = p->fds[sockfd];
    fd.Clear();
    fd.num = sockfd;
    fd.typechar = domain == AF_INET ? '4' : domain == AF_INET6 ? '6' : domain == AF_UNIX ? 'u' : 'o';
    fd.l4proto = type == SOCK_STREAM ? IPPROTO_TCP : type == SOCK_DGRAM ? IPPROTO_UDP : 0;
    FillAddress(ss, static_cast<socklen_t>(len), &fd.remote);
    sockaddr_storage local{};
    socklen_t llen = sizeof local;
    if (known && getsockname(dup, reinterpret_cast<sockaddr*>(&local), &llen) == 0) FillAddress(local, llen, &fd.local);
    close(dup);
    fd.connected = known && (res == 0 || res == -EINPROGRESS);
    fd.local_is_server = false;
    if (fd.typechar == 'u') {
      fd.name = fd.remote.unix_path;
    } else {
      fd.name = fmt::format("{}->{}", fd.local.empty() ? std::string("0.0.0.0:0") : Endpoint(fd.local),
                            Endpoint(fd.remote));
    }
    if (!wanted) return;
    ev.res = res;
    ev.fd = fd;
    ev.SetArg("addr", fd.typechar == 'u' ? fd.remote.unix_path : Endpoint(fd.remote));
    if (!known) ev.SetArg("res", "unknown");
    Emit();
  }

  // dup family (fd_syscalls.h): evt.rawres is the new fd, fd.* describe the
  // duplicated one, and the new fd inherits its entry in the fd table.
  void OnDup(const seccomp_notif& req, Proc* p, Sys sys) {
    if (p->pidfd < 0) p->pidfd = static_cast<int>(syscall(SYS_pidfd_open, p->info->pid, 0));
    const auto& a = req.data.args;
    event::FdInfo old;
    const bool described = DescribeFd(p->info->pid, p->pidfd, static_cast<int>(a[0]), &old);
    const bool wanted = sink->wanted();
    // The event as known at entry: the duplicated descriptor and the
    // arguments; the result (the new fd) comes after.
    auto describe = [&](int64_t oldfd, bool cloexec) {
      NewEvent(*SysEvent(sys), static_cast<pid_t>(req.pid), p);
      if (described) ev.fd = old;
      ev.fd.num = oldfd;
      auto num = [&](const char* name, uint64_t v) { ev.SetArg(name, std::to_string(static_cast<int64_t>(v))); };
      if (sys == Sys::kFcntl) {
        num("fd", a[0]);
        ev.SetArg("cmd", static_cast<uint32_t>(a[1]) == F_DUPFD ? "F_DUPFD" : "F_DUPFD_CLOEXEC");
      } else {
        num(sys == Sys::kDup ? "fd" : "oldfd", a[0]);
        if (sys != Sys::kDup) num("newfd", a[1]);
        if (sys == Sys::kDup3) ev.SetArg("flags", cloexec ? "O_CLOEXEC" : "0");
      }
    };
    if (wanted && opt.emulate == EmulateMode::kRules) {
      // As for opens: the exact result (an ADDFD, two cross-CPU wake-ups for
      // dup) is paid for only when a rule may match.
      describe(static_cast<int32_t>(a[0]), (a[2] & O_CLOEXEC) != 0);
      sink->StampContainer(ev);
      ev.num = sink->emitted() + 1;
      if (!(opt.may_match && opt.may_match(ev))) {
        if (!Continue(req.id)) return;
        ev.SetArg("res", "unknown");
        sink->Emit(ev, /*may_alert=*/false);
        return;
      }
    }
    DupOutcome out = HandleDup(notif_fd, req, p->pidfd, sys, opt.emulate != EmulateMode::kOff);
    if (!out.replied) return;
    if (out.res >= 0) {
      event::FdInfo& fd = p->fds[static_cast<int>(out.res)];
      fd = old;
      fd.num = out.res;
      if (!described) fd.name.clear();
    }
    if (!wanted) return;
    describe(out.oldfd, out.cloexec);
    ev.res = out.res;
    if (!out.known) ev.SetArg("res", "unknown");
    Emit();
  }

  // bind, listen, accept, accept4 (socket_syscalls.h): exact results where
  // the agent can run them without blocking; the fd table learns the
  // accepted connection and the bound/listening socket's address.
  void OnSocketCall(const seccomp_notif& req, Proc* p, Sys sys) {
    const pid_t tid = static_cast<pid_t>(req.pid);
    if (p->pidfd < 0) p->pidfd = static_cast<int>(syscall(SYS_pidfd_open, p->info->pid, 0));
    const bool wanted = sink->wanted();
    if (wanted) NewEvent(*SysEvent(sys), tid, p);
    if (!p->creds_valid && ReadProcStatus(tid, &p->creds)) p->creds_valid = true;
    const auto& a = req.data.args;
    SocketOutcome out =
        HandleSocketCall(notif_fd, req, tid, p->pidfd, p->creds.cap_eff, sys, opt.emulate != EmulateMode::kOff);
    if (!out.replied) return;
    if (out.known && out.res >= 0 && out.described) p->fds[static_cast<int>(out.fd.num)] = out.fd;
    if (!wanted) return;
    ev.res = out.res;
    if (out.described) ev.fd = out.fd;
    ev.SetArg("fd", std::to_string(static_cast<int>(a[0])));
    if (sys == Sys::kListen) ev.SetArg("backlog", std::to_string(static_cast<int>(a[1])));
    if (sys == Sys::kAccept4) ev.SetArg("flags", std::to_string(static_cast<int>(a[3])));
    if (!out.known) ev.SetArg("res", "unknown");
    Emit();
  }

  // Path argument `addr`, resolved against `dirfd` (or the cwd).
  std::string PathArg(pid_t tid, Proc* p, int dirfd, uint64_t addr) {
    std::string path;
    if (ReadTraceeString(tid, addr, kMaxPath, &path) != 0) return "";
    if (!path.empty() && path[0] == '/') return NormalizePath(path);
    std::string base;
    std::string link = dirfd == AT_FDCWD ? fmt::format("/proc/{}/cwd", tid)
                                         : fmt::format("/proc/{}/fd/{}", p->info->pid, dirfd);
    if (!Readlink(link, &base)) return path;
    return JoinPath(base, path);
  }

  void OnOther(const seccomp_notif& req, Proc* p, Sys sys) {
    const pid_t tid = static_cast<pid_t>(req.pid);
    const auto& a = req.data.args;
    std::optional<EventType> type = SysEvent(sys);
    sockaddr_storage dest{};
    socklen_t dest_len = 0;
    if (sys == Sys::kSendmsg && !SendmsgDestination(req, &dest, &dest_len) && !opt.unaddressed_sends) {
      ++stats_.sends_unaddressed;
      Continue(req.id);
      return;
    }
    if (!type || !sink->wanted()) {
      Continue(req.id);
      Invalidate(p, sys);
      return;
    }
    NewEvent(*type, tid, p);
    ev.res = 0;
    auto path = [&](const char* name, int dirfd, uint64_t addr) { ev.SetArg(name, PathArg(tid, p, dirfd, addr)); };
    auto num = [&](const char* name, uint64_t v) { ev.SetArg(name, std::to_string(static_cast<int64_t>(v))); };
    const int d0 = static_cast<int>(a[0]), d1 = static_cast<int>(a[1]), d2 = static_cast<int>(a[2]);
    switch (sys) {
      case Sys::kChdir: path("path", AT_FDCWD, a[0]); break;
      case Sys::kFchdir: num("fd", a[0]); break;
      case Sys::kSymlink: path("target", AT_FDCWD, a[0]); path("linkpath", AT_FDCWD, a[1]); break;
      case Sys::kSymlinkat: path("target", AT_FDCWD, a[0]); path("linkpath", d1, a[2]); break;
      case Sys::kLink: path("oldpath", AT_FDCWD, a[0]); path("newpath", AT_FDCWD, a[1]); break;
      case Sys::kLinkat: path("oldpath", d0, a[1]); path("newpath", d2, a[3]); break;
      case Sys::kUnlink: path("path", AT_FDCWD, a[0]); ev.SetArg("name", *ev.Arg("path")); break;
      case Sys::kUnlinkat: path("name", d0, a[1]); num("flags", a[2]); break;
      case Sys::kRename: path("oldpath", AT_FDCWD, a[0]); path("newpath", AT_FDCWD, a[1]); break;
      case Sys::kRenameat: case Sys::kRenameat2: path("oldpath", d0, a[1]); path("newpath", d2, a[3]); break;
      case Sys::kMkdir: path("path", AT_FDCWD, a[0]); ev.SetArg("mode", fmt::format("0{:o}", a[1])); break;
      case Sys::kMkdirat: path("path", d0, a[1]); ev.SetArg("mode", fmt::format("0{:o}", a[2])); break;
      case Sys::kChmod: path("filename", AT_FDCWD, a[0]); ev.SetArg("mode", fmt::format("0{:o}", a[1])); break;
      case Sys::kFchmod: num("fd", a[0]); ev.SetArg("mode", fmt::format("0{:o}", a[1])); break;
      case Sys::kFchmodat: path("filename", d0, a[1]); ev.SetArg("mode", fmt::format("0{:o}", a[2])); break;
      case Sys::kSetuid: case Sys::kSetgid: num(sys == Sys::kSetuid ? "uid" : "gid", a[0]); break;
      case Sys::kSetreuid: num("ruid", a[0]); num("euid", a[1]); break;
      case Sys::kSetregid: num("rgid", a[0]); num("egid", a[1]); break;
      case Sys::kSetresuid: num("ruid", a[0]); num("euid", a[1]); num("suid", a[2]); break;
      case Sys::kSetresgid: num("rgid", a[0]); num("egid", a[1]); num("sgid", a[2]); break;
      case Sys::kPtrace: num("request", a[0]); num("pid", a[1]); break;
      case Sys::kMemfdCreate: {
        std::string name;
        ReadTraceeString(tid, a[0], 256, &name);
        ev.SetArg("name", name);
        num("flags", a[1]);
        break;
      }
      case Sys::kMount: {
        std::string dev, type_name;
        ReadTraceeString(tid, a[0], kMaxPath, &dev);
        ReadTraceeString(tid, a[2], 256, &type_name);
        ev.SetArg("dev", dev);
        path("dir", AT_FDCWD, a[1]);
        ev.SetArg("type", type_name);
        break;
      }
      case Sys::kSocket: num("domain", a[0]); num("type", a[1]); num("proto", a[2]); break;
      case Sys::kSendto: case Sys::kSendmsg: case Sys::kFinitModule: {
        num("fd", a[0]);
        event::FdInfo fd;
        if (d0 >= 0 && DescribeFd(p->info->pid, p->pidfd, d0, &fd)) ev.fd = fd;
        if (sys == Sys::kSendto && a[4] && a[5] && a[5] <= sizeof(sockaddr_storage) &&
            ReadTraceeMemory(tid, a[4], &dest, a[5]) == 0) {
          dest_len = static_cast<socklen_t>(a[5]);
        }
        if (dest_len) FillAddress(dest, dest_len, &ev.fd.remote);
        break;
      }
      default: break;
    }
    if (!StillValid(req.id)) return;
    Continue(req.id);
    ev.SetArg("res", "unknown");
    Emit();
    Invalidate(p, sys);
  }

  // Whether a native sendmsg names a destination (msg_name), read into
  // `dest`. True when it cannot tell (another ABI, unreadable memory): the
  // call is then judged like an addressed one.
  static bool SendmsgDestination(const seccomp_notif& req, sockaddr_storage* dest, socklen_t* len) {
    if (req.data.arch != AUDIT_ARCH_X86_64 || req.data.nr != SYS_sendmsg) return true;
    const pid_t tid = static_cast<pid_t>(req.pid);
    msghdr msg{};
    if (ReadTraceeMemory(tid, req.data.args[1], &msg, sizeof msg) != 0) return true;
    if (!msg.msg_name || msg.msg_namelen == 0) return false;
    if (msg.msg_namelen <= sizeof *dest &&
        ReadTraceeMemory(tid, reinterpret_cast<uint64_t>(msg.msg_name), dest, msg.msg_namelen) == 0) {
      *len = msg.msg_namelen;
    }
    return true;
  }

  // After a CONTINUEd call that changes what the table caches.
  static void Invalidate(Proc* p, Sys sys) {
    switch (sys) {
      case Sys::kChdir: case Sys::kFchdir:
        p->cwd_valid = false;
        break;
      case Sys::kChroot:
        p->cwd_valid = false;
        p->same_root = false;  // re-checked at the next exec
        break;
      case Sys::kSetuid: case Sys::kSetgid: case Sys::kSetreuid: case Sys::kSetregid: case Sys::kSetresuid:
      case Sys::kSetresgid: case Sys::kSetgroups: case Sys::kSetfsuid: case Sys::kSetfsgid: case Sys::kCapset:
        p->creds_valid = p->ids_valid = false;
        break;
      case Sys::kUmask:
        p->creds_valid = false;
        break;
      default:
        break;
    }
  }

  // --- main loop --------------------------------------------------------------

  int Loop() {
    while (exit_code < 0) {
      sink->Flush();
      // exits_fd is polled after notif_fd: an exit that happened before a
      // notification was sent is then seen before that notification is
      // read, so a reused pid is never taken for the process that had it.
      pollfd fds[3] = {{sigfd, POLLIN, 0}, {notif_fd, POLLIN, 0}, {exits_fd, POLLIN, 0}};
      int n = poll(fds, 3, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        log::Error("poll failed", "error={}", log::Quote(strerror(errno)));
        break;
      }
      if (fds[2].revents & POLLIN) DrainExits();
      if (notif_fd >= 0 && (fds[1].revents & POLLIN)) HandleNotification();
      if (notif_fd >= 0 && (fds[1].revents & (POLLHUP | POLLERR))) {
        // No process left holding the filter.
        close(notif_fd);
        notif_fd = -1;
      }
      if (fds[0].revents & POLLIN) {
        DrainSignals();
        DrainWait();
      }
    }
    sink->Flush();
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto us = [](const timeval& tv) { return tv.tv_sec * 1000000 + tv.tv_usec; };
    log::Info("tracing finished",
              "notifications={} opens={} opens_fast={} opens_emulated={} opens_fallback={} execs={} execs_fast={} "
              "execs_exact={} execs_deferred={} sends_unaddressed={} cpu_user_us={} cpu_sys_us={}",
              stats_.notifications, stats_.opens, stats_.opens_fast, stats_.opens_emulated, stats_.opens_fallback,
              stats_.execs, stats_.execs_fast, stats_.execs_exact, stats_.execs_deferred, stats_.sends_unaddressed,
              us(ru.ru_utime), us(ru.ru_stime));
    return exit_code < 0 ? 1 : exit_code;
  }
};

Tracer::Tracer(TracerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Tracer::~Tracer() = default;

int Tracer::Run() {
  if (!impl_->Start()) return 1;
  if (impl_->child < 0) return 1;
  // Drain anything that happened during start-up before sleeping.
  impl_->DrainWait();
  return impl_->Loop();
}

}  // namespace sidetrace::agent
