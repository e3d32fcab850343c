// The syscalls the agent can monitor, how each is handled, and the seccomp
// filter that traps them.
//
// Each monitored syscall has a Sys value and a Handling:
//   kEmulate   the agent performs it on the tracee's behalf and returns the
//              exact result (open family, non-blocking inet connect); it
//              falls back to kContinue when emulation is unsafe;
//   kContinue  the agent records the arguments, then lets the kernel run the
//              call (SECCOMP_USER_NOTIF_FLAG_CONTINUE); the result is not
//              observed;
//   lifecycle  fork, vfork, clone, clone3 and exit are never in the filter;
//              execve and execveat are trapped only when the tracer learns
//              the process lifecycle from seccomp (Lifecycle::kSeccomp, see
//              tracer.cpp), and arrive as ptrace events otherwise.
// fcntl is trapped only for F_DUPFD and F_DUPFD_CLOEXEC (an argument check
// in the filter): its other commands are hot and tell the rules nothing. The
// i386 fcntl64 entry point is not trapped.
// The filter covers the x86-64, i386 and x32 ABIs, so a tracee cannot slip
// past it with `int 0x80`. Thread-safety: immutable after start-up.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "common/event/event.h"
#include "common/util/status.h"

namespace sidetrace::agent {

enum class Sys : uint8_t {
  kOpen, kOpenat, kOpenat2, kCreat,
  kConnect, kAccept, kAccept4, kBind, kListen, kSocket, kSendto, kSendmsg,
  kDup, kDup2, kDup3, kFcntl,
  kChdir, kFchdir, kChroot,
  kSymlink, kSymlinkat, kLink, kLinkat, kUnlink, kUnlinkat,
  kRename, kRenameat, kRenameat2, kMkdir, kMkdirat,
  kChmod, kFchmod, kFchmodat,
  kSetuid, kSetgid, kSetreuid, kSetregid, kSetresuid, kSetresgid, kSetgroups,
  kSetfsuid, kSetfsgid, kCapset, kUmask,
  kPtrace, kMemfdCreate, kInitModule, kFinitModule, kMount, kIoUringSetup,
  kExecve, kExecveat,
  kCount
};
inline constexpr size_t kSysCount = static_cast<size_t>(Sys::kCount);

// Kernel name of the syscall ("openat").
std::string_view SysName(Sys sys);
// The Falco event a syscall produces, or nullopt for bookkeeping-only ones
// (setgroups, umask, chroot...).
std::optional<event::EventType> SysEvent(Sys sys);
// The syscalls needed to produce `type` (empty for types only ptrace
// reports; execve and execveat for the exec events).
std::vector<Sys> SysForEvent(event::EventType type);
// Syscalls trapped whatever the rules say, because the process table needs
// them: credential changes (for open emulation) and cwd/root changes.
std::vector<Sys> BookkeepingSys();

// A set of syscalls to trap.
class SysSet {
 public:
  void Add(Sys s) { bits_ |= uint64_t{1} << static_cast<int>(s); }
  void Remove(Sys s) { bits_ &= ~(uint64_t{1} << static_cast<int>(s)); }
  bool Has(Sys s) const { return bits_ & (uint64_t{1} << static_cast<int>(s)); }
  bool empty() const { return bits_ == 0; }
  // Every monitorable syscall.
  static SysSet All();

 private:
  uint64_t bits_ = 0;
  static_assert(kSysCount <= 64);
};

// Maps (audit arch, syscall number) from a seccomp notification to a Sys:
// one array index per notification.
class SysTable {
 public:
  SysTable();
  std::optional<Sys> Lookup(uint32_t arch, int nr) const;

 private:
  static constexpr int kMaxNr = 1024;  // above every x86 ABI's numbers
  // Sys + 1 by number, 0 for unmonitored, per ABI in kArches' order:
  // x86-64, i386, x32 (without __X32_SYSCALL_BIT).
  std::array<std::array<uint8_t, kMaxNr>, 3> by_abi_{};
};

// A compiled BPF program, ready for seccomp(SECCOMP_SET_MODE_FILTER).
struct FilterProgram {
  std::vector<uint8_t> bytes;  // struct sock_filter[]
};

// Builds the filter: SECCOMP_RET_ALLOW for everything but `set`, which gets
// SECCOMP_RET_USER_NOTIF, on all three x86 ABIs. Uses libseccomp, exported to
// raw BPF so that the child can load it with flags libseccomp 2.5.4 does not
// know (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV).
// `unaddressed_sends` false: sendto is trapped only when it names a
// destination (a send on a connected socket goes to the peer its connect
// was judged with).
Result<FilterProgram> BuildFilter(const SysSet& set, bool unaddressed_sends = true);

}  // namespace sidetrace::agent
