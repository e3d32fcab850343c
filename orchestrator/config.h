// Command-line flags and SIDETRACE_* environment variables of
// sidetrace-orchestrator. Every flag --foo-bar may also be given as
// SIDETRACE_FOO_BAR; the command line wins.
#pragma once

#include <cstdint>
#include <string>

#include "common/util/status.h"

namespace sidetrace::orchestrator {

struct Config {
  std::string listen = "0.0.0.0:6667";
  std::string backend;              // HOST:PORT, HTTPS
  std::string access_key;
  std::string ca_file;              // empty: system trust store
  bool insecure_skip_verify = false;
  std::string rules;                // file or folder of Falco rules YAML
  std::string spool_dir = "/var/lib/sidetrace/spool";
  uint64_t spool_max_bytes = 1ull << 30;
  uint32_t batch_max_events = 1000;
  uint32_t batch_max_delay_ms = 200;
  uint32_t post_max_events = 2000;   // batches waiting in the spool are merged per POST up to this
  std::string http = "0.0.0.0:8667";  // /healthz and /metrics; "" disables
  std::string tls_cert;             // agent listener TLS (both or neither)
  std::string tls_key;
  uint32_t threads = 2;             // agent I/O threads
  uint32_t backend_connections = 6; // concurrent POSTs to the backend (bench/RESULTS.md, "Session 6")
  uint32_t heartbeat_ms = 10000;    // told to agents in the welcome
  std::string log_level = "info";
};

// Parses argv and the environment. Returns NotFound("help") after printing
// --help, or InvalidArgument naming the flag.
Result<Config> ParseConfig(int argc, char** argv);

// Splits "host:port" / "[v6]:port". Error names the flag.
Status SplitHostPort(const std::string& flag, const std::string& value, std::string* host, uint16_t* port);

}  // namespace sidetrace::orchestrator
