// AgentLink: the agent's side of the link to sidetrace-orchestrator.
//
// The agent hands every alert to SubmitAlert() and forgets it. A single
// background thread owns the connection: it connects (in the background, so
// the workload starts at once), says hello, receives the policies, sends the
// queued alerts with increasing sequence numbers, removes them from the queue
// when the orchestrator acks them (an ack means "on the orchestrator's disk"),
// and reconnects with exponential backoff and jitter when anything goes
// wrong. Alerts sent but not acked before a disconnect are sent again on the
// next connection; the backend dedupes them by uuid.
//
// Bounded memory: at most queue_max alerts wait (sent or not); when full,
// SubmitAlert drops the oldest and counts it. The count travels to the
// orchestrator in the stats frames and from there to the backend.
//
// The workload must never notice the link: SubmitAlert and UpdateStats take
// one mutex for a few pointer moves and never do I/O or wait on the network;
// the link thread starts with every signal blocked (the agent's init loop
// gets them all) and never raises SIGPIPE. A wrong access key or an
// unreachable orchestrator is logged (once per state change) and retried.
//
// Thread-safety: SubmitAlert, UpdateStats, Flush and counters are safe from
// any thread. The policy callback runs on the link thread; it must not call
// Flush or Stop. Start and Stop are called by the owner, once each.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/link/protocol.h"
#include "common/util/status.h"

namespace sidetrace::link {

class AgentLink {
 public:
  struct Options {
    std::string orchestrator;     // "host:port" (port defaults to 6667)
    std::string access_key;
    size_t queue_max = 10000;     // alerts kept until acked; overflow drops the oldest
    bool tls = false;             // TLS to the orchestrator
    std::string ca_file;          // CA bundle for TLS; system trust store when empty
    std::string agent_id;         // random 128-bit hex when empty
    std::string hostname;         // gethostname() when empty
    std::string version = SIDETRACE_VERSION;
    nlohmann::json metadata = nlohmann::json::object();  // ECS task/container details
    std::chrono::milliseconds backoff_initial{250};
    std::chrono::milliseconds backoff_max{30000};
    std::chrono::milliseconds io_timeout{10000};   // connect, handshake, one write
    std::chrono::milliseconds heartbeat{10000};    // until the welcome says otherwise
    std::chrono::milliseconds stats_interval{2000};
  };

  using PolicyCallback = std::function<void(std::vector<Policy>)>;

  struct Counters {
    uint64_t submitted = 0;   // SubmitAlert calls
    uint64_t sent = 0;        // alert frames written (resends included)
    uint64_t resent = 0;      // of which resends after a reconnect
    uint64_t acked = 0;       // alerts the orchestrator confirmed
    uint64_t dropped = 0;     // overflow of the queue (oldest first)
    uint64_t connects = 0;    // welcomes received
    uint64_t rejects = 0;     // rejections (e.g. wrong access key)
    uint64_t policy_updates = 0;
    size_t queued = 0;        // waiting for an ack now
    bool connected = false;
  };

  explicit AgentLink(Options options);
  ~AgentLink();  // Stop()
  AgentLink(const AgentLink&) = delete;
  AgentLink& operator=(const AgentLink&) = delete;

  // Called with the policies of every welcome that carries some and of every
  // policy_update. An empty list in a welcome means "keep your own".
  // REQUIRES: before Start().
  void SetPolicyCallback(PolicyCallback callback);

  // Checks the options (address syntax, CA file) and starts the link thread.
  // Fails only on bad options; the orchestrator being down is not an error.
  Status Start();

  // Queues a Falco alert (must have uuid, rule, priority, time). Non-blocking.
  void SubmitAlert(nlohmann::json alert);

  // Replaces the agent's stats (events seen per type, tracer health...); the
  // link adds its own counters under "link" and sends them periodically.
  void UpdateStats(nlohmann::json stats);

  // Waits until every submitted alert is acked and, while connected, the
  // latest stats are sent (at once, not at the next stats interval), or the
  // timeout passes. Returns true when nothing is left unacked.
  bool Flush(std::chrono::milliseconds timeout);

  // Stops the thread and closes the connection; unacked alerts are lost
  // (call Flush first). Idempotent.
  void Stop();

  Counters counters() const;
  const std::string& agent_id() const { return options_.agent_id; }

 private:
  struct Entry {
    uint64_t seq;
    std::shared_ptr<const nlohmann::json> alert;
  };
  class Connection;

  void Run();
  Status Session();
  Status HandleMessage(const Message& message, Connection& conn);
  void Wake();
  void SleepFor(std::chrono::milliseconds delay);
  nlohmann::json StatsSnapshot();

  Options options_;
  std::string host_;
  std::string port_;
  PolicyCallback on_policies_;
  void* ssl_ctx_ = nullptr;  // SSL_CTX*, owned; null without TLS
  int wake_fd_ = -1;         // eventfd: SubmitAlert -> link thread
  std::atomic<bool> wake_pending_{false};
  std::atomic<int> flushing_{0};  // Flush calls waiting: stats go out without delay
  std::atomic<bool> stop_{false};
  std::thread thread_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // signalled on acks and on stop
  std::deque<Entry> queue_;     // GUARDED_BY(mu_); seqs contiguous, ascending
  uint64_t next_seq_ = 1;       // GUARDED_BY(mu_)
  uint64_t sent_upto_ = 0;      // GUARDED_BY(mu_): highest seq sent on this connection
  nlohmann::json user_stats_ = nlohmann::json::object();  // GUARDED_BY(mu_)
  bool stats_dirty_ = true;     // GUARDED_BY(mu_)
  Counters counters_;           // GUARDED_BY(mu_)
  std::chrono::milliseconds heartbeat_;  // link thread only
  uint64_t highest_sent_ = 0;            // link thread only: for counters_.resent
};

}  // namespace sidetrace::link
