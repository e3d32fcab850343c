// The JSON line form of an Event, as `sidetrace-agent --events-out` writes it
// and `sidetrace-rules eval` reads it back.
//
// One flat object per event, keyed by Falco field names, e.g.
//   {"evt.num":12,"evt.type":"openat","evt.time":1764115200123456789,
//    "evt.res":3,"thread.tid":41,"proc.pid":41,"proc.ppid":1,
//    "proc.name":"cat","proc.exe":"cat","proc.exepath":"/usr/bin/cat",
//    "proc.args":["/etc/shadow"],"proc.cmdline":"cat /etc/shadow",
//    "proc.cwd":"/root/","user.uid":0,...,
//    "proc.ancestors":[{"pid":1,"name":"sh","exe":"sh",...}],
//    "fd.num":3,"fd.typechar":"f","fd.name":"/etc/shadow",
//    "evt.is_open_read":true,"evt.is_open_write":false,
//    "evt.arg.flags":"O_RDONLY",...}
// Keys that only restate others (proc.cmdline, proc.pname) are written for
// people and ignored on read. The environment (proc.env) is never written:
// it routinely holds secrets.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "common/event/event.h"
#include "common/util/status.h"

namespace sidetrace::event {

// Ancestors written under "proc.ancestors", parent first.
inline constexpr int kMaxAncestorsInJson = 8;

// Appends the JSON form of `e` to `out` (no trailing newline). Reuses out's
// capacity; allocates nothing else for plain values.
void AppendEventJson(const Event& e, std::string* out);

// An Event rebuilt from its JSON form, owning what the Event points at.
struct ReplayedEvent {
  Event event;
  std::shared_ptr<ProcessInfo> process;
  std::shared_ptr<ContainerInfo> container;
};

// Parses one JSON object as written by AppendEventJson. On failure the
// Status names the offending key ("evt.type: unknown event type 'foo'").
Result<ReplayedEvent> EventFromJson(const nlohmann::json& object);

}  // namespace sidetrace::event
