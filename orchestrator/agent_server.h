// AgentServer: accepts sidetrace agents on --listen (TCP, or TLS with
// --tls-cert/--tls-key) and runs one Session per connection.
//
// A session lives on its own strand and is kept alive by shared_from_this
// while an operation is pending. It expects a hello within 10 s, checks the
// access key (constant-time), answers welcome (policies, heartbeat) or
// reject, then reads frames: alerts go to the spool as one group per read,
// and the next read starts only when that group is durable and acked, so a
// fast agent is paced by the disk and memory per agent stays bounded (one
// 16 KiB read buffer plus at most one partial frame). Any malformed frame,
// protocol violation, or silence longer than 3 heartbeats closes that
// connection with a logged reason (and a reject frame telling the agent
// why); other sessions are untouched.
//
// Thread-safety: Listen/Stop from the main thread; SetPolicies from any.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/link/protocol.h"
#include "common/util/status.h"
#include "orchestrator/config.h"
#include "orchestrator/metrics.h"
#include "orchestrator/spool.h"

namespace sidetrace::orchestrator {

class Session;

class AgentServer {
 public:
  AgentServer(boost::asio::io_context& ioc, const Config& config, Spool* spool, AgentRegistry* registry,
              Metrics* metrics);
  ~AgentServer();

  // Binds and starts accepting. Error names the address.
  Status Listen();
  boost::asio::ip::tcp::endpoint local_endpoint() const;

  // Replaces the policies given to new agents and pushes them to the
  // connected ones.
  void SetPolicies(std::vector<link::Policy> policies);
  std::shared_ptr<const std::vector<link::Policy>> policies() const;

  // Stops accepting and closes every session.
  void Stop();

 private:
  friend class Session;
  // A read's alerts made durable by the spool writer (or not). A group
  // commit completes hundreds of reads at once; they reach the I/O threads
  // with one post (one wake-up) instead of one each.
  struct Completion {
    std::shared_ptr<Session> session;
    bool durable = false;
  };
  void Completed(Completion completion);  // any thread (the spool writer)
  void RunCompletions();                  // an I/O thread
  void DoAccept();
  void Register(const std::shared_ptr<Session>& session);
  void Unregister(Session* session);

  boost::asio::io_context& ioc_;
  const Config& config_;
  Spool* spool_;
  AgentRegistry* registry_;
  Metrics* metrics_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::unique_ptr<boost::asio::ssl::context> tls_;  // null: plain TCP

  mutable std::mutex mu_;
  std::shared_ptr<const std::vector<link::Policy>> policies_;        // GUARDED_BY(mu_)
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;    // GUARDED_BY(mu_)
  bool stopped_ = false;                                             // GUARDED_BY(mu_)

  std::mutex completions_mu_;
  std::vector<Completion> completions_;  // GUARDED_BY(completions_mu_): a RunCompletions is posted when non-empty
};

}  // namespace sidetrace::orchestrator
