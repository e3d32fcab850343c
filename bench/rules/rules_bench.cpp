// rules_bench: rules evaluated per second on one core with the full default
// policies, on a mix of events like a traced web application produces.
//
//   rules_bench [--policies DIR] [--events FILE.jsonl] [--seconds N] [--cpu N]
//
// Without --events the mix is built in memory (see Mix()); with it, events
// captured by `sidetrace-agent --events-out` are replayed in a loop (`-`:
// from stdin). The process pins itself to one CPU (default 0). Measures
// Engine::Evaluate (events/s, ns/event, matches seen), then Engine::MayMatch
// (the agent's question at syscall entry); each loop is bounded by --seconds
// (default 3). A mix larger than the CPU caches (the captured one: ~3 MB of
// events) pays cache misses on every event; --repeat N evaluates each event
// N times in a row, as the agent evaluates the event it has just filled.
#include <fcntl.h>
#include <sched.h>

#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

#include "common/event/event_json.h"
#include "common/rules/rules.h"
#include "tests/rules/test_events.h"

using namespace sidetrace;
using namespace sidetrace::rules::testing;

namespace {

// Shares taken from an nginx + python web app under load: mostly file opens
// of code, templates and static files, socket traffic to the database and a
// cache, a few process launches; about 1 in 50 events matches a rule.
std::vector<TestEvent> Mix() {
  auto init = Proc("sidetrace-agent");
  auto app = Proc("python3", {"/app/server.py"}, init);
  auto worker = Proc("gunicorn", {"-w", "4", "app:app"}, app);
  auto sh = Proc("sh", {"-c", "convert in.png out.jpg"}, worker);
  auto convert = Proc("convert", {"in.png", "out.jpg"}, sh);
  std::vector<TestEvent> v;
  auto add = [&](int n, const TestEvent& e) {
    for (int i = 0; i < n; ++i) v.push_back(e);
  };
  add(10, Open(worker, "/app/templates/index.html"));
  add(8, Open(worker, "/usr/lib/python3.11/json/__init__.py"));
  add(6, Open(worker, "/app/static/site.css"));
  add(4, Open(worker, "/tmp/upload-1234", O_WRONLY | O_CREAT | O_TRUNC));
  add(4, Open(worker, "/var/log/app/access.log", O_WRONLY | O_APPEND));
  add(3, Open(worker, "/etc/hosts"));
  add(2, Open(worker, "/proc/self/status"));
  add(2, Open(convert, "/usr/lib/x86_64-linux-gnu/libpng16.so.16"));
  add(6, Connect(worker, "10.0.3.15", 5432));
  add(4, Connect(worker, "10.0.3.16", 6379));
  add(3, Connect(worker, "198.51.100.40", 443, -115));
  add(4, Connect(worker, "10.0.3.15", 5432, 0, event::EventType::kSendto));
  add(6, TestEvent(event::EventType::kClose, worker));
  add(5, Connect(worker, "10.0.9.9", 51234, 5, event::EventType::kAccept4));
  add(2, Exec(sh));
  add(2, Exec(convert));
  add(2, TestEvent(event::EventType::kClone, worker));
  add(2, TestEvent(event::EventType::kProcExit, convert));
  add(1, TestEvent(event::EventType::kUnlink, worker));
  add(1, TestEvent(event::EventType::kRename, worker));
  add(1, TestEvent(event::EventType::kFcntl, worker));
  // Attacks, rarely: a shadow read and a miner connection.
  add(1, Open(worker, "/etc/shadow"));
  add(1, Connect(convert, "203.0.113.10", 3333));
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string policies = "policies", events_path;
  double seconds = 3;
  int cpu = 0, repeat = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--policies") policies = argv[i + 1];
    else if (k == "--events") events_path = argv[i + 1];
    else if (k == "--seconds") seconds = std::stod(argv[i + 1]);
    else if (k == "--cpu") cpu = std::stoi(argv[i + 1]);
    else if (k == "--repeat") repeat = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr,
                   "usage: rules_bench [--policies DIR] [--events FILE|-] [--seconds N] [--cpu N] [--repeat N]\n");
      return 2;
    }
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) std::perror("sched_setaffinity");

  rules::LoadOptions options;
  options.resolve = rules::ResolveMode::kOff;  // never resolve pool names here
  rules::LoadReport report;
  auto loaded = rules::Engine::LoadFiles({policies}, options, &report);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().message().c_str());
    return 1;
  }
  const rules::Engine& engine = **loaded;

  std::vector<event::ReplayedEvent> replayed;
  std::vector<TestEvent> mix;
  std::vector<const event::Event*> events;
  if (!events_path.empty()) {
    std::ifstream file;
    if (events_path != "-") file.open(events_path);
    std::istream& in = events_path == "-" ? std::cin : file;
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) continue;
      auto r = event::EventFromJson(j);
      if (r.ok()) replayed.push_back(std::move(r).value());
    }
    for (auto& r : replayed) events.push_back(&r.event);
  } else {
    mix = Mix();
    for (auto& t : mix) events.push_back(&t.e);
  }
  if (events.empty()) {
    std::fprintf(stderr, "no events\n");
    return 1;
  }

  // Runs fn over the mix for `seconds`; returns {events, cpu s, wall s}.
  auto cpu_now = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
  };
  struct Run {
    double events = 0, cpu = 0, wall = 0;
  };
  auto measure = [&](auto&& fn) {
    for (const auto* e : events) fn(*e);  // warm up
    Run r;
    double cpu_start = cpu_now();
    auto start = std::chrono::steady_clock::now();
    auto deadline = start + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      for (int round = 0; round < 1000; ++round) {
        for (const auto* e : events) {
          for (int i = 0; i < repeat; ++i) fn(*e);
        }
      }
      r.events += 1000.0 * events.size() * repeat;
    }
    r.wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.cpu = cpu_now() - cpu_start;
    return r;
  };

  uint64_t matches = 0, maybe = 0;
  auto on_match = [&](const rules::Rule&) { ++matches; };
  Run eval = measure([&](const event::Event& e) { engine.Evaluate(e, on_match); });
  Run may = measure([&](const event::Event& e) { maybe += engine.MayMatch(e); });
  std::printf("rules loaded: %d, events in mix: %zu (%s)\n", report.rules_loaded, events.size(),
              events_path.empty() ? "built-in web app mix" : events_path.c_str());
  // The machine is shared: CPU time is what the evaluation itself cost.
  std::printf("Evaluate: %.0f events in %.2f s wall, %.2f s cpu on cpu %d\n", eval.events, eval.wall, eval.cpu, cpu);
  std::printf("Evaluate per cpu-second: %.2f M events/s, %.1f ns/event (wall: %.2f M events/s); matches/event %.4f\n",
              eval.events / eval.cpu / 1e6, eval.cpu * 1e9 / eval.events, eval.events / eval.wall / 1e6,
              matches / eval.events);
  // At syscall entry: would the agent need the result of this call?
  std::printf("MayMatch per cpu-second: %.2f M events/s, %.1f ns/event (wall: %.2f M events/s); true for %.1f%%\n",
              may.events / may.cpu / 1e6, may.cpu * 1e9 / may.events, may.events / may.wall / 1e6,
              100.0 * maybe / may.events);
  return 0;
}
