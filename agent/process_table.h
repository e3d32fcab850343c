// ProcessTable: every traced thread and thread group, as the tracer learns
// them from ptrace events (fork, clone, exec, exit) and seccomp
// notifications.
//
// A Proc is one thread group: its Falco-facing ProcessInfo (shared with the
// events that point at it and with its children's `parent` links), the
// per-process fd table, a pidfd (for pidfd_getfd), and a credential cache used
// to decide whether the agent may open files on the process's behalf.
// Threads map to their Proc. Entries appear lazily when a thread is first
// seen before its creation event (a new thread can trap before its parent's
// clone event is read), built from /proc.
// Thread-safety: none; owned and used by the tracer thread only.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "agent/procfs.h"
#include "common/event/event.h"

namespace sidetrace::agent {

// The image an exec let through at its entry will install, as the agent
// predicted it from the call's arguments and file (Lifecycle::kSeccomp).
struct ExecImage {
  std::string name, exe, exepath;
  std::vector<std::string> args;
  bool exe_upper_layer = false;
  FileId file;  // the executable the kernel maps: what /proc/PID/exe will be
};

struct Proc {
  std::shared_ptr<event::ProcessInfo> info;
  int pidfd = -1;  // owned; -1 until first needed
  // Credentials and umask as last read from /proc; stale after a
  // set*id/capset/umask/chroot/exec, which clear creds_valid.
  bool creds_valid = false;
  ProcStatus creds;
  // info's uid, gid and cap_effective are current (from creds, or from the
  // pidfd and capget); cleared with creds_valid, except by umask.
  bool ids_valid = false;
  // The file /proc/PID/exe names for info's image, when known.
  FileId exe_id;
  bool same_root = true;   // the process's root is the agent's root
  bool cwd_valid = false;  // info->cwd is current
  // Open fds the agent learnt of (inherited at start, opened, connected).
  // Close and dup are not trapped: an entry may be stale, and its name is
  // checked against /proc/PID/fd before use.
  std::unordered_map<int, event::FdInfo> fds;
  std::vector<pid_t> threads;
  size_t threads_pruned_at = 64;  // prune dead threads when `threads` grows past this
  // Lifecycle::kSeccomp: an execve was let through; exe, comm and argv are
  // re-read before the process is next judged (the call may have failed).
  bool image_stale = false;
  // ...as predicted at the exec's entry: adopted if the exec succeeded.
  std::optional<ExecImage> expected_image;
  // ...and its exec event is due then, if the image changed (no ptrace).
  bool exec_deferred = false;
  bool exit_watched = false;  // pidfd in the tracer's exit set

  ~Proc();
};

class ProcessTable {
 public:
  ProcessTable() = default;
  ProcessTable(const ProcessTable&) = delete;
  ProcessTable& operator=(const ProcessTable&) = delete;

  // The process `tid` belongs to, creating entries from /proc when unknown.
  // nullptr when the thread is gone.
  Proc* ByTid(pid_t tid);
  // A new thread group `pid` forked from `parent` (may be null): inherits the
  // parent's identity, cwd and fds, as fork does.
  Proc* AddProcess(pid_t pid, Proc* parent);
  // A new thread `tid` in `proc`.
  void AddThread(pid_t tid, Proc* proc);
  // Thread `tid` exited. Returns the Proc (still alive until the returned
  // pointer is dropped) when this was its last thread.
  std::shared_ptr<Proc> RemoveThread(pid_t tid);
  // Thread group `pid` exited: drops it and all its threads.
  std::shared_ptr<Proc> RemoveProcess(pid_t pid);
  // The entry for thread group `pid`, without consulting /proc.
  Proc* Find(pid_t pid) const;
  // Keeps only `tid` among `proc`'s threads (after an exec, the others are
  // gone; a wrong guess costs a lookup in /proc when one of them traps).
  void KeepOnlyThread(Proc* proc, pid_t tid);
  // `pid` completed an exec: its other threads are gone and its identity is
  // re-read from /proc.
  Proc* Exec(pid_t pid);
  // Re-reads exe, comm, argv, cwd and credentials from /proc.
  static void Refresh(pid_t pid, Proc* proc);
  // Re-reads what an exec replaces: exe, comm and argv.
  static void RefreshImage(pid_t pid, Proc* proc);
  // After an exec let through at entry: the predicted image, if
  // /proc/PID/exe now names the predicted file and named another before
  // (one stat instead of reading cmdline, exe and comm). False when that
  // cannot tell a successful exec from a failed one: then RefreshImage.
  static bool AdoptExpectedImage(pid_t pid, Proc* proc);
  // Re-reads the fd table from /proc/PID/fd (inherited fds at start).
  static void LoadFds(pid_t pid, Proc* proc);

  size_t process_count() const { return procs_.size(); }
  size_t thread_count() const { return threads_.size(); }

 private:
  // A fork child at its first trapped call (`pidfd` refers to it), when
  // its parent is known; nullptr otherwise.
  Proc* AddForkChild(pid_t pid, int pidfd);

  std::unordered_map<pid_t, std::shared_ptr<Proc>> procs_;    // by tgid
  std::unordered_map<pid_t, std::shared_ptr<Proc>> threads_;  // by tid
};

// Fills `fd` from what /proc says about `pid`'s descriptor `num`: name and
// typechar (sockets get their addresses from pidfd_getfd when `pidfd` >= 0).
bool DescribeFd(pid_t pid, int pidfd, int num, event::FdInfo* fd);

// Fills `fd`'s typechar, l4proto, local and remote ends from the socket `s`
// (the agent's duplicate of a tracee's descriptor).
void DescribeSocket(int s, event::FdInfo* fd);

// Fills `a` from a socket address (inet, inet6, unix; empty otherwise).
// REQUIRES: `ss` holds a whole address of its family (kernel-written).
void FillSockAddr(const sockaddr_storage& ss, event::SocketAddress* a);

// Wall-clock ns since the epoch.
uint64_t NowNs();

}  // namespace sidetrace::agent
