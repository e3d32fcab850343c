// The web console end to end in Debian's headless Chromium: the page is
// open and connected to the live stream, the two scenario detections are
// ingested over TLS, and they appear in the events list without a reload;
// the keyboard opens the detail panel; the agents page lists the agent.
// With SIDETRACE_CONSOLE_SCREENSHOT=path it also seeds an hour of varied
// detections and saves a screenshot there (docs/console.png is made so).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <random>

#include "common/tls/cert_gen.h"
#include "tests/backend/cdp.h"
#include "tests/backend/harness.h"

using namespace sidetrace;
using namespace sidetrace::backend_test;
using json = nlohmann::json;

namespace {

constexpr char kKey[] = "console-key";

// Polls a JavaScript boolean expression in the page.
bool WaitForJs(Chromium& browser, const std::string& expr, int timeout_ms = 60000) {
  return WaitFor([&] { return browser.Eval(expr) == json(true); }, timeout_ms);
}

std::vector<json> SeedHour() {
  struct R {
    const char *rule, *prio, *type, *proc, *cmd, *out;
  };
  const R rules[] = {
      {"Terminal shell in container", "Notice", "execve", "bash", "bash -i",
       "A shell was spawned in a container with an attached terminal (user=root shell=bash parent=runc cmdline=bash -i terminal=34816)"},
      {"Drop and execute new binary in container", "Critical", "execve", "xmrig", "/tmp/xmrig -o pool:3333",
       "Executing binary not part of base image (proc_exe=/tmp/xmrig user=root proc_cmdline=/tmp/xmrig -o pool:3333)"},
      {"Search Private Keys or Passwords", "Warning", "execve", "grep", "grep -r BEGIN RSA PRIVATE /",
       "Grep private keys or passwords activities found (user=root command=grep -r BEGIN RSA PRIVATE /)"},
      {"Clear Log Activities", "Warning", "openat", "truncate", "truncate -s0 /var/log/auth.log",
       "Log files were tampered (file=/var/log/auth.log evt_type=openat user=root process=truncate)"},
  };
  std::mt19937 rng(7);
  std::vector<json> out;
  int64_t now = NowNs();
  for (int i = 0; i < 140; ++i) {
    int64_t t = now - static_cast<int64_t>(rng() % 3500) * 1000000000LL;
    int pick = static_cast<int>(rng() % 10);
    json a;
    if (pick < 4) {
      a = MakeAlert("seed-" + std::to_string(i), "Read sensitive file untrusted", "Warning", t);
    } else if (pick < 5) {
      a = MakeMinerAlert("seed-" + std::to_string(i), t);
    } else {
      const R& r = rules[(pick - 5) % 4];
      a = MakeAlert("seed-" + std::to_string(i), r.rule, r.prio, t);
      a["output"] = r.out;
      a["output_fields"]["evt.type"] = r.type;
      a["output_fields"]["proc.name"] = r.proc;
      a["output_fields"]["proc.cmdline"] = r.cmd;
      a["output_fields"].erase("fd.name");
    }
    const char* tasks[] = {"3f1c9e0a5b7d4c1e8a9b", "9a7b3c2d1e0f44a2b6c8", "c0ffee12345678901234"};
    const char* names[] = {"playground", "orders-api", "billing-worker"};
    int k = static_cast<int>(rng() % 3);
    a["output_fields"]["aws.ecs.task.arn"] = std::string("arn:aws:ecs:us-east-1:123456789012:task/demo/") + tasks[k];
    a["output_fields"]["container.id"] = std::string(tasks[k]).substr(0, 12);
    a["output_fields"]["container.name"] = names[k];
    out.push_back(a);
  }
  return out;
}

}  // namespace

TEST_CASE("backend_console: scenario detections appear live in headless Chromium", "[e2e]") {
  std::string dir = MakeTempDir("backend_console_e2e");
  auto pki = tls::GenerateTestPki(dir + "/pki");
  REQUIRE(pki.ok());
  BackendProcess backend;
  REQUIRE(backend.Start({"--ingest", "127.0.0.1:0", "--http", "127.0.0.1:0", "--cert", pki->server_cert, "--key",
                         pki->server_key, "--db", dir + "/sidetrace.db", "--access-key", kKey},
                        dir + "/backend.log") == "");
  const char* shot = getenv("SIDETRACE_CONSOLE_SCREENSHOT");
  HttpClient ingest(backend.ingest_port(), pki->ca_cert);
  json agent = {{"id", "agent-playground-1"},
                {"hostname", "ip-10-0-1-23.ec2.internal"},
                {"container.id", "3f1c9e0a5b7d"},
                {"container.name", "playground"},
                {"aws.ecs.task.arn", "arn:aws:ecs:us-east-1:123456789012:task/demo/3f1c9e0a5b7d4c1e8a9b"},
                {"aws.ecs.cluster", "arn:aws:ecs:us-east-1:123456789012:cluster/demo"}};
  if (shot) {
    json body = {{"events", SeedHour()},
                 {"agents",
                  {{{"id", "agent-orders-2"}, {"hostname", "ip-10-0-1-24.ec2.internal"}, {"container.name", "orders-api"},
                    {"aws.ecs.task.arn", "arn:aws:ecs:us-east-1:123456789012:task/demo/9a7b3c2d1e0f44a2b6c8"},
                    {"stats", {{"events_seen", 412877}, {"alerts", 31}, {"drops", 0}}}},
                   {{"id", "agent-billing-3"}, {"hostname", "ip-10-0-1-25.ec2.internal"}, {"container.name", "billing-worker"},
                    {"aws.ecs.task.arn", "arn:aws:ecs:us-east-1:123456789012:task/demo/c0ffee12345678901234"},
                    {"stats", {{"events_seen", 90211}, {"alerts", 12}, {"drops", 17}}}}}}};
    REQUIRE(ingest.PostBatch(body.dump(), kKey).status == 200);
  }

  Chromium browser;
  REQUIRE(browser.Open("http://127.0.0.1:" + std::to_string(backend.http_port()) + "/") == "");
  // The page is up and its EventSource is connected.
  REQUIRE(WaitForJs(browser, "document.querySelector('#live .label') && "
                             "document.querySelector('#live .label').textContent === 'Live'"));
  std::string rows_text = "document.getElementById('rows').innerText";
  CHECK(browser.Eval("!" + rows_text + ".includes('shadow-live')") == json(true));

  // The attack: /etc/shadow read, then curl to a miner pool. Ingested over
  // TLS as the orchestrator would; the page must show both without reload.
  json shadow = MakeAlert("scenario-shadow");
  shadow["output"] = std::string(shadow["output"]) + " shadow-live";
  json miner = MakeMinerAlert("scenario-miner");
  json body = {{"events", {shadow, miner}},
               {"agent", agent},
               {"stats", {{"events_seen", 5321}, {"alerts", 2}, {"drops", 3}}}};
  REQUIRE(ingest.PostBatch(body.dump(), kKey).status == 200);
  CHECK(WaitForJs(browser, rows_text + ".includes('shadow-live')"));
  CHECK(WaitForJs(browser, rows_text + ".includes('Detect outbound connections to common miner pool ports')"));
  CHECK(WaitForJs(browser, "[...document.querySelectorAll('#rows tr')].some(r => r.dataset.uuid === 'scenario-miner' "
                           "&& r.querySelector('.badge').textContent === 'Critical')"));

  // Keyboard: '/' focuses search, Esc leaves it; j selects, Enter opens details.
  browser.Eval("document.dispatchEvent(new KeyboardEvent('keydown', {key: '/'})); true");
  CHECK(browser.Eval("document.activeElement.id") == "f-q");
  browser.Eval("document.getElementById('f-q').dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true})); true");
  CHECK(browser.Eval("document.activeElement.id") != "f-q");
  std::string miner_index = "[...document.querySelectorAll('#rows tr')].findIndex(r => r.dataset.uuid === 'scenario-miner')";
  json idx = browser.Eval(miner_index);
  REQUIRE(idx.is_number());
  for (int i = 0; i <= idx.get<int>(); ++i) browser.Eval("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'j'})); true");
  browser.Eval("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'})); true");
  CHECK(WaitForJs(browser, "!document.getElementById('detail').hidden && "
                           "document.getElementById('d-rule').textContent === 'Detect outbound connections to common miner pool ports' && "
                           "document.getElementById('d-fields').innerText.includes('203.0.113.10')"));
  // Falco's evt.time is an int64 ns beyond a double: shown exactly.
  std::string evt_time = std::to_string(miner["output_fields"]["evt.time"].get<int64_t>());
  CHECK(WaitForJs(browser, "document.getElementById('d-fields').innerText.includes('" + evt_time + "')"));

  // Filters: priority Critical and above hides the Warning alert.
  browser.Eval("const s = document.getElementById('f-priority'); s.value = 'Critical'; "
               "s.dispatchEvent(new Event('change')); true");
  CHECK(WaitForJs(browser, "!" + rows_text + ".includes('shadow-live') && "
                           "[...document.querySelectorAll('#rows tr')].some(r => r.dataset.uuid === 'scenario-miner')"));
  browser.Eval("document.getElementById('f-clear').click(); true");
  CHECK(WaitForJs(browser, rows_text + ".includes('shadow-live')"));

  // Agents page: the task's agent with its drop counter.
  browser.Eval("location.hash = 'agents'; true");
  CHECK(WaitForJs(browser, "!document.getElementById('page-agents').hidden && "
                           "document.getElementById('agent-rows').innerText.includes('agent-playground-1')"));
  CHECK(WaitForJs(browser, "[...document.querySelectorAll('#agent-rows tr')].some(r => r.innerText.includes('agent-playground-1') "
                           "&& r.querySelector('td.bad') && r.querySelector('td.bad').textContent === '3')"));

  // A fresh load lists them from the API as well.
  browser.Eval("location.hash = 'events'; location.reload(); true");
  CHECK(WaitForJs(browser, "document.getElementById('rows') && " + rows_text + ".includes('shadow-live') && " + rows_text +
                           ".includes('Detect outbound connections to common miner pool ports')"));

  if (shot) {
    browser.Eval("document.querySelector('#rows tr[data-uuid=\"scenario-miner\"]').click(); true");
    CHECK(WaitForJs(browser, "!document.getElementById('detail').hidden"));
    usleep(800 * 1000);  // let the chart and counters settle before the picture
    CHECK(browser.Screenshot(shot) == "");
  } else {
    std::string png = dir + "/console.png";
    REQUIRE(browser.Screenshot(png) == "");
    std::ifstream in(png, std::ios::binary);
    char magic[8] = {};
    in.read(magic, 8);
    CHECK(std::string(magic + 1, 3) == "PNG");
  }
  browser.Close();
  backend.Kill(SIGTERM);
  CHECK(backend.Wait() == 0);
  std::filesystem::remove_all(dir);
}
