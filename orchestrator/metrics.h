// Counters and gauges of one orchestrator process, exported on /metrics in
// the Prometheus text format, plus the registry of agents seen (their
// metadata and latest stats travel to the backend with the next batch).
// Thread-safety: Metrics members are atomics; AgentRegistry locks itself.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace sidetrace::orchestrator {

struct Metrics {
  std::atomic<int64_t> agents_connected{0};
  std::atomic<uint64_t> sessions_total{0};
  std::atomic<uint64_t> agents_rejected{0};
  std::atomic<uint64_t> bad_frames{0};
  std::atomic<uint64_t> alerts_in{0};        // acked to agents (on disk)
  std::atomic<uint64_t> alerts_out{0};       // stored by the backend (2xx)
  std::atomic<uint64_t> batches_sent{0};
  std::atomic<uint64_t> backend_errors{0};
  std::atomic<uint64_t> backend_rejected_alerts{0};  // dropped: backend refused them alone (4xx but 413)
  std::atomic<uint64_t> backend_too_large_alerts{0};  // dropped: too large for the backend alone (413)
  std::atomic<uint64_t> spool_bytes{0};
  std::atomic<uint64_t> spool_batches{0};
  std::atomic<uint64_t> spool_dropped_alerts{0};     // dropped: spool over --spool-max-bytes
  std::atomic<uint64_t> spool_write_errors{0};
  std::atomic<uint64_t> spool_syncs{0};              // group commits (one fdatasync each)
  std::atomic<uint64_t> policy_pushes{0};
  std::atomic<bool> backend_up{false};
};

class AgentRegistry {
 public:
  void Connected(const std::string& id, const std::string& hostname, const std::string& version,
                 const std::string& peer, const nlohmann::json& metadata);
  void Disconnected(const std::string& id);
  void UpdateStats(const std::string& id, nlohmann::json stats);

  // Agents changed since the last call, as the backend's "agents" array;
  // their ids go to *ids so that Restore() can mark them again on failure.
  nlohmann::json TakeDirty(std::vector<std::string>* ids);
  void Restore(const std::vector<std::string>& ids);
  bool HasDirty() const;

  // Prometheus lines: alerts dropped per agent (as the agent reports them).
  std::string MetricsText() const;
  size_t size() const;

 private:
  struct Agent {
    std::string hostname, version, peer;
    nlohmann::json metadata = nlohmann::json::object();
    nlohmann::json stats = nlohmann::json::object();
    int connections = 0;
    bool dirty = false;
  };
  mutable std::mutex mu_;
  std::map<std::string, Agent> agents_;  // GUARDED_BY(mu_)
  size_t dirty_ = 0;                      // GUARDED_BY(mu_)
};

std::string MetricsText(const Metrics& m, const AgentRegistry& registry);

}  // namespace sidetrace::orchestrator
