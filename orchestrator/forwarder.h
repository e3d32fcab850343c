// Forwarder: sends the spool's sealed batches to sidetrace-backend.
//
// N sender threads (--backend-connections), each with its own HTTPS
// keep-alive connection (TLS 1.2+, certificate and host name verified against
// --ca-file or the system store), take the oldest batch, POST it to
// /api/v1/events:batch with `Authorization: Bearer KEY` and delete it after
// a 2xx (the backend answers only once the batch is durable). On failure the
// batch goes back in line and the thread backs off (exponential, jittered,
// at most 5 s). Batches may arrive out of order and more than once; the
// backend dedupes by uuid. A batch the backend refuses for its content (413
// too large, 400 malformed: any 4xx but 401/403/408/429) would be refused
// forever as it is: it is split in halves, recursively, and only an alert
// refused on its own is dropped and counted (backend_too_large_alerts,
// backend_rejected_alerts).
//
// When no alert is waiting but agents changed (connected, stats), it posts an
// empty events array with the agents, so drop counts reach the backend.
//
// Thread-safety: Start/Stop from one thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/util/status.h"
#include "orchestrator/config.h"
#include "orchestrator/metrics.h"
#include "orchestrator/spool.h"

namespace sidetrace::orchestrator {

class BackendClient;

class Forwarder {
 public:
  Forwarder(const Config& config, Spool* spool, AgentRegistry* registry, Metrics* metrics);
  ~Forwarder();

  // Checks the TLS settings (CA file readable) and starts the threads.
  Status Start();
  void Stop();

 private:
  struct Tally {
    uint64_t stored = 0, too_large = 0, refused = 0;
    bool agents_deferred = false;  // agent records left for the next POST
  };
  void Run(BackendClient* client);
  Status Deliver(BackendClient* client, const std::vector<std::string_view>& lines, size_t begin, size_t end,
                 std::string* agents, Tally* tally);

  const Config& config_;
  Spool* spool_;
  AgentRegistry* registry_;
  Metrics* metrics_;
  std::atomic<bool> stop_{false};
  std::vector<std::unique_ptr<BackendClient>> clients_;
  std::vector<std::thread> threads_;
};

// One HTTPS keep-alive connection to the backend. Exposed for tests.
class BackendClient {
 public:
  BackendClient(const Config& config);
  ~BackendClient();
  Status Init();
  // *http_status when the connection broke after the request was started.
  static constexpr int kConnectionLost = -1;
  // POSTs a JSON body; OK on 2xx with the reply in *reply. On failure,
  // *http_status holds the HTTP status (0: no connection, kConnectionLost).
  // With `header_first`, the body follows the header only after 300 ms
  // without an answer (an early refusal then arrives intact).
  Status Post(const std::string& target, std::string body, bool header_first, std::string* reply, int* http_status);
  // Aborts a Post in progress from another thread.
  void Abort();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sidetrace::orchestrator
