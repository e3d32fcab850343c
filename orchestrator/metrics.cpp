#include "orchestrator/metrics.h"

#include <fmt/format.h>

namespace sidetrace::orchestrator {

using nlohmann::json;

namespace {
// Prometheus label values escape backslash, quote and newline.
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') { out += "\\n"; continue; }
    out += c;
  }
  return out;
}
}  // namespace

void AgentRegistry::Connected(const std::string& id, const std::string& hostname, const std::string& version,
                              const std::string& peer, const json& metadata) {
  std::lock_guard lock(mu_);
  Agent& a = agents_[id];
  a.hostname = hostname;
  a.version = version;
  a.peer = peer;
  a.metadata = metadata;
  ++a.connections;
  if (!a.dirty) ++dirty_;
  a.dirty = true;
}

void AgentRegistry::Disconnected(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = agents_.find(id);
  if (it == agents_.end()) return;
  if (it->second.connections > 0) --it->second.connections;
  if (!it->second.dirty) ++dirty_;
  it->second.dirty = true;
}

void AgentRegistry::UpdateStats(const std::string& id, json stats) {
  std::lock_guard lock(mu_);
  auto it = agents_.find(id);
  if (it == agents_.end()) return;
  it->second.stats = std::move(stats);
  if (!it->second.dirty) ++dirty_;
  it->second.dirty = true;
}

json AgentRegistry::TakeDirty(std::vector<std::string>* ids) {
  std::lock_guard lock(mu_);
  json out = json::array();
  if (dirty_ == 0) return out;  // every POST asks; walking 1,000s of agents each time shows in profiles
  for (auto& [id, a] : agents_) {
    if (!a.dirty) continue;
    json j = a.metadata.is_object() ? a.metadata : json::object();
    j["id"] = id;
    j["hostname"] = a.hostname;
    j["version"] = a.version;
    j["connected"] = a.connections > 0;
    j["stats"] = a.stats;
    out.push_back(std::move(j));
    ids->push_back(id);
    a.dirty = false;
  }
  dirty_ = 0;
  return out;
}

void AgentRegistry::Restore(const std::vector<std::string>& ids) {
  std::lock_guard lock(mu_);
  for (const auto& id : ids) {
    auto it = agents_.find(id);
    if (it != agents_.end() && !it->second.dirty) {
      it->second.dirty = true;
      ++dirty_;
    }
  }
}

bool AgentRegistry::HasDirty() const {
  std::lock_guard lock(mu_);
  return dirty_ > 0;
}

size_t AgentRegistry::size() const {
  std::lock_guard lock(mu_);
  return agents_.size();
}

std::string AgentRegistry::MetricsText() const {
  std::lock_guard lock(mu_);
  std::string out =
      "# HELP sidetrace_orchestrator_agent_alerts_dropped_total Alerts an agent dropped from its queue (agent-reported).\n"
      "# TYPE sidetrace_orchestrator_agent_alerts_dropped_total counter\n";
  for (const auto& [id, a] : agents_) {
    uint64_t dropped = 0;
    auto link = a.stats.find("link");
    if (link != a.stats.end() && link->is_object()) {
      auto d = link->find("alerts_dropped");
      if (d != link->end() && d->is_number_unsigned()) dropped = d->get<uint64_t>();
    }
    out += fmt::format("sidetrace_orchestrator_agent_alerts_dropped_total{{agent_id=\"{}\",hostname=\"{}\"}} {}\n",
                       Label(id), Label(a.hostname), dropped);
  }
  return out;
}

std::string MetricsText(const Metrics& m, const AgentRegistry& registry) {
  std::string out;
  auto add = [&](const char* name, const char* type, const char* help, auto value) {
    out += fmt::format("# HELP sidetrace_orchestrator_{0} {1}\n# TYPE sidetrace_orchestrator_{0} {2}\n"
                       "sidetrace_orchestrator_{0} {3}\n",
                       name, help, type, value);
  };
  add("agents_connected", "gauge", "Agents connected now.", m.agents_connected.load());
  add("agents_known", "gauge", "Agents seen since start.", registry.size());
  add("sessions_total", "counter", "Agent connections accepted.", m.sessions_total.load());
  add("agents_rejected_total", "counter", "Agents rejected (wrong access key).", m.agents_rejected.load());
  add("bad_frames_total", "counter", "Connections closed for a malformed frame.", m.bad_frames.load());
  add("alerts_in_total", "counter", "Alerts spooled and acked to agents.", m.alerts_in.load());
  add("alerts_out_total", "counter", "Alerts stored by the backend.", m.alerts_out.load());
  add("batches_sent_total", "counter", "Batches the backend acknowledged.", m.batches_sent.load());
  add("backend_errors_total", "counter", "Failed batch POSTs (retried).", m.backend_errors.load());
  add("backend_rejected_alerts_total", "counter", "Alerts dropped because the backend refused them (4xx), each alone.",
      m.backend_rejected_alerts.load());
  add("backend_too_large_alerts_total", "counter",
      "Alerts dropped because the backend found each too large on its own (413).", m.backend_too_large_alerts.load());
  add("backend_up", "gauge", "1 when the last POST to the backend succeeded.", m.backend_up.load() ? 1 : 0);
  add("spool_bytes", "gauge", "Bytes of alerts on disk not yet stored by the backend.", m.spool_bytes.load());
  add("spool_batches", "gauge", "Batches on disk not yet stored by the backend.", m.spool_batches.load());
  add("spool_dropped_alerts_total", "counter", "Alerts dropped because the spool was full.",
      m.spool_dropped_alerts.load());
  add("spool_write_errors_total", "counter", "Spool writes that failed.", m.spool_write_errors.load());
  add("spool_syncs_total", "counter", "Spool group commits (one fdatasync each).", m.spool_syncs.load());
  add("policy_pushes_total", "counter", "Policy updates pushed to agents.", m.policy_pushes.load());
  out += registry.MetricsText();
  return out;
}

}  // namespace sidetrace::orchestrator
