// sidetrace's rules engine: loads Falco rules files and evaluates them on
// events.
//
// Loading follows Falco's three steps: a reader turns YAML documents into
// items (lists, macros, rules, required_* versions), a collector applies them
// in order (later files append to or override earlier items, which keep their
// position), and a compiler turns every enabled rule's condition, with its
// macros, lists and exceptions expanded, into an evaluation tree, indexed by
// the event types the condition can match.
//
// Errors and warnings carry file:line:column and a snippet of the offending
// text (LoadReport). A rule that names a field we do not know is skipped with
// a warning, unless LoadOptions::strict.
//
// Thread-safety: an Engine is immutable after loading; Evaluate and
// MakeAlert are const and may run concurrently on several threads (scratch
// space is per thread). Evaluate and MayMatch allocate nothing in steady
// state.
#pragma once

#include <nlohmann/json.hpp>

#include <bitset>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/event/event.h"
#include "common/rules/resolver.h"
#include "common/util/status.h"

namespace sidetrace::rules {

// Falco's priorities, most severe first.
enum class Priority { kEmergency = 0, kAlert, kCritical, kError, kWarning, kNotice, kInformational, kDebug };

// Parses a priority case-insensitively ("WARNING", "info", "Informational").
bool ParsePriority(std::string_view text, Priority* out);
// "Warning", "Informational"... as Falco prints them.
std::string_view PriorityName(Priority p);
// Parses dns|hosts|off.
bool ParseResolveMode(std::string_view text, ResolveMode* out);

struct LoadOptions {
  bool strict = false;                      // unknown fields are errors, not skipped rules
  ResolveMode resolve = ResolveMode::kDns;  // for fd.sip.name
  Priority min_priority = Priority::kDebug;  // rules less severe are disabled
  std::string hostname;                     // for alerts; empty: gethostname()
  std::string hosts_path = "/etc/hosts";    // ResolveMode::kHosts reads this
  int resolve_refresh_seconds = 300;
};

// A rules file held in memory (pushed by the orchestrator, or inline in
// tests). `name` stands for the file name in messages.
struct RuleSource {
  std::string name;
  std::string yaml;
};

// One error or warning, located in the source.
struct LoadMessage {
  std::string file;
  int line = 0;    // 1-based; 0 when not tied to a place
  int column = 0;  // 1-based
  std::string code;     // e.g. "LOAD_ERR_COMPILE_CONDITION", "LOAD_UNKNOWN_FIELD"
  std::string message;
  std::string snippet;  // the source line and a caret under the column
  std::string item;     // "rule 'Foo'", "macro 'bar'", or empty
  // "file:line:column: message (rule 'Foo')\n<snippet>"
  std::string ToString() const;
};

struct SkippedRule {
  std::string rule;
  std::string reason;
};

struct LoadReport {
  int lists = 0, macros = 0, rules = 0;  // items defined (after append/override merging)
  int rules_loaded = 0;                  // enabled and compiled
  int rules_disabled = 0;                // enabled: false, or below min_priority
  std::vector<SkippedRule> rules_skipped;
  std::vector<LoadMessage> warnings;
  std::vector<LoadMessage> errors;
  std::vector<std::string> required_engine_versions;  // accepted, not enforced
  std::vector<std::string> required_plugins;          // "container 0.2.0"
  nlohmann::json ToJson() const;  // the `sidetrace-rules validate --json` object
};

struct Exception;

// A loaded rule. The evaluation tree is internal.
struct Rule {
  std::string name;
  std::string desc;
  std::string condition;  // as written, after appends
  std::string output;
  Priority priority = Priority::kDebug;
  std::vector<std::string> tags;
  std::string source = "syscall";
  bool enabled = true;
  std::bitset<event::kEventTypeCount> event_types;
  size_t index = 0;  // load order
};

// Falco's JSON output object for one match.
struct Alert {
  std::string uuid;      // version 7: the event's time in ms, then random bits
  uint64_t time_ns = 0;  // the event's time
  std::string rule;
  Priority priority = Priority::kDebug;
  std::string output;    // "HH:MM:SS.nnnnnnnnn: Priority message"
  nlohmann::json output_fields = nlohmann::json::object();
  std::string source = "syscall";
  std::vector<std::string> tags;
  std::string hostname;
  nlohmann::json ToJson() const;
};

// RFC 3339 UTC with nanoseconds: "2026-11-26T00:16:52.123456789Z".
std::string FormatRfc3339(uint64_t time_ns);

class CompiledRules;

class Engine {
 public:
  // Loads files, or every *.yaml / *.yml file of a folder in name order, in
  // the order given. Fails when any error was found; *report (optional)
  // receives counts, warnings and every error.
  static Result<std::unique_ptr<Engine>> LoadFiles(const std::vector<std::string>& paths, const LoadOptions& options,
                                                   LoadReport* report);
  // The same from in-memory sources.
  static Result<std::unique_ptr<Engine>> LoadSources(const std::vector<RuleSource>& sources,
                                                     const LoadOptions& options, LoadReport* report);
  ~Engine();

  // Event types that at least one enabled rule can match: the agent needs
  // to capture only these.
  std::bitset<event::kEventTypeCount> EventTypes() const { return event_types_; }
  // Event types that an enabled rule judges or describes with proc.cwd: of
  // the others, the agent need not know the working directory.
  std::bitset<event::kEventTypeCount> CwdEventTypes() const { return cwd_types_; }

  // Calls on_match(rule) for every enabled rule matching e, in load order.
  template <typename F>
  void Evaluate(const event::Event& e, F&& on_match) const {
    size_t t = static_cast<size_t>(e.type);
    if (t >= event::kEventTypeCount) return;
    BeginEvent(e);
    for (const RuleSlot& slot : by_type_[t]) {
      if (Matches(slot)) on_match(*slot.rule);
    }
  }

  // Whether some enabled rule could match e once the syscall's result is
  // known: checks on result fields count as "maybe" (three-valued logic
  // through and/or/not and memoised macros). False means no rule can
  // match whatever the call returns. Allocates nothing in steady state.
  //
  // For the agent at a syscall's entry, to decide whether the result is
  // worth learning (emulating the call) or the kernel may run it unseen.
  // e is filled as far as known before the call; its result fields are
  // ignored. The result fields, by event type:
  //   - every event: evt.res, evt.rawres, evt.failed, evt.args,
  //     evt.arg.res, and evt.arg[N] (a position may hold the result);
  //   - open, openat, openat2, creat, accept, accept4, socket, memfd_create,
  //     dup, dup2, dup3 (the result is a new descriptor): fd.num, evt.arg.fd;
  //   - open, openat, openat2, creat: whether the path turns out to be a
  //     file or a directory (fd.type, fd.typechar, fd.directory,
  //     fd.filename): e is evaluated as both (e.fd.typechar is ignored),
  //     and MayMatch is true when either may match;
  //   - accept, accept4: every fd.* field (the connection is the result);
  //   - connect: the local end and what depends on it (fd.name, fd.nameraw,
  //     fd.lip, fd.lport, fd.lnet, fd.cip, fd.cport, fd.cnet, fd.cip.name,
  //     fd.net) and fd.connected. The server end (fd.sip, fd.sport,
  //     fd.sip.name, fd.rip...) is the argument, known.
  // Everything else (paths, flags, other arguments, proc.*, user.*,
  // container.*) is taken from e as it is.
  bool MayMatch(const event::Event& e) const;

  Alert MakeAlert(const Rule& rule, const event::Event& e) const;

  // Enabled rules in load order.
  const std::vector<const Rule*>& rules() const { return enabled_; }
  // Every compiled rule, enabled or not (Rule::enabled false, or below
  // min_priority), in load order.
  const std::vector<const Rule*>& all_rules() const { return all_; }
  const std::string& hostname() const { return hostname_; }

  // Internal: one enabled rule and its evaluation tree.
  struct RuleSlot {
    const Rule* rule;
    const void* filter;
    bool needs_names;
  };

 private:
  Engine();
  static Result<std::unique_ptr<Engine>> Build(const std::vector<RuleSource>& sources, const LoadOptions& options,
                                               LoadReport* report);
  // Makes e the event of this thread's evaluation context, forgetting the
  // macro results of the previous one.
  void BeginEvent(const event::Event& e) const;
  bool Matches(const RuleSlot& slot) const;  // on the event BeginEvent set
  void IndexDirectoryOpens();                 // fills by_type_dir_

  std::unique_ptr<CompiledRules> compiled_;
  std::vector<const Rule*> enabled_;
  std::vector<const Rule*> all_;
  std::vector<RuleSlot> by_type_[event::kEventTypeCount];
  // For MayMatch on opens: the slots of by_type_ that can match when the
  // path turns out to be a directory (most rules need fd.typechar 'f').
  std::vector<RuleSlot> by_type_dir_[event::kEventTypeCount];
  std::bitset<event::kEventTypeCount> event_types_;
  std::bitset<event::kEventTypeCount> cwd_types_;
  std::unique_ptr<Resolver> resolver_;
  std::string hostname_;
  size_t memo_slots_ = 0;
};

}  // namespace sidetrace::rules
