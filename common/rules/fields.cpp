#include "common/rules/fields.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <charconv>

#include "common/rules/resolver.h"

namespace sidetrace::rules {
namespace {

using event::Event;
using event::EventType;
using event::ProcessInfo;
using event::SocketAddress;
using Kind = FieldValue::Kind;

constexpr uint32_t kAnc = kArgAllowed | kArgNumeric | kMultiValued;

const FieldInfo kFields[] = {
    {"evt.type", FieldId::kEvtType, FieldType::kString, 0, "event type (syscall name)"},
    {"evt.num", FieldId::kEvtNum, FieldType::kInt, 0, "event sequence number"},
    {"evt.time", FieldId::kEvtTime, FieldType::kInt, 0, "event time, ns since the epoch"},
    {"evt.rawtime", FieldId::kEvtTime, FieldType::kInt, 0, "event time, ns since the epoch"},
    {"evt.dir", FieldId::kEvtDir, FieldType::kString, 0, "'<': events are evaluated on syscall exit"},
    {"evt.res", FieldId::kEvtRes, FieldType::kString, 0, "SUCCESS or the errno name"},
    {"evt.rawres", FieldId::kEvtRawres, FieldType::kInt, 0, "return value, -errno on failure"},
    {"evt.failed", FieldId::kEvtFailed, FieldType::kBool, 0, "true when the syscall failed"},
    {"evt.is_open_read", FieldId::kEvtIsOpenRead, FieldType::kBool, 0, "open for reading"},
    {"evt.is_open_write", FieldId::kEvtIsOpenWrite, FieldType::kBool, 0, "open for writing"},
    {"evt.arg", FieldId::kEvtArg, FieldType::kString, kArgAllowed | kArgRequired, "evt.arg.NAME or evt.arg[N]"},
    {"evt.args", FieldId::kEvtArgs, FieldType::kString, 0, "all arguments as NAME=VALUE"},
    {"fd.name", FieldId::kFdName, FieldType::kString, 0, "file path or connection tuple"},
    {"fd.nameraw", FieldId::kFdNameraw, FieldType::kString, 0, "fd.name as given"},
    {"fd.directory", FieldId::kFdDirectory, FieldType::kString, 0, "directory of the file"},
    {"fd.filename", FieldId::kFdFilename, FieldType::kString, 0, "file name without directory"},
    {"fd.num", FieldId::kFdNum, FieldType::kInt, 0, "fd number"},
    {"fd.type", FieldId::kFdType, FieldType::kString, 0, "file, directory, ipv4, ipv6, unix, pipe..."},
    {"fd.typechar", FieldId::kFdTypechar, FieldType::kString, 0, "f, d, 4, 6, u, p..."},
    {"fd.sip", FieldId::kFdSip, FieldType::kIp, 0, "server IP"},
    {"fd.sport", FieldId::kFdSport, FieldType::kInt, 0, "server port"},
    {"fd.sip.name", FieldId::kFdSipName, FieldType::kString, kMultiValued, "domain names resolving to fd.sip"},
    {"fd.cip", FieldId::kFdCip, FieldType::kIp, 0, "client IP"},
    {"fd.cport", FieldId::kFdCport, FieldType::kInt, 0, "client port"},
    {"fd.cip.name", FieldId::kFdCipName, FieldType::kString, kMultiValued, "domain names resolving to fd.cip"},
    {"fd.lip", FieldId::kFdLip, FieldType::kIp, 0, "local IP"},
    {"fd.lport", FieldId::kFdLport, FieldType::kInt, 0, "local port"},
    {"fd.rip", FieldId::kFdRip, FieldType::kIp, 0, "remote IP"},
    {"fd.rport", FieldId::kFdRport, FieldType::kInt, 0, "remote port"},
    {"fd.rip.name", FieldId::kFdRipName, FieldType::kString, kMultiValued, "domain names resolving to fd.rip"},
    {"fd.l4proto", FieldId::kFdL4proto, FieldType::kString, 0, "tcp, udp, icmp"},
    {"fd.net", FieldId::kFdNet, FieldType::kIpNet, kMultiValued, "client or server IP, for CIDR matches"},
    {"fd.snet", FieldId::kFdSnet, FieldType::kIp, 0, "server IP, for CIDR matches"},
    {"fd.cnet", FieldId::kFdCnet, FieldType::kIp, 0, "client IP, for CIDR matches"},
    {"fd.lnet", FieldId::kFdLnet, FieldType::kIp, 0, "local IP, for CIDR matches"},
    {"fd.rnet", FieldId::kFdRnet, FieldType::kIp, 0, "remote IP, for CIDR matches"},
    {"fd.connected", FieldId::kFdConnected, FieldType::kBool, 0, "socket connected"},
    {"proc.name", FieldId::kProcName, FieldType::kString, 0, "executable base name"},
    {"proc.pname", FieldId::kProcPname, FieldType::kString, 0, "parent's proc.name"},
    {"proc.aname", FieldId::kProcAname, FieldType::kString, kAnc, "ancestor's proc.name ([0] self, [1] parent)"},
    {"proc.apid", FieldId::kProcApid, FieldType::kInt, kAnc, "ancestor's pid"},
    {"proc.args", FieldId::kProcArgs, FieldType::kString, 0, "arguments, space separated"},
    {"proc.cmdline", FieldId::kProcCmdline, FieldType::kString, 0, "proc.name and proc.args"},
    {"proc.pcmdline", FieldId::kProcPcmdline, FieldType::kString, 0, "parent's proc.cmdline"},
    {"proc.exeline", FieldId::kProcExeline, FieldType::kString, 0, "proc.exe and proc.args"},
    {"proc.exe", FieldId::kProcExe, FieldType::kString, 0, "argv[0]"},
    {"proc.exepath", FieldId::kProcExepath, FieldType::kString, 0, "full executable path"},
    {"proc.pexe", FieldId::kProcPexe, FieldType::kString, 0, "parent's proc.exe"},
    {"proc.pexepath", FieldId::kProcPexepath, FieldType::kString, 0, "parent's proc.exepath"},
    {"proc.aexe", FieldId::kProcAexe, FieldType::kString, kAnc, "ancestor's proc.exe"},
    {"proc.aexepath", FieldId::kProcAexepath, FieldType::kString, kAnc, "ancestor's proc.exepath"},
    {"proc.cwd", FieldId::kProcCwd, FieldType::kString, 0, "working directory, with a trailing /"},
    {"proc.tty", FieldId::kProcTty, FieldType::kInt, 0, "controlling terminal, 0 if none"},
    {"proc.pid", FieldId::kProcPid, FieldType::kInt, 0, "process id"},
    {"proc.ppid", FieldId::kProcPpid, FieldType::kInt, 0, "parent process id"},
    {"proc.vpid", FieldId::kProcVpid, FieldType::kInt, 0, "pid in the process's namespace"},
    {"proc.sid", FieldId::kProcSid, FieldType::kInt, 0, "session id"},
    {"proc.duration", FieldId::kProcDuration, FieldType::kInt, 0, "ns since the process started"},
    {"proc.is_exe_from_memfd", FieldId::kProcIsExeFromMemfd, FieldType::kBool, 0, "executable is a memfd"},
    {"proc.is_exe_upper_layer", FieldId::kProcIsExeUpperLayer, FieldType::kBool, 0,
     "executable in the overlay upper layer (false: unknowable here)"},
    {"proc.env", FieldId::kProcEnv, FieldType::kString, kArgAllowed, "environment, or proc.env[NAME]"},
    {"thread.tid", FieldId::kThreadTid, FieldType::kInt, 0, "thread id"},
    {"thread.cap_effective", FieldId::kThreadCapEffective, FieldType::kString, 0, "effective capabilities"},
    {"user.uid", FieldId::kUserUid, FieldType::kInt, 0, "user id"},
    {"user.name", FieldId::kUserName, FieldType::kString, kNaIfEmpty, "user name"},
    {"user.loginuid", FieldId::kUserLoginuid, FieldType::kInt, 0, "login uid, -1 when unset"},
    {"group.gid", FieldId::kGroupGid, FieldType::kInt, 0, "group id"},
    {"group.name", FieldId::kGroupName, FieldType::kString, kNaIfEmpty, "group name"},
    {"container.id", FieldId::kContainerId, FieldType::kString, kNaIfEmpty, "container id"},
    {"container.name", FieldId::kContainerName, FieldType::kString, kNaIfEmpty, "container name"},
    {"container.image", FieldId::kContainerImage, FieldType::kString, kNaIfEmpty, "image"},
    {"container.image.repository", FieldId::kContainerImageRepository, FieldType::kString, kNaIfEmpty,
     "image repository"},
    {"container.image.tag", FieldId::kContainerImageTag, FieldType::kString, kNaIfEmpty, "image tag"},
    {"container.privileged", FieldId::kContainerPrivileged, FieldType::kBool, 0, "privileged container"},
};

constexpr std::array<std::string_view, 41> kCapNames = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE"};

bool Str(std::string_view s, FieldValue* out) {
  out->kind = Kind::kStr;
  out->str = s;
  return true;
}
bool Int(int64_t n, FieldValue* out) {
  out->kind = Kind::kInt;
  out->num = n;
  return true;
}
bool Bool(bool b, FieldValue* out) {
  out->kind = Kind::kBool;
  out->num = b;
  return true;
}
bool Addr(const SocketAddress& a, FieldValue* out) {
  if (a.family != AF_INET && a.family != AF_INET6) return false;
  out->kind = Kind::kAddr;
  out->addr = &a;
  return true;
}

bool IsOpen(EventType t) {
  return t == EventType::kOpen || t == EventType::kOpenat || t == EventType::kOpenat2 || t == EventType::kCreat;
}
bool IsSocket(char typechar) { return typechar == '4' || typechar == '6'; }
bool HasFd(const Event& e) { return e.fd.num >= 0 || !e.fd.name.empty(); }

const SocketAddress* Server(const event::FdInfo& fd) { return fd.local_is_server ? &fd.local : &fd.remote; }
const SocketAddress* Client(const event::FdInfo& fd) { return fd.local_is_server ? &fd.remote : &fd.local; }

// The k-th ancestor: 0 is the process itself.
const ProcessInfo* Ancestor(const ProcessInfo* p, int k) {
  for (; p && k > 0; --k) p = p->parent.get();
  return p;
}

void AppendJoined(const std::vector<std::string>& v, std::string* out) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out->push_back(' ');
    out->append(v[i]);
  }
}

std::string_view Cmdline(const ProcessInfo& p, std::string_view head, std::string* scratch) {
  scratch->assign(head);
  if (!p.args.empty()) {
    scratch->push_back(' ');
    AppendJoined(p.args, scratch);
  }
  return *scratch;
}

std::string_view FdTypeName(char c) {
  switch (c) {
    case 'f': return "file";
    case 'd': return "directory";
    case '4': return "ipv4";
    case '6': return "ipv6";
    case 'u': return "unix";
    case 'p': return "pipe";
    case 'e': return "event";
    case 's': return "signalfd";
    case 'l': return "eventpoll";
    case 'i': return "inotify";
    case 't': return "timerfd";
    case 'm': return "memfd";
    default: return "unknown";
  }
}

bool Names(const ResolvedNames* names, const SocketAddress* a, int k, FieldValue* out) {
  if (!names || !a || a->empty()) return false;
  const std::vector<std::string>* v = names->Lookup(*a);
  if (!v || k >= static_cast<int>(v->size())) return false;
  return Str((*v)[k], out);
}

size_t FdSlash(const ExtractContext& ctx) {
  if (ctx.fd_slash == ExtractContext::kSlashNotYet) ctx.fd_slash = LastSlash(ctx.event->fd.name);
  return ctx.fd_slash;
}

// The ExtractContext::built slot of fields whose text is built from parts.
int BuiltSlot(FieldId id, bool has_arg) {
  switch (id) {
    case FieldId::kEvtArgs: return 0;
    case FieldId::kProcArgs: return 1;
    case FieldId::kProcCmdline: return 2;
    case FieldId::kProcExeline: return 3;
    case FieldId::kProcPcmdline: return 4;
    case FieldId::kThreadCapEffective: return 5;
    case FieldId::kProcEnv: return has_arg ? -1 : 6;  // proc.env[NAME] is a view
    default: return -1;
  }
}

}  // namespace

const ResolvedNames* ExtractContext::Names() const {
  if (!names && resolver) names = resolver->Snapshot();
  return names.get();
}

const FieldInfo* AllFields(size_t* count) {
  *count = sizeof(kFields) / sizeof(kFields[0]);
  return kFields;
}

bool BindField(std::string_view name, bool has_arg, std::string_view arg, BoundField* out, std::string* why) {
  *out = BoundField();
  static const FieldInfo kEvtArgInfo = kFields[10];
  static const FieldInfo kExtraInfo = {"aws", FieldId::kContainerExtra, FieldType::kString, kNaIfEmpty,
                                       "task metadata"};
  if (name.substr(0, 8) == "evt.arg." && name.size() > 8 && !has_arg) {
    out->info = &kEvtArgInfo;
    out->arg = std::string(name.substr(8));
    return true;
  }
  if (name.substr(0, 4) == "aws." && !has_arg) {
    out->info = &kExtraInfo;
    out->arg = std::string(name);
    return true;
  }
  for (const auto& f : kFields) {
    if (f.name != name) continue;
    out->info = &f;
    out->type = f.type;
    if (has_arg && !(f.flags & kArgAllowed)) {
      *why = "field '" + std::string(name) + "' takes no argument";
      return false;
    }
    if (!has_arg && (f.flags & kArgRequired)) {
      *why = "field '" + std::string(name) + "' needs an argument";
      return false;
    }
    if (has_arg) {
      out->arg = std::string(arg);
      int n = -1;
      auto [p, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), n);
      bool numeric = ec == std::errc() && p == arg.data() + arg.size() && n >= 0;
      if ((f.flags & kArgNumeric) && !numeric) {
        *why = "field '" + std::string(name) + "' needs a numeric index, got '" + std::string(arg) + "'";
        return false;
      }
      if (numeric && (f.flags & kArgNumeric || f.id == FieldId::kEvtArg)) out->index = n;
    } else {
      out->multi = f.flags & kMultiValued;
    }
    out->built = BuiltSlot(f.id, has_arg);
    return true;
  }
  *why = "unknown field '" + std::string(name) + "'";
  return false;
}

// ExtractField without the cache of built texts (ExtractContext::built).
static bool ExtractUncached(const BoundField& f, const ExtractContext& ctx, int k, std::string* scratch, FieldValue* out) {
  const Event& e = *ctx.event;
  const ProcessInfo* p = e.proc;
  const event::ContainerInfo* c = e.container;
  const event::FdInfo& fd = e.fd;
  const char typechar = ctx.typechar ? ctx.typechar : fd.typechar;
  const bool socket = IsSocket(typechar);
  if (k > 0 && !f.multi) return false;
  switch (f.info->id) {
    case FieldId::kEvtType: return Str(event::EventTypeName(e.type), out);
    case FieldId::kEvtNum: return Int(static_cast<int64_t>(e.num), out);
    case FieldId::kEvtTime: return Int(static_cast<int64_t>(e.time_ns), out);
    case FieldId::kEvtDir: return Str("<", out);
    case FieldId::kEvtRes: return Str(e.res >= 0 ? std::string_view("SUCCESS") : ErrnoName(static_cast<int>(-e.res)), out);
    case FieldId::kEvtRawres: return Int(e.res, out);
    case FieldId::kEvtFailed: return Bool(e.res < 0, out);
    case FieldId::kEvtIsOpenRead:
      if (!IsOpen(e.type)) return false;
      return Bool((fd.open_flags & O_ACCMODE) == O_RDONLY || (fd.open_flags & O_ACCMODE) == O_RDWR, out);
    case FieldId::kEvtIsOpenWrite:
      if (!IsOpen(e.type)) return false;
      return Bool((fd.open_flags & O_ACCMODE) == O_WRONLY || (fd.open_flags & O_ACCMODE) == O_RDWR, out);
    case FieldId::kEvtArg: {
      if (f.index >= 0) {
        if (static_cast<size_t>(f.index) >= e.arg_count()) return false;
        return Str(e.ArgAt(f.index).second, out);
      }
      const std::string* v = e.Arg(f.arg);
      return v ? Str(*v, out) : false;
    }
    case FieldId::kEvtArgs:
      scratch->clear();
      for (size_t i = 0; i < e.arg_count(); ++i) {
        if (i) scratch->push_back(' ');
        scratch->append(e.ArgAt(i).first);
        scratch->push_back('=');
        scratch->append(e.ArgAt(i).second);
      }
      return Str(*scratch, out);

    case FieldId::kFdName:
    case FieldId::kFdNameraw:
      if (!HasFd(e) || fd.name.empty()) return false;
      return Str(fd.name, out);
    case FieldId::kFdDirectory: {
      if (!HasFd(e) || (typechar != 'f' && typechar != 'd') || fd.name.empty()) return false;
      if (typechar == 'd') return Str(fd.name, out);
      std::string_view n = fd.name;
      size_t slash = FdSlash(ctx);
      if (slash == std::string_view::npos) return false;
      return Str(slash == 0 ? n.substr(0, 1) : n.substr(0, slash), out);
    }
    case FieldId::kFdFilename: {
      if (!HasFd(e) || typechar != 'f' || fd.name.empty()) return false;
      std::string_view n = fd.name;
      size_t slash = FdSlash(ctx);
      return Str(slash == std::string_view::npos ? n : n.substr(slash + 1), out);
    }
    case FieldId::kFdNum: return HasFd(e) ? Int(fd.num, out) : false;
    case FieldId::kFdType: return HasFd(e) ? Str(FdTypeName(typechar), out) : false;
    case FieldId::kFdTypechar:
      if (!HasFd(e)) return false;
      if (ctx.typechar) return Str(ctx.typechar == 'd' ? "d" : "f", out);  // the two MayMatch tries
      return Str(std::string_view(&fd.typechar, 1), out);
    case FieldId::kFdSip: case FieldId::kFdSnet: return socket && Addr(*Server(fd), out);
    case FieldId::kFdCip: case FieldId::kFdCnet: return socket && Addr(*Client(fd), out);
    case FieldId::kFdLip: case FieldId::kFdLnet: return socket && Addr(fd.local, out);
    case FieldId::kFdRip: case FieldId::kFdRnet: return socket && Addr(fd.remote, out);
    case FieldId::kFdNet:
      if (!socket || k > 1) return false;
      return Addr(k == 0 ? *Client(fd) : *Server(fd), out) || (k == 0 && Addr(*Server(fd), out));
    case FieldId::kFdSport: return socket && !Server(fd)->empty() && Int(Server(fd)->port, out);
    case FieldId::kFdCport: return socket && !Client(fd)->empty() && Int(Client(fd)->port, out);
    case FieldId::kFdLport: return socket && !fd.local.empty() && Int(fd.local.port, out);
    case FieldId::kFdRport: return socket && !fd.remote.empty() && Int(fd.remote.port, out);
    case FieldId::kFdSipName: return socket && Names(ctx.Names(), Server(fd), k, out);
    case FieldId::kFdCipName: return socket && Names(ctx.Names(), Client(fd), k, out);
    case FieldId::kFdRipName: return socket && Names(ctx.Names(), &fd.remote, k, out);
    case FieldId::kFdL4proto:
      if (!socket) return false;
      switch (fd.l4proto) {
        case IPPROTO_TCP: return Str("tcp", out);
        case IPPROTO_UDP: return Str("udp", out);
        case IPPROTO_ICMP: return Str("icmp", out);
        default: return false;
      }
    case FieldId::kFdConnected: return socket && Bool(fd.connected, out);

    case FieldId::kProcName: return p && Str(p->name, out);
    case FieldId::kProcPname: return p && p->parent && Str(p->parent->name, out);
    case FieldId::kProcPexe: return p && p->parent && Str(p->parent->exe, out);
    case FieldId::kProcPexepath: return p && p->parent && Str(p->parent->exepath, out);
    case FieldId::kProcAname:
    case FieldId::kProcApid:
    case FieldId::kProcAexe:
    case FieldId::kProcAexepath: {
      const ProcessInfo* a = Ancestor(p, f.multi ? k + 1 : f.index);
      if (!a) return false;
      switch (f.info->id) {
        case FieldId::kProcAname: return Str(a->name, out);
        case FieldId::kProcApid: return Int(a->pid, out);
        case FieldId::kProcAexe: return Str(a->exe, out);
        default: return Str(a->exepath, out);
      }
    }
    case FieldId::kProcArgs:
      if (!p) return false;
      scratch->clear();
      AppendJoined(p->args, scratch);
      return Str(*scratch, out);
    case FieldId::kProcCmdline: return p && Str(Cmdline(*p, p->name, scratch), out);
    case FieldId::kProcExeline: return p && Str(Cmdline(*p, p->exe, scratch), out);
    case FieldId::kProcPcmdline: return p && p->parent && Str(Cmdline(*p->parent, p->parent->name, scratch), out);
    case FieldId::kProcExe: return p && Str(p->exe, out);
    case FieldId::kProcExepath: return p && Str(p->exepath, out);
    case FieldId::kProcCwd: return p && Str(p->cwd, out);
    case FieldId::kProcTty: return p && Int(p->tty, out);
    case FieldId::kProcPid: return p && Int(p->pid, out);
    case FieldId::kProcPpid: return p && Int(p->ppid, out);
    case FieldId::kProcVpid: return p && Int(p->vpid, out);
    case FieldId::kProcSid: return p && Int(p->sid, out);
    case FieldId::kProcDuration:
      if (!p || !p->start_ns || e.time_ns < p->start_ns) return false;
      return Int(static_cast<int64_t>(e.time_ns - p->start_ns), out);
    case FieldId::kProcIsExeFromMemfd: return p && Bool(p->exe_from_memfd, out);
    case FieldId::kProcIsExeUpperLayer: return p && Bool(p->exe_upper_layer, out);
    case FieldId::kProcEnv:
      if (!p) return false;
      if (f.arg.empty()) {
        scratch->clear();
        AppendJoined(p->env, scratch);
        return Str(*scratch, out);
      }
      for (const auto& kv : p->env) {
        if (kv.size() > f.arg.size() && kv[f.arg.size()] == '=' && kv.compare(0, f.arg.size(), f.arg) == 0) {
          return Str(std::string_view(kv).substr(f.arg.size() + 1), out);
        }
      }
      return false;

    case FieldId::kThreadTid: return Int(e.tid, out);
    case FieldId::kThreadCapEffective:
      if (!p) return false;
      scratch->clear();
      for (size_t i = 0; i < kCapNames.size(); ++i) {
        if (p->cap_effective & (uint64_t{1} << i)) {
          if (!scratch->empty()) scratch->push_back(' ');
          scratch->append(kCapNames[i]);
        }
      }
      return Str(*scratch, out);
    case FieldId::kUserUid: return p && Int(p->uid, out);
    case FieldId::kUserName: return p && Str(p->user_name, out);
    case FieldId::kUserLoginuid:
      return p && Int(p->loginuid == UINT32_MAX ? -1 : static_cast<int64_t>(p->loginuid), out);
    case FieldId::kGroupGid: return p && Int(p->gid, out);
    case FieldId::kGroupName: return p && Str(p->group_name, out);

    // Everything the agent traces runs in the workload's container, so the
    // container fields exist (possibly empty) whenever the agent gave any.
    case FieldId::kContainerId: return c ? Str(c->id, out) : Str("", out);
    case FieldId::kContainerName: return c && Str(c->name, out);
    case FieldId::kContainerImage: return c && Str(c->image, out);
    case FieldId::kContainerImageRepository: return c && Str(c->image_repository, out);
    case FieldId::kContainerImageTag: return c && Str(c->image_tag, out);
    case FieldId::kContainerPrivileged: return c && Bool(c->privileged, out);
    case FieldId::kContainerExtra:
      if (!c) return false;
      for (const auto& [key, value] : c->extra) {
        if (key == f.arg) return Str(value, out);
      }
      return false;
  }
  return false;
}

bool ExtractField(const BoundField& f, const ExtractContext& ctx, int k, std::string* scratch, FieldValue* out) {
  if (f.built < 0) return ExtractUncached(f, ctx, k, scratch, out);
  const uint8_t bit = static_cast<uint8_t>(1u << f.built);
  std::string& text = ctx.built[f.built];
  if (!(ctx.built_ready & bit)) {
    if (!ExtractUncached(f, ctx, k, &text, out)) return false;
    ctx.built_ready |= bit;
  }
  return k == 0 && Str(text, out);
}

size_t LastSlash(std::string_view s) {
  const void* p = memrchr(s.data(), '/', s.size());
  return p ? static_cast<size_t>(static_cast<const char*>(p) - s.data()) : std::string_view::npos;
}

bool OpenTypeIsResult(EventType type) { return IsOpen(type); }

bool IsResultField(const BoundField& f, EventType type) {
  // Calls whose return value is a new descriptor: its number is the result.
  const bool fd_result = IsOpen(type) || type == EventType::kAccept || type == EventType::kAccept4 ||
                         type == EventType::kSocket || type == EventType::kMemfdCreate || type == EventType::kDup ||
                         type == EventType::kDup2 || type == EventType::kDup3;
  switch (f.info->id) {
    case FieldId::kEvtRes: case FieldId::kEvtRawres: case FieldId::kEvtFailed: case FieldId::kEvtArgs:
      return true;
    case FieldId::kEvtArg:
      // evt.arg[N]: positions differ between events, so any may be the result.
      return f.index >= 0 || f.arg == "res" || (fd_result && f.arg == "fd");
    default: break;
  }
  // exec: judged at the call's entry, the new image is known from the
  // arguments and the file (proc.name, proc.exe, proc.args, proc.exepath...)
  // but its environment and credentials only once the call has succeeded.
  if (type == EventType::kExecve || type == EventType::kExecveat) {
    switch (f.info->id) {
      case FieldId::kProcEnv: case FieldId::kProcDuration: case FieldId::kUserUid: case FieldId::kUserName:
      case FieldId::kGroupGid: case FieldId::kGroupName:
        return true;
      default: break;
    }
  }
  const bool fd_field = f.info->id >= FieldId::kFdName && f.info->id <= FieldId::kFdConnected;
  if (!fd_field) return false;
  // accept: the connection is the result.
  if (type == EventType::kAccept || type == EventType::kAccept4) return true;
  switch (f.info->id) {
    case FieldId::kFdNum: return fd_result;
    // connect: the local end is bound by the call, and whether it connected is its result.
    case FieldId::kFdName: case FieldId::kFdNameraw: case FieldId::kFdConnected: case FieldId::kFdLip:
    case FieldId::kFdLport: case FieldId::kFdLnet: case FieldId::kFdCip: case FieldId::kFdCport:
    case FieldId::kFdCnet: case FieldId::kFdCipName: case FieldId::kFdNet:
      return type == EventType::kConnect;
    default: return false;
  }
}

void AppendValueText(const FieldValue& v, std::string* out) {
  char buf[64];
  switch (v.kind) {
    case Kind::kNone: out->append("<NA>"); break;
    case Kind::kStr: out->append(v.str); break;
    case Kind::kInt: {
      auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v.num);
      out->append(buf, p);
      break;
    }
    case Kind::kBool: out->append(v.num ? "true" : "false"); break;
    case Kind::kAddr: out->append(v.addr->IpString()); break;
  }
}

std::string_view ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name ? std::string_view(name) : std::string_view("EUNKNOWN");
}

}  // namespace sidetrace::rules
