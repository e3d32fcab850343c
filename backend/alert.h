// Ingest batch parsing: turns the body of POST /api/v1/events:batch into
// validated alerts and agent records, or a 400 reason.
//
// Body (JSON object):
//   {"events": [<Falco alert>...],            required, may be empty
//    "agent":  {"id": ..., <metadata>...},    optional, one agent
//    "stats":  {...},                          optional, that agent's counters
//    "agents": [{"id": ..., <metadata>..., "stats": {...}}]  optional, many}
// A Falco alert: uuid, time (RFC 3339, ns), rule, priority, output,
// output_fields (object), source, tags, hostname. Required: uuid (the dedupe
// key), time, rule, priority (a Falco priority name), output_fields.
// An alert names its agent with "agent_id" or output_fields["agent.id"];
// with one agent record in the batch, alerts default to it.
//
// The whole batch is rejected on the first bad alert: the reason names the
// index and field ("events[3].priority: unknown priority \"urgent\"").
//
// Cost (the ingest hot path): one simdjson DOM parse of the body validates
// all of it (grammar, UTF-8) and yields the indexed fields (one pass over
// each alert's keys and its output_fields' keys); each alert's
// stored text is a slice of the body itself (the Batch keeps the body), the
// sender's bytes never re-serialised; only an alert with whitespace between
// its tokens is minified (simdjson) into a copy of its own. Only the small agent/stats records go through nlohmann.
// Thread-safety: pure functions (a thread-local parser per thread).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/status.h"

namespace sidetrace::backend {

// Falco priorities, most severe first (Falco's numbering: Emergency = 0).
inline constexpr std::string_view kPriorityNames[] = {"Emergency", "Alert", "Critical", "Error",
                                                      "Warning",   "Notice", "Informational", "Debug"};
// Canonical index of a priority name (case-insensitive; "info" accepted), -1 if unknown.
int PriorityIndex(std::string_view name);

// Parses RFC 3339 ("2026-11-26T00:15:20.123456789Z", offsets allowed) to ns
// since the epoch. False when malformed.
bool ParseRfc3339(std::string_view text, int64_t* ns);
// Formats ns since the epoch as RFC 3339 UTC with 9 fractional digits.
std::string FormatRfc3339(int64_t ns);

// The indexed fields are views into their Batch (Batch::strings; priority
// into kPriorityNames), valid while the Batch lives: a batch costs one
// allocation for them, not five per alert.
struct Alert {
  std::string_view uuid, rule, priority;
  int priority_index = 0;
  int64_t time_ns = 0;
  std::string_view container_id, task_arn, agent_id;
  // The alert as Falco JSON on one line, stored and forwarded: a view into
  // its Batch (Batch::text or Batch::rewritten), valid while the Batch lives.
  std::string_view json;
};

struct AgentRecord {
  std::string id, hostname, container_id, container_name, task_arn, cluster;
  std::string metadata_json;  // the record without "stats"
  std::string stats_json;     // "" when no stats were sent
  int64_t events_seen = -1, alerts = -1, drops = -1;  // -1: not reported
};

struct Batch {
  std::vector<Alert> alerts;
  std::vector<AgentRecord> agents;
  // The body that Alert::json points into (a pointer, so that moving the
  // Batch keeps the views valid), and the few alerts whose text had to
  // change (minified, or priority respelled to Falco's spelling).
  std::shared_ptr<const std::string> text;
  std::deque<std::string> rewritten;
  std::unique_ptr<char[]> strings;  // the alerts' indexed fields, back to back
};

// Spare capacity after the body that lets ParseBatch parse it in place
// (simdjson reads up to this far past the end); else it copies the body.
inline constexpr size_t kParsePadding = 64;

// Parses and validates a decompressed body; the Batch keeps it.
Result<Batch> ParseBatch(std::string body);

// Decompresses `body` per Content-Encoding ("", "identity", "gzip",
// "deflate", "zstd") into `out`, refusing to produce more than `max_bytes`
// (kUnavailable then, mapped to 413). kInvalidArgument for corrupt data or
// an unknown encoding.
Status Decode(std::string_view encoding, std::string_view body, size_t max_bytes, std::string* out);

}  // namespace sidetrace::backend
