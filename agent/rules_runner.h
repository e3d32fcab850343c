// RulesRunner: the Falco rules engine (common/rules) inside the agent. Loads
// the rules files, tells the tracer which syscalls the enabled rules need,
// evaluates every event and writes each alert as one line of Falco JSON.
//
// Default rules: the bundled policies/ folder, looked up next to the binary
// (<bin>/../policies, <bin>/../share/sidetrace/policies, <bin>/../../policies),
// else the same policies compiled into the binary (default_policies.h).
// Policies pushed by the orchestrator replace the loaded ones without
// restarting the workload: OfferPolicies compiles them on the caller's thread
// (the link's), and the tracer thread switches engines before its next event.
// Thread-safety: OfferPolicies may be called from any thread; everything
// else belongs to the tracer thread.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/syscalls.h"
#include "common/event/event.h"
#include "common/rules/rules.h"
#include "common/util/status.h"

namespace sidetrace::agent {

class RulesRunner {
 public:
  struct Options {
    std::vector<std::string> paths;  // files or folders; empty: the bundled policies
    std::string alerts_out = "-";    // "-" is stderr
    std::string min_priority = "debug";
    std::string resolve = "dns";     // dns|hosts|off, for fd.sip.name
  };
  static Result<std::unique_ptr<RulesRunner>> Create(const Options& options);
  ~RulesRunner();

  // Syscalls the enabled rules can match on, plus the process table's.
  SysSet Trapped() const;
  // The syscalls the workload's seccomp filter traps (it cannot change once
  // installed): pushed policies that need more are applied, with a warning
  // naming the calls they cannot see until the workload restarts.
  void SetFilter(const SysSet& trapped) { filter_ = trapped; }
  void OnEvent(const event::Event& e);
  // Whether an enabled rule may match `e`, an event whose result (evt.res,
  // fd.num...) is not known yet: the tracer pays for the result only then.
  bool MayMatch(const event::Event& e);
  // Whether an enabled rule judges or describes events of `type` with
  // proc.cwd (the tracer reads a process's cwd from /proc only then).
  bool ReadsCwd(event::EventType type);

  // Every alert also goes to `forward` (the orchestrator link), on the tracer
  // thread. REQUIRES: before the first event.
  void SetAlertForwarder(std::function<void(nlohmann::json)> forward) { forward_ = std::move(forward); }
  // Compiles `sources` and has the tracer switch to them. A set that does not
  // load is logged and ignored: the running rules stay.
  void OfferPolicies(const std::vector<rules::RuleSource>& sources);

  size_t rules_loaded() const { return engine_->rules().size(); }
  uint64_t alerts() const { return alerts_; }

 private:
  RulesRunner() = default;
  void WriteAlert(const nlohmann::json& alert);
  void TakePendingPolicies();

  rules::LoadOptions load_options_;
  std::unique_ptr<rules::Engine> engine_;
  SysSet filter_ = SysSet::All();
  std::function<void(nlohmann::json)> forward_;
  std::mutex pending_mu_;
  std::unique_ptr<rules::Engine> pending_;  // GUARDED_BY(pending_mu_)
  std::atomic<bool> pending_ready_{false};  // pending_ holds an engine
  int fd_ = -1;
  bool owns_fd_ = false;
  uint64_t alerts_ = 0;
  std::string line_;
};

}  // namespace sidetrace::agent
