// Loads the policies the orchestrator pushes to agents: one Falco rules YAML
// file, or every *.yaml / *.yml file of a folder (sorted by name, not
// recursive). Each file is checked to be well-formed YAML (a sequence at the
// top, as Falco rules files are); rule semantics are the agent's rules
// engine's business. Texts are sent verbatim.
#pragma once

#include <string>
#include <vector>

#include "common/link/protocol.h"
#include "common/util/status.h"

namespace sidetrace::orchestrator {

// Error names the file and, for YAML errors, line:column.
Result<std::vector<link::Policy>> LoadPolicies(const std::string& path);

}  // namespace sidetrace::orchestrator
