// RulesRunner: the Falco rules engine (common/rules) inside the agent. Loads
// the rules files, tells the tracer which syscalls the enabled rules need,
// evaluates every event and writes each alert as one line of Falco JSON.
//
// Default rules: the bundled policies/ folder, looked up next to the binary
// (<bin>/../policies, <bin>/../share/sidetrace/policies) and then in the
// source tree the binary was built from.
// Thread-safety: none; used by the tracer thread only.
#pragma once

#include <cstdint>
#include <memory>
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
    std::string resolve = "hosts";   // dns|hosts|off, for fd.sip.name
  };
  static Result<std::unique_ptr<RulesRunner>> Create(const Options& options);
  ~RulesRunner();

  // Syscalls the enabled rules can match on, plus the process table's.
  SysSet Trapped() const;
  void OnEvent(const event::Event& e);

  size_t rules_loaded() const { return engine_->rules().size(); }
  uint64_t alerts() const { return alerts_; }

 private:
  RulesRunner() = default;
  std::unique_ptr<rules::Engine> engine_;
  int fd_ = -1;
  bool owns_fd_ = false;
  uint64_t alerts_ = 0;
  std::string line_;
};

}  // namespace sidetrace::agent
