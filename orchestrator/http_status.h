// HttpStatus: the orchestrator's plain-HTTP status endpoint (--http).
//   GET /healthz  200 {"status":"ok",...} (503 "degraded" while the backend
//                 is unreachable and the spool is not empty)
//   GET /metrics  Prometheus text (see metrics.h)
// One request per connection, 5 s timeout, 8 KiB request cap.
// Thread-safety: Listen/Stop from the main thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <functional>
#include <string>

#include "common/util/status.h"
#include "orchestrator/metrics.h"

namespace sidetrace::orchestrator {

class HttpStatus {
 public:
  HttpStatus(boost::asio::io_context& ioc, const Metrics* metrics, const AgentRegistry* registry);
  Status Listen(const std::string& addr);
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  void Stop();

 private:
  void DoAccept();
  boost::asio::io_context& ioc_;
  const Metrics* metrics_;
  const AgentRegistry* registry_;
  boost::asio::ip::tcp::acceptor acceptor_;
};

}  // namespace sidetrace::orchestrator
