// sidetrace-instrument's core: rewrites an ECS task definition so that its
// containers run under sidetrace-agent, the way the agent is deployed on
// Fargate (DESIGN.md, "Where it runs"):
//
//   - a sidecar container "sidetrace-agent" (non-essential, cpu 0, 16 MiB
//     reservation) whose image holds /opt/sidetrace/bin/sidetrace-agent in a
//     volume;
//   - in each instrumented container: volumesFrom that sidecar (read-only),
//     dependsOn it (START), linuxParameters.capabilities.add += SYS_PTRACE,
//     environment SIDETRACE_ORCHESTRATOR, the access key as a secret
//     (valueFrom) named SIDETRACE_ACCESS_KEY, and
//       entryPoint = [agent, <agent flags>, "--", <original entrypoint>...]
//       command    = <original command>
//
// Docker's rule makes the last step subtle: overriding only the entrypoint
// discards the image's CMD, and a task definition that sets only `command`
// runs it through the image's ENTRYPOINT. So the original start command is
// taken from the task definition when it says enough, else from the image
// config (`docker image inspect` output or a map given with --image-config);
// when neither tells, instrumenting fails naming the container. A start
// command is never guessed or lost.
//
// Idempotent: a container whose entryPoint already starts with the agent is
// re-wrapped from what follows its "--", so instrumenting twice with the same
// options gives the same bytes.
//
// Errors are returned as Status (kInvalidArgument) with a one-line message
// that names the container (or containerDefinitions[N]) and the field.
// Thread-safety: pure functions over values.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/util/status.h"

namespace sidetrace::instrument {

inline constexpr std::string_view kAgentPath = "/opt/sidetrace/bin/sidetrace-agent";
inline constexpr std::string_view kSidecarName = "sidetrace-agent";
inline constexpr std::string_view kOrchestratorEnv = "SIDETRACE_ORCHESTRATOR";
inline constexpr std::string_view kAccessKeyEnv = "SIDETRACE_ACCESS_KEY";

using Json = nlohmann::ordered_json;

// An image's start command, as in `docker image inspect`'s Config. nullopt
// and an empty list both mean "none".
struct ImageConfig {
  std::optional<std::vector<std::string>> entrypoint;
  std::optional<std::vector<std::string>> cmd;
};

// Image reference (normalised with NormalizeImage) -> config.
using ImageConfigMap = std::map<std::string, ImageConfig>;

// "nginx" -> "nginx:latest", "docker.io/library/nginx:1.25" -> "nginx:1.25";
// references with a registry host stay as they are (plus ":latest" when they
// have neither tag nor digest).
std::string NormalizeImage(std::string_view image);

// Parses --image-config: either `docker image inspect` output (an array of
// image objects, or one object, each indexed by its RepoTags, RepoDigests and
// Id) or a map {"IMAGE": {"Entrypoint": [...]|null, "Cmd": [...]|null}}.
// `source` names the file in error messages.
Result<ImageConfigMap> ParseImageConfig(std::string_view text, std::string_view source);

struct Options {
  std::string agent_image;          // required
  std::string orchestrator;         // HOST:PORT, required
  std::string access_key_secret;    // SSM parameter name/ARN or Secrets Manager ARN
  std::string access_key_plaintext; // only with --access-key-plaintext
  std::vector<std::string> include_containers;  // empty: all but the sidecar
  std::vector<std::string> exclude_containers;
  std::string agent_mode;   // the agent's --mode (auto, ptrace, off); "" leaves its default
  bool fail_closed = false;  // pass --fail-closed to the agent
  std::vector<std::string> agent_args;  // extra agent flags, before "--"
  ImageConfigMap images;
};

// Checks the options alone (required values, HOST:PORT, ARN shapes).
Status ValidateOptions(const Options& options);

struct Outcome {
  Json task_definition;                   // RegisterTaskDefinition input
  std::vector<std::string> instrumented;  // container names, in order
  std::vector<std::string> warnings;      // one line each, for stderr
};

// Instruments the task definition in `input_text` (RegisterTaskDefinition
// input, or describe-task-definition output {"taskDefinition": ...}).
// `source` names the input in error messages ("task.json", "<stdin>").
Result<Outcome> InstrumentTaskDefinition(std::string_view input_text, std::string_view source,
                                         const Options& options);

}  // namespace sidetrace::instrument
