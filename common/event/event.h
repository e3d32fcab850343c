// Event: one captured syscall, or process lifecycle step, as the rules engine
// sees it. Field names follow Falco's (`evt.type`, `proc.name`, `fd.sip`...),
// so that Falco rules evaluate against it unchanged.
//
// Who fills it: the agent's tracer, from the traced process's registers and
// memory plus its process table; `sidetrace-rules eval` rebuilds it from the
// JSON lines written by `--events-out` (see event_json.h).
//
// Ownership: an Event points at a ProcessInfo and a ContainerInfo that outlive
// it (the process table and the agent own them). An Event object is meant to
// be reused: Clear() keeps the capacity of its strings and vectors, so the
// tracer fills one per syscall without allocating in steady state.
// Thread-safety: none; one thread fills and evaluates an Event.
#pragma once

#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sidetrace::event {

// Falco event types we produce. Names (EventTypeName) are Falco's.
enum class EventType : uint8_t {
  kExecve, kExecveat, kClone, kClone3, kFork, kVfork, kProcExit,
  kOpen, kOpenat, kOpenat2, kCreat,
  kConnect, kAccept, kAccept4, kBind, kListen, kSocket, kSendto, kSendmsg,
  kDup, kDup2, kDup3, kFcntl, kClose,
  kChdir, kFchdir,
  kSymlink, kSymlinkat, kLink, kLinkat, kUnlink, kUnlinkat,
  kRename, kRenameat, kRenameat2, kMkdir, kMkdirat,
  kChmod, kFchmod, kFchmodat,
  kSetuid, kSetgid, kSetreuid, kSetregid, kSetresuid, kSetresgid, kCapset,
  kPtrace, kMemfdCreate, kInitModule, kFinitModule, kMount, kIoUringSetup,
  kCount  // not an event type: the number of them
};
inline constexpr size_t kEventTypeCount = static_cast<size_t>(EventType::kCount);

// Falco's name ("openat", "procexit"...).
std::string_view EventTypeName(EventType type);
// Inverse of EventTypeName; nullopt for names we never produce.
std::optional<EventType> EventTypeFromName(std::string_view name);

// An IPv4 or IPv6 address with its port, in host byte order for the port.
struct SocketAddress {
  int family = 0;  // AF_INET, AF_INET6, AF_UNIX or 0 (none)
  std::array<uint8_t, 16> ip{};  // 4 bytes used for AF_INET
  uint16_t port = 0;
  std::string unix_path;  // AF_UNIX only

  bool empty() const { return family == 0; }
  // "203.0.113.10", "2001:db8::1", the unix path, or "" when empty.
  std::string IpString() const;
};

// What Falco knows about one file descriptor. typechar is Falco's fd.typechar:
// 'f' file, 'd' directory, '4' IPv4 socket, '6' IPv6 socket, 'u' unix socket,
// 'p' pipe, 'e' eventfd, 's' signalfd, 'l' eventpoll, 'i' inotify,
// 't' timerfd, 'o' unknown/other.
struct FdInfo {
  int64_t num = -1;
  char typechar = 'o';
  std::string name;       // fd.name: absolute path, or "cip:cport->sip:sport"
  uint8_t l4proto = 0;    // IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, 0 unknown
  SocketAddress local;    // fd.lip / fd.lport
  SocketAddress remote;   // fd.rip / fd.rport
  // Client/server roles (fd.cip/fd.sip): for a connect() the local end is the
  // client; for an accept() the remote end is.
  bool local_is_server = false;
  bool connected = false;
  uint32_t open_flags = 0;  // O_* flags the fd was opened with (files)

  void Clear();
};

// One thread group as the process table knows it. `parent` links ancestors
// for proc.pname / proc.aname[N]; it may be null (outside the traced tree).
struct ProcessInfo {
  int32_t pid = 0;         // proc.pid (thread group id, as seen by the agent)
  int32_t ppid = 0;        // proc.ppid
  int32_t vpid = 0;        // proc.vpid (pid in the process's own namespace)
  int32_t sid = 0;         // proc.sid
  int32_t tty = 0;         // proc.tty (controlling terminal device, 0 if none)
  uint32_t uid = 0, gid = 0;
  uint32_t loginuid = UINT32_MAX;  // user.loginuid (-1 when unset)
  std::string user_name;   // user.name (from the container's /etc/passwd)
  std::string group_name;  // group.name
  std::string name;        // proc.name: the executable's base name (comm)
  std::string exe;         // proc.exe: argv[0] as given
  std::string exepath;     // proc.exepath: full path of the executable
  std::vector<std::string> args;  // proc.args: argv[1..]
  std::vector<std::string> env;   // proc.env: KEY=VALUE
  std::string cwd;         // proc.cwd, with a trailing '/' as Falco has it
  uint64_t start_ns = 0;   // wall-clock ns of the last exec/clone (proc.duration)
  uint64_t cap_effective = 0;      // thread.cap_effective bitmask
  bool exe_from_memfd = false;     // proc.is_exe_from_memfd
  bool exe_upper_layer = false;    // proc.is_exe_upper_layer (false: unknowable)
  std::shared_ptr<const ProcessInfo> parent;
};

// Where the workload runs: container and ECS task metadata, shared by every
// event from one agent. Unknown values are empty (printed as <NA>).
struct ContainerInfo {
  std::string id, name, image, image_repository, image_tag;
  bool privileged = false;
  // Other metadata by Falco-style key ("aws.ecs.task.arn", "aws.ecs.cluster"...).
  std::vector<std::pair<std::string, std::string>> extra;
};

struct Event {
  EventType type = EventType::kCount;
  uint64_t num = 0;      // evt.num: per-agent sequence number
  uint64_t time_ns = 0;  // evt.time: wall clock, ns since the epoch
  int64_t res = 0;       // evt.res / evt.rawres: return value, -errno on failure
  int32_t tid = 0;       // thread.tid
  const ProcessInfo* proc = nullptr;
  const ContainerInfo* container = nullptr;
  FdInfo fd;             // the fd this event is about (opened, connected...)
  // proc.cwd has not been read: a check on it is unknown to MayMatch (the
  // agent reads a working directory from /proc only when a rule needs it).
  bool proc_cwd_unknown = false;

  // Resets every field; keeps the capacity of strings and vectors.
  void Clear();

  // evt.arg.NAME, in the order Falco's event table lists them (evt.arg[N]).
  // Values are rendered as Falco renders them: flags as "O_RDONLY|O_CLOEXEC",
  // paths absolute, numbers in decimal.
  // Appends evt.arg.NAME, or overwrites it when already set.
  void SetArg(std::string_view name, std::string_view value);
  // Value of evt.arg.NAME, or nullptr.
  const std::string* Arg(std::string_view name) const;
  size_t arg_count() const { return args_used_; }
  const std::pair<std::string, std::string>& ArgAt(size_t i) const { return args_[i]; }

 private:
  std::vector<std::pair<std::string, std::string>> args_;
  size_t args_used_ = 0;  // args_[0..args_used_) are live; the rest is capacity
};

}  // namespace sidetrace::event
