// Reading a traced process: its memory (process_vm_readv, bounded; writes
// only for emulated calls' out-parameters) and its
// /proc entries (status, cmdline, exe, cwd, fd links).
//
// All functions are plain syscalls on behalf of the single tracer thread; they
// never block on the tracee (process_vm_readv and /proc reads do not wait for
// it to run). They fail with an errno-style code when the process is gone.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sidetrace::agent {

// Reads a NUL-terminated string of at most `max` bytes at `addr` in `pid`,
// page by page so that a string ending just before an unmapped page reads.
// Returns 0, or -errno (-EFAULT for a bad pointer, -ENAMETOOLONG when no NUL
// within max).
int ReadTraceeString(pid_t pid, uint64_t addr, size_t max, std::string* out);
// Reads exactly `len` bytes at `addr`; 0 or -errno.
int ReadTraceeMemory(pid_t pid, uint64_t addr, void* buf, size_t len);
// Writes exactly `len` bytes at `addr` (an emulated accept's peer address);
// 0 or -errno. REQUIRES: the tracee is stopped in a notification.
int WriteTraceeMemory(pid_t pid, uint64_t addr, const void* buf, size_t len);

// The fields of /proc/PID/status the agent uses.
struct ProcStatus {
  pid_t tgid = 0, ppid = 0;
  uint32_t uid = 0, gid = 0;      // real
  uint32_t euid = 0, egid = 0;    // effective
  uint32_t fsuid = 0, fsgid = 0;  // filesystem
  std::vector<uint32_t> groups;
  uint64_t cap_eff = 0;
  uint32_t umask = 022;
  bool has_umask = false;
};
// Parses /proc/<tid>/status (tid may be a thread: /proc/<tid> works for both).
bool ReadProcStatus(pid_t tid, ProcStatus* out);

// From /proc/PID/stat: the parent, the session, and the controlling
// terminal's device number (tty_nr: major in bits 8-15, minor in bits 0-7
// and 20-31; 0 without one, as Falco's proc.tty). One read: a new process's
// /proc entries are slow to instantiate. False when the process is gone.
struct ProcStat {
  pid_t ppid = 0;
  pid_t sid = 0;
  int32_t tty = 0;
};
bool ReadProcStat(pid_t pid, ProcStat* out);

// The kernel's own record of a process (PIDFD_GET_INFO, Linux 6.13+): its
// parent and user/group ids in one ioctl on its pidfd, where /proc/PID/status
// costs a path walk and a formatted page (~20x the time). The ids are the
// thread group leader's.
struct PidfdInfo {
  pid_t tgid = 0, ppid = 0;
  uint32_t uid = 0, gid = 0;      // real
  uint32_t euid = 0, egid = 0;    // effective
  uint32_t fsuid = 0, fsgid = 0;  // filesystem
};
// False when the kernel has no PIDFD_GET_INFO or the process is gone.
bool ReadPidfdInfo(int pidfd, PidfdInfo* out);
// The effective capability set of thread `tid` (capget; no /proc read).
bool ReadCapEffective(pid_t tid, uint64_t* out);

// Which file a path names: its device and inode.
struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool known() const { return ino != 0; }
  bool operator==(const FileId&) const = default;
};
// The executable /proc/PID/exe names (one stat); {} when the process is gone.
FileId ExeFileId(pid_t pid);

// readlink(2) into a string; false on failure.
bool Readlink(const std::string& path, std::string* out);
// Whole small file (at most `max` bytes); false on failure.
bool ReadSmallFile(const std::string& path, size_t max, std::string* out);
// argv from /proc/PID/cmdline.
bool ReadCmdline(pid_t pid, std::vector<std::string>* argv);

// Lexically normalises an absolute path: collapses "//", "." and "..".
std::string NormalizePath(std::string_view path);
// Joins `base` (absolute) and `path` (absolute or relative), normalised.
std::string JoinPath(std::string_view base, std::string_view path);

}  // namespace sidetrace::agent
