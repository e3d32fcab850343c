// sidetrace-agent [OPTIONS] -- PROGRAM [ARGS...]
//
// Runs PROGRAM (looked up on PATH) as a traced child and acts as its init.
// Options come from the command line or SIDETRACE_* environment variables;
// see docs/agent.md.
#include <boost/program_options.hpp>
#include <pthread.h>
#include <signal.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "agent/default_policies.h"
#include "agent/event_sink.h"
#include "agent/rules_runner.h"
#include "agent/tracer.h"
#include "common/ecs/metadata_fetcher.h"
#include "common/link/agent_link.h"
#include "common/util/log.h"

namespace po = boost::program_options;
using namespace sidetrace;

namespace {

constexpr const char* kUsage =
    "Usage: sidetrace-agent [OPTIONS] -- PROGRAM [ARGS...]\n"
    "Runs PROGRAM under syscall tracing, as its init. Every option can also be\n"
    "set as an environment variable: --events-out is SIDETRACE_EVENTS_OUT.\n";

struct Flags {
  int nice = -10;
  std::string events_out, log_level = "warn", mode = "auto", emulate, lifecycle;
  bool fail_closed = false;
  std::vector<std::string> rules;
  std::string alerts_out = "-", min_priority = "debug", resolve = "dns";
  std::string orchestrator, access_key, ca_file;
  size_t queue_max = 10000;
  double flush_timeout = 2.0;
  bool tls = false;
};

// Runs `fn` with every signal blocked, so that threads it starts never take
// the signals the tracer reads from its signalfd (SIGCHLD above all).
template <typename Fn>
auto WithSignalsBlocked(Fn fn) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  auto result = fn();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return result;
}

// What the orchestrator is told about this agent in its hello.
nlohmann::json ContainerMetadata(const event::ContainerInfo& c) {
  nlohmann::json m = nlohmann::json::object();
  auto put = [&m](const char* key, const std::string& value) {
    if (!value.empty()) m[key] = value;
  };
  put("container.id", c.id);
  put("container.name", c.name);
  put("container.image", c.image);
  put("container.image.repository", c.image_repository);
  put("container.image.tag", c.image_tag);
  for (const auto& [k, v] : c.extra) put(k.c_str(), v);
  return m;
}

// Splits argv at "--"; without it, the program starts at the first word that
// is not an option.
void SplitArgs(int argc, char** argv, std::vector<std::string>* opts, std::vector<std::string>* prog) {
  int i = 1;
  for (int j = 1; j < argc; ++j) {
    if (strcmp(argv[j], "--") == 0) {
      opts->assign(argv + 1, argv + j);
      prog->assign(argv + j + 1, argv + argc);
      return;
    }
  }
  if (argc > 1 && argv[1][0] != '-') i = 1;
  else i = argc;
  opts->assign(argv + 1, argv + i);
  prog->assign(argv + i, argv + argc);
}

// The agent's record for the orchestrator and the backend: events seen (in
// all and per type), alerts raised, and everything dropped on the way (event
// lines the output could not take, alerts the link's queue overflowed).
nlohmann::json EventStats(const agent::EventSink& sink, const std::array<uint64_t, event::kEventTypeCount>& seen,
                          const agent::RulesRunner* rules, const link::AgentLink& link) {
  nlohmann::json per_type = nlohmann::json::object();
  for (size_t i = 0; i < seen.size(); ++i) {
    if (seen[i]) per_type[std::string(event::EventTypeName(static_cast<event::EventType>(i)))] = seen[i];
  }
  return {{"events_seen", sink.emitted()},
          {"events_by_type", std::move(per_type)},
          {"alerts", rules ? rules->alerts() : 0},
          {"drops", sink.dropped() + link.counters().dropped}};
}

}  // namespace

int main(int argc, char** argv) {
  log::SetProgram("sidetrace-agent");
  Flags f;
  po::options_description desc("Options");
  desc.add_options()
      ("help,h", "print this help and exit")
      ("version", "print the version and exit")
      ("print-default-rules", "print the policies compiled into the agent (its default rules) and exit")
      ("events-out", po::value(&f.events_out), "write every event as a JSON line to PATH ('-' for stderr)")
      ("log-level", po::value(&f.log_level)->default_value("warn"), "debug, info, warn, error or off")
      ("mode", po::value(&f.mode)->default_value("auto"),
       "auto (seccomp notification + ptrace), ptrace (process lifecycle only) or off (init duties only)")
      ("emulate", po::value(&f.emulate),
       "rules: perform an open for the workload (to learn its exact result) only when a rule may match it; "
       "all: every open; off: never (default: rules, or all with --events-out)")
      ("lifecycle", po::value(&f.lifecycle),
       "seccomp: learn execs from the seccomp filter and ptrace only an exec a rule may match; ptrace: ptrace "
       "fork, clone, exec and exit of every process, a complete record whose descendants cannot outlive the "
       "agent (default: seccomp, or ptrace with --events-out)")
      ("nice", po::value(&f.nice)->default_value(-10),
       "nice value of the tracer thread, -20 to 19; the workload keeps its own. Below 0 it needs CAP_SYS_NICE or "
       "RLIMIT_NICE (docker run --ulimit nice=30; ECS ulimit nice): without either the tracer keeps its nice "
       "(logged at info)")
      ("fail-closed", po::value(&f.fail_closed)->implicit_value(true)->zero_tokens(),
       "exit non-zero when tracing is impossible instead of running the workload untraced");
  desc.add_options()
      ("rules", po::value(&f.rules)->composing(),
       "Falco rules file or folder (repeatable; default: a policies/ folder next to the binary, else the "
       "policies compiled in)")
      ("alerts-out", po::value(&f.alerts_out)->default_value("-"), "write alerts as Falco JSON lines to PATH ('-': stderr)")
      ("min-priority", po::value(&f.min_priority)->default_value("debug"), "disable rules less severe than this")
      ("resolve", po::value(&f.resolve)->default_value("dns"),
       "how fd.sip.name resolves rule domain lists: dns (the system resolver and /etc/hosts, in the background, refreshed every 5 min), hosts (/etc/hosts only) or off")
      ("orchestrator", po::value(&f.orchestrator), "send alerts to sidetrace-orchestrator at HOST:PORT (port 6667 by default)")
      ("access-key", po::value(&f.access_key), "access key for the orchestrator (prefer SIDETRACE_ACCESS_KEY; never logged)")
      ("queue-max", po::value(&f.queue_max)->default_value(10000), "alerts kept until the orchestrator acks them; overflow drops the oldest")
      ("flush-timeout", po::value(&f.flush_timeout)->default_value(2.0),
       "seconds to wait for unacked alerts when the workload has exited")
      ("tls", po::value(&f.tls)->implicit_value(true)->zero_tokens(), "TLS to the orchestrator")
      ("ca-file", po::value(&f.ca_file), "CA bundle that verifies the orchestrator (TLS; default: system trust store)");
  std::vector<std::string> opts, prog;
  SplitArgs(argc, argv, &opts, &prog);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(opts).options(desc).run(), vm);
    po::store(po::parse_environment(desc,
                                    [&desc](const std::string& env) -> std::string {
                                      if (env.rfind("SIDETRACE_", 0) != 0) return "";
                                      std::string name = env.substr(10);
                                      for (char& c : name) c = c == '_' ? '-' : static_cast<char>(tolower(c));
                                      if (name == "help" || name == "version" || name == "print-default-rules") return "";
                                      return desc.find_nothrow(name, false) ? name : "";
                                    }),
              vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "sidetrace-agent: " << e.what() << "\n" << kUsage;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << kUsage << desc;
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "sidetrace-agent " << SIDETRACE_VERSION << "\n";
    return 0;
  }
  if (vm.count("print-default-rules")) {
    for (const auto& src : agent::DefaultPolicySources()) std::cout << "# policies/" << src.name << "\n" << src.yaml;
    return 0;
  }
  log::Level level;
  if (!log::ParseLevel(f.log_level, &level)) {
    std::cerr << "sidetrace-agent: --log-level: unknown level '" << f.log_level << "'\n";
    return 2;
  }
  log::SetLevel(level);
  if (prog.empty()) {
    std::cerr << "sidetrace-agent: no PROGRAM given\n" << kUsage;
    return 2;
  }

  agent::TracerOptions options;
  options.argv = prog;
  options.fail_closed = f.fail_closed;
  if (f.mode == "auto") options.mode = agent::TraceMode::kAuto;
  else if (f.mode == "ptrace") options.mode = agent::TraceMode::kPtrace;
  else if (f.mode == "off") options.mode = agent::TraceMode::kOff;
  else {
    std::cerr << "sidetrace-agent: --mode: expected auto, ptrace or off, got '" << f.mode << "'\n";
    return 2;
  }
  // An events file is a record of what happened: by default every event in
  // it carries its exact result, whatever the rules look at.
  if (f.emulate.empty()) f.emulate = f.events_out.empty() ? "rules" : "all";
  if (f.emulate == "rules") options.emulate = agent::EmulateMode::kRules;
  else if (f.emulate == "all" || f.emulate == "on") options.emulate = agent::EmulateMode::kAll;
  else if (f.emulate == "off") options.emulate = agent::EmulateMode::kOff;
  else {
    std::cerr << "sidetrace-agent: --emulate: expected rules, all or off, got '" << f.emulate << "'\n";
    return 2;
  }

  if (f.nice < -20 || f.nice > 19) {
    std::cerr << "sidetrace-agent: --nice: expected -20 to 19, got " << f.nice << "\n";
    return 2;
  }
  options.nice = f.nice;

  // An events file is a record: every fork, clone, exec and exit in it.
  if (f.lifecycle.empty()) f.lifecycle = f.events_out.empty() ? "seccomp" : "ptrace";
  if (f.lifecycle == "seccomp") options.lifecycle = agent::Lifecycle::kSeccomp;
  else if (f.lifecycle == "ptrace") options.lifecycle = agent::Lifecycle::kPtrace;
  else {
    std::cerr << "sidetrace-agent: --lifecycle: expected seccomp or ptrace, got '" << f.lifecycle << "'\n";
    return 2;
  }

  agent::EventSink sink;
  if (!f.events_out.empty()) {
    if (Status s = sink.OpenOutput(f.events_out); !s.ok()) {
      std::cerr << "sidetrace-agent: " << s.message() << "\n";
      return 2;
    }
  }
  options.sink = &sink;
  if (f.flush_timeout < 0 || f.flush_timeout > 3600) {
    std::cerr << "sidetrace-agent: --flush-timeout: expected 0 to 3600 seconds\n";
    return 2;
  }
  // The key is the agent's secret, not the workload's: it is not passed on.
  unsetenv("SIDETRACE_ACCESS_KEY");

  // Container details: from the environment now, from ECS task metadata in
  // the background (never delaying the workload).
  ecs::SharedContainerInfo container;
  auto metadata = WithSignalsBlocked([&container] { return ecs::StartContainerMetadata(&container); });
  sink.SetContainerSource(&container);

  std::unique_ptr<agent::RulesRunner> rules;
  agent::RulesRunner::Options ro{f.rules, f.alerts_out, f.min_priority, f.resolve};
  auto r = WithSignalsBlocked([&ro] { return agent::RulesRunner::Create(ro); });
  if (r.ok()) {
    rules = std::move(r).value();
    // Events written out want everything; rules alone need only theirs
    // (pushed policies are checked against that set when they arrive).
    if (f.events_out.empty()) {
      options.trapped = rules->Trapped();
      options.unaddressed_sends = false;
    }
    rules->SetFilter(options.trapped);
    options.may_match = [runner = rules.get()](const event::Event& e) { return runner->MayMatch(e); };
    options.reads_cwd = [runner = rules.get()](event::EventType type) { return runner->ReadsCwd(type); };
  } else if (r.status().code() == Status::Code::kNotFound && f.rules.empty()) {
    log::Warn("running without rules", "reason={}", log::Quote(r.status().message()));
  } else {
    std::cerr << "sidetrace-agent: " << r.status().message() << "\n";
    return 2;
  }

  std::unique_ptr<link::AgentLink> orchestrator;
  if (!f.orchestrator.empty()) {
    link::AgentLink::Options lo;
    lo.orchestrator = f.orchestrator;
    lo.access_key = f.access_key;
    lo.queue_max = f.queue_max;
    lo.tls = f.tls;
    lo.ca_file = f.ca_file;
    lo.metadata = ContainerMetadata(*container.Get());
    orchestrator = std::make_unique<link::AgentLink>(std::move(lo));
    if (rules) {
      agent::RulesRunner* runner = rules.get();
      orchestrator->SetPolicyCallback([runner](std::vector<link::Policy> policies) {
        std::vector<rules::RuleSource> sources;
        for (auto& p : policies) sources.push_back({std::move(p.name), std::move(p.yaml)});
        runner->OfferPolicies(sources);
      });
      rules->SetAlertForwarder([link = orchestrator.get()](nlohmann::json alert) { link->SubmitAlert(std::move(alert)); });
    }
    if (Status s = WithSignalsBlocked([&] { return orchestrator->Start(); }); !s.ok()) {
      std::cerr << "sidetrace-agent: " << s.message() << "\n";
      return 2;
    }
  }

  // Per-type event counts travel to the orchestrator in the stats frames.
  std::array<uint64_t, event::kEventTypeCount> seen{};
  if (rules || orchestrator) {
    sink.SetConsumer([&](const event::Event& e, bool may_alert) {
      if (rules && may_alert) rules->OnEvent(e);
      if (!orchestrator) return;
      ++seen[static_cast<size_t>(e.type)];
      if ((sink.emitted() & 1023) == 0) orchestrator->UpdateStats(EventStats(sink, seen, rules.get(), *orchestrator));
    });
  }

  agent::Tracer tracer(std::move(options));
  int status = tracer.Run();
  if (orchestrator) {
    orchestrator->UpdateStats(EventStats(sink, seen, rules.get(), *orchestrator));
    auto timeout = std::chrono::milliseconds(static_cast<int64_t>(f.flush_timeout * 1000));
    if (!orchestrator->Flush(timeout)) {
      auto c = orchestrator->counters();
      log::Warn("exiting with alerts not acknowledged by the orchestrator", "unacked={} dropped={}", c.queued,
                c.dropped);
    }
    orchestrator->Stop();
  }
  if (metadata) metadata->Stop();
  return status;
}
