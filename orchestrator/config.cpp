#include "orchestrator/config.h"

#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <cctype>
#include <iostream>

namespace sidetrace::orchestrator {

namespace po = boost::program_options;

Status SplitHostPort(const std::string& flag, const std::string& value, std::string* host, uint16_t* port) {
  std::string h, p;
  if (!value.empty() && value[0] == '[') {
    auto close = value.find("]:");
    if (close == std::string::npos) return Status::InvalidArgument(fmt::format("--{} '{}': want [IPV6]:PORT", flag, value));
    h = value.substr(1, close - 1);
    p = value.substr(close + 2);
  } else {
    auto colon = value.rfind(':');
    if (colon == std::string::npos) return Status::InvalidArgument(fmt::format("--{} '{}': want HOST:PORT", flag, value));
    h = value.substr(0, colon);
    p = value.substr(colon + 1);
  }
  char* end = nullptr;
  long n = std::strtol(p.c_str(), &end, 10);
  if (h.empty() || p.empty() || *end != '\0' || n < 0 || n > 65535) {
    return Status::InvalidArgument(fmt::format("--{} '{}': want HOST:PORT with a port 0-65535", flag, value));
  }
  *host = h;
  *port = static_cast<uint16_t>(n);
  return Status::Ok();
}

Result<Config> ParseConfig(int argc, char** argv) {
  Config c;
  po::options_description desc(
      "sidetrace-orchestrator: accepts sidetrace agents on TCP 6667, pushes policies to them,\n"
      "spools their alerts to disk and forwards them in batches to sidetrace-backend over HTTPS.\n\n"
      "Every flag can also be set as SIDETRACE_<FLAG> (e.g. SIDETRACE_ACCESS_KEY).\n\nOptions");
  // clang-format off
  desc.add_options()
    ("help,h", "show this help and exit")
    ("listen", po::value(&c.listen)->default_value(c.listen), "ADDR:PORT for agents")
    ("backend", po::value(&c.backend), "HOST:PORT of sidetrace-backend (HTTPS), required")
    ("access-key", po::value(&c.access_key), "key agents must present; also sent to the backend (required)")
    ("ca-file", po::value(&c.ca_file), "CA bundle that verifies the backend (default: system trust store)")
    ("insecure-skip-verify", po::bool_switch(&c.insecure_skip_verify), "do NOT verify the backend's certificate (testing only)")
    ("rules", po::value(&c.rules), "Falco rules YAML file or folder pushed to agents; SIGHUP reloads and pushes")
    ("spool-dir", po::value(&c.spool_dir)->default_value(c.spool_dir), "folder for alerts not yet stored by the backend")
    ("spool-max-bytes", po::value(&c.spool_max_bytes)->default_value(c.spool_max_bytes), "spool cap; beyond it the oldest alerts are dropped (counted)")
    ("batch-max-events", po::value(&c.batch_max_events)->default_value(c.batch_max_events), "alerts per batch to the backend")
    ("batch-max-delay", po::value(&c.batch_max_delay_ms)->default_value(c.batch_max_delay_ms), "ms an alert waits for its batch to fill")
    ("post-max-events", po::value(&c.post_max_events)->default_value(c.post_max_events), "with a backlog, waiting batches are merged into POSTs of up to this many alerts")
    ("http", po::value(&c.http)->default_value(c.http), "ADDR:PORT for /healthz and /metrics (empty: off)")
    ("tls-cert", po::value(&c.tls_cert), "PEM certificate: serve agents over TLS (with --tls-key)")
    ("tls-key", po::value(&c.tls_key), "PEM private key for --tls-cert")
    ("threads", po::value(&c.threads)->default_value(c.threads), "agent I/O threads")
    ("backend-connections", po::value(&c.backend_connections)->default_value(c.backend_connections), "concurrent batches in flight to the backend")
    ("heartbeat-ms", po::value(&c.heartbeat_ms)->default_value(c.heartbeat_ms), "heartbeat interval agents are told to use")
    ("log-level", po::value(&c.log_level)->default_value(c.log_level), "debug|info|warn|error");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    // SIDETRACE_SPOOL_DIR -> spool-dir, only for flags we know.
    po::store(po::parse_environment(desc,
                                    [&desc](const std::string& env) -> std::string {
                                      if (env.rfind("SIDETRACE_", 0) != 0) return "";
                                      std::string name = env.substr(10);
                                      for (char& ch : name) ch = ch == '_' ? '-' : static_cast<char>(std::tolower(ch));
                                      return desc.find_nothrow(name, false) != nullptr && name != "help" ? name : "";
                                    }),
              vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return Status::InvalidArgument(e.what());
  }
  if (vm.count("help")) {
    std::cout << "usage: sidetrace-orchestrator --backend HOST:PORT --access-key KEY [options]\n\n" << desc << "\n";
    return Status::NotFound("help");
  }
  if (c.backend.empty()) return Status::InvalidArgument("--backend is required (HOST:PORT of sidetrace-backend)");
  if (c.access_key.empty()) return Status::InvalidArgument("--access-key is required");
  if (c.tls_cert.empty() != c.tls_key.empty()) return Status::InvalidArgument("--tls-cert and --tls-key go together");
  if (c.batch_max_events == 0) return Status::InvalidArgument("--batch-max-events must be >= 1");
  if (c.post_max_events == 0) return Status::InvalidArgument("--post-max-events must be >= 1");
  if (c.threads == 0 || c.threads > 64) return Status::InvalidArgument("--threads must be 1..64");
  if (c.backend_connections == 0 || c.backend_connections > 16) return Status::InvalidArgument("--backend-connections must be 1..16");
  if (c.heartbeat_ms < 100) return Status::InvalidArgument("--heartbeat-ms must be >= 100");
  std::string host;
  uint16_t port;
  for (auto [flag, value] : {std::pair{"listen", c.listen}, std::pair{"backend", c.backend}}) {
    Status st = SplitHostPort(flag, value, &host, &port);
    if (!st.ok()) return st;
  }
  if (!c.http.empty()) {
    Status st = SplitHostPort("http", c.http, &host, &port);
    if (!st.ok()) return st;
  }
  return c;
}

}  // namespace sidetrace::orchestrator
