// Forwarder: delivers each newly stored alert to webhook URLs, one POST per
// alert with the Falco JSON as body, as Falcosidekick's `POST /` expects.
//
// One worker thread per URL with its own bounded queue (queue_max alerts):
// Enqueue never blocks ingest; when a queue is full the alert is dropped for
// that URL and counted (sidetrace_forward_dropped_total). A failed POST
// (connect error, timeout, non-2xx) is retried with exponential backoff from
// 200 ms up to max_attempts, then dropped and counted. Connections are kept
// alive between POSTs. http:// and https:// (system CA store, host name
// checked) URLs.
//
// Thread-safety: Enqueue from any thread; Stop() once, from the owner.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/metrics.h"
#include "common/util/status.h"

namespace sidetrace::backend {

struct ForwarderOptions {
  size_t queue_max = 10000;
  int max_attempts = 5;
  int timeout_ms = 5000;
};

class Forwarder {
 public:
  // Fails on a malformed URL.
  static Result<std::unique_ptr<Forwarder>> Create(const std::vector<std::string>& urls, ForwarderOptions options,
                                                   Metrics* metrics);
  ~Forwarder();
  void Enqueue(std::shared_ptr<const std::string> alert_json);
  // Stops the workers; alerts still queued are dropped (and counted).
  void Stop();

  struct Target;

 private:
  Forwarder() = default;
  std::vector<std::unique_ptr<Target>> targets_;
};

}  // namespace sidetrace::backend
