// A minimal HTTP/1.1 GET client with one deadline, for the ECS task metadata
// endpoint (http://169.254.170.2/v4/...), which is plain HTTP on a link-local
// address. Built on Boost.Beast (header-only), so the static agent needs no
// extra shared library.
//
// Only IP-literal hosts (and "localhost") are accepted: the agent is a static
// binary, and the metadata endpoint is always an address, so no DNS lookup is
// ever made here.
//
// Thread-safety: HttpGet may run on any thread; HttpCanceller::Cancel may be
// called from another thread while HttpGet runs. Failure modes are returned
// as Status: kInvalidArgument (bad URL), kUnavailable (connect/read failed,
// timed out, cancelled, non-2xx status), kIoError (malformed response).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "common/util/status.h"

namespace sidetrace::ecs {

struct HttpUrl {
  std::string host;  // IP literal, without brackets for IPv6
  uint16_t port = 80;
  std::string target;  // path and query, at least "/"
};

// Parses "http://HOST[:PORT][/PATH]". HTTPS and other schemes are rejected.
Result<HttpUrl> ParseHttpUrl(std::string_view url);

// Lets another thread abort an HttpGet in progress (Cancel makes it return
// kUnavailable "cancelled" at once). After Cancel, every later HttpGet given
// this canceller fails at once too.
class HttpCanceller {
 public:
  HttpCanceller() = default;
  HttpCanceller(const HttpCanceller&) = delete;
  HttpCanceller& operator=(const HttpCanceller&) = delete;

  void Cancel();
  bool cancelled() const;

  // Used by HttpGet: registers how to stop the exchange in progress. Returns
  // false (and registers nothing) when already cancelled.
  bool Attach(std::function<void()> stop);
  void Detach();

 private:
  mutable std::mutex mu_;
  bool cancelled_ = false;            // guarded by mu_
  std::function<void()> stop_;        // guarded by mu_
};

// GETs `url` and returns the response body. The whole exchange (connect,
// request, response) must finish within `timeout`; the body is capped at
// `max_body_bytes`. Never throws.
Result<std::string> HttpGet(std::string_view url, std::chrono::milliseconds timeout,
                            HttpCanceller* canceller = nullptr,
                            size_t max_body_bytes = 1 << 20);

}  // namespace sidetrace::ecs
