// End to end: the real sidetrace-agent tracing a process, AgentLink clients
// (the agent's link library) and raw sockets -> sidetrace-orchestrator (real
// process) -> sidetrace-backend (real process, TLS with certificates made by
// the test, SQLite file). Every test asserts the exact set of alert uuids in
// the backend's database: nothing lost, nothing extra (the uuid column is
// UNIQUE, so nothing is stored twice).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <memory>
#include <mutex>
#include <thread>

#include "common/link/agent_link.h"
#include "common/link/protocol.h"
#include "common/tls/cert_gen.h"
#include "tests/orchestrator/harness.h"

using namespace sidetrace;
using namespace sidetrace::testing;
using link::AgentLink;

namespace {

constexpr const char* kKey = "test-access-key-0123456789";

struct Env {
  TempDir dir;
  Certs certs = MakeCerts(dir.path());
  Backend backend;
  std::unique_ptr<Orchestrator> orch;

  explicit Env(std::vector<std::string> extra = {}, bool start = true, std::vector<std::string> backend_extra = {})
      : backend(dir, certs, kKey, std::move(backend_extra)) {
    backend.Start();
    std::vector<std::string> args = {"--backend", backend.addr(), "--access-key", kKey, "--ca-file", certs.ca,
                                     "--heartbeat-ms", "1000", "--batch-max-delay", "50"};
    args.insert(args.end(), extra.begin(), extra.end());
    orch = std::make_unique<Orchestrator>(dir, args);
    if (start) orch->Start();
  }
};

std::unique_ptr<AgentLink> MakeAgent(const std::string& addr, const std::string& id, std::string key = kKey,
                                     size_t queue_max = 10000) {
  AgentLink::Options o;
  o.orchestrator = addr;
  o.access_key = std::move(key);
  o.agent_id = id;
  o.hostname = "host-" + id;
  o.queue_max = queue_max;
  o.backoff_initial = std::chrono::milliseconds(100);
  o.backoff_max = std::chrono::milliseconds(1000);
  o.stats_interval = std::chrono::milliseconds(200);
  o.metadata = {{"aws.ecs.cluster", "test-cluster"}};
  auto a = std::make_unique<AgentLink>(o);
  return a;
}

std::string Uuid(const std::string& test, int agent, int i) {
  return test + "-" + std::to_string(agent) + "-" + std::to_string(i);
}

// Sends `per_agent` alerts from each agent, spread over `duration`, while
// `during` runs on the test thread.
void Load(std::vector<std::unique_ptr<AgentLink>>& agents, const std::string& test, int per_agent,
          std::chrono::milliseconds duration, const std::function<void()>& during) {
  std::thread producer([&] {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < per_agent; ++i) {
      for (size_t a = 0; a < agents.size(); ++a) agents[a]->SubmitAlert(TestAlert(Uuid(test, int(a), i)));
      std::this_thread::sleep_until(start + duration * (i + 1) / per_agent);
    }
  });
  during();
  producer.join();
}

// Waits until the backend's database holds at least as many alerts as
// `expected`, then compares the uuids: "" when they are exactly `expected`,
// else how they differ.
std::string StoredExactly(const Backend& backend, const std::multiset<std::string>& expected,
                          std::chrono::milliseconds timeout = 60s) {
  WaitFor([&] { return backend.Count() >= expected.size(); }, timeout);
  auto got = backend.Uuids();
  if (got == expected) return "";
  std::vector<std::string> missing, extra;
  std::set_difference(expected.begin(), expected.end(), got.begin(), got.end(), std::back_inserter(missing));
  std::set_difference(got.begin(), got.end(), expected.begin(), expected.end(), std::back_inserter(extra));
  return fmt::format("stored {} expected {}: {} missing (first {}), {} extra (first {})", got.size(), expected.size(),
                     missing.size(), missing.empty() ? "-" : missing[0], extra.size(), extra.empty() ? "-" : extra[0]);
}

}  // namespace

TEST_CASE("orchestrator_e2e: agents to backend with exact counts", "[e2e]") {
  Env env;
  std::vector<std::unique_ptr<AgentLink>> agents;
  for (int i = 0; i < 10; ++i) {
    agents.push_back(MakeAgent(env.orch->addr(), "agent-" + std::to_string(i)));
    REQUIRE(agents.back()->Start().ok());
  }
  for (int i = 0; i < 500; ++i) {
    for (size_t a = 0; a < agents.size(); ++a) agents[a]->SubmitAlert(TestAlert(Uuid("exact", int(a), i)));
  }
  for (auto& a : agents) REQUIRE(a->Flush(std::chrono::seconds(60)));
  CHECK(StoredExactly(env.backend, ExpectedUuids("exact", 10, 500)) == "");
  CHECK(env.orch->Metric("sidetrace_orchestrator_alerts_in_total") == 5000);
  REQUIRE(WaitFor([&] { return env.orch->Metric("sidetrace_orchestrator_alerts_out_total") == 5000; }, 30s));
  CHECK(env.orch->Metric("sidetrace_orchestrator_agents_connected") == 10);
  for (auto& a : agents) {
    auto c = a->counters();
    CHECK(c.acked == 500);
    CHECK(c.dropped == 0);
    CHECK(c.connects == 1);
  }
  // Agents and their metadata reached the backend with the batches; each
  // alert is attributed to the agent that sent it.
  REQUIRE(WaitFor([&] { return env.backend.Agents().size() == 10; }, 30s));
  auto agent3 = env.backend.Agents()["agent-3"];
  CHECK(agent3["aws.ecs.cluster"] == "test-cluster");
  CHECK(agent3["hostname"] == "host-agent-3");
  REQUIRE(WaitFor([&] { return env.backend.Agents()["agent-3"]["alerts_stored"] == 500; }, 30s));
  // The spool is empty once everything is stored.
  REQUIRE(WaitFor([&] { return env.orch->Metric("sidetrace_orchestrator_spool_bytes") == 0; }, 30s));
  agents.clear();
  CHECK(env.orch->Stop() == 0);
}

TEST_CASE("orchestrator_e2e: backend down for 30 s under load loses nothing", "[e2e]") {
  Env env;
  std::vector<std::unique_ptr<AgentLink>> agents;
  for (int i = 0; i < 8; ++i) {
    agents.push_back(MakeAgent(env.orch->addr(), "outage-" + std::to_string(i)));
    REQUIRE(agents.back()->Start().ok());
  }
  Load(agents, "outage", 2000, 38s, [&] {
    std::this_thread::sleep_for(2s);
    env.backend.Kill9();
    double in_at_kill = env.orch->Metric("sidetrace_orchestrator_alerts_in_total");
    double out_at_kill = env.orch->Metric("sidetrace_orchestrator_alerts_out_total");
    std::this_thread::sleep_for(30s);
    // While the backend is down, alerts keep being acked from the spool and
    // nothing is counted as stored.
    CHECK(env.orch->Metric("sidetrace_orchestrator_alerts_in_total") > in_at_kill);
    // At most the batches in flight (2 connections) were answered just before the kill.
    CHECK(env.orch->Metric("sidetrace_orchestrator_alerts_out_total") - out_at_kill <= 2000);
    CHECK(env.orch->Metric("sidetrace_orchestrator_spool_bytes") > 0);
    CHECK(env.orch->Metric("sidetrace_orchestrator_backend_up") == 0);
    CHECK(env.orch->Healthz().find("\"status\":\"degraded\"") != std::string::npos);
    env.backend.Start();
  });
  for (auto& a : agents) REQUIRE(a->Flush(std::chrono::seconds(60)));
  CHECK(StoredExactly(env.backend, ExpectedUuids("outage", 8, 2000), 90s) == "");
  CHECK(env.orch->Metric("sidetrace_orchestrator_backend_errors_total") > 0);
  CHECK(env.orch->Metric("sidetrace_orchestrator_spool_dropped_alerts_total") == 0);
  REQUIRE(WaitFor([&] { return env.orch->Metric("sidetrace_orchestrator_spool_bytes") == 0; }, 30s));
  for (auto& a : agents) CHECK(a->counters().dropped == 0);
}

TEST_CASE("orchestrator_e2e: orchestrator kill -9 and restart loses nothing", "[e2e]") {
  Env env;
  std::vector<std::unique_ptr<AgentLink>> agents;
  for (int i = 0; i < 6; ++i) {
    agents.push_back(MakeAgent(env.orch->addr(), "crash-" + std::to_string(i)));
    REQUIRE(agents.back()->Start().ok());
  }
  Load(agents, "crash", 1000, 10s, [&] {
    std::this_thread::sleep_for(2s);
    // Backend down first, so the spool holds acked alerts when the
    // orchestrator dies: the restarted one must send them.
    env.backend.Kill9();
    std::this_thread::sleep_for(2s);
    REQUIRE(env.orch->Metric("sidetrace_orchestrator_spool_bytes") > 0);
    env.orch->Kill9();
    std::this_thread::sleep_for(1500ms);
    env.backend.Start();
    env.orch->Start();
    CHECK(env.orch->child().WaitForLog("(recovered batches from a previous run)", 5s).has_value());
  });
  for (auto& a : agents) REQUIRE(a->Flush(std::chrono::seconds(60)));
  CHECK(StoredExactly(env.backend, ExpectedUuids("crash", 6, 1000)) == "");
  for (auto& a : agents) {
    auto c = a->counters();
    CHECK(c.dropped == 0);
    CHECK(c.connects >= 2);
  }
}

TEST_CASE("orchestrator_e2e: agent started before the orchestrator", "[e2e]") {
  Env env({}, false);
  uint16_t port = FreePort();
  Orchestrator orch(env.dir, {"--backend", env.backend.addr(), "--access-key", kKey, "--ca-file", env.certs.ca,
                              "--heartbeat-ms", "1000", "--listen", "127.0.0.1:" + std::to_string(port)});
  auto agent = MakeAgent("127.0.0.1:" + std::to_string(port), "early");
  REQUIRE(agent->Start().ok());
  for (int i = 0; i < 200; ++i) agent->SubmitAlert(TestAlert(Uuid("early", 0, i)));
  // Nothing listens: the agent keeps everything queued and keeps trying.
  CHECK_FALSE(agent->Flush(std::chrono::milliseconds(1500)));
  CHECK(agent->counters().queued == 200);
  CHECK_FALSE(agent->counters().connected);
  orch.Start();
  REQUIRE(agent->Flush(std::chrono::seconds(30)));
  CHECK(StoredExactly(env.backend, ExpectedUuids("early", 1, 200)) == "");
  CHECK(agent->counters().dropped == 0);
}

TEST_CASE("orchestrator_e2e: wrong access key is rejected and others are unaffected", "[e2e]") {
  Env env;
  auto bad = MakeAgent(env.orch->addr(), "intruder", "wrong-key");
  auto good = MakeAgent(env.orch->addr(), "good");
  REQUIRE(bad->Start().ok());
  REQUIRE(good->Start().ok());
  for (int i = 0; i < 50; ++i) {
    bad->SubmitAlert(TestAlert(Uuid("badkey", 0, i)));
    good->SubmitAlert(TestAlert(Uuid("goodkey", 0, i)));
  }
  REQUIRE(WaitFor([&] { return bad->counters().rejects >= 2; }, 20s));
  REQUIRE(good->Flush(std::chrono::seconds(30)));
  CHECK(StoredExactly(env.backend, ExpectedUuids("goodkey", 1, 50)) == "");
  auto c = bad->counters();
  CHECK(c.connects == 0);
  CHECK(c.acked == 0);
  CHECK(c.queued == 50);
  CHECK(env.orch->Metric("sidetrace_orchestrator_agents_rejected_total") >= 2);
  CHECK(env.orch->child().WaitForLog("reason=\"(wrong access key)\"", 5s).has_value());
  // The intruder never reaches the backend's agent list either.
  REQUIRE(WaitFor([&] { return env.backend.Agents().contains("good"); }, 30s));
  CHECK_FALSE(env.backend.Agents().contains("intruder"));
}

namespace {
int Connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

void SendAll(int fd, const std::string& data) {
  REQUIRE(send(fd, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size()));
}

// Reads frames until the peer closes; returns them.
std::vector<link::Message> ReadUntilClose(int fd) {
  link::FrameDecoder d;
  std::vector<link::Message> out;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    d.Append(buf, static_cast<size_t>(n));
    for (;;) {
      auto m = d.Next();
      if (!m.ok() || !m->has_value()) break;
      out.push_back(std::move(**m));
    }
  }
  return out;
}
}  // namespace

TEST_CASE("orchestrator_e2e: a malformed frame from one agent does not affect others", "[e2e]") {
  Env env;
  auto good = MakeAgent(env.orch->addr(), "bystander");
  REQUIRE(good->Start().ok());
  auto expected = ExpectedUuids("bystander", 1, 100);
  for (int i = 0; i < 100; ++i) good->SubmitAlert(TestAlert(Uuid("bystander", 0, i)));
  REQUIRE(good->Flush(std::chrono::seconds(30)));

  struct Case {
    std::string name;
    std::string bytes;
    std::string reason;
  };
  std::string garbage_cbor = {0, 0, 0, 4, 1, char(0xff), char(0xff), char(0xff)};
  std::string oversize = {char(0x7f), char(0xff), char(0xff), char(0xff)};
  std::string hello = link::EncodeFrame(link::MakeHello("raw", "0", kKey, "h", {}));
  nlohmann::json no_uuid = TestAlert("x");
  no_uuid.erase("uuid");
  std::vector<Case> cases = {
      {"garbage CBOR after hello", hello + garbage_cbor, "bad frame: frame: malformed CBOR"},
      {"oversize frame", hello + oversize, "bad frame: frame: length 2147483647 exceeds the cap of 1048576 bytes"},
      {"alert without uuid", hello + link::EncodeFrame(link::MakeAlert(1, no_uuid)),
       "bad frame: alert: alert.uuid must be a non-empty string"},
      {"alert before hello", link::EncodeFrame(link::MakeAlert(1, TestAlert("y"))), "expected hello, got alert"},
      {"seq going backwards",
       hello + link::EncodeFrame(link::MakeAlert(5, TestAlert("raw-5"))) +
           link::EncodeFrame(link::MakeAlert(5, TestAlert("raw-5b"))),
       "alert seq 5 after seq 5: not increasing"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    int fd = Connect(env.orch->port());
    SendAll(fd, c.bytes);
    auto got = ReadUntilClose(fd);
    close(fd);
    REQUIRE_FALSE(got.empty());
    CHECK(got.back().type == link::MessageType::kReject);
    CHECK(got.back().body["reason"] == c.reason);
    // Meanwhile the well-behaved agent keeps its connection and delivers.
    for (int i = 0; i < 10; ++i) {
      good->SubmitAlert(TestAlert(Uuid("bystander-" + c.name, 0, i)));
      expected.insert(Uuid("bystander-" + c.name, 0, i));
    }
    REQUIRE(good->Flush(std::chrono::seconds(30)));
  }
  CHECK(good->counters().connects == 1);
  CHECK(env.orch->Metric("sidetrace_orchestrator_bad_frames_total") == 5);
  // 100 + 5 x 10 from the bystander. Not raw-5: it came in the same read as
  // the bad frame, was never acked, and a real agent would send it again.
  CHECK(StoredExactly(env.backend, expected) == "");
}

TEST_CASE("orchestrator_e2e: policies pushed in the welcome and on SIGHUP", "[e2e]") {
  TempDir rules;
  WriteFile(rules / "a_rules.yaml", "- rule: A\n  desc: a\n  condition: evt.type = open\n  output: a\n  priority: WARNING\n");
  WriteFile(rules / "b_rules.yml", "- list: shells\n  items: [bash]\n");
  WriteFile(rules / "notes.txt", "not a policy");
  Env env({"--rules", rules.path()});
  std::mutex mu;
  std::vector<std::vector<link::Policy>> received;
  auto agent = MakeAgent(env.orch->addr(), "policy-agent");
  agent->SetPolicyCallback([&](std::vector<link::Policy> p) {
    std::lock_guard lock(mu);
    received.push_back(std::move(p));
  });
  REQUIRE(agent->Start().ok());
  auto count = [&] {
    std::lock_guard lock(mu);
    return received.size();
  };
  REQUIRE(WaitFor([&] { return count() == 1; }, 20s));
  {
    std::lock_guard lock(mu);
    REQUIRE(received[0].size() == 2);
    CHECK(received[0][0].name == "a_rules.yaml");
    CHECK(received[0][1].name == "b_rules.yml");
    CHECK(received[0][1].yaml == "- list: shells\n  items: [bash]\n");
  }
  // A broken file on SIGHUP: nothing is pushed, the old policies stay.
  WriteFile(rules / "b_rules.yml", "- list: [unclosed\n");
  env.orch->child().Signal(SIGHUP);
  REQUIRE(env.orch->child().WaitForLog("(--rules not reloaded)", 20s).has_value());
  CHECK(env.orch->child().WaitForLog("reason=\"[^\"]*(b_rules.yml:\\d+:\\d+)", 1s).has_value());
  // A good change on SIGHUP is pushed to the connected agent.
  WriteFile(rules / "b_rules.yml", "- list: shells\n  items: [bash, sh]\n");
  env.orch->child().Signal(SIGHUP);
  REQUIRE(WaitFor([&] { return count() == 2; }, 20s));
  {
    std::lock_guard lock(mu);
    CHECK(received[1][1].yaml == "- list: shells\n  items: [bash, sh]\n");
  }
  CHECK(agent->counters().policy_updates == 1);
  CHECK(agent->counters().connects == 1);
}

TEST_CASE("orchestrator_e2e: agent queue overflow drops oldest and the count reaches the backend", "[e2e]") {
  Env env({}, false);
  uint16_t port = FreePort();
  auto agent = MakeAgent("127.0.0.1:" + std::to_string(port), "overflow", kKey, /*queue_max=*/10);
  REQUIRE(agent->Start().ok());
  for (int i = 0; i < 25; ++i) agent->SubmitAlert(TestAlert(Uuid("overflow", 0, i)));
  CHECK(agent->counters().dropped == 15);
  Orchestrator orch(env.dir, {"--backend", env.backend.addr(), "--access-key", kKey, "--ca-file", env.certs.ca,
                              "--listen", "127.0.0.1:" + std::to_string(port), "--batch-max-delay", "50"});
  orch.Start();
  REQUIRE(agent->Flush(std::chrono::seconds(30)));
  // The newest 10 survive, the oldest 15 were dropped.
  std::multiset<std::string> newest;
  for (int i = 15; i < 25; ++i) newest.insert(Uuid("overflow", 0, i));
  CHECK(StoredExactly(env.backend, newest) == "");
  REQUIRE(WaitFor(
      [&] {
        auto a = env.backend.Agents()["overflow"];
        return a.is_object() && a["stats"].is_object() &&
               a["stats"].value("link", nlohmann::json::object()).value("alerts_dropped", 0) == 15;
      },
      30s));
  auto metrics = orch.Metrics();
  CHECK(metrics.find("sidetrace_orchestrator_agent_alerts_dropped_total{agent_id=\"overflow\",hostname=\"host-overflow\"} 15") !=
        std::string::npos);
}

TEST_CASE("orchestrator_e2e: TLS to agents and a backend with an unknown CA is refused", "[e2e]") {
  TempDir other;
  Certs agent_certs = MakeCerts(other.path(), "agentca");
  Certs wrong = MakeCerts(other.path(), "wrongca");
  Env env({"--tls-cert", agent_certs.cert, "--tls-key", agent_certs.key});
  AgentLink::Options o;
  o.orchestrator = env.orch->addr();
  o.access_key = kKey;
  o.agent_id = "tls-agent";
  o.tls = true;
  o.ca_file = agent_certs.ca;
  AgentLink agent(o);
  REQUIRE(agent.Start().ok());
  for (int i = 0; i < 100; ++i) agent.SubmitAlert(TestAlert(Uuid("tls", 0, i)));
  REQUIRE(agent.Flush(std::chrono::seconds(30)));
  CHECK(StoredExactly(env.backend, ExpectedUuids("tls", 1, 100)) == "");

  // An agent trusting another CA never connects.
  o.agent_id = "tls-wrong-ca";
  o.ca_file = wrong.ca;
  AgentLink distrustful(o);
  REQUIRE(distrustful.Start().ok());
  distrustful.SubmitAlert(TestAlert("never"));
  CHECK_FALSE(distrustful.Flush(std::chrono::seconds(2)));
  CHECK(distrustful.counters().connects == 0);

  // An orchestrator that trusts another CA does not send to the backend.
  Orchestrator strict(env.dir, {"--backend", env.backend.addr(), "--access-key", kKey, "--ca-file", wrong.ca,
                                "--listen", "127.0.0.1:0", "--spool-dir", other / "spool2"});
  strict.Start();
  auto plain = MakeAgent(strict.addr(), "to-strict");
  REQUIRE(plain->Start().ok());
  plain->SubmitAlert(TestAlert("strict-1"));
  REQUIRE(plain->Flush(std::chrono::seconds(30)));  // acked: it is in the spool
  REQUIRE(WaitFor([&] { return strict.Metric("sidetrace_orchestrator_backend_errors_total") > 0; }, 30s));
  CHECK(strict.Metric("sidetrace_orchestrator_alerts_out_total") == 0);
  CHECK(strict.child().WaitForLog("(certificate verification failed)", 10s).has_value());
  CHECK(env.backend.Count() == 100);
}

TEST_CASE("orchestrator_e2e: the real agent tracing a process with a late orchestrator gets policies pushed and applied",
          "[e2e]") {
  // sidetrace-agent wraps a shell script that reads files in two phases, each
  // started by the test. The agent has no local rules: it starts the workload
  // at once, before any orchestrator listens, and gets its rules pushed.
  TempDir work;
  TempDir rules;
  auto rule = [&](const std::string& name, const std::string& prefix) {
    return "- rule: " + name + "\n  desc: test rule\n  condition: evt.type in (open, openat, openat2) and " +
           "evt.is_open_read=true and fd.name startswith " + work / prefix + "\n  output: \"" + name +
           " (file=%fd.name proc=%proc.name)\"\n  priority: WARNING\n";
  };
  WriteFile(rules / "test.yaml", rule("Orchestrator test secret read", "secret-"));
  for (int i = 0; i < 5; ++i) WriteFile(work / ("secret-" + std::to_string(i)), "s");
  for (int i = 0; i < 3; ++i) WriteFile(work / ("other-" + std::to_string(i)), "o");
  WriteFile(work / "workload.sh", "touch " + work / "started" + "\n" +  //
                                      "while [ ! -e " + work / "go1" + " ]; do sleep 0.05; done\n" +
                                      "for i in 0 1 2 3 4; do cat " + work / "secret-$i" + " >/dev/null; done\n" +
                                      "touch " + work / "done1" + "\n" +
                                      "while [ ! -e " + work / "go2" + " ]; do sleep 0.05; done\n" +
                                      "for i in 0 1 2; do cat " + work / "other-$i" + " " + work / "secret-0" +
                                      " >/dev/null; done\n" + "exit 7\n");
  Env env({}, false);
  uint16_t port = FreePort();
  Orchestrator orch(env.dir, {"--backend", env.backend.addr(), "--access-key", kKey, "--ca-file", env.certs.ca,
                              "--listen", "127.0.0.1:" + std::to_string(port), "--rules", rules.path(),
                              "--batch-max-delay", "50"});
  Child agent = Child::Spawn({BuildDir() + "/agent/sidetrace-agent", "--orchestrator", "127.0.0.1:" + std::to_string(port),
                              "--access-key", kKey, "--log-level", "info", "--flush-timeout", "30", "--", "/bin/sh",
                              work / "workload.sh"},
                             work / "agent.log");
  // The workload runs although no orchestrator answers.
  REQUIRE(WaitFor([&] { return access((work / "started").c_str(), F_OK) == 0; }, 30s));
  std::this_thread::sleep_for(1s);
  CHECK(env.backend.Count() == 0);
  orch.Start();
  // The welcome's policies are compiled and applied before the next event.
  REQUIRE(agent.WaitForLog("msg=\"(policies applied)\" rules=1", 30s).has_value());
  WriteFile(work / "go1", "");
  REQUIRE(WaitFor([&] { return access((work / "done1").c_str(), F_OK) == 0; }, 30s));
  REQUIRE(WaitFor([&] { return env.backend.Count() >= 5; }, 30s));

  // A second rule, pushed on SIGHUP to the running agent, applies at once;
  // the first keeps working.
  WriteFile(rules / "test.yaml",
            rule("Orchestrator test secret read", "secret-") + rule("Orchestrator test other read", "other-"));
  double pushes = orch.Metric("sidetrace_orchestrator_policy_pushes_total");
  orch.child().Signal(SIGHUP);
  REQUIRE(agent.WaitForLog("msg=\"(policies applied)\" rules=2", 30s).has_value());
  WriteFile(work / "go2", "");
  int status = agent.Wait(60s);
  REQUIRE(status != -1);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 7);  // the workload's status

  // Exactly: 5 + 3 reads of secret-*, 3 reads of other-*, each alert once,
  // every one attributed to the agent, which reported no drops.
  std::map<std::string, uint64_t> want = {{"Orchestrator test other read", 3}, {"Orchestrator test secret read", 8}};
  REQUIRE(WaitFor([&] { return env.backend.Count() >= 11; }, 30s));
  CHECK(env.backend.CountByRule() == want);
  CHECK(env.backend.Uuids().size() == 11);
  auto agents = env.backend.Agents();
  REQUIRE(agents.size() == 1);
  auto record = agents.begin().value();
  CHECK(record["alerts_stored"] == 11);
  REQUIRE(WaitFor([&] { return env.backend.Agents().begin().value()["drops"] == 0; }, 30s));
  CHECK(env.backend.Agents().begin().value()["events_seen"].get<int64_t>() > 11);
  CHECK(orch.Metric("sidetrace_orchestrator_alerts_in_total") == 11);
  CHECK(orch.Metric("sidetrace_orchestrator_policy_pushes_total") == pushes + 1);
}

TEST_CASE("orchestrator_e2e: a batch the backend finds too large is split and only an alert too large alone is dropped",
          "[e2e]") {
  // The backend takes at most 16 KiB per request: batches of a few hundred
  // alerts are refused (413) and sent in halves. One alert is larger than
  // that on its own, and one has a priority the backend refuses (400): each
  // is dropped alone and counted; every other alert is stored.
  Env env({}, true, {"--max-body-bytes", "16384"});
  auto agent = MakeAgent(env.orch->addr(), "splitter");
  REQUIRE(agent->Start().ok());
  auto expected = ExpectedUuids("split", 1, 300);
  for (int i = 0; i < 300; ++i) {
    auto alert = TestAlert(Uuid("split", 0, i));
    if (i == 150) alert["output"] = std::string(20000, 'x');
    if (i == 200) alert["priority"] = "Urgent";
    agent->SubmitAlert(alert);
  }
  expected.erase(Uuid("split", 0, 150));
  expected.erase(Uuid("split", 0, 200));
  REQUIRE(agent->Flush(std::chrono::seconds(60)));
  CHECK(StoredExactly(env.backend, expected) == "");
  REQUIRE(WaitFor([&] { return env.orch->Metric("sidetrace_orchestrator_alerts_out_total") == 298; }, 30s));
  CHECK(env.orch->Metric("sidetrace_orchestrator_backend_too_large_alerts_total") == 1);
  CHECK(env.orch->Metric("sidetrace_orchestrator_backend_rejected_alerts_total") == 1);
  CHECK(env.orch->Metric("sidetrace_orchestrator_spool_bytes") == 0);
  // Every POST the backend took was at most 16 KiB, about 35 of these alerts.
  auto backend_metrics = env.backend.Metrics();
  CHECK(MetricValue(backend_metrics, "sidetrace_ingest_rejected_total{reason=\"too_large\"}") >= 1);
  CHECK(MetricValue(backend_metrics, "sidetrace_ingest_batches_total") >= 298 / 35);
  CHECK(env.orch->child().WaitForLog("too large on its own; dropping it\" uuid=(split-0-150) ", 5s).has_value());
  CHECK(env.orch->child().WaitForLog("refused an alert; dropping it\" uuid=(split-0-200) ", 5s).has_value());
  // The agent's record went through with one of the accepted parts.
  REQUIRE(WaitFor([&] { return env.backend.Agents().contains("splitter"); }, 30s));
}

TEST_CASE("orchestrator_e2e: a backend whose certificate names another address is refused", "[e2e]") {
  // The backend listens on 127.0.0.2. Its certificate, from the CA the
  // orchestrator trusts, names only localhost, 127.0.0.1 and ::1: the
  // orchestrator must refuse it. The same backend with a certificate that
  // names 127.0.0.2 is accepted (so the refusal is the name check's).
  TempDir dir;
  Certs narrow = MakeCerts(dir.path(), "narrow");
  auto wide = tls::GenerateTestPki(dir / "wide", {"127.0.0.2"}, "sidetrace orchestrator test CA wide");
  REQUIRE(wide.ok());
  auto start_backend = [&](const std::string& cert, const std::string& key, const std::string& name) {
    Child backend = Child::Spawn({BuildDir() + "/backend/sidetrace-backend", "--ingest", "127.0.0.2:0", "--http",
                                  "127.0.0.1:0", "--cert", cert, "--key", key, "--access-key", kKey, "--db",
                                  dir / (name + ".db"), "--log-level", "info"},
                                 dir / (name + ".log"));
    auto port = backend.WaitForLog("msg=\"ingest listening\" addr=127\\.0\\.0\\.2:(\\d+)", 30s);
    REQUIRE(port.has_value());
    return std::make_pair(std::move(backend), "127.0.0.2:" + *port);
  };
  auto deliver = [&](const std::string& backend, const std::string& ca, const std::string& name) {
    auto orch = std::make_unique<Orchestrator>(
        dir, std::vector<std::string>{"--backend", backend, "--access-key", kKey, "--ca-file", ca, "--spool-dir",
                                      dir / (name + "-spool"), "--batch-max-delay", "50"});
    orch->Start();
    auto agent = MakeAgent(orch->addr(), name);
    REQUIRE(agent->Start().ok());
    agent->SubmitAlert(TestAlert(name + "-1"));
    REQUIRE(agent->Flush(std::chrono::seconds(30)));  // acked: it is in the spool
    return orch;
  };

  auto [refusing, refusing_addr] = start_backend(narrow.cert, narrow.key, "narrow");
  auto strict = deliver(refusing_addr, narrow.ca, "to-narrow");
  REQUIRE(WaitFor([&] { return strict->Metric("sidetrace_orchestrator_backend_errors_total") > 0; }, 30s));
  CHECK(strict->child().WaitForLog("(certificate verification failed: IP address mismatch)", 10s).has_value());
  CHECK(strict->Metric("sidetrace_orchestrator_alerts_out_total") == 0);
  CHECK(strict->Metric("sidetrace_orchestrator_backend_up") == 0);
  refusing.Kill9();

  auto [accepting, accepting_addr] = start_backend(wide->server_cert, wide->server_key, "wide");
  auto trusting = deliver(accepting_addr, wide->ca_cert, "to-wide");
  CHECK(WaitFor([&] { return trusting->Metric("sidetrace_orchestrator_alerts_out_total") == 1; }, 30s));
  CHECK(trusting->Metric("sidetrace_orchestrator_backend_errors_total") == 0);
  accepting.Kill9();
}
