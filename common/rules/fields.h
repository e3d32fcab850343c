// The fields a condition or an output may name, and their extraction from an
// Event without allocating.
//
// Fields are declared in one table (name, type, flags, description), as
// libsinsp does; FindField() resolves a name written in a rule, and
// ExtractField() reads the value for one event. Values are views into the
// event, into static text, or into a caller-provided scratch string, valid
// until the scratch is reused or the event changes.
//
// Missing values (no fd for this event, no parent, an address not resolved)
// are "<NA>": ExtractField returns false, and every comparison on them is
// false, as in Falco.
// Thread-safety: the table is immutable; extraction touches only its
// arguments.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/event/event.h"

namespace sidetrace::rules {

class ResolvedNames;

enum class FieldType : uint8_t {
  kString,
  kInt,      // signed or unsigned integer (ports, pids, uids, times)
  kBool,
  kIp,       // one address (fd.sip); compared against addresses or CIDRs
  kIpNet,    // fd.net: matches when either end is inside
};

enum class FieldId : uint16_t {
  kEvtType, kEvtNum, kEvtTime, kEvtDir, kEvtRes, kEvtRawres, kEvtFailed, kEvtIsOpenRead,
  kEvtIsOpenWrite, kEvtArg, kEvtArgs,
  kFdName, kFdNameraw, kFdDirectory, kFdFilename, kFdNum, kFdType, kFdTypechar, kFdSip, kFdSport,
  kFdSipName, kFdCip, kFdCport, kFdCipName, kFdLip, kFdLport, kFdRip, kFdRport, kFdRipName, kFdL4proto,
  kFdNet, kFdSnet, kFdCnet, kFdLnet, kFdRnet, kFdConnected,
  kProcName, kProcPname, kProcAname, kProcApid, kProcArgs, kProcCmdline, kProcPcmdline, kProcExeline,
  kProcExe, kProcExepath, kProcPexe, kProcPexepath, kProcAexe, kProcAexepath, kProcCwd, kProcTty,
  kProcPid, kProcPpid, kProcVpid, kProcSid, kProcDuration, kProcIsExeFromMemfd,
  kProcIsExeUpperLayer, kProcEnv,
  kThreadTid, kThreadCapEffective,
  kUserUid, kUserName, kUserLoginuid, kGroupGid, kGroupName,
  kContainerId, kContainerName, kContainerImage, kContainerImageRepository, kContainerImageTag,
  kContainerPrivileged, kContainerExtra,
};

enum FieldFlags : uint32_t {
  kArgAllowed = 1,    // name[arg] accepted
  kArgRequired = 2,   // name alone is an error
  kArgNumeric = 4,    // arg is an index (proc.aname[2])
  kMultiValued = 8,   // without an arg the field holds several values (ancestors)
  kNaIfEmpty = 16,    // an empty string prints as <NA> (unknown metadata)
};

struct FieldInfo {
  std::string_view name;
  FieldId id;
  FieldType type;
  uint32_t flags;
  std::string_view desc;
};

// A field as written in a rule, resolved against the table.
struct BoundField {
  const FieldInfo* info = nullptr;
  std::string arg;      // evt.arg.NAME / evt.arg[N] / proc.env[NAME] / container extra key
  int index = -1;       // numeric argument, -1 when none
  bool multi = false;   // iterate values (ancestors, names of an address)
  FieldType type = FieldType::kString;  // after transformers
  int built = -1;       // text built from parts (proc.cmdline...): its ExtractContext::built slot
};

// Resolves `name` with optional `[arg]`; evt.arg.NAME and aws.* are
// accepted. Returns false and fills *why when unknown or misused.
bool BindField(std::string_view name, bool has_arg, std::string_view arg, BoundField* out, std::string* why);

struct FieldValue {
  enum class Kind : uint8_t { kNone, kStr, kInt, kBool, kAddr };
  Kind kind = Kind::kNone;
  std::string_view str;
  int64_t num = 0;
  const event::SocketAddress* addr = nullptr;
};

class Resolver;

struct ExtractContext {
  // Sets the event to read, forgetting what was derived from the last one.
  void SetEvent(const event::Event* e) {
    event = e;
    fd_slash = kSlashNotYet;
    built_ready = 0;
  }
  const event::Event* event = nullptr;
  // Where fd.name's last '/' is (npos: none), found once per event:
  // fd.directory and fd.filename are read by several rules.
  static constexpr size_t kSlashNotYet = std::string_view::npos - 1;
  mutable size_t fd_slash = kSlashNotYet;
  // Texts built from parts (proc.args, proc.cmdline, evt.args...), built
  // once per event: several rules test them (bit i of built_ready: built[i]
  // holds this event's). The strings keep their capacity.
  static constexpr int kBuiltSlots = 7;
  mutable std::string built[kBuiltSlots];
  mutable uint8_t built_ready = 0;
  const Resolver* resolver = nullptr;  // for fd.*.name; may be null
  // The resolver's table, taken on first use for this event (most events
  // never need it, and taking it locks a mutex).
  mutable std::shared_ptr<const ResolvedNames> names;
  const ResolvedNames* Names() const;
  // When not 0, stands for event->fd.typechar (MayMatch tries 'f' and 'd'
  // for an open whose target is not known yet).
  char typechar = 0;
};

// Extracts value number `k` (0 for single-valued fields; ancestors and
// address names count up until false). Returns false when there is no such
// value (<NA>). `scratch` receives text that does not exist in the event.
bool ExtractField(const BoundField& f, const ExtractContext& ctx, int k, std::string* scratch, FieldValue* out);

// For Engine::MayMatch: whether field `f` of an event of type `type` takes
// its value from the syscall's result (evt.res, fd.num of an open...), see
// rules.h. The file type of an open (fd.typechar 'f' or 'd') is handled
// apart: MayMatch tries both (OpenTypeIsResult).
bool IsResultField(const BoundField& f, event::EventType type);
// Whether events of `type` are opens, whose fd.typechar is known only after
// the call.
bool OpenTypeIsResult(event::EventType type);

// Position of the last '/' in s, or npos (memrchr: paths are long and
// fd.directory / fd.filename / basename() run on most events).
size_t LastSlash(std::string_view s);

// Renders a value as Falco prints it; appends to *out.
void AppendValueText(const FieldValue& v, std::string* out);

// Falco's name of an errno ("EINPROGRESS"), or the number as text.
std::string_view ErrnoName(int err);

// Every field, for documentation and `sidetrace-rules list`.
const FieldInfo* AllFields(size_t* count);

}  // namespace sidetrace::rules
