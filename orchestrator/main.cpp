// sidetrace-orchestrator: see docs/orchestrator.md and the headers here.
//
// Start-up order: flags, policies, spool (recovers the previous run), the
// forwarder (drains the spool), then the listeners. SIGHUP reloads --rules
// and pushes them; SIGINT/SIGTERM stop accepting, close the agents (their
// unacked alerts stay with them), finish the spool round in progress and
// exit 0. Whatever is spooled is sent by the next run.
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <pthread.h>

#include <csignal>
#include <thread>
#include <vector>

#include "common/util/log.h"
#include "orchestrator/agent_server.h"
#include "orchestrator/config.h"
#include "orchestrator/forwarder.h"
#include "orchestrator/http_status.h"
#include "orchestrator/metrics.h"
#include "orchestrator/policies.h"
#include "orchestrator/spool.h"

namespace asio = boost::asio;
using namespace sidetrace;
using namespace sidetrace::orchestrator;

int main(int argc, char** argv) {
  log::SetProgram("sidetrace-orchestrator");
  auto parsed = ParseConfig(argc, argv);
  if (!parsed.ok()) {
    if (parsed.status().code() == Status::Code::kNotFound) return 0;  // --help
    log::Error("bad configuration", "reason={}", log::Quote(parsed.status().message()));
    return 2;
  }
  const Config& config = *parsed;
  log::Level level;
  if (!log::ParseLevel(config.log_level, &level)) {
    log::Error("bad configuration", "reason={}", log::Quote("--log-level: want debug|info|warn|error"));
    return 2;
  }
  log::SetLevel(level);
  std::signal(SIGPIPE, SIG_IGN);

  std::vector<link::Policy> policies;
  if (!config.rules.empty()) {
    auto loaded = LoadPolicies(config.rules);
    if (!loaded.ok()) {
      log::Error("cannot load --rules", "reason={}", log::Quote(loaded.status().message()));
      return 2;
    }
    policies = std::move(loaded).value();
  }

  Metrics metrics;
  AgentRegistry registry;
  Spool spool({config.spool_dir, config.spool_max_bytes, config.batch_max_events,
               std::chrono::milliseconds(config.batch_max_delay_ms), config.post_max_events},
              &metrics);
  if (Status st = spool.Open(); !st.ok()) {
    log::Error("cannot open the spool", "reason={}", log::Quote(st.message()));
    return 1;
  }
  Forwarder forwarder(config, &spool, &registry, &metrics);
  if (Status st = forwarder.Start(); !st.ok()) {
    log::Error("cannot start the backend client", "reason={}", log::Quote(st.message()));
    return 2;
  }

  asio::io_context ioc(static_cast<int>(config.threads));
  AgentServer server(ioc, config, &spool, &registry, &metrics);
  server.SetPolicies(std::move(policies));
  if (Status st = server.Listen(); !st.ok()) {
    log::Error("cannot listen for agents", "reason={}", log::Quote(st.message()));
    return 1;
  }
  HttpStatus status(ioc, &metrics, &registry);
  std::string http_addr = "off";
  if (!config.http.empty()) {
    if (Status st = status.Listen(config.http); !st.ok()) {
      log::Error("cannot listen for /metrics", "reason={}", log::Quote(st.message()));
      return 1;
    }
    auto ep = status.local_endpoint();
    http_addr = fmt::format("{}:{}", ep.address().to_string(), ep.port());
  }
  asio::signal_set signals(ioc, SIGINT, SIGTERM, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGHUP) {
          if (config.rules.empty()) {
            log::Warn("SIGHUP: no --rules to reload");
          } else if (auto loaded = LoadPolicies(config.rules); !loaded.ok()) {
            log::Error("SIGHUP: --rules not reloaded; agents keep the previous policies", "reason={}",
                       log::Quote(loaded.status().message()));
          } else {
            log::Info("SIGHUP: policies reloaded", "files={}", loaded->size());
            server.SetPolicies(std::move(loaded).value());
          }
          signals.async_wait(on_signal);
          return;
        }
        log::Info("stopping", "signal={}", sig);
        server.Stop();
        status.Stop();
        // Give sessions a moment to close, then stop the loop.
        auto timer = std::make_shared<asio::steady_timer>(ioc, std::chrono::milliseconds(200));
        timer->async_wait([&ioc, timer](const boost::system::error_code&) { ioc.stop(); });
      };
  signals.async_wait(on_signal);
  // Logged once signals are handled: tests and supervisors may signal us
  // as soon as they see this line.
  auto ep = server.local_endpoint();
  log::Info("listening", "agents={}:{} tls={} http={} backend={} policies={}", ep.address().to_string(), ep.port(),
            config.tls_cert.empty() ? "off" : "on", http_addr, config.backend, server.policies()->size());

  std::vector<std::thread> threads;
  // Agent I/O runs here and on --threads - 1 more threads, named for top -H,
  // perf and bench/orchestrator/run.sh (this one keeps the process's name).
  for (uint32_t i = 1; i < config.threads; ++i) {
    threads.emplace_back([&ioc] {
      pthread_setname_np(pthread_self(), "st-io");
      ioc.run();
    });
  }
  ioc.run();
  for (auto& t : threads) t.join();
  spool.Stop();
  forwarder.Stop();
  log::Info("stopped", "alerts_in={} alerts_out={} spool_bytes={}", metrics.alerts_in.load(),
            metrics.alerts_out.load(), metrics.spool_bytes.load());
  return 0;
}
