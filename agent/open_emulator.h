// OpenEmulator: performs an open(2)-family call on behalf of a traced thread,
// so that the tracer learns its exact result and hands the file to the tracee
// with SECCOMP_IOCTL_NOTIF_ADDFD | SECCOMP_ADDFD_FLAG_SEND (one round trip,
// no exit stop, and no TOCTOU: the tracee gets the very file the agent saw).
//
// Emulation is only done where the outcome is provably the one the kernel
// would give the tracee; everything else answers kFallback, and the tracer
// lets the kernel run the call (SECCOMP_USER_NOTIF_FLAG_CONTINUE):
//  - credentials: the calling thread adopts the tracee's fsuid, fsgid and
//    supplementary groups (per-thread setfsuid/setfsgid/setgroups syscalls),
//    and the tracee's filesystem capabilities must equal what the agent
//    holds under those ids; otherwise fallback;
//  - root: the tracee's root must be the agent's (no chroot);
//  - the path is looked up first with O_PATH and RESOLVE_NO_MAGICLINKS, so
//    nothing is opened yet: /proc/self, /dev/fd/N and friends would name the
//    agent, not the tracee, and magic links are refused; files on procfs,
//    sysfs, devices, FIFOs, sockets and anything but a regular file or a
//    directory on a disk-like filesystem fall back (opening them can block
//    or have side effects, or their meaning depends on who opens them);
//  - the looked-up file is then reopened through /proc/self/fd/N with the
//    tracee's flags, which re-checks permissions with the adopted ids;
//  - O_CREAT of a missing file creates it with O_EXCL and the tracee's umask
//    (read from /proc/PID/status); a lost race falls back;
//  - O_PATH (ADDFD cannot pass an O_PATH file), O_TMPFILE and unknown
//    openat2 flags fall back.
// Known difference: a directory with a default ACL ignores the umask for the
// kernel's own open; the agent applies the umask (see docs/agent.md).
// Thread-safety: one emulator per tracer thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agent/process_table.h"

namespace sidetrace::agent {

struct OpenRequest {
  pid_t tid = 0;
  Proc* proc = nullptr;
  int dirfd = -100;  // AT_FDCWD
  std::string path;
  uint64_t flags = 0;
  uint64_t mode = 0;
  uint64_t resolve = 0;  // openat2 RESOLVE_* flags
  bool is_openat2 = false;
};

struct OpenOutcome {
  enum Kind { kOpened, kFailed, kFallback } kind = kFallback;
  int fd = -1;        // kOpened: the agent's descriptor for the file (owned by the caller)
  int error = 0;      // kFailed: errno the tracee's call must return
  char typechar = 'f';
  std::string name;   // absolute, lexically normalised (Falco's fd.name)
  const char* why = "";  // kFallback: reason, for debug logs
};

// `path` without its leading slashes: what an absolute path names below the
// lookup's root under openat2's RESOLVE_IN_ROOT.
std::string_view BelowRoot(std::string_view path);

class OpenEmulator {
 public:
  OpenEmulator();
  // False when emulation cannot work at all here (no /proc, say); the
  // reason is in why_unavailable().
  bool available() const { return available_; }
  const std::string& why_unavailable() const { return why_unavailable_; }

  OpenOutcome Open(const OpenRequest& req);

 private:
  bool AdoptCredentials(const ProcStatus& c);

  bool available_ = true;
  std::string why_unavailable_;
  uint32_t my_fsuid_ = 0, my_fsgid_ = 0;  // the agent's own
  uint64_t my_fs_caps_ = 0;
  uint32_t cur_fsuid_ = 0, cur_fsgid_ = 0;  // what the thread runs with now
  std::vector<uint32_t> cur_groups_;
  dev_t root_dev_ = 0;
  bool root_disk_like_ = false;
  // st_dev -> whether its filesystem is disk-like (saves an fstatfs per open).
  std::unordered_map<uint64_t, bool> disk_like_dev_;
};

}  // namespace sidetrace::agent
