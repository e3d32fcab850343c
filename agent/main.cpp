// sidetrace-agent [OPTIONS] -- PROGRAM [ARGS...]
//
// Runs PROGRAM (looked up on PATH) as a traced child and acts as its init.
// Options come from the command line or SIDETRACE_* environment variables;
// see docs/agent.md.
#include <boost/program_options.hpp>

#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "agent/event_sink.h"
#include "agent/tracer.h"
#include "common/util/log.h"

namespace po = boost::program_options;
using namespace sidetrace;

namespace {

constexpr const char* kUsage =
    "Usage: sidetrace-agent [OPTIONS] -- PROGRAM [ARGS...]\n"
    "Runs PROGRAM under syscall tracing, as its init. Every option can also be\n"
    "set as an environment variable: --events-out is SIDETRACE_EVENTS_OUT.\n";

struct Flags {
  std::string events_out, log_level = "warn", mode = "auto", emulate = "on";
  bool fail_closed = false;
};

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

}  // namespace

int main(int argc, char** argv) {
  log::SetProgram("sidetrace-agent");
  Flags f;
  po::options_description desc("Options");
  desc.add_options()
      ("help,h", "print this help and exit")
      ("version", "print the version and exit")
      ("events-out", po::value(&f.events_out), "write every event as a JSON line to PATH ('-' for stderr)")
      ("log-level", po::value(&f.log_level)->default_value("warn"), "debug, info, warn, error or off")
      ("mode", po::value(&f.mode)->default_value("auto"),
       "auto (seccomp notification + ptrace), ptrace (process lifecycle only) or off (init duties only)")
      ("emulate", po::value(&f.emulate)->default_value("on"),
       "on: perform opens and non-blocking connects for the workload to learn exact results; off: never")
      ("fail-closed", po::value(&f.fail_closed)->implicit_value(true)->zero_tokens(),
       "exit non-zero when tracing is impossible instead of running the workload untraced");
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
                                      if (name == "help" || name == "version") return "";
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
  if (f.emulate != "on" && f.emulate != "off") {
    std::cerr << "sidetrace-agent: --emulate: expected on or off, got '" << f.emulate << "'\n";
    return 2;
  }
  options.emulate = f.emulate == "on";

  agent::EventSink sink;
  if (!f.events_out.empty()) {
    if (Status s = sink.OpenOutput(f.events_out); !s.ok()) {
      std::cerr << "sidetrace-agent: " << s.message() << "\n";
      return 2;
    }
  }
  options.sink = &sink;
  agent::Tracer tracer(std::move(options));
  return tracer.Run();
}
