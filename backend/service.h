// Service: the request handlers of sidetrace-backend, independent of the
// transport. HandleIngest serves the TLS ingest listener (POST
// /api/v1/events:batch, GET /healthz); HandleHttp serves the console, the
// read API, /healthz, /metrics and the live stream (GET /api/stream).
//
// Ingest contract: 200 {"accepted":N,"new":n,"duplicates":d} only after the
// transaction holding the batch committed (the Committer's group commit may
// put several batches in one transaction; each is all-or-nothing); 400 {"error": reason} for malformed input
// (nothing stored); 401 for a missing or wrong key; 413 over the size
// limit; 415 for an unknown Content-Encoding; 503 when the database fails.
// Keys are compared in constant time over their SHA-256 digests (no length
// or prefix leak) and never logged.
//
// Thread-safety: handlers run concurrently on io threads; an ingest reply
// comes from the Committer's thread. All state they touch (Store,
// Committer, Metrics, SseHub, Forwarder) is thread-safe.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "backend/committer.h"
#include "backend/forwarder.h"
#include "backend/http_server.h"
#include "backend/metrics.h"
#include "backend/store.h"

namespace sidetrace::backend {

class Service {
 public:
  // `forwarder` may be null. `max_decoded_bytes` caps a decompressed body.
  Service(Store* store, Committer* committer, Metrics* metrics, SseHub* hub, Forwarder* forwarder,
          const std::vector<std::string>& access_keys, size_t max_decoded_bytes);

  void HandleIngest(Request& request, Respond respond);
  Reply HandleHttp(Request& request);

 private:
  bool Authorized(const Request& request) const;
  void Ingest(Request& request, Respond respond);
  Reply ListEvents(const Request& request, const std::string& query, bool ndjson);
  Reply Summary(const std::string& query);
  Reply Health();

  Store* store_;
  Committer* committer_;
  Metrics* metrics_;
  SseHub* hub_;
  Forwarder* forwarder_;
  std::vector<std::array<unsigned char, 32>> key_digests_;
  size_t max_decoded_bytes_;
};

// Decodes %XX and '+' in a URL query component.
std::string UrlDecode(std::string_view in);

}  // namespace sidetrace::backend
