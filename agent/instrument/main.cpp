// sidetrace-instrument: rewrites an ECS task definition so its containers run
// under sidetrace-agent. See instrument.h for what changes and why, and
// docs/deploy.md for usage. Exit codes: 0 done, 1 the output could not be
// written, 2 bad usage or bad input (the message names the file, container
// and field).
#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "agent/instrument/instrument.h"

namespace po = boost::program_options;
using sidetrace::instrument::Options;

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitOutput = 1;

constexpr const char* kUsage =
    "Usage: sidetrace-instrument [OPTIONS] [TASK_DEFINITION.json|-]\n"
    "\n"
    "Rewrites an ECS task definition (RegisterTaskDefinition input, or the output of\n"
    "`aws ecs describe-task-definition`) so that its containers run under sidetrace-agent,\n"
    "and prints RegisterTaskDefinition input JSON. Reads stdin when no file or '-' is given.\n"
    "Idempotent: instrumenting an instrumented task definition changes nothing.\n"
    "\n"
    "  aws ecs describe-task-definition --task-definition app > app.json\n"
    "  sidetrace-instrument --agent-image ACCOUNT.dkr.ecr.REGION.amazonaws.com/sidetrace-agent:0.1.0 \\\n"
    "      --orchestrator orchestrator.internal:6667 \\\n"
    "      --access-key-secret arn:aws:ssm:REGION:ACCOUNT:parameter/sidetrace/access-key \\\n"
    "      app.json > app-instrumented.json\n"
    "  aws ecs register-task-definition --cli-input-json file://app-instrumented.json\n"
    "\n"
    "Every option can also be set as an environment variable: --agent-image is\n"
    "SIDETRACE_AGENT_IMAGE, --orchestrator is SIDETRACE_ORCHESTRATOR, and so on.\n"
    "\n"
    "Exit status: 0 done, 1 output not written, 2 bad usage or input.\n";

std::vector<std::string> SplitCommaLists(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const std::string& v : values) {
    std::stringstream ss(v);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (!item.empty()) out.push_back(item);
    }
  }
  return out;
}

int Fail(int code, const std::string& message) {
  std::cerr << "sidetrace-instrument: " << message << "\n";
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()
      ("help,h", "print this help and exit")
      ("agent-image", po::value<std::string>(),
       "image of the agent sidecar (holds /opt/sidetrace/bin/sidetrace-agent); required")
      ("orchestrator", po::value<std::string>(),
       "HOST:PORT of sidetrace-orchestrator, set as SIDETRACE_ORCHESTRATOR; required")
      ("access-key-secret", po::value<std::string>(),
       "SSM parameter (name or ARN) or Secrets Manager ARN holding the access key; "
       "injected as the secret SIDETRACE_ACCESS_KEY")
      ("access-key-plaintext", po::value<std::string>(),
       "the access key itself, put in the environment (visible to anyone who can describe the "
       "task definition; for demos only)")
      ("include-containers", po::value<std::vector<std::string>>()->composing(),
       "comma-separated container names to instrument (default: all)")
      ("exclude-containers", po::value<std::vector<std::string>>()->composing(),
       "comma-separated container names to leave alone")
      ("mode", po::value<std::string>(),
       "the agent's tracing mode, passed as --mode=MODE: auto (seccomp notification + ptrace), "
       "ptrace or off (default: the agent's own, auto)")
      ("fail-closed", po::bool_switch(),
       "pass --fail-closed to the agent: the workload does not start when tracing is impossible "
       "(default: it runs untraced)")
      ("agent-arg", po::value<std::vector<std::string>>()->composing(),
       "extra flag for the agent, placed before \"--\" (repeatable), e.g. --agent-arg=--log-level=info")
      ("image-config", po::value<std::string>(),
       "JSON file with `docker image inspect` output, or a map {\"IMAGE\": {\"Entrypoint\": [...], "
       "\"Cmd\": [...]}}, for containers whose task definition does not give the start command")
      ("output,o", po::value<std::string>(), "write the result to FILE instead of stdout");
  po::options_description hidden;
  hidden.add_options()("input", po::value<std::string>());
  po::options_description all;
  all.add(desc).add(hidden);
  po::positional_options_description positional;
  positional.add("input", 1);

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    // SIDETRACE_AGENT_IMAGE -> agent-image, and so on; the command line wins
    // because it was stored first.
    po::store(po::parse_environment(desc, [&desc](const std::string& env) -> std::string {
                constexpr std::string_view kPrefix = "SIDETRACE_";
                if (env.rfind(kPrefix, 0) != 0) return {};
                std::string name = env.substr(kPrefix.size());
                for (char& ch : name) ch = ch == '_' ? '-' : static_cast<char>(std::tolower(ch));
                // A switch takes no value on the command line; its variable
                // is read below.
                if (name == "help" || name == "output" || name == "fail-closed") return {};
                return desc.find_nothrow(name, false) != nullptr ? name : std::string();
              }),
              vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return Fail(kExitUsage, std::string(e.what()) + " (see --help)");
  }
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << desc;
    return 0;
  }

  Options options;
  auto get = [&vm](const char* name) { return vm.count(name) ? vm[name].as<std::string>() : std::string(); };
  options.agent_image = get("agent-image");
  options.orchestrator = get("orchestrator");
  options.access_key_secret = get("access-key-secret");
  options.access_key_plaintext = get("access-key-plaintext");
  if (vm.count("include-containers")) {
    options.include_containers = SplitCommaLists(vm["include-containers"].as<std::vector<std::string>>());
  }
  if (vm.count("exclude-containers")) {
    options.exclude_containers = SplitCommaLists(vm["exclude-containers"].as<std::vector<std::string>>());
  }
  if (vm.count("agent-arg")) options.agent_args = vm["agent-arg"].as<std::vector<std::string>>();
  options.agent_mode = get("mode");
  options.fail_closed = vm["fail-closed"].as<bool>();
  if (const char* env = std::getenv("SIDETRACE_FAIL_CLOSED"); env != nullptr && !options.fail_closed) {
    std::string v = env;
    if (v == "1" || v == "true" || v == "yes" || v == "on") {
      options.fail_closed = true;
    } else if (!v.empty() && v != "0" && v != "false" && v != "no" && v != "off") {
      return Fail(kExitUsage, fmt::format("SIDETRACE_FAIL_CLOSED \"{}\": expected 1/0, true/false, yes/no or on/off", v));
    }
  }
  if (auto s = sidetrace::instrument::ValidateOptions(options); !s.ok()) {
    return Fail(kExitUsage, s.message());
  }

  auto read_all = [](std::istream& in) {
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  if (std::string path = get("image-config"); !path.empty()) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Fail(kExitUsage, fmt::format("--image-config {}: cannot read the file", path));
    auto images = sidetrace::instrument::ParseImageConfig(read_all(in), path);
    if (!images.ok()) return Fail(kExitUsage, images.status().message());
    options.images = std::move(*images);
  }

  std::string input_path = get("input");
  std::string source = input_path.empty() || input_path == "-" ? "<stdin>" : input_path;
  std::string text;
  if (source == "<stdin>") {
    text = read_all(std::cin);
  } else {
    std::ifstream in(input_path, std::ios::binary);
    if (!in) return Fail(kExitUsage, fmt::format("{}: cannot read the file", input_path));
    text = read_all(in);
  }

  auto outcome = sidetrace::instrument::InstrumentTaskDefinition(text, source, options);
  if (!outcome.ok()) return Fail(kExitUsage, outcome.status().message());
  for (const std::string& w : outcome->warnings) std::cerr << "sidetrace-instrument: warning: " << w << "\n";

  std::string json = outcome->task_definition.dump(2) + "\n";
  if (std::string out_path = get("output"); !out_path.empty()) {
    std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
    out << json;
    out.flush();
    if (!out) return Fail(kExitOutput, fmt::format("{}: cannot write the output", out_path));
  } else {
    std::cout << json;
    std::cout.flush();
    if (!std::cout) return Fail(kExitOutput, "cannot write to stdout");
  }
  std::cerr << fmt::format("sidetrace-instrument: instrumented {} container(s): {}\n",
                           outcome->instrumented.size(), fmt::join(outcome->instrumented, ", "));
  return 0;
}
