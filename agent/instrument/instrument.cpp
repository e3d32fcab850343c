#include "agent/instrument/instrument.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <set>

namespace sidetrace::instrument {
namespace {

// Fields describe-task-definition returns that RegisterTaskDefinition rejects.
constexpr std::string_view kReadOnlyFields[] = {
    "taskDefinitionArn", "revision",     "status",       "requiresAttributes",
    "compatibilities",   "registeredAt", "registeredBy", "deregisteredAt"};

constexpr int kSidecarMemoryReservationMiB = 16;

using StringList = std::vector<std::string>;

std::string Quoted(std::string_view s) { return Json(std::string(s)).dump(); }

// "container "app"" or "containerDefinitions[3]" when the name is unusable.
std::string ContainerLabel(const Json& container, size_t index) {
  auto it = container.find("name");
  if (it != container.end() && it->is_string() && !it->get<std::string>().empty()) {
    return fmt::format("container {}", Quoted(it->get<std::string>()));
  }
  return fmt::format("containerDefinitions[{}]", index);
}

// Reads an optional array of strings. null and absent are nullopt.
Result<std::optional<StringList>> StringArray(const Json& obj, const char* key,
                                              const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<StringList>();
  if (!it->is_array()) {
    return Status::InvalidArgument(fmt::format("{}: \"{}\" must be an array of strings", where, key));
  }
  StringList out;
  for (const Json& v : *it) {
    if (!v.is_string()) {
      return Status::InvalidArgument(fmt::format("{}: \"{}\" must be an array of strings", where, key));
    }
    out.push_back(v.get<std::string>());
  }
  return std::optional<StringList>(std::move(out));
}

// Checks that obj[key], when present, is an array of objects each holding
// string members `members`.
Status CheckObjectArray(const Json& obj, const char* key, std::initializer_list<const char*> members,
                        const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return Status::Ok();
  if (!it->is_array()) {
    return Status::InvalidArgument(fmt::format("{}: \"{}\" must be an array", where, key));
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& item = (*it)[i];
    if (!item.is_object()) {
      return Status::InvalidArgument(fmt::format("{}: \"{}\"[{}] must be an object", where, key, i));
    }
    for (const char* m : members) {
      auto f = item.find(m);
      if (f == item.end() || !f->is_string()) {
        return Status::InvalidArgument(
            fmt::format("{}: \"{}\"[{}].{} must be a string", where, key, i, m));
      }
    }
  }
  return Status::Ok();
}

Status ValidateContainer(const Json& c, size_t index) {
  std::string where = ContainerLabel(c, index);
  if (!c.is_object()) {
    return Status::InvalidArgument(fmt::format("containerDefinitions[{}]: must be an object", index));
  }
  auto name = c.find("name");
  if (name == c.end() || !name->is_string() || name->get<std::string>().empty()) {
    return Status::InvalidArgument(fmt::format("{}: \"name\" must be a non-empty string", where));
  }
  auto image = c.find("image");
  if (image == c.end() || !image->is_string() || image->get<std::string>().empty()) {
    return Status::InvalidArgument(fmt::format("{}: \"image\" must be a non-empty string", where));
  }
  for (const char* key : {"entryPoint", "command"}) {
    auto r = StringArray(c, key, where);
    if (!r.ok()) return r.status();
  }
  if (Status s = CheckObjectArray(c, "environment", {"name", "value"}, where); !s.ok()) return s;
  if (Status s = CheckObjectArray(c, "secrets", {"name", "valueFrom"}, where); !s.ok()) return s;
  if (Status s = CheckObjectArray(c, "volumesFrom", {"sourceContainer"}, where); !s.ok()) return s;
  if (Status s = CheckObjectArray(c, "dependsOn", {"containerName", "condition"}, where); !s.ok()) return s;
  if (auto lp = c.find("linuxParameters"); lp != c.end() && !lp->is_null()) {
    if (!lp->is_object()) {
      return Status::InvalidArgument(fmt::format("{}: \"linuxParameters\" must be an object", where));
    }
    if (auto caps = lp->find("capabilities"); caps != lp->end() && !caps->is_null()) {
      if (!caps->is_object()) {
        return Status::InvalidArgument(
            fmt::format("{}: \"linuxParameters.capabilities\" must be an object", where));
      }
      auto add = StringArray(*caps, "add", where + ": linuxParameters.capabilities");
      if (!add.ok()) return add.status();
    }
  }
  return Status::Ok();
}

// Sets {"name": name, <value_key>: value} in array obj[key], replacing an
// entry of the same name in place, else appending one.
void SetNamed(Json& obj, const char* key, std::string_view name, const char* value_key,
              const std::string& value) {
  Json& arr = obj[key];
  if (!arr.is_array()) arr = Json::array();
  for (Json& item : arr) {
    if (item["name"] == name) {
      if (item.size() != 2 || !item.contains(value_key) || item[value_key] != value) {
        item = Json{{"name", name}, {value_key, value}};
      }
      return;
    }
  }
  arr.push_back(Json{{"name", name}, {value_key, value}});
}

// Removes entries named `name` from obj[key]; drops the key when it empties
// an array that this removal emptied.
void RemoveNamed(Json& obj, const char* key, std::string_view name) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_array()) return;
  size_t before = it->size();
  Json kept = Json::array();
  for (Json& item : *it) {
    if (item["name"] != name) kept.push_back(std::move(item));
  }
  *it = std::move(kept);
  if (before > 0 && it->empty()) obj.erase(key);
}

bool ListHas(const Json& arr, std::string_view field, std::string_view value) {
  if (!arr.is_array()) return false;
  return std::any_of(arr.begin(), arr.end(), [&](const Json& item) {
    return item.is_object() && item.contains(field) && item[std::string(field)] == value;
  });
}

bool IsAgentEntryPoint(const std::optional<StringList>& ep) {
  return ep.has_value() && !ep->empty() && (*ep)[0] == kAgentPath;
}

struct StartCommand {
  StringList entrypoint;
  StringList command;
};

// The container's original start command, per Docker's rules.
Result<StartCommand> OriginalStartCommand(const Json& c, const std::string& where,
                                          const ImageConfigMap& images) {
  auto ep = StringArray(c, "entryPoint", where);
  auto cmd = StringArray(c, "command", where);
  const std::optional<StringList>& td_ep = *ep;
  const std::optional<StringList>& td_cmd = *cmd;
  StartCommand out;
  if (IsAgentEntryPoint(td_ep)) {
    auto dashes = std::find(td_ep->begin(), td_ep->end(), "--");
    if (dashes == td_ep->end()) {
      return Status::InvalidArgument(fmt::format(
          "{}: \"entryPoint\" starts with {} but has no \"--\" before the workload", where, kAgentPath));
    }
    out.entrypoint.assign(dashes + 1, td_ep->end());
    if (td_cmd) out.command = *td_cmd;
  } else if (td_ep && !td_ep->empty()) {
    // An entrypoint override discards the image's CMD: the command is only
    // what the task definition says.
    out.entrypoint = *td_ep;
    if (td_cmd) out.command = *td_cmd;
  } else {
    const std::string image = c["image"].get<std::string>();
    auto found = images.find(NormalizeImage(image));
    if (found == images.end()) {
      std::string why = td_cmd && !td_cmd->empty()
                            ? "it sets \"command\" but not \"entryPoint\", so the image's ENTRYPOINT decides how "
                              "the command runs"
                            : "it sets neither \"entryPoint\" nor \"command\", so the image's ENTRYPOINT and CMD "
                              "are the start command";
      return Status::InvalidArgument(fmt::format(
          "{} (image {}): start command unknown: {}; pass --image-config with the output of "
          "'docker image inspect {}' (or a map {{\"{}\": {{\"Entrypoint\": [...], \"Cmd\": [...]}}}}), "
          "or set entryPoint and command in the task definition",
          where, Quoted(image), why, image, image));
    }
    if (found->second.entrypoint) out.entrypoint = *found->second.entrypoint;
    if (td_cmd && !td_cmd->empty()) {
      out.command = *td_cmd;
    } else if (found->second.cmd) {
      out.command = *found->second.cmd;
    }
  }
  if (out.entrypoint.empty() && out.command.empty()) {
    return Status::InvalidArgument(fmt::format(
        "{} (image {}): no start command: neither the task definition nor the image config gives an "
        "entrypoint or a command",
        where, Quoted(c["image"].get<std::string>())));
  }
  return out;
}

StringList AgentFlags(const Options& options) {
  StringList flags;
  if (!options.agent_mode.empty()) flags.push_back("--mode=" + options.agent_mode);
  if (options.fail_closed) flags.emplace_back("--fail-closed");
  flags.insert(flags.end(), options.agent_args.begin(), options.agent_args.end());
  return flags;
}

Status InstrumentContainer(Json& c, const std::string& where, const Options& options) {
  Result<StartCommand> start = OriginalStartCommand(c, where, options.images);
  if (!start.ok()) return start.status();

  Json entry = Json::array();
  entry.push_back(std::string(kAgentPath));
  for (const std::string& f : AgentFlags(options)) entry.push_back(f);
  entry.push_back("--");
  for (const std::string& e : start->entrypoint) entry.push_back(e);
  c["entryPoint"] = std::move(entry);
  if (start->command.empty()) {
    c.erase("command");
  } else {
    c["command"] = start->command;
  }

  Json& volumes = c["volumesFrom"];
  if (!volumes.is_array()) volumes = Json::array();
  bool has_volume = false;
  for (Json& v : volumes) {
    if (v["sourceContainer"] == kSidecarName) {
      v["readOnly"] = true;
      has_volume = true;
    }
  }
  if (!has_volume) volumes.push_back(Json{{"sourceContainer", kSidecarName}, {"readOnly", true}});

  Json& depends = c["dependsOn"];
  if (!depends.is_array()) depends = Json::array();
  if (!ListHas(depends, "containerName", kSidecarName)) {
    depends.push_back(Json{{"containerName", kSidecarName}, {"condition", "START"}});
  }

  Json& lp = c["linuxParameters"];
  if (!lp.is_object()) lp = Json::object();
  Json& caps = lp["capabilities"];
  if (!caps.is_object()) caps = Json::object();
  Json& add = caps["add"];
  if (!add.is_array()) add = Json::array();
  if (std::find(add.begin(), add.end(), "SYS_PTRACE") == add.end()) add.push_back("SYS_PTRACE");

  SetNamed(c, "environment", kOrchestratorEnv, "value", options.orchestrator);
  if (!options.access_key_secret.empty()) {
    RemoveNamed(c, "environment", kAccessKeyEnv);
    SetNamed(c, "secrets", kAccessKeyEnv, "valueFrom", options.access_key_secret);
  } else {
    RemoveNamed(c, "secrets", kAccessKeyEnv);
    SetNamed(c, "environment", kAccessKeyEnv, "value", options.access_key_plaintext);
  }
  return Status::Ok();
}

Json SidecarDefinition(Json existing, const Options& options) {
  Json sidecar = existing.is_object() ? std::move(existing) : Json::object();
  sidecar["name"] = kSidecarName;
  sidecar["image"] = options.agent_image;
  sidecar["essential"] = false;
  if (!sidecar.contains("cpu")) sidecar["cpu"] = 0;
  if (!sidecar.contains("memory") && !sidecar.contains("memoryReservation")) {
    sidecar["memoryReservation"] = kSidecarMemoryReservationMiB;
  }
  // The sidecar only carries the binary in its image's volume; it prints the
  // version and exits. Its exit does not stop the task (essential: false).
  sidecar["entryPoint"] = Json::array({std::string(kAgentPath), "--version"});
  sidecar.erase("command");
  return sidecar;
}

Result<Json> ParseJson(std::string_view text, std::string_view source) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line L,
    // column C: ..."; keep the part from "line".
    std::string what = e.what();
    size_t at = what.find("at line");
    std::string detail = at == std::string::npos ? what : what.substr(at + 3);
    return Status::InvalidArgument(fmt::format("{}: not valid JSON: {}", source, detail));
  }
}

std::string JoinNames(const StringList& names) { return fmt::format("{}", fmt::join(names, ", ")); }

bool ValidHostPort(std::string_view hp) {
  size_t colon = hp.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::string_view host = hp.substr(0, colon);
  if (host.front() == '[' ? host.back() != ']' : host.find(':') != std::string_view::npos) return false;
  if (host.find_first_of(" /\t") != std::string_view::npos) return false;
  std::string_view port = hp.substr(colon + 1);
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  return ec == std::errc() && ptr == port.data() + port.size() && value >= 1 && value <= 65535;
}

}  // namespace

std::string NormalizeImage(std::string_view image) {
  std::string s(image);
  for (std::string_view prefix : {"docker.io/", "index.docker.io/"}) {
    if (s.rfind(prefix, 0) == 0) {
      s.erase(0, prefix.size());
      if (s.rfind("library/", 0) == 0) s.erase(0, 8);
      break;
    }
  }
  if (s.find('@') == std::string::npos) {
    size_t slash = s.rfind('/');
    size_t colon = s.rfind(':');
    if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) s += ":latest";
  }
  return s;
}

Result<ImageConfigMap> ParseImageConfig(std::string_view text, std::string_view source) {
  Result<Json> doc = ParseJson(text, source);
  if (!doc.ok()) return doc.status();
  ImageConfigMap out;
  auto read_config = [&](const Json& obj, const std::string& where) -> Result<ImageConfig> {
    ImageConfig cfg;
    auto ep = StringArray(obj, "Entrypoint", where);
    if (!ep.ok()) return ep.status();
    auto cmd = StringArray(obj, "Cmd", where);
    if (!cmd.ok()) return cmd.status();
    cfg.entrypoint = *ep;
    cfg.cmd = *cmd;
    return cfg;
  };
  auto add_inspect = [&](const Json& image, size_t index) -> Status {
    std::string where = fmt::format("{}: [{}]", source, index);
    if (!image.is_object() || !image.contains("Config") || !image["Config"].is_object()) {
      return Status::InvalidArgument(fmt::format("{}: not a docker image inspect object (no \"Config\")", where));
    }
    auto cfg = read_config(image["Config"], where + ".Config");
    if (!cfg.ok()) return cfg.status();
    for (const char* key : {"RepoTags", "RepoDigests"}) {
      if (auto it = image.find(key); it != image.end() && it->is_array()) {
        for (const Json& ref : *it) {
          if (ref.is_string()) out[NormalizeImage(ref.get<std::string>())] = *cfg;
        }
      }
    }
    if (auto id = image.find("Id"); id != image.end() && id->is_string()) out[id->get<std::string>()] = *cfg;
    return Status::Ok();
  };

  const Json& j = *doc;
  if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      if (Status s = add_inspect(j[i], i); !s.ok()) return s;
    }
  } else if (j.is_object() && j.contains("Config")) {
    if (Status s = add_inspect(j, 0); !s.ok()) return s;
  } else if (j.is_object()) {
    for (const auto& [image, value] : j.items()) {
      std::string where = fmt::format("{}: {}", source, Quoted(image));
      if (!value.is_object()) {
        return Status::InvalidArgument(
            fmt::format("{}: must be an object {{\"Entrypoint\": [...], \"Cmd\": [...]}}", where));
      }
      auto cfg = read_config(value, where);
      if (!cfg.ok()) return cfg.status();
      out[NormalizeImage(image)] = *cfg;
    }
  } else {
    return Status::InvalidArgument(fmt::format(
        "{}: expected docker image inspect output or a map of image to {{\"Entrypoint\", \"Cmd\"}}", source));
  }
  return out;
}

Status ValidateOptions(const Options& options) {
  if (options.agent_image.empty()) {
    return Status::InvalidArgument("--agent-image is required (the image that holds " +
                                   std::string(kAgentPath) + ")");
  }
  if (options.orchestrator.empty()) {
    return Status::InvalidArgument("--orchestrator HOST:PORT is required");
  }
  if (!ValidHostPort(options.orchestrator)) {
    return Status::InvalidArgument(
        fmt::format("--orchestrator {}: expected HOST:PORT with a port from 1 to 65535", Quoted(options.orchestrator)));
  }
  if (options.access_key_secret.empty() == options.access_key_plaintext.empty()) {
    return Status::InvalidArgument(
        "exactly one of --access-key-secret ARN and --access-key-plaintext KEY is required");
  }
  if (const std::string& arn = options.access_key_secret; arn.rfind("arn:", 0) == 0) {
    if (arn.find(":ssm:") == std::string::npos && arn.find(":secretsmanager:") == std::string::npos) {
      return Status::InvalidArgument(fmt::format(
          "--access-key-secret {}: not an SSM parameter or Secrets Manager ARN", Quoted(arn)));
    }
  }
  if (!options.include_containers.empty() && !options.exclude_containers.empty()) {
    return Status::InvalidArgument("--include-containers and --exclude-containers cannot be used together");
  }
  if (!options.agent_mode.empty() && options.agent_mode != "auto" && options.agent_mode != "ptrace" &&
      options.agent_mode != "off") {
    return Status::InvalidArgument(
        fmt::format("--mode {}: expected auto, ptrace or off", Quoted(options.agent_mode)));
  }
  for (const std::string& arg : options.agent_args) {
    if (arg == "--") return Status::InvalidArgument("--agent-arg \"--\": the instrumenter adds the \"--\" itself");
  }
  return Status::Ok();
}

Result<Outcome> InstrumentTaskDefinition(std::string_view input_text, std::string_view source,
                                         const Options& options) {
  if (Status s = ValidateOptions(options); !s.ok()) return s;
  Result<Json> parsed = ParseJson(input_text, source);
  if (!parsed.ok()) return parsed.status();
  Json doc = std::move(*parsed);

  Json td;
  Json tags;
  if (doc.is_object() && doc.contains("taskDefinition")) {
    if (!doc["taskDefinition"].is_object()) {
      return Status::InvalidArgument(fmt::format("{}: \"taskDefinition\" must be an object", source));
    }
    td = std::move(doc["taskDefinition"]);
    if (auto t = doc.find("tags"); t != doc.end() && t->is_array() && !t->empty()) tags = *t;
  } else {
    td = std::move(doc);
  }
  if (!td.is_object() || !td.contains("containerDefinitions")) {
    return Status::InvalidArgument(fmt::format(
        "{}: not a task definition: expected an object with \"containerDefinitions\" (RegisterTaskDefinition "
        "input) or {{\"taskDefinition\": {{...}}}} (describe-task-definition output)",
        source));
  }
  Json& containers = td["containerDefinitions"];
  if (!containers.is_array() || containers.empty()) {
    return Status::InvalidArgument(
        fmt::format("{}: \"containerDefinitions\" must be a non-empty array", source));
  }
  if (auto family = td.find("family"); family == td.end() || !family->is_string() || family->get<std::string>().empty()) {
    return Status::InvalidArgument(fmt::format("{}: \"family\" must be a non-empty string", source));
  }

  StringList names;
  std::set<std::string> seen;
  for (size_t i = 0; i < containers.size(); ++i) {
    if (Status s = ValidateContainer(containers[i], i); !s.ok()) return s;
    std::string name = containers[i]["name"].get<std::string>();
    if (!seen.insert(name).second) {
      return Status::InvalidArgument(fmt::format("{}: duplicate container name", ContainerLabel(containers[i], i)));
    }
    if (name != kSidecarName) names.push_back(name);
  }

  auto check_names = [&](const StringList& list, const char* flag) -> Status {
    for (const std::string& n : list) {
      if (n == kSidecarName) {
        return Status::InvalidArgument(fmt::format("{}: {} is the agent sidecar itself", flag, Quoted(n)));
      }
      if (!seen.count(n)) {
        return Status::InvalidArgument(fmt::format("{}: no container named {} in the task definition (containers: {})",
                                                   flag, Quoted(n), JoinNames(names)));
      }
    }
    return Status::Ok();
  };
  if (Status s = check_names(options.include_containers, "--include-containers"); !s.ok()) return s;
  if (Status s = check_names(options.exclude_containers, "--exclude-containers"); !s.ok()) return s;

  auto wanted = [&](const std::string& name) {
    if (name == kSidecarName) return false;
    if (!options.include_containers.empty()) {
      return std::find(options.include_containers.begin(), options.include_containers.end(), name) !=
             options.include_containers.end();
    }
    return std::find(options.exclude_containers.begin(), options.exclude_containers.end(), name) ==
           options.exclude_containers.end();
  };

  Outcome outcome;
  Json sidecar;
  Json rebuilt = Json::array();
  for (size_t i = 0; i < containers.size(); ++i) {
    Json& c = containers[i];
    std::string name = c["name"].get<std::string>();
    if (name == kSidecarName) {
      sidecar = std::move(c);
      continue;
    }
    std::string where = ContainerLabel(c, i);
    if (wanted(name)) {
      if (Status s = InstrumentContainer(c, where, options); !s.ok()) return s;
      outcome.instrumented.push_back(name);
    } else {
      auto ep = StringArray(c, "entryPoint", where);
      if (IsAgentEntryPoint(*ep)) {
        outcome.warnings.push_back(fmt::format(
            "{} is excluded but already runs under the agent; left unchanged", where));
      }
    }
    rebuilt.push_back(std::move(c));
  }
  if (outcome.instrumented.empty()) {
    return Status::InvalidArgument(fmt::format("{}: no container left to instrument", source));
  }
  rebuilt.push_back(SidecarDefinition(std::move(sidecar), options));
  containers = std::move(rebuilt);

  for (std::string_view field : kReadOnlyFields) td.erase(std::string(field));
  if (!tags.is_null()) td["tags"] = std::move(tags);

  if (!options.access_key_secret.empty() &&
      (!td.contains("executionRoleArn") || !td["executionRoleArn"].is_string())) {
    outcome.warnings.push_back(
        "the task definition has no \"executionRoleArn\": ECS needs a task execution role allowed to read "
        "the --access-key-secret parameter to inject it");
  }
  if (!options.access_key_plaintext.empty()) {
    outcome.warnings.push_back(
        "--access-key-plaintext puts the access key in the task definition's environment, readable by "
        "anyone who can describe it; prefer --access-key-secret");
  }
  outcome.task_definition = std::move(td);
  return outcome;
}

}  // namespace sidetrace::instrument
