// ECS metadata and container identity: the cgroup/mountinfo parsers on
// inline samples, the v4 metadata mapping on the documented response shapes
// (fixtures/metadata/), and the HTTP client and background fetcher against a
// real HTTP server on 127.0.0.1 (never the real 169.254.170.2).
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/ecs/container_id.h"
#include "common/ecs/ecs_metadata.h"
#include "common/ecs/http_get.h"
#include "common/ecs/metadata_fetcher.h"
#include "tests/deploy/test_http_server.h"

using sidetrace::Status;
using sidetrace::event::ContainerInfo;
using sidetrace::testing::TestHttpServer;
namespace ecs = sidetrace::ecs;
using namespace std::chrono_literals;

namespace {

std::string Fixture(const std::string& name) {
  const char* src = std::getenv("SIDETRACE_SOURCE_DIR");
  REQUIRE(src != nullptr);
  std::ifstream in(std::string(src) + "/tests/deploy/fixtures/metadata/" + name);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Extra(const ContainerInfo& info, const std::string& key) {
  const std::string* v = ecs::ExtraValue(info, key);
  return v != nullptr ? *v : "<NA>";
}

// Polls `cond` until it holds or `limit` passes (the VM is small and loaded).
template <typename F>
bool WaitFor(F cond, std::chrono::milliseconds limit = 20000ms) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return cond();
}

constexpr const char* kDockerId = "3f4ad1e1c0b2a8d0e6c0f0a9b7d6e5f4c3b2a1908f7e6d5c4b3a291817161514";

}  // namespace

TEST_CASE("deploy: container id from /proc/self/cgroup samples", "[ecs][cgroup]") {
  const std::string id = kDockerId;
  SECTION("cgroup v1, docker") {
    std::string text = "12:pids:/docker/" + id + "\n11:memory:/docker/" + id + "\n0::/system.slice/containerd.service\n";
    CHECK(ecs::ContainerIdFromCgroup(text) == id);
  }
  SECTION("cgroup v2, docker with the systemd driver and host cgroupns") {
    CHECK(ecs::ContainerIdFromCgroup("0::/system.slice/docker-" + id + ".scope\n") == id);
  }
  SECTION("kubernetes with containerd (cgroupfs and systemd drivers), cri-o, podman") {
    CHECK(ecs::ContainerIdFromCgroup("0::/kubepods/besteffort/pod6f2c1d7e-1111-4a4a-9c9c-0123456789ab/" + id + "\n") == id);
    CHECK(ecs::ContainerIdFromCgroup(
              "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f2c1d7e_1111_4a4a_9c9c_0123456789ab.slice/cri-containerd-" +
              id + ".scope\n") == id);
    CHECK(ecs::ContainerIdFromCgroup("0::/kubepods.slice/kubepods-pod1.slice/crio-" + id + ".scope\n") == id);
    CHECK(ecs::ContainerIdFromCgroup("0::/machine.slice/libpod-" + id + ".scope/container\n") == id);
  }
  SECTION("ECS on EC2 and on Fargate") {
    CHECK(ecs::ContainerIdFromCgroup("9:perf_event:/ecs/8f03e41243824aea923aca126495f665/" + id + "\n") == id);
    CHECK(ecs::ContainerIdFromCgroup(
              "0::/ecs/e9028f8d5d8e4f258373e7b93ce9a3c3/e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603\n") ==
          "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603");
  }
  SECTION("no container: host, private cgroup namespace, junk") {
    CHECK(ecs::ContainerIdFromCgroup("0::/\n").empty());
    CHECK(ecs::ContainerIdFromCgroup("0::/init.scope\n").empty());
    CHECK(ecs::ContainerIdFromCgroup("0::/user.slice/user-0.slice/session-3.scope\n").empty());
    CHECK(ecs::ContainerIdFromCgroup("").empty());
    CHECK(ecs::ContainerIdFromCgroup("garbage without colons\n").empty());
    // 63 hex digits, uppercase, or a 32-hex task id alone are not container ids.
    CHECK(ecs::ContainerIdFromCgroup("0::/docker/" + id.substr(1) + "\n").empty());
    CHECK(ecs::ContainerIdFromCgroup("0::/docker/3F4AD1E1C0B2A8D0E6C0F0A9B7D6E5F4C3B2A1908F7E6D5C4B3A291817161514\n").empty());
    CHECK(ecs::ContainerIdFromCgroup("0::/ecs/e9028f8d5d8e4f258373e7b93ce9a3c3\n").empty());
  }
}

TEST_CASE("deploy: container id from /proc/self/mountinfo when cgroups say nothing", "[ecs][cgroup]") {
  const std::string id = kDockerId;
  std::string docker =
      "590 539 0:52 / / rw,relatime master:259 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X\n"
      "611 590 254:1 /var/lib/docker/containers/" + id + "/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw\n"
      "612 590 254:1 /var/lib/docker/containers/" + id + "/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw\n";
  CHECK(ecs::ContainerIdFromMountinfo(docker) == id);
  // /var/lib/docker on its own filesystem: the root field starts at it.
  CHECK(ecs::ContainerIdFromMountinfo("611 590 254:1 /containers/" + id +
                                      "/hosts /etc/hosts rw - ext4 /dev/vdb rw\n") == id);
  CHECK(ecs::ContainerIdFromMountinfo("700 600 0:60 /overlay-containers/" + id +
                                      "/userdata/hostname /etc/hostname rw - tmpfs tmpfs rw\n") == id);
  CHECK(ecs::ContainerIdFromMountinfo("22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n").empty());
  // A kubelet termination-log path has /containers/ but no 64-hex id.
  CHECK(ecs::ContainerIdFromMountinfo(
            "700 600 254:1 /var/lib/kubelet/pods/abc/containers/app/1a2b3c4d /dev/termination-log rw - ext4 /dev/vda1 rw\n")
            .empty());

  ContainerInfo info = ecs::ContainerInfoFromTexts("0::/\n", docker, "web-1");
  CHECK(info.id == id.substr(0, 12));
  CHECK(Extra(info, "container.full_id") == id);
  CHECK(info.name == "web-1");

  ContainerInfo none = ecs::ContainerInfoFromTexts("0::/\n", "", "");
  CHECK(none.id.empty());
  CHECK(none.name.empty());
  CHECK(none.extra.empty());

  ContainerInfo fargate = ecs::ContainerInfoFromTexts(
      "0::/ecs/e9028f8d5d8e4f258373e7b93ce9a3c3/e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603\n", "",
      "ip-198-51-100-3.us-west-2.compute.internal");
  CHECK(fargate.id == "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603");
  CHECK(fargate.name == "ip-198-51-100-3.us-west-2.compute.internal");
}

TEST_CASE("deploy: ContainerInfoFromEnvironment reads this process's files and HOSTNAME", "[ecs]") {
  ::setenv("HOSTNAME", "deploy-test-host", 1);
  ContainerInfo info = ecs::ContainerInfoFromEnvironment();
  CHECK(info.name == "deploy-test-host");
  // Whatever this machine is, the id must be what the parsers find in the
  // real files (empty on a plain host).
  std::ifstream cg("/proc/self/cgroup");
  std::stringstream cgs;
  cgs << cg.rdbuf();
  std::ifstream mi("/proc/self/mountinfo");
  std::stringstream mis;
  mis << mi.rdbuf();
  CHECK(info.id == ecs::ContainerInfoFromTexts(cgs.str(), mis.str(), "").id);
  ::unsetenv("HOSTNAME");
  CHECK(ecs::ContainerInfoFromEnvironment().name.empty());
}

TEST_CASE("deploy: image references split like Docker", "[ecs]") {
  auto check = [](const char* image, const char* repo, const char* tag, const char* digest) {
    ecs::ImageReference ref = ecs::ParseImageReference(image);
    INFO(image);
    CHECK(ref.repository == repo);
    CHECK(ref.tag == tag);
    CHECK(ref.digest == digest);
  };
  check("111122223333.dkr.ecr.us-west-2.amazonaws.com/curltest:latest",
        "111122223333.dkr.ecr.us-west-2.amazonaws.com/curltest", "latest", "");
  check("nginx", "nginx", "latest", "");
  check("nginx:1.25-alpine", "nginx", "1.25-alpine", "");
  check("registry.local:5000/team/app", "registry.local:5000/team/app", "latest", "");
  check("registry.local:5000/team/app:v2", "registry.local:5000/team/app", "v2", "");
  check("public.ecr.aws/docker/library/busybox@sha256:3fbc632167424a6d997e74f52b878d7cc478225cffac6bc977eedfe51c7f4e79",
        "public.ecr.aws/docker/library/busybox", "",
        "sha256:3fbc632167424a6d997e74f52b878d7cc478225cffac6bc977eedfe51c7f4e79");
  check("app:1.0@sha256:abcd", "app", "1.0", "sha256:abcd");
}

TEST_CASE("deploy: v4 metadata of a Fargate task maps onto the container fields", "[ecs]") {
  auto info = ecs::ParseEcsMetadata(Fixture("fargate_container.json"), Fixture("fargate_task.json"));
  REQUIRE(info.ok());
  CHECK(info->id == "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603");
  CHECK(info->name == "curl");
  CHECK(info->image == "111122223333.dkr.ecr.us-west-2.amazonaws.com/curltest:latest");
  CHECK(info->image_repository == "111122223333.dkr.ecr.us-west-2.amazonaws.com/curltest");
  CHECK(info->image_tag == "latest");
  std::vector<std::pair<std::string, std::string>> expected = {
      {"container.full_id", "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603"},
      {"aws.ecs.task.arn", "arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3"},
      {"aws.ecs.task.family", "curltest"},
      {"aws.ecs.task.revision", "3"},
      {"aws.ecs.cluster", "arn:aws:ecs:us-west-2:111122223333:cluster/default"},
      {"aws.availability_zone", "us-west-2a"},
      {"aws.ecs.launch_type", "FARGATE"},
      {"aws.ecs.container.arn", "arn:aws:ecs:us-west-2:111122223333:container/1bdcca8b-f905-4ee6-885c-4064cb70f6e6"},
  };
  CHECK(info->extra == expected);
}

TEST_CASE("deploy: v4 container metadata alone (EC2 shape) uses the labels", "[ecs]") {
  auto info = ecs::ParseEcsMetadata(Fixture("ec2_container.json"), "");
  REQUIRE(info.ok());
  CHECK(info->id == "ea32192c8553");
  CHECK(Extra(*info, "container.full_id") == "ea32192c8553fbff06c9340478a2ff089b2bb5646fb718b4ee206641c9086d66");
  CHECK(info->name == "curl");
  CHECK(Extra(*info, "aws.ecs.task.arn") == "arn:aws:ecs:us-west-2:111122223333:task/default/8f03e41243824aea923aca126495f665");
  CHECK(Extra(*info, "aws.ecs.task.family") == "curltest");
  CHECK(Extra(*info, "aws.ecs.task.revision") == "24");
  CHECK(Extra(*info, "aws.ecs.cluster") == "default");
  CHECK(Extra(*info, "aws.availability_zone") == "<NA>");
  CHECK(Extra(*info, "aws.ecs.launch_type") == "<NA>");
}

TEST_CASE("deploy: malformed metadata documents are errors naming the document", "[ecs]") {
  auto not_json = ecs::ParseEcsMetadata("<html>502</html>", "");
  REQUIRE_FALSE(not_json.ok());
  CHECK(not_json.status().message() == "ECS container metadata: not valid JSON");
  auto array = ecs::ParseEcsMetadata("[]", "");
  REQUIRE_FALSE(array.ok());
  CHECK(array.status().message() == "ECS container metadata: expected a JSON object");
  auto no_id = ecs::ParseEcsMetadata(R"({"Name": "app", "DockerId": 7})", "");
  REQUIRE_FALSE(no_id.ok());
  CHECK(no_id.status().message() == "ECS container metadata: field \"DockerId\" missing or not a string");
  auto bad_task = ecs::ParseEcsMetadata(R"({"DockerId": "x"})", "{");
  REQUIRE_FALSE(bad_task.ok());
  CHECK(bad_task.status().message() == "ECS task metadata: not valid JSON");
}

TEST_CASE("deploy: metadata URLs", "[ecs]") {
  auto url = ecs::ParseHttpUrl("http://169.254.170.2/v4/e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603");
  REQUIRE(url.ok());
  CHECK(url->host == "169.254.170.2");
  CHECK(url->port == 80);
  CHECK(url->target == "/v4/e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603");
  auto v6 = ecs::ParseHttpUrl("http://[::1]:8080");
  REQUIRE(v6.ok());
  CHECK(v6->host == "::1");
  CHECK(v6->port == 8080);
  CHECK(v6->target == "/");
  CHECK(ecs::ParseHttpUrl("https://169.254.170.2/v4").status().message() ==
        "metadata URL \"https://169.254.170.2/v4\": only http:// is supported");
  CHECK(ecs::ParseHttpUrl("http://metadata.internal/v4").status().message() ==
        "metadata URL \"http://metadata.internal/v4\": host must be an IP address, not \"metadata.internal\"");
  CHECK(ecs::ParseHttpUrl("http://127.0.0.1:99999/").status().message() ==
        "metadata URL \"http://127.0.0.1:99999/\": bad port \"99999\"");
}

TEST_CASE("deploy: FetchEcsMetadata reads ${URI} and ${URI}/task from a local server", "[ecs][http]") {
  TestHttpServer server({{"/v4/e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603", Fixture("fargate_container.json")},
                         {"/v4/e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603/task", Fixture("fargate_task.json")}});
  auto info = ecs::FetchEcsMetadata(server.url("/v4/e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603/"), 5000ms);
  REQUIRE(info.ok());
  CHECK(info->name == "curl");
  CHECK(Extra(*info, "aws.ecs.launch_type") == "FARGATE");
  CHECK(Extra(*info, "aws.availability_zone") == "us-west-2a");
  CHECK(server.targets() == std::vector<std::string>{"/v4/e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603",
                                                     "/v4/e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603/task"});
}

TEST_CASE("deploy: a missing task document degrades to the container's labels", "[ecs][http]") {
  TestHttpServer server({{"/v4/c", Fixture("fargate_container.json")}});
  auto info = ecs::FetchEcsMetadata(server.url("/v4/c"), 5000ms);
  REQUIRE(info.ok());
  CHECK(Extra(*info, "aws.ecs.task.revision") == "3");
  CHECK(Extra(*info, "aws.ecs.launch_type") == "<NA>");
  CHECK(server.requests() == 2);

  TestHttpServer empty({});
  auto missing = ecs::FetchEcsMetadata(empty.url("/v4/c"), 5000ms);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == Status::Code::kUnavailable);
  CHECK(missing.status().message() == "GET " + empty.url("/v4/c") + ": HTTP 404");
}

TEST_CASE("deploy: a metadata server that never answers costs at most the timeout", "[ecs][http]") {
  TestHttpServer silent({}, TestHttpServer::Mode::kSilent);
  auto start = std::chrono::steady_clock::now();
  auto result = ecs::HttpGet(silent.url("/v4/c"), 300ms);
  auto elapsed = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(result.ok());
  CHECK(result.status().code() == Status::Code::kUnavailable);
  CHECK(result.status().message() == "GET " + silent.url("/v4/c") + ": timed out after 300 ms (read response)");
  // Bounded: the call returned after its deadline and far before anything
  // else (a read without a deadline would hang until the server closes).
  CHECK(elapsed >= 300ms);
  CHECK(elapsed < 10s);
}

TEST_CASE("deploy: connection refused is reported, not retried forever", "[ecs][http]") {
  uint16_t port;
  {
    TestHttpServer gone({});
    port = gone.port();
  }
  std::string url = "http://127.0.0.1:" + std::to_string(port) + "/v4/c";
  auto result = ecs::HttpGet(url, 2000ms);
  REQUIRE_FALSE(result.ok());
  CHECK(result.status().message() == "GET " + url + ": connect: Connection refused");
}

TEST_CASE("deploy: MetadataFetcher retries in the background until metadata appears", "[ecs][http]") {
  TestHttpServer server({});  // 404 until the routes are set, like an ECS agent not ready yet
  ContainerInfo base;
  base.name = "from-hostname";
  base.extra.emplace_back("container.full_id", "old");
  ecs::SharedContainerInfo shared(base);
  ecs::MetadataFetcher::Options options;
  options.uri = server.url("/v4/c");
  options.timeout = 5000ms;
  options.first_backoff = 20ms;
  options.max_backoff = 100ms;
  options.max_attempts = 1000;
  ecs::MetadataFetcher fetcher(options, &shared);
  REQUIRE(WaitFor([&] { return server.requests() >= 2; }));
  CHECK_FALSE(fetcher.succeeded());
  CHECK(shared.version() == 0);
  server.SetRoutes({{"/v4/c", Fixture("fargate_container.json")}, {"/v4/c/task", Fixture("fargate_task.json")}});
  REQUIRE(WaitFor([&] { return fetcher.done(); }));
  CHECK(fetcher.succeeded());
  CHECK(fetcher.attempts() >= 2);
  CHECK(shared.version() == 1);
  auto info = shared.Get();
  CHECK(info->name == "curl");
  CHECK(Extra(*info, "container.full_id") == "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603");
  CHECK(Extra(*info, "aws.ecs.cluster") == "arn:aws:ecs:us-west-2:111122223333:cluster/default");
  CHECK(std::count_if(info->extra.begin(), info->extra.end(),
                      [](const auto& kv) { return kv.first == "container.full_id"; }) == 1);
}

TEST_CASE("deploy: MetadataFetcher gives up after max_attempts", "[ecs][http]") {
  TestHttpServer server({});
  ecs::SharedContainerInfo shared;
  ecs::MetadataFetcher::Options options;
  options.uri = server.url("/v4/c");
  options.first_backoff = 1ms;
  options.max_attempts = 3;
  ecs::MetadataFetcher fetcher(options, &shared);
  REQUIRE(WaitFor([&] { return fetcher.done(); }));
  CHECK_FALSE(fetcher.succeeded());
  CHECK(fetcher.attempts() == 3);
  CHECK(server.requests() == 3);
  CHECK(shared.version() == 0);
}

TEST_CASE("deploy: stopping a fetcher cancels a GET that would wait for its timeout", "[ecs][http]") {
  TestHttpServer silent({}, TestHttpServer::Mode::kSilent);
  ecs::SharedContainerInfo shared;
  ecs::MetadataFetcher::Options options;
  options.uri = silent.url("/v4/c");
  options.timeout = 60000ms;
  auto fetcher = std::make_unique<ecs::MetadataFetcher>(options, &shared);
  REQUIRE(WaitFor([&] { return fetcher->attempts() == 1; }));
  std::this_thread::sleep_for(50ms);  // let the GET reach its read (not an assertion)
  auto start = std::chrono::steady_clock::now();
  fetcher->Stop();
  CHECK(std::chrono::steady_clock::now() - start < 30s);  // far below the 60 s timeout
  CHECK(fetcher->done());
  CHECK_FALSE(fetcher->succeeded());
}

TEST_CASE("deploy: the fetcher thread blocks every signal, leaving them to the agent's main thread", "[ecs][http]") {
  TestHttpServer silent({}, TestHttpServer::Mode::kSilent);
  ecs::SharedContainerInfo shared;
  ecs::MetadataFetcher::Options options;
  options.uri = silent.url("/v4/c");
  options.timeout = 60000ms;
  ecs::MetadataFetcher fetcher(options, &shared);
  std::string sigblk;
  REQUIRE(WaitFor([&] {
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream comm(task.path() / "comm");
      std::string name;
      std::getline(comm, name);
      if (name != ecs::MetadataFetcher::kThreadName) continue;
      std::ifstream status(task.path() / "status");
      for (std::string line; std::getline(status, line);) {
        if (line.rfind("SigBlk:", 0) == 0) sigblk = line.substr(7);
      }
    }
    return !sigblk.empty();
  }));
  unsigned long long mask = std::stoull(sigblk, nullptr, 16);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGWINCH}) {
    INFO("signal " << sig);
    CHECK((mask >> (sig - 1) & 1) == 1);
  }
  // The creating thread's own mask is unchanged.
  sigset_t current;
  pthread_sigmask(SIG_SETMASK, nullptr, &current);
  CHECK(sigismember(&current, SIGTERM) == 0);
  fetcher.Stop();
}

TEST_CASE("deploy: StartContainerMetadata publishes the environment at once and fetches ECS later", "[ecs][http]") {
  TestHttpServer server({{"/v4/c", Fixture("fargate_container.json")}, {"/v4/c/task", Fixture("fargate_task.json")}});
  ::setenv("HOSTNAME", "ip-198-51-100-3", 1);
  ::unsetenv(ecs::kMetadataUriEnv);
  {
    ecs::SharedContainerInfo shared;
    CHECK(ecs::StartContainerMetadata(&shared) == nullptr);
    CHECK(shared.version() == 1);
    CHECK(shared.Get()->name == "ip-198-51-100-3");
  }
  ::setenv(ecs::kMetadataUriEnv, server.url("/v4/c").c_str(), 1);
  ecs::SharedContainerInfo shared;
  auto fetcher = ecs::StartContainerMetadata(&shared);
  REQUIRE(fetcher != nullptr);
  CHECK(shared.version() >= 1);  // the environment's info is there before any GET returns
  REQUIRE(WaitFor([&] { return fetcher->done(); }));
  CHECK(fetcher->succeeded());
  CHECK(shared.version() == 2);
  CHECK(shared.Get()->name == "curl");
  CHECK(Extra(*shared.Get(), "aws.ecs.task.family") == "curltest");
  ::unsetenv(ecs::kMetadataUriEnv);
}
