// sidetrace-instrument: golden outputs on realistic task definitions
// (fixtures/instrument/), idempotence, the RegisterTaskDefinition shape of
// every output, and the CLI's exit codes and error texts (the real binary).
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "agent/instrument/instrument.h"

namespace fs = std::filesystem;
namespace inst = sidetrace::instrument;
using inst::Json;
using sidetrace::Status;

namespace {

std::string SourceDir() {
  const char* s = std::getenv("SIDETRACE_SOURCE_DIR");
  REQUIRE(s != nullptr);
  return s;
}

std::string Tool() {
  const char* b = std::getenv("SIDETRACE_BUILD_DIR");
  REQUIRE(b != nullptr);
  return std::string(b) + "/agent/instrument/sidetrace-instrument";
}

std::string FixturePath(const std::string& name) { return SourceDir() + "/tests/deploy/fixtures/instrument/" + name; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  INFO(path);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inst::Options BaseOptions() {
  inst::Options o;
  o.agent_image = "111122223333.dkr.ecr.us-east-1.amazonaws.com/sidetrace-agent:0.1.0";
  o.orchestrator = "orchestrator.sidetrace.internal:6667";
  o.access_key_secret = "arn:aws:ssm:us-east-1:111122223333:parameter/sidetrace/access-key";
  return o;
}

inst::ImageConfigMap Images(const std::string& fixture) {
  auto images = inst::ParseImageConfig(ReadFile(FixturePath(fixture)), fixture);
  REQUIRE(images.ok());
  return *images;
}

std::string Render(const inst::Outcome& o) { return o.task_definition.dump(2) + "\n"; }

// The RegisterTaskDefinition request's members (ECS API reference), and
// ContainerDefinition's. An output with any other key would be rejected.
const std::set<std::string> kTaskKeys = {
    "family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "volumes",
    "placementConstraints", "requiresCompatibilities", "cpu", "memory", "tags", "pidMode", "ipcMode",
    "proxyConfiguration", "inferenceAccelerators", "ephemeralStorage", "runtimePlatform",
    "enableFaultInjection"};
const std::set<std::string> kContainerKeys = {
    "name", "image", "repositoryCredentials", "cpu", "memory", "memoryReservation", "links",
    "portMappings", "essential", "restartPolicy", "entryPoint", "command", "environment",
    "environmentFiles", "mountPoints", "volumesFrom", "linuxParameters", "secrets", "dependsOn",
    "startTimeout", "stopTimeout", "versionConsistency", "hostname", "user", "workingDirectory",
    "disableNetworking", "privileged", "readonlyRootFilesystem", "dnsServers", "dnsSearchDomains",
    "extraHosts", "dockerSecurityOptions", "interactive", "pseudoTerminal", "dockerLabels", "ulimits",
    "logConfiguration", "healthCheck", "systemControls", "resourceRequirements",
    "firelensConfiguration", "credentialSpecs"};

void CheckRegisterShape(const Json& td) {
  REQUIRE(td.is_object());
  for (const auto& [key, value] : td.items()) {
    INFO("task definition key " << key);
    CHECK(kTaskKeys.count(key) == 1);
  }
  REQUIRE(td["containerDefinitions"].is_array());
  std::set<std::string> names;
  for (const Json& c : td["containerDefinitions"]) {
    INFO("container " << c.value("name", std::string("?")));
    for (const auto& [key, value] : c.items()) {
      INFO("container key " << key);
      CHECK(kContainerKeys.count(key) == 1);
    }
    CHECK(names.insert(c["name"].get<std::string>()).second);
    for (const char* list : {"entryPoint", "command"}) {
      if (c.contains(list)) {
        REQUIRE(c[list].is_array());
        for (const Json& s : c[list]) CHECK(s.is_string());
      }
    }
    for (const Json& d : c.value("dependsOn", Json::array())) {
      CHECK(std::set<std::string>{"START", "COMPLETE", "SUCCESS", "HEALTHY"}.count(d["condition"].get<std::string>()) == 1);
    }
  }
  // Every volumesFrom/dependsOn target exists.
  for (const Json& c : td["containerDefinitions"]) {
    for (const Json& v : c.value("volumesFrom", Json::array())) CHECK(names.count(v["sourceContainer"].get<std::string>()) == 1);
    for (const Json& d : c.value("dependsOn", Json::array())) CHECK(names.count(d["containerName"].get<std::string>()) == 1);
  }
}

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs the real binary with `args` (shell words, already quoted), stdin from
// `stdin_path` or /dev/null.
RunResult RunTool(const std::string& args, const std::string& stdin_path = "/dev/null",
                  const std::string& env = "") {
  static int counter = 0;
  fs::path dir = fs::temp_directory_path() / ("deploy_instrument_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string out = (dir / ("out" + std::to_string(counter))).string();
  std::string err = (dir / ("err" + std::to_string(counter++))).string();
  std::string cmd = "env -u SIDETRACE_ORCHESTRATOR -u SIDETRACE_AGENT_IMAGE " + env + " '" + Tool() + "' " +
                    args + " <'" + stdin_path + "' >'" + out + "' 2>'" + err + "'";
  int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out);
  r.err = ReadFile(err);
  return r;
}

const std::string kCliBase =
    "--agent-image 111122223333.dkr.ecr.us-east-1.amazonaws.com/sidetrace-agent:0.1.0 "
    "--orchestrator orchestrator.sidetrace.internal:6667 "
    "--access-key-secret arn:aws:ssm:us-east-1:111122223333:parameter/sidetrace/access-key ";

}  // namespace

TEST_CASE("deploy: single container with entryPoint and command", "[instrument]") {
  auto out = inst::InstrumentTaskDefinition(ReadFile(FixturePath("single.json")), "single.json", BaseOptions());
  REQUIRE(out.ok());
  CHECK(Render(*out) == ReadFile(FixturePath("single.expected.json")));
  CHECK(out->instrumented == std::vector<std::string>{"api"});
  CHECK(out->warnings.empty());
  CheckRegisterShape(out->task_definition);
  const Json& api = out->task_definition["containerDefinitions"][0];
  CHECK(api["entryPoint"] == Json::array({"/opt/sidetrace/bin/sidetrace-agent", "--", "/usr/local/bin/docker-entrypoint.sh"}));
  CHECK(api["command"] == Json::array({"gunicorn", "--bind", "0.0.0.0:8000", "billing.wsgi"}));
}

TEST_CASE("deploy: sidecars, dependsOn, existing linuxParameters/volumesFrom/secrets, image config", "[instrument]") {
  inst::Options o = BaseOptions();
  o.exclude_containers = {"log_router"};
  o.images = Images("images.json");
  o.agent_mode = "ptrace";
  o.fail_closed = true;
  o.agent_args = {"--log-level=info"};
  auto out = inst::InstrumentTaskDefinition(ReadFile(FixturePath("sidecars.json")), "sidecars.json", o);
  REQUIRE(out.ok());
  CHECK(Render(*out) == ReadFile(FixturePath("sidecars.expected.json")));
  CHECK(out->instrumented == std::vector<std::string>{"config-init", "web", "app"});
  CheckRegisterShape(out->task_definition);
  const Json& cs = out->task_definition["containerDefinitions"];
  // busybox has no ENTRYPOINT: the task's command runs directly under the agent.
  CHECK(cs[0]["entryPoint"] == Json::array({"/opt/sidetrace/bin/sidetrace-agent", "--mode=ptrace", "--fail-closed",
                                            "--log-level=info", "--"}));
  // nginx: neither given in the task definition, both from the image.
  CHECK(cs[1]["entryPoint"].back() == "/docker-entrypoint.sh");
  CHECK(cs[1]["command"] == Json::array({"nginx", "-g", "daemon off;"}));
  // app: only command given; the image's ENTRYPOINT (tini) still runs it,
  // and the image's CMD (index.js) is not used.
  CHECK(cs[2]["command"] == Json::array({"node", "server.js"}));
  CHECK(cs[2]["linuxParameters"]["capabilities"]["add"] == Json::array({"NET_BIND_SERVICE", "SYS_PTRACE"}));
  CHECK(cs[2]["linuxParameters"]["capabilities"]["drop"] == Json::array({"MKNOD"}));
  CHECK(cs[2]["linuxParameters"]["initProcessEnabled"] == true);
  CHECK(cs[2]["secrets"].size() == 2);
  // log_router untouched; sidecar appended.
  CHECK(cs[3] == Json::parse(ReadFile(FixturePath("sidecars.json")))["containerDefinitions"][3]);
  CHECK(cs[4]["name"] == "sidetrace-agent");
  CHECK(cs[4]["essential"] == false);
}

TEST_CASE("deploy: describe-task-definition output becomes register input", "[instrument]") {
  inst::Options o = BaseOptions();
  o.access_key_secret.clear();
  o.access_key_plaintext = "demo-access-key";
  o.images = Images("playground-images.json");
  auto out = inst::InstrumentTaskDefinition(ReadFile(FixturePath("describe.json")), "describe.json", o);
  REQUIRE(out.ok());
  CHECK(Render(*out) == ReadFile(FixturePath("describe.expected.json")));
  CheckRegisterShape(out->task_definition);
  for (const char* dropped : {"taskDefinitionArn", "revision", "status", "requiresAttributes", "compatibilities",
                              "registeredAt", "registeredBy"}) {
    CHECK_FALSE(out->task_definition.contains(dropped));
  }
  CHECK(out->task_definition["tags"] == Json::array({Json{{"key", "team"}, {"value", "security"}}}));
  REQUIRE(out->warnings.size() == 1);
  CHECK(out->warnings[0].find("--access-key-plaintext") == 0);
  const Json& env = out->task_definition["containerDefinitions"][0]["environment"];
  CHECK(env[1] == Json{{"name", "SIDETRACE_ACCESS_KEY"}, {"value", "demo-access-key"}});
}

TEST_CASE("deploy: instrumenting twice changes nothing", "[instrument]") {
  struct Case {
    const char* input;
    inst::Options options;
  };
  inst::Options sidecars = BaseOptions();
  sidecars.exclude_containers = {"log_router"};
  sidecars.images = Images("images.json");
  sidecars.agent_mode = "ptrace";
  sidecars.fail_closed = true;
  sidecars.agent_args = {"--log-level=info"};
  inst::Options describe = BaseOptions();
  describe.images = Images("playground-images.json");
  for (const Case& c : {Case{"single.json", BaseOptions()}, Case{"sidecars.json", sidecars},
                        Case{"describe.json", describe}}) {
    INFO(c.input);
    auto once = inst::InstrumentTaskDefinition(ReadFile(FixturePath(c.input)), c.input, c.options);
    REQUIRE(once.ok());
    // The second pass needs no image config: the wrapped entryPoint and the
    // command now say everything.
    inst::Options no_images = c.options;
    no_images.images.clear();
    auto twice = inst::InstrumentTaskDefinition(Render(*once), "once.json", no_images);
    REQUIRE(twice.ok());
    CHECK(Render(*twice) == Render(*once));
  }
}

TEST_CASE("deploy: re-instrumenting applies new options in place", "[instrument]") {
  auto once = inst::InstrumentTaskDefinition(ReadFile(FixturePath("single.json")), "single.json", BaseOptions());
  REQUIRE(once.ok());
  inst::Options o = BaseOptions();
  o.orchestrator = "10.0.1.20:6667";
  o.access_key_secret.clear();
  o.access_key_plaintext = "k2";
  o.agent_image = "sidetrace/agent:0.2.0";
  o.fail_closed = true;
  auto twice = inst::InstrumentTaskDefinition(Render(*once), "once.json", o);
  REQUIRE(twice.ok());
  const Json& api = twice->task_definition["containerDefinitions"][0];
  CHECK(api["entryPoint"] == Json::array({"/opt/sidetrace/bin/sidetrace-agent", "--fail-closed", "--",
                                          "/usr/local/bin/docker-entrypoint.sh"}));
  CHECK(api["environment"] == Json::array({Json{{"name", "DJANGO_SETTINGS_MODULE"}, {"value", "billing.settings.prod"}},
                                           Json{{"name", "SIDETRACE_ORCHESTRATOR"}, {"value", "10.0.1.20:6667"}},
                                           Json{{"name", "SIDETRACE_ACCESS_KEY"}, {"value", "k2"}}}));
  CHECK_FALSE(api.contains("secrets"));  // the secret it replaced is gone, and the emptied list with it
  CHECK(api["volumesFrom"].size() == 1);
  CHECK(api["dependsOn"].size() == 1);
  CHECK(api["linuxParameters"]["capabilities"]["add"] == Json::array({"SYS_PTRACE"}));
  CHECK(twice->task_definition["containerDefinitions"][1]["image"] == "sidetrace/agent:0.2.0");
  CHECK(twice->task_definition["containerDefinitions"].size() == 2);
}

TEST_CASE("deploy: --include-containers picks containers; the rest stay as they were", "[instrument]") {
  inst::Options o = BaseOptions();
  o.include_containers = {"app"};
  o.images = Images("images.json");
  auto out = inst::InstrumentTaskDefinition(ReadFile(FixturePath("sidecars.json")), "sidecars.json", o);
  REQUIRE(out.ok());
  CHECK(out->instrumented == std::vector<std::string>{"app"});
  Json original = Json::parse(ReadFile(FixturePath("sidecars.json")));
  CHECK(out->task_definition["containerDefinitions"][0] == original["containerDefinitions"][0]);
  CHECK(out->task_definition["containerDefinitions"][1] == original["containerDefinitions"][1]);
  CHECK(out->task_definition["containerDefinitions"][3] == original["containerDefinitions"][3]);
}

TEST_CASE("deploy: docker image inspect output and image maps", "[instrument]") {
  inst::ImageConfigMap images = Images("images.json");
  CHECK(images.count("nginx:1.25") == 1);
  CHECK(images.count("nginx@sha256:4c0fdaa8b6341bfdeca5f18f7837462c80cff90527ee35ef185571e1c327beac") == 1);
  CHECK(images.count("sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741") == 1);
  CHECK_FALSE(images.at("busybox:1.36").entrypoint.has_value());
  CHECK(images.at("busybox:1.36").cmd == std::vector<std::string>{"sh"});
  CHECK(inst::NormalizeImage("nginx") == "nginx:latest");
  CHECK(inst::NormalizeImage("docker.io/library/nginx:1.25") == "nginx:1.25");
  CHECK(inst::NormalizeImage("registry.local:5000/app") == "registry.local:5000/app:latest");
  CHECK(inst::NormalizeImage("app@sha256:ab") == "app@sha256:ab");

  auto bad = inst::ParseImageConfig(R"({"nginx": {"Entrypoint": "/docker-entrypoint.sh"}})", "map.json");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message() == "map.json: \"nginx\": \"Entrypoint\" must be an array of strings");
  auto not_inspect = inst::ParseImageConfig(R"([{"Id": "sha256:1"}])", "inspect.json");
  REQUIRE_FALSE(not_inspect.ok());
  CHECK(not_inspect.status().message() == "inspect.json: [0]: not a docker image inspect object (no \"Config\")");
}

TEST_CASE("deploy: an unknown start command is refused, naming the container", "[instrument]") {
  auto out = inst::InstrumentTaskDefinition(ReadFile(FixturePath("sidecars.json")), "sidecars.json", BaseOptions());
  REQUIRE_FALSE(out.ok());
  CHECK(out.status().message() ==
        "container \"config-init\" (image \"busybox:1.36\"): start command unknown: it sets \"command\" but not "
        "\"entryPoint\", so the image's ENTRYPOINT decides how the command runs; pass --image-config with the output "
        "of 'docker image inspect busybox:1.36' (or a map {\"busybox:1.36\": {\"Entrypoint\": [...], \"Cmd\": "
        "[...]}}), or set entryPoint and command in the task definition");
  inst::Options o = BaseOptions();
  o.include_containers = {"web"};
  auto web = inst::InstrumentTaskDefinition(ReadFile(FixturePath("sidecars.json")), "sidecars.json", o);
  REQUIRE_FALSE(web.ok());
  CHECK(web.status().message().find("container \"web\" (image \"nginx:1.25\"): start command unknown: it sets "
                                    "neither \"entryPoint\" nor \"command\"") == 0);
  // An image known to have neither ENTRYPOINT nor CMD.
  o.images = *inst::ParseImageConfig(R"({"nginx:1.25": {"Entrypoint": null, "Cmd": null}})", "map.json");
  auto empty = inst::InstrumentTaskDefinition(ReadFile(FixturePath("sidecars.json")), "sidecars.json", o);
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.status().message() ==
        "container \"web\" (image \"nginx:1.25\"): no start command: neither the task definition nor the image "
        "config gives an entrypoint or a command");
}

TEST_CASE("deploy: invalid task definitions are errors naming the field", "[instrument]") {
  auto err = [](const std::string& text) {
    auto r = inst::InstrumentTaskDefinition(text, "td.json", BaseOptions());
    REQUIRE_FALSE(r.ok());
    return r.status().message();
  };
  CHECK(err("{\"family\": ") == "td.json: not valid JSON: line 1, column 12: syntax error while parsing value - unexpected end of input; expected '[', '{', or a literal");
  CHECK(err("[1, 2]") == "td.json: not a task definition: expected an object with \"containerDefinitions\" (RegisterTaskDefinition input) or {\"taskDefinition\": {...}} (describe-task-definition output)");
  CHECK(err(R"({"family": "f", "containerDefinitions": []})") == "td.json: \"containerDefinitions\" must be a non-empty array");
  CHECK(err(R"({"containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["x"]}]})") == "td.json: \"family\" must be a non-empty string");
  CHECK(err(R"({"family": "f", "containerDefinitions": [{"image": "i"}]})") == "containerDefinitions[0]: \"name\" must be a non-empty string");
  CHECK(err(R"({"family": "f", "containerDefinitions": [{"name": "a"}]})") == "container \"a\": \"image\" must be a non-empty string");
  CHECK(err(R"({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": "sh -c x"}]})") == "container \"a\": \"entryPoint\" must be an array of strings");
  CHECK(err(R"({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "command": ["x", 1]}]})") == "container \"a\": \"command\" must be an array of strings");
  CHECK(err(R"({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["x"], "environment": [{"name": "A"}]}]})") == "container \"a\": \"environment\"[0].value must be a string");
  CHECK(err(R"({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["x"], "secrets": {}}]})") == "container \"a\": \"secrets\" must be an array");
  CHECK(err(R"({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["x"], "linuxParameters": {"capabilities": {"add": "SYS_PTRACE"}}}]})") == "container \"a\": linuxParameters.capabilities: \"add\" must be an array of strings");
  CHECK(err(R"({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["x"]}, {"name": "a", "image": "j"}]})") == "container \"a\": duplicate container name");
  CHECK(err(R"({"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "entryPoint": ["/opt/sidetrace/bin/sidetrace-agent", "x"]}]})") == "container \"a\": \"entryPoint\" starts with /opt/sidetrace/bin/sidetrace-agent but has no \"--\" before the workload");
  CHECK(err(R"({"taskDefinition": []})") == "td.json: \"taskDefinition\" must be an object");
}

TEST_CASE("deploy: option errors", "[instrument]") {
  auto err = [](inst::Options o) {
    Status s = inst::ValidateOptions(o);
    REQUIRE_FALSE(s.ok());
    return s.message();
  };
  inst::Options o = BaseOptions();
  o.orchestrator = "orchestrator";
  CHECK(err(o) == "--orchestrator \"orchestrator\": expected HOST:PORT with a port from 1 to 65535");
  o.orchestrator = "host:0";
  CHECK(err(o) == "--orchestrator \"host:0\": expected HOST:PORT with a port from 1 to 65535");
  o = BaseOptions();
  o.access_key_plaintext = "k";
  CHECK(err(o) == "exactly one of --access-key-secret ARN and --access-key-plaintext KEY is required");
  o = BaseOptions();
  o.access_key_secret = "arn:aws:s3:::bucket/key";
  CHECK(err(o) == "--access-key-secret \"arn:aws:s3:::bucket/key\": not an SSM parameter or Secrets Manager ARN");
  o = BaseOptions();
  o.agent_image.clear();
  CHECK(err(o) == "--agent-image is required (the image that holds /opt/sidetrace/bin/sidetrace-agent)");
  o = BaseOptions();
  o.include_containers = {"a"};
  o.exclude_containers = {"b"};
  CHECK(err(o) == "--include-containers and --exclude-containers cannot be used together");
  o = BaseOptions();
  o.access_key_secret = "/sidetrace/access-key";  // an SSM parameter name in the same region
  CHECK(inst::ValidateOptions(o).ok());
  o.orchestrator = "[fd00::5]:6667";
  CHECK(inst::ValidateOptions(o).ok());
}

TEST_CASE("deploy: sidetrace-instrument CLI: output, exit codes, error texts", "[instrument][cli]") {
  SECTION("--help") {
    RunResult r = RunTool("--help");
    CHECK(r.exit_code == 0);
    CHECK(r.out.find("Usage: sidetrace-instrument [OPTIONS] [TASK_DEFINITION.json|-]") == 0);
    CHECK(r.out.find("--access-key-secret") != std::string::npos);
  }
  SECTION("file in, stdout out, same bytes as the golden file") {
    RunResult r = RunTool(kCliBase + "'" + FixturePath("single.json") + "'");
    CHECK(r.exit_code == 0);
    CHECK(r.out == ReadFile(FixturePath("single.expected.json")));
    CHECK(r.err == "sidetrace-instrument: instrumented 1 container(s): api\n");
  }
  SECTION("stdin in, options from SIDETRACE_* variables, comma lists") {
    RunResult r = RunTool(
        "--access-key-secret arn:aws:ssm:us-east-1:111122223333:parameter/sidetrace/access-key --exclude-containers "
        "log_router,web --exclude-containers config-init --mode=ptrace --agent-arg=--log-level=info -",
        FixturePath("sidecars.json"),
        "SIDETRACE_AGENT_IMAGE=111122223333.dkr.ecr.us-east-1.amazonaws.com/sidetrace-agent:0.1.0 "
        "SIDETRACE_ORCHESTRATOR=orchestrator.sidetrace.internal:6667 SIDETRACE_FAIL_CLOSED=1 SIDETRACE_IMAGE_CONFIG='" +
            FixturePath("images.json") + "'");
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.err == "sidetrace-instrument: instrumented 1 container(s): app\n");
    Json out = Json::parse(r.out);
    Json golden = Json::parse(ReadFile(FixturePath("sidecars.expected.json")));
    CHECK(out["containerDefinitions"][2] == golden["containerDefinitions"][2]);
  }
  SECTION("-o writes the file; running on it again is a no-op") {
    fs::path dir = fs::temp_directory_path() / ("deploy_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::string first = (dir / "first.json").string();
    std::string second = (dir / "second.json").string();
    RunResult a = RunTool(kCliBase + "-o '" + first + "' '" + FixturePath("describe.json") + "' --image-config '" +
                          FixturePath("playground-images.json") + "'");
    REQUIRE(a.exit_code == 0);
    CHECK(a.out.empty());
    RunResult b = RunTool(kCliBase + "--output '" + second + "' '" + first + "'");
    REQUIRE(b.exit_code == 0);
    CHECK(ReadFile(first) == ReadFile(second));
    fs::remove_all(dir);
  }
  SECTION("errors exit 2 with one clear line") {
    RunResult not_json = RunTool(kCliBase + "-", FixturePath("../../ecs_metadata_test.cpp"));
    CHECK(not_json.exit_code == 2);
    CHECK(not_json.err.rfind("sidetrace-instrument: <stdin>: not valid JSON: line 1, column 1:", 0) == 0);
    CHECK(not_json.out.empty());

    RunResult unknown = RunTool(kCliBase + "--include-containers app,wbe '" + FixturePath("sidecars.json") + "'");
    CHECK(unknown.exit_code == 2);
    CHECK(unknown.err ==
          "sidetrace-instrument: --include-containers: no container named \"wbe\" in the task definition "
          "(containers: config-init, web, app, log_router)\n");

    RunResult start = RunTool(kCliBase + "'" + FixturePath("describe.json") + "'");
    CHECK(start.exit_code == 2);
    CHECK(start.err.rfind("sidetrace-instrument: container \"playground\" (image "
                          "\"111122223333.dkr.ecr.us-east-1.amazonaws.com/security-playground:latest\"): start command "
                          "unknown: it sets \"command\" but not \"entryPoint\"", 0) == 0);

    RunResult missing = RunTool(kCliBase + "/nonexistent/td.json");
    CHECK(missing.exit_code == 2);
    CHECK(missing.err == "sidetrace-instrument: /nonexistent/td.json: cannot read the file\n");

    RunResult flag = RunTool(kCliBase + "--bogus");
    CHECK(flag.exit_code == 2);
    CHECK(flag.err == "sidetrace-instrument: unrecognised option '--bogus' (see --help)\n");

    RunResult mode = RunTool(kCliBase + "--mode block '" + FixturePath("single.json") + "'");
    CHECK(mode.exit_code == 2);
    CHECK(mode.err == "sidetrace-instrument: --mode \"block\": expected auto, ptrace or off\n");

    RunResult env_switch = RunTool(kCliBase + "'" + FixturePath("single.json") + "'", "/dev/null",
                                   "SIDETRACE_FAIL_CLOSED=maybe");
    CHECK(env_switch.exit_code == 2);
    CHECK(env_switch.err ==
          "sidetrace-instrument: SIDETRACE_FAIL_CLOSED \"maybe\": expected 1/0, true/false, yes/no or on/off\n");

    RunResult required = RunTool("'" + FixturePath("single.json") + "'");
    CHECK(required.exit_code == 2);
    CHECK(required.err ==
          "sidetrace-instrument: --agent-image is required (the image that holds /opt/sidetrace/bin/sidetrace-agent)\n");

    RunResult no_role = RunTool(kCliBase + "-", FixturePath("single.json"));
    CHECK(no_role.exit_code == 0);
  }
}

TEST_CASE("deploy: examples/ecs: the committed instrumented task definition is the tool's output", "[instrument][examples]") {
  // The command examples/ecs/README.md gives.
  const std::string dir = SourceDir() + "/examples/ecs/";
  RunResult r = RunTool(
      "--agent-image 111122223333.dkr.ecr.us-east-1.amazonaws.com/sidetrace/agent:0.1.0 "
      "--orchestrator sidetrace-orchestrator-0123456789abcdef.elb.us-east-1.amazonaws.com:6667 "
      "--access-key-secret arn:aws:ssm:us-east-1:111122223333:parameter/sidetrace/access-key '" +
      dir + "playground-task-definition.json'");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == ReadFile(dir + "playground-task-definition.instrumented.json"));
  CheckRegisterShape(Json::parse(r.out));
  // The example is already instrumented: running on it changes nothing.
  RunResult again = RunTool(
      "--agent-image 111122223333.dkr.ecr.us-east-1.amazonaws.com/sidetrace/agent:0.1.0 "
      "--orchestrator sidetrace-orchestrator-0123456789abcdef.elb.us-east-1.amazonaws.com:6667 "
      "--access-key-secret arn:aws:ssm:us-east-1:111122223333:parameter/sidetrace/access-key '" +
      dir + "playground-task-definition.instrumented.json'");
  REQUIRE(again.exit_code == 0);
  CHECK(again.out == r.out);
  // The orchestrator's own task definition is valid register input, and its
  // secrets are the SSM parameters the Terraform example creates.
  Json orchestrator = Json::parse(ReadFile(dir + "orchestrator-task-definition.json"));
  CheckRegisterShape(orchestrator);
  std::set<std::string> secrets;
  for (const Json& s : orchestrator["containerDefinitions"][0]["secrets"]) secrets.insert(s["name"].get<std::string>());
  CHECK(secrets == std::set<std::string>{"SIDETRACE_BACKEND", "SIDETRACE_ACCESS_KEY"});
}

TEST_CASE("deploy: hand-made sidetrace entries are corrected in place, never duplicated", "[instrument]") {
  // Someone wired the agent by hand, half right: writable volume, old key
  // in plain environment and a stale secret, a sidecar in the middle with
  // a command and essential true.
  const std::string input = R"({
    "family": "hand-made",
    "executionRoleArn": "arn:aws:iam::111122223333:role/ecsTaskExecutionRole",
    "containerDefinitions": [
      {"name": "sidetrace-agent", "image": "old/agent:0.0.1", "essential": true, "command": ["sleep", "infinity"],
       "memory": 64},
      {"name": "app", "image": "app:1", "entryPoint": ["/opt/sidetrace/bin/sidetrace-agent", "--", "/app"],
       "command": ["serve"],
       "volumesFrom": [{"sourceContainer": "sidetrace-agent", "readOnly": false}],
       "dependsOn": [{"containerName": "sidetrace-agent", "condition": "COMPLETE"}],
       "environment": [{"name": "SIDETRACE_ACCESS_KEY", "value": "leaked"}, {"name": "SIDETRACE_ORCHESTRATOR", "value": "old:6667"}],
       "secrets": [{"name": "SIDETRACE_ACCESS_KEY", "valueFrom": "arn:aws:ssm:us-east-1:111122223333:parameter/old"}],
       "linuxParameters": {"capabilities": {"add": ["SYS_PTRACE"]}}}
    ]})";
  auto out = inst::InstrumentTaskDefinition(input, "hand.json", BaseOptions());
  REQUIRE(out.ok());
  const Json& cs = out->task_definition["containerDefinitions"];
  REQUIRE(cs.size() == 2);
  const Json& app = cs[0];
  CHECK(app["entryPoint"] == Json::array({"/opt/sidetrace/bin/sidetrace-agent", "--", "/app"}));
  CHECK(app["command"] == Json::array({"serve"}));
  CHECK(app["volumesFrom"] == Json::array({Json{{"sourceContainer", "sidetrace-agent"}, {"readOnly", true}}}));
  // A dependsOn the user chose is theirs to keep.
  CHECK(app["dependsOn"] == Json::array({Json{{"containerName", "sidetrace-agent"}, {"condition", "COMPLETE"}}}));
  CHECK(app["environment"] == Json::array({Json{{"name", "SIDETRACE_ORCHESTRATOR"}, {"value", "orchestrator.sidetrace.internal:6667"}}}));
  CHECK(app["secrets"] == Json::array({Json{{"name", "SIDETRACE_ACCESS_KEY"},
                                            {"valueFrom", "arn:aws:ssm:us-east-1:111122223333:parameter/sidetrace/access-key"}}}));
  CHECK(app["linuxParameters"]["capabilities"]["add"] == Json::array({"SYS_PTRACE"}));
  const Json& sidecar = cs[1];
  CHECK(sidecar == Json{{"name", "sidetrace-agent"},
                        {"image", "111122223333.dkr.ecr.us-east-1.amazonaws.com/sidetrace-agent:0.1.0"},
                        {"essential", false},
                        {"memory", 64},
                        {"cpu", 0},
                        {"entryPoint", Json::array({"/opt/sidetrace/bin/sidetrace-agent", "--version"})}});
}
