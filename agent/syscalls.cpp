#include "agent/syscalls.h"

#include <fcntl.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace sidetrace::agent {
namespace {

using event::EventType;

struct SysDesc {
  Sys sys;
  const char* name;
  std::optional<EventType> event;
};

constexpr std::array<SysDesc, kSysCount> kSys = {{
    {Sys::kOpen, "open", EventType::kOpen},
    {Sys::kOpenat, "openat", EventType::kOpenat},
    {Sys::kOpenat2, "openat2", EventType::kOpenat2},
    {Sys::kCreat, "creat", EventType::kCreat},
    {Sys::kConnect, "connect", EventType::kConnect},
    {Sys::kAccept, "accept", EventType::kAccept},
    {Sys::kAccept4, "accept4", EventType::kAccept4},
    {Sys::kBind, "bind", EventType::kBind},
    {Sys::kListen, "listen", EventType::kListen},
    {Sys::kSocket, "socket", EventType::kSocket},
    {Sys::kSendto, "sendto", EventType::kSendto},
    {Sys::kSendmsg, "sendmsg", EventType::kSendmsg},
    {Sys::kDup, "dup", EventType::kDup},
    {Sys::kDup2, "dup2", EventType::kDup2},
    {Sys::kDup3, "dup3", EventType::kDup3},
    {Sys::kFcntl, "fcntl", EventType::kFcntl},
    {Sys::kChdir, "chdir", EventType::kChdir},
    {Sys::kFchdir, "fchdir", EventType::kFchdir},
    {Sys::kChroot, "chroot", std::nullopt},
    {Sys::kSymlink, "symlink", EventType::kSymlink},
    {Sys::kSymlinkat, "symlinkat", EventType::kSymlinkat},
    {Sys::kLink, "link", EventType::kLink},
    {Sys::kLinkat, "linkat", EventType::kLinkat},
    {Sys::kUnlink, "unlink", EventType::kUnlink},
    {Sys::kUnlinkat, "unlinkat", EventType::kUnlinkat},
    {Sys::kRename, "rename", EventType::kRename},
    {Sys::kRenameat, "renameat", EventType::kRenameat},
    {Sys::kRenameat2, "renameat2", EventType::kRenameat2},
    {Sys::kMkdir, "mkdir", EventType::kMkdir},
    {Sys::kMkdirat, "mkdirat", EventType::kMkdirat},
    {Sys::kChmod, "chmod", EventType::kChmod},
    {Sys::kFchmod, "fchmod", EventType::kFchmod},
    {Sys::kFchmodat, "fchmodat", EventType::kFchmodat},
    {Sys::kSetuid, "setuid", EventType::kSetuid},
    {Sys::kSetgid, "setgid", EventType::kSetgid},
    {Sys::kSetreuid, "setreuid", EventType::kSetreuid},
    {Sys::kSetregid, "setregid", EventType::kSetregid},
    {Sys::kSetresuid, "setresuid", EventType::kSetresuid},
    {Sys::kSetresgid, "setresgid", EventType::kSetresgid},
    {Sys::kSetgroups, "setgroups", std::nullopt},
    {Sys::kSetfsuid, "setfsuid", std::nullopt},
    {Sys::kSetfsgid, "setfsgid", std::nullopt},
    {Sys::kCapset, "capset", EventType::kCapset},
    {Sys::kUmask, "umask", std::nullopt},
    {Sys::kPtrace, "ptrace", EventType::kPtrace},
    {Sys::kMemfdCreate, "memfd_create", EventType::kMemfdCreate},
    {Sys::kInitModule, "init_module", EventType::kInitModule},
    {Sys::kFinitModule, "finit_module", EventType::kFinitModule},
    {Sys::kMount, "mount", EventType::kMount},
    {Sys::kIoUringSetup, "io_uring_setup", EventType::kIoUringSetup},
    {Sys::kExecve, "execve", EventType::kExecve},
    {Sys::kExecveat, "execveat", EventType::kExecveat},
}};

constexpr std::array<uint32_t, 3> kArches = {SCMP_ARCH_X86_64, SCMP_ARCH_X86, SCMP_ARCH_X32};

}  // namespace

std::string_view SysName(Sys sys) { return kSys[static_cast<size_t>(sys)].name; }
std::optional<event::EventType> SysEvent(Sys sys) { return kSys[static_cast<size_t>(sys)].event; }

std::vector<Sys> SysForEvent(event::EventType type) {
  std::vector<Sys> out;
  for (const auto& d : kSys) {
    if (d.event == type) out.push_back(d.sys);
  }
  return out;
}

std::vector<Sys> BookkeepingSys() {
  return {Sys::kChdir,     Sys::kFchdir,    Sys::kChroot,    Sys::kSetuid,   Sys::kSetgid,
          Sys::kSetreuid,  Sys::kSetregid,  Sys::kSetresuid, Sys::kSetresgid, Sys::kSetgroups,
          Sys::kSetfsuid,  Sys::kSetfsgid,  Sys::kCapset,    Sys::kUmask};
}

SysSet SysSet::All() {
  SysSet s;
  for (const auto& d : kSys) s.Add(d.sys);
  return s;
}

namespace {
constexpr uint32_t kX32Bit = 0x40000000;  // __X32_SYSCALL_BIT
}  // namespace

SysTable::SysTable() {
  for (size_t abi = 0; abi < kArches.size(); ++abi) {
    for (const auto& d : kSys) {
      // libseccomp includes __X32_SYSCALL_BIT in x32 numbers.
      int nr = seccomp_syscall_resolve_name_arch(kArches[abi], d.name);
      if (nr < 0) continue;
      nr &= ~static_cast<int>(kX32Bit);
      if (nr < kMaxNr) by_abi_[abi][static_cast<size_t>(nr)] = static_cast<uint8_t>(static_cast<int>(d.sys) + 1);
    }
  }
}

std::optional<Sys> SysTable::Lookup(uint32_t arch, int nr) const {
  // x32 shares AUDIT_ARCH_X86_64 with native calls; its numbers carry
  // __X32_SYSCALL_BIT.
  size_t abi;
  if (arch == SCMP_ARCH_X86_64) {
    abi = (static_cast<uint32_t>(nr) & kX32Bit) ? 2 : 0;
    nr &= ~static_cast<int>(kX32Bit);
  } else if (arch == SCMP_ARCH_X86) {
    abi = 1;
  } else {
    return std::nullopt;
  }
  if (nr < 0 || nr >= kMaxNr) return std::nullopt;
  uint8_t v = by_abi_[abi][static_cast<size_t>(nr)];
  if (v == 0) return std::nullopt;
  return static_cast<Sys>(v - 1);
}

Result<FilterProgram> BuildFilter(const SysSet& set, bool unaddressed_sends) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return Status::Internal("seccomp_init failed");
  struct Guard {
    scmp_filter_ctx c;
    ~Guard() { seccomp_release(c); }
  } guard{ctx};
  for (uint32_t arch : kArches) {
    if (arch == seccomp_arch_native()) continue;
    int rc = seccomp_arch_add(ctx, arch);
    if (rc != 0 && rc != -EEXIST) return Status::Internal(fmt::format("seccomp_arch_add: {}", strerror(-rc)));
  }
  for (const auto& d : kSys) {
    if (!set.Has(d.sys)) continue;
    int nr = seccomp_syscall_resolve_name(d.name);
    if (nr == __NR_SCMP_ERROR) continue;
    // Rules on syscalls an ABI lacks (open on none, but e.g. openat2 on old
    // tables) are skipped by libseccomp per architecture.
    int rc = 0;
    if (d.sys == Sys::kFcntl) {
      // The kernel reads cmd as an unsigned int: compare the low 32 bits
      // only, so garbage in the upper half cannot slip past.
      for (uint64_t cmd : {uint64_t{F_DUPFD}, uint64_t{F_DUPFD_CLOEXEC}}) {
        rc = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, nr, 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, cmd));
        if (rc != 0) break;
      }
    } else if (d.sys == Sys::kSendto && !unaddressed_sends) {
      rc = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, nr, 1, SCMP_A4(SCMP_CMP_NE, 0));
    } else {
      rc = seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, nr, 0);
    }
    if (rc != 0) return Status::Internal(fmt::format("seccomp_rule_add {}: {}", d.name, strerror(-rc)));
  }
  // The ABI checks come first in the generated program; the parent handles
  // the privilege question (no_new_privs), so the filter does not set it.
  if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0) != 0) return Status::Internal("seccomp_attr_set NNP");
  // A binary search over syscall numbers instead of a linear list: an
  // unmonitored call then runs ~6 comparisons, not one per monitored call.
  if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2) != 0) return Status::Internal("seccomp_attr_set OPTIMIZE");
  int fd = memfd_create("sidetrace-bpf", MFD_CLOEXEC);
  if (fd < 0) return Status::Internal(fmt::format("memfd_create: {}", strerror(errno)));
  int rc = seccomp_export_bpf(ctx, fd);
  FilterProgram prog;
  if (rc == 0) {
    off_t size = lseek(fd, 0, SEEK_END);
    prog.bytes.resize(static_cast<size_t>(size > 0 ? size : 0));
    if (pread(fd, prog.bytes.data(), prog.bytes.size(), 0) != static_cast<ssize_t>(prog.bytes.size())) rc = -EIO;
  }
  close(fd);
  if (rc != 0) return Status::Internal(fmt::format("seccomp_export_bpf: {}", strerror(-rc)));
  return prog;
}

}  // namespace sidetrace::agent
