// The bundled policies (policies/*.yaml), compiled into the agent at build
// time by agent/embed_policies.cmake, so that an image holding only the
// binary (the docker demo's agent image is FROM scratch) still has them.
// RulesRunner uses them when neither --rules nor a policies/ folder next to
// the binary is found; `sidetrace-agent --print-default-rules` writes them
// out for users to read or start from. Pushed policies replace them as they
// replace any local rules.
// Thread-safety: immutable; safe from any thread.
#pragma once

#include <vector>

#include "common/rules/rules.h"

namespace sidetrace::agent {

// Every policies/*.yaml file, in name order, as read at build time.
const std::vector<rules::RuleSource>& DefaultPolicySources();

}  // namespace sidetrace::agent
