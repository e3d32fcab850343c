// sidetrace-rules: the rule author's tool.
//
//   sidetrace-rules validate [--json] [--strict] FILE|DIR...
//   sidetrace-rules eval --rules FILE|DIR... [EVENTS.jsonl|-]
//   sidetrace-rules list --rules FILE|DIR... [--json]
//
// validate loads the files exactly as the agent does and reports counts,
// skipped rules, warnings and errors (exit 0 only when valid). eval replays
// events written by `sidetrace-agent --events-out` and prints the alerts they
// raise, one Falco JSON object per line. list shows the rules with priority,
// tags and event types. Every option can also be given as SIDETRACE_<NAME>
// (SIDETRACE_RULES, SIDETRACE_STRICT, SIDETRACE_RESOLVE...).
#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "common/event/event_json.h"
#include "common/rules/rules.h"

namespace po = boost::program_options;
using sidetrace::rules::Engine;
using sidetrace::rules::LoadOptions;
using sidetrace::rules::LoadReport;

namespace {

constexpr const char* kUsage =
    "usage: sidetrace-rules validate [--json] [--strict] FILE|DIR...\n"
    "       sidetrace-rules eval --rules FILE|DIR... [--resolve dns|hosts|off] [EVENTS.jsonl|-]\n"
    "       sidetrace-rules list --rules FILE|DIR... [--json]\n";

// Maps SIDETRACE_MIN_PRIORITY to min-priority, for the options `desc` knows.
std::string EnvName(const po::options_description& desc, const std::string& env) {
  if (env.rfind("SIDETRACE_", 0) != 0) return "";
  std::string name = env.substr(10);
  for (auto& c : name) c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return desc.find_nothrow(name, false) ? name : "";
}

void PrintReport(const LoadReport& r, bool json) {
  if (json) {
    std::cout << r.ToJson().dump(2) << "\n";
    return;
  }
  for (const auto& w : r.warnings) std::cerr << "warning: " << w.ToString() << "\n";
  for (const auto& e : r.errors) std::cerr << "error: " << e.ToString() << "\n";
  std::cerr.flush();
  std::cout << fmt::format("lists: {}\nmacros: {}\nrules: {}\nrules loaded: {}\nrules disabled: {}\nrules skipped: {}\n",
                           r.lists, r.macros, r.rules, r.rules_loaded, r.rules_disabled, r.rules_skipped.size());
  for (const auto& s : r.rules_skipped) std::cout << fmt::format("  skipped '{}': {}\n", s.rule, s.reason);
  std::cout << (r.errors.empty() ? "valid\n" : "invalid\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  std::string command = argv[1];
  if (command != "validate" && command != "eval" && command != "list") {
    std::cerr << "sidetrace-rules: unknown command '" << command << "'\n" << kUsage;
    return 2;
  }
  po::options_description desc("options");
  desc.add_options()
      ("help,h", "show this help")
      ("rules,r", po::value<std::vector<std::string>>()->composing(), "rules file or folder (repeatable)")
      ("json", po::bool_switch(), "print JSON instead of text")
      ("strict", po::bool_switch(), "rules naming unknown fields are errors, not skipped")
      ("resolve", po::value<std::string>()->default_value("dns"), "fd.sip.name domains: dns, hosts or off")
      ("hosts-file", po::value<std::string>()->default_value("/etc/hosts"), "hosts file for --resolve hosts")
      ("min-priority", po::value<std::string>()->default_value("debug"), "disable rules less severe than this")
      ("hostname", po::value<std::string>(), "hostname in alerts (default: this host's)")
      ("input", po::value<std::vector<std::string>>(), "files (validate) or events (eval)");
  po::positional_options_description pos;
  pos.add("input", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc - 1, argv + 1).options(desc).positional(pos).run(), vm);
    po::store(po::parse_environment(desc, [&desc](const std::string& env) { return EnvName(desc, env); }), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "sidetrace-rules: " << e.what() << "\n" << kUsage;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << kUsage << desc;
    return 0;
  }
  std::vector<std::string> inputs = vm.count("input") ? vm["input"].as<std::vector<std::string>>() : std::vector<std::string>{};
  std::vector<std::string> rules = vm.count("rules") ? vm["rules"].as<std::vector<std::string>>() : std::vector<std::string>{};
  bool json = vm["json"].as<bool>();

  LoadOptions options;
  options.strict = vm["strict"].as<bool>();
  options.hosts_path = vm["hosts-file"].as<std::string>();
  if (vm.count("hostname")) options.hostname = vm["hostname"].as<std::string>();
  if (!sidetrace::rules::ParseResolveMode(vm["resolve"].as<std::string>(), &options.resolve)) {
    std::cerr << "sidetrace-rules: --resolve: expected dns, hosts or off\n";
    return 2;
  }
  if (!sidetrace::rules::ParsePriority(vm["min-priority"].as<std::string>(), &options.min_priority)) {
    std::cerr << "sidetrace-rules: --min-priority: unknown priority '" << vm["min-priority"].as<std::string>() << "'\n";
    return 2;
  }

  if (command == "validate") {
    rules.insert(rules.end(), inputs.begin(), inputs.end());
    if (rules.empty()) {
      std::cerr << "sidetrace-rules validate: no rules files given\n" << kUsage;
      return 2;
    }
    options.resolve = sidetrace::rules::ResolveMode::kOff;  // validating needs no addresses
    LoadReport report;
    auto engine = Engine::LoadFiles(rules, options, &report);
    PrintReport(report, json);
    return engine.ok() ? 0 : 1;
  }

  if (rules.empty()) {
    std::cerr << "sidetrace-rules " << command << ": --rules is required\n" << kUsage;
    return 2;
  }
  if (command == "list") options.resolve = sidetrace::rules::ResolveMode::kOff;
  LoadReport report;
  auto loaded = Engine::LoadFiles(rules, options, &report);
  if (!loaded.ok()) {
    for (const auto& e : report.errors) std::cerr << "error: " << e.ToString() << "\n";
    return 1;
  }
  for (const auto& w : report.warnings) std::cerr << "warning: " << w.ToString() << "\n";
  const Engine& engine = **loaded;

  if (command == "list") {
    nlohmann::json out = nlohmann::json::array();
    for (const auto* rule : engine.all_rules()) {
      std::vector<std::string> types;
      for (size_t t = 0; t < sidetrace::event::kEventTypeCount; ++t) {
        if (rule->event_types.test(t)) {
          types.emplace_back(sidetrace::event::EventTypeName(static_cast<sidetrace::event::EventType>(t)));
        }
      }
      bool active = rule->enabled && rule->priority <= options.min_priority;
      if (json) {
        out.push_back({{"rule", rule->name}, {"priority", sidetrace::rules::PriorityName(rule->priority)},
                       {"enabled", active}, {"tags", rule->tags}, {"event_types", types}, {"desc", rule->desc}});
        continue;
      }
      std::string type_text = types.size() == sidetrace::event::kEventTypeCount ? "(all)" : fmt::format("{}", fmt::join(types, ","));
      std::cout << fmt::format("{:<13} {:<8} {}\n    tags: {}\n    event types: {}\n",
                               sidetrace::rules::PriorityName(rule->priority), active ? "enabled" : "disabled",
                               rule->name, fmt::join(rule->tags, ", "), type_text);
    }
    if (json) std::cout << out.dump(2) << "\n";
    return 0;
  }

  // eval
  if (inputs.size() > 1) {
    std::cerr << "sidetrace-rules eval: one events file at most\n";
    return 2;
  }
  std::string path = inputs.empty() ? "-" : inputs[0];
  std::ifstream file;
  if (path != "-") {
    file.open(path);
    if (!file) {
      std::cerr << fmt::format("sidetrace-rules eval: cannot open {}: {}\n", path, std::strerror(errno));
      return 1;
    }
  }
  std::istream& in = path == "-" ? std::cin : file;
  std::string line;
  uint64_t line_no = 0, events = 0, alerts = 0, bad = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto parsed = nlohmann::json::parse(line, nullptr, false);
    if (parsed.is_discarded()) {
      std::cerr << fmt::format("{}:{}: not a JSON object\n", path, line_no);
      ++bad;
      continue;
    }
    auto replayed = sidetrace::event::EventFromJson(parsed);
    if (!replayed.ok()) {
      std::cerr << fmt::format("{}:{}: {}\n", path, line_no, replayed.status().message());
      ++bad;
      continue;
    }
    ++events;
    const auto& e = replayed->event;
    engine.Evaluate(e, [&](const sidetrace::rules::Rule& rule) {
      ++alerts;
      std::cout << engine.MakeAlert(rule, e).ToJson().dump() << "\n";
    });
  }
  std::cerr << fmt::format("sidetrace-rules: events={} alerts={} bad_lines={}\n", events, alerts, bad);
  return bad ? 1 : 0;
}
