// The real sidetrace-agent with ECS task metadata: container fields from the
// environment at once, ECS fields from a local v4 endpoint in the
// background, and a metadata endpoint that never answers delays neither the
// workload nor the agent's exit.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/deploy/test_http_server.h"

namespace fs = std::filesystem;
using sidetrace::testing::TestHttpServer;
using namespace std::chrono_literals;

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  REQUIRE(v != nullptr);
  return v;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Fixture(const std::string& name) {
  return ReadFile(Env("SIDETRACE_SOURCE_DIR") + "/tests/deploy/fixtures/metadata/" + name);
}

std::vector<nlohmann::json> Events(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::stringstream ss(ReadFile(path));
  for (std::string line; std::getline(ss, line);) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

// Runs the agent with `env` (shell assignments) around `script` (sh -c),
// returning the agent's exit status.
int RunAgent(const std::string& env, const std::string& events, const std::string& script) {
  std::string cmd = "env -u ECS_CONTAINER_METADATA_URI_V4 " + env + " '" + Env("SIDETRACE_BUILD_DIR") +
                    "/agent/sidetrace-agent' --events-out '" + events + "' -- /bin/sh -c '" + script +
                    "' </dev/null";
  int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("deploy: the agent's events carry ECS task metadata fetched in the background", "[ecs][agent]") {
  TestHttpServer server({{"/v4/c", Fixture("fargate_container.json")}, {"/v4/c/task", Fixture("fargate_task.json")}});
  fs::path dir = fs::temp_directory_path() / ("deploy_agent_ecs_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string events = (dir / "events.jsonl").string();
  // The workload polls the agent's own event file until the ECS fields show
  // up (bounded: 200 rounds), then exits 7; 3 means they never came.
  std::string script = "i=0; while [ $i -lt 200 ]; do grep -q aws.ecs.cluster " + events +
                       " && exit 7; i=$((i+1)); sleep 0.05; done; exit 3";
  int rc = RunAgent("HOSTNAME=envhost ECS_CONTAINER_METADATA_URI_V4=" + server.url("/v4/c"), events, script);
  CHECK(rc == 7);
  auto all = Events(events);
  REQUIRE_FALSE(all.empty());
  const nlohmann::json& last = all.back();
  CHECK(last["container.id"] == "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603");
  CHECK(last["container.name"] == "curl");
  CHECK(last["container.image.repository"] == "111122223333.dkr.ecr.us-west-2.amazonaws.com/curltest");
  CHECK(last["container.image.tag"] == "latest");
  CHECK(last["aws.ecs.task.arn"] == "arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3");
  CHECK(last["aws.ecs.cluster"] == "arn:aws:ecs:us-west-2:111122223333:cluster/default");
  CHECK(last["aws.ecs.task.family"] == "curltest");
  CHECK(last["aws.ecs.task.revision"] == "3");
  CHECK(last["aws.availability_zone"] == "us-west-2a");
  CHECK(last["aws.ecs.launch_type"] == "FARGATE");
  // Every event before the metadata arrived carried the environment's name.
  for (const auto& e : all) {
    if (!e.contains("aws.ecs.cluster")) CHECK(e["container.name"] == "envhost");
  }
  fs::remove_all(dir);
}

TEST_CASE("deploy: a metadata endpoint that never answers delays neither the workload nor the exit", "[ecs][agent]") {
  TestHttpServer silent({}, TestHttpServer::Mode::kSilent);
  fs::path dir = fs::temp_directory_path() / ("deploy_agent_ecs_silent_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string events = (dir / "events.jsonl").string();
  auto start = std::chrono::steady_clock::now();
  int rc = RunAgent("HOSTNAME=envhost ECS_CONTAINER_METADATA_URI_V4=" + silent.url("/v4/c"), events,
                    "cat /etc/hostname >/dev/null; exit 5");
  auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(rc == 5);
  // Without cancellation the retries would run for minutes.
  CHECK(elapsed < 60s);
  auto all = Events(events);
  REQUIRE_FALSE(all.empty());
  for (const auto& e : all) {
    CHECK(e["container.name"] == "envhost");
    CHECK_FALSE(e.contains("aws.ecs.task.arn"));
  }
  fs::remove_all(dir);
}
