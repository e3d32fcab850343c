// Tracer: runs the workload as a traced child and is its init (PID-1 duties).
// See the comment at the top of tracer.cpp for the mechanism.
//
// Usage: fill TracerOptions, construct, Run() once; Run returns the exit
// code the agent must exit with (the workload's status, 128+N when killed by
// signal N, 127/126 when the program cannot be found/executed).
// Thread-safety: single-threaded; Run owns the calling thread, which must be
// the process's only thread (ptrace and signal handling are per-thread).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/event_sink.h"
#include "agent/syscalls.h"

namespace sidetrace::agent {

enum class TraceMode {
  kAuto,     // seccomp user notification (synchronous wake-up when the kernel has it) + ptrace
  kPtrace,   // ptrace only: process lifecycle events, no syscall trapping
  kOff,      // no tracing: init duties only
};

// Which monitored calls the agent performs itself to learn their exact
// result (see "Results" at the top of tracer.cpp).
enum class EmulateMode {
  kRules,  // an open only when a rule may match it (TracerOptions::may_match)
  kAll,    // every open: exact results for every event written out
  kOff,    // never: the kernel runs every call, results are unknown
};

// Where the process lifecycle (exec above all) comes from (see "Process
// lifecycle" at the top of tracer.cpp).
enum class Lifecycle {
  kSeccomp,  // execve trapped like any monitored call; ptrace only for an exec a rule may care about
  kPtrace,   // ptrace fork, clone, exec and exit events for every process: a complete record
};

struct TracerOptions {
  std::vector<std::string> argv;   // PROGRAM ARGS..., looked up on PATH
  TraceMode mode = TraceMode::kAuto;
  bool fail_closed = false;        // exit non-zero instead of running untraced
  EmulateMode emulate = EmulateMode::kRules;
  Lifecycle lifecycle = Lifecycle::kSeccomp;
  // Whether an enabled rule may match an event whose result is not known
  // yet (rules::Engine::MayMatch). Unset: no rule looks at events.
  std::function<bool(const event::Event&)> may_match;
  // Whether a rule looks at proc.cwd in events of a type. Unset: every event
  // carries it. Otherwise a process's cwd (a /proc read) is learnt only for
  // those, for a relative path, and for events written out.
  std::function<bool(event::EventType)> reads_cwd;
  SysSet trapped = SysSet::All();  // syscalls sent to the agent
  // sendto/sendmsg that name no destination (a connected socket's sends,
  // whose peer was judged at connect) are judged too: a complete record.
  // Off, sendto is trapped only with a destination and sendmsg without one
  // is let through at once.
  bool unaddressed_sends = true;
  // The tracer thread's nice value (the workload keeps its own; unset: as
  // started). See docs/agent.md, "Scheduling". Lowering it needs
  // CAP_SYS_NICE or RLIMIT_NICE; without either the tracer keeps its own.
  std::optional<int> nice;
  EventSink* sink = nullptr;       // not owned; outlives the Tracer
};

class Tracer {
 public:
  explicit Tracer(TracerOptions options);
  ~Tracer();
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  int Run();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Exit code for a wait(2) status, as a shell computes it.
int ExitCodeFromStatus(int status);

}  // namespace sidetrace::agent
