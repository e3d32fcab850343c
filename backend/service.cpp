#include "backend/service.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <chrono>
#include <map>

#include <fmt/format.h>

#include "backend/web_assets.h"
#include "common/util/log.h"

namespace sidetrace::backend {

using json = nlohmann::json;

namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::array<unsigned char, 32> Digest(std::string_view s) {
  std::array<unsigned char, 32> d;
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d.data());
  return d;
}

Reply Make(http::status status, std::string body, std::string_view type = "application/json") {
  Reply r;
  r.response.result(status);
  r.response.version(11);
  r.response.set(http::field::content_type, boost::beast::string_view(type.data(), type.size()));
  r.response.set(http::field::cache_control, "no-store");
  r.response.body() = std::move(body);
  return r;
}

Reply Error(http::status status, std::string_view why) {
  return Make(status, json({{"error", why}}).dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
}

std::map<std::string, std::string> ParseQuery(const std::string& query) {
  std::map<std::string, std::string> out;
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string::npos) amp = query.size();
    std::string part = query.substr(pos, amp - pos);
    size_t eq = part.find('=');
    if (!part.empty())
      out[UrlDecode(part.substr(0, eq))] = eq == std::string::npos ? "" : UrlDecode(part.substr(eq + 1));
    pos = amp + 1;
  }
  return out;
}

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t c = s.find(',', pos);
    if (c == std::string::npos) c = s.size();
    if (c > pos) out.push_back(s.substr(pos, c - pos));
    pos = c + 1;
  }
  return out;
}

// "2026-11-26T00:00:00Z", or ns since the epoch, or a relative "-15m"/"-2h"/"-1d".
bool ParseTime(const std::string& s, int64_t now_ns, int64_t* ns) {
  if (s.empty()) return false;
  if (s[0] == '-' && s.size() >= 3) {
    char unit = s.back();
    char* end = nullptr;
    long long n = std::strtoll(s.c_str() + 1, &end, 10);
    if (end != s.c_str() + s.size() - 1 || n < 0) return false;
    int64_t mult = unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : unit == 'd' ? 86400 : 0;
    if (mult == 0) return false;
    *ns = now_ns - n * mult * 1000000000LL;
    return true;
  }
  if (s.find('T') != std::string::npos) return ParseRfc3339(s, ns);
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (*end != '\0') return false;
  *ns = v;
  return true;
}

}  // namespace

std::string UrlDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%' && i + 2 < in.size() && std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

Service::Service(Store* store, Committer* committer, Metrics* metrics, SseHub* hub, Forwarder* forwarder,
                 const std::vector<std::string>& access_keys, size_t max_decoded_bytes)
    : store_(store), committer_(committer), metrics_(metrics), hub_(hub), forwarder_(forwarder), max_decoded_bytes_(max_decoded_bytes) {
  for (const auto& k : access_keys) key_digests_.push_back(Digest(k));
}

bool Service::Authorized(const Request& req) const {
  auto it = req.find(http::field::authorization);
  if (it == req.end()) return false;
  std::string_view v(it->value().data(), it->value().size());
  constexpr std::string_view kBearer = "Bearer ";
  if (v.size() <= kBearer.size() || v.substr(0, kBearer.size()) != kBearer) return false;
  auto d = Digest(v.substr(kBearer.size()));
  // Compare against every key without an early exit: the time taken does
  // not depend on which key (if any) matched.
  int match = 0;
  for (const auto& k : key_digests_) match |= CRYPTO_memcmp(d.data(), k.data(), d.size()) == 0;
  return match != 0;
}

void Service::HandleIngest(Request& req, Respond respond) {
  std::string_view target(req.target().data(), req.target().size());
  if (target == "/healthz") return respond(Health());
  if (target != "/api/v1/events:batch") return respond(Error(http::status::not_found, "no such endpoint"));
  if (req.method() != http::verb::post) {
    Reply r = Error(http::status::method_not_allowed, "use POST");
    r.response.set(http::field::allow, "POST");
    return respond(std::move(r));
  }
  Ingest(req, std::move(respond));
}

// Parses on the calling I/O thread, then hands the batch to the Committer;
// the reply is sent from its thread once the batch's transaction committed.
void Service::Ingest(Request& req, Respond respond) {
  auto start = std::chrono::steady_clock::now();
  if (!Authorized(req)) {
    metrics_->Reject("unauthorized");
    Reply r = Error(http::status::unauthorized, "missing or wrong access key");
    r.response.set(http::field::www_authenticate, "Bearer");
    return respond(std::move(r));
  }
  std::string encoding;
  if (auto it = req.find(http::field::content_encoding); it != req.end())
    encoding.assign(it->value().data(), it->value().size());
  std::string decoded;
  bool encoded = !encoding.empty() && encoding != "identity";
  if (encoded) {
    Status st = Decode(encoding, req.body(), max_decoded_bytes_, &decoded);
    if (!st.ok()) {
      if (st.code() == Status::Code::kUnavailable) {
        metrics_->Reject("too_large");
        return respond(Error(http::status::payload_too_large, st.message()));
      }
      bool unknown = st.message().rfind("Content-Encoding", 0) == 0;
      metrics_->Reject(unknown ? "bad_encoding" : "malformed");
      return respond(Error(unknown ? http::status::unsupported_media_type : http::status::bad_request, st.message()));
    }
  }
  // The batch takes the body over (its alerts' texts are slices of it).
  auto parsed = ParseBatch(encoded ? std::move(decoded) : std::move(req.body()));
  if (!parsed.ok()) {
    metrics_->Reject(parsed.status().message().rfind("events[", 0) == 0 ? "invalid_event" : "malformed");
    return respond(Error(http::status::bad_request, parsed.status().message()));
  }
  auto batch = std::make_shared<const Batch>(std::move(parsed.value()));
  committer_->Submit(batch, [this, batch, start, respond = std::move(respond)](Result<Store::InsertResult> result) {
    if (!result.ok()) {
      metrics_->Reject("storage");
      log::Error("batch not stored", "error={}", log::Quote(result.status().message()));
      return respond(Error(http::status::service_unavailable, "storage failure; retry later"));
    }
    metrics_->batches++;
    metrics_->events_received += batch->alerts.size();
    metrics_->events_stored += result->inserted;
    metrics_->events_duplicate += result->duplicates;
    for (size_t i : result->new_indexes) {
      std::string_view js = batch->alerts[i].json;
      if (hub_) hub_->Publish("alert", js);
      if (forwarder_) forwarder_->Enqueue(std::make_shared<const std::string>(js));
    }
    if (!batch->agents.empty() && hub_) hub_->Publish("agents", "{}");
    metrics_->ObserveBatch(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    respond(Make(http::status::ok, fmt::format("{{\"accepted\":{},\"new\":{},\"duplicates\":{}}}\n",
                                               batch->alerts.size(), result->inserted, result->duplicates)));
  });
}

Reply Service::Health() {
  Status st = store_->Ping();
  if (!st.ok()) return Error(http::status::service_unavailable, st.message());
  return Make(http::status::ok, "{\"status\":\"ok\"}\n");
}

Reply Service::HandleHttp(Request& req) {
  std::string target(req.target().data(), req.target().size());
  size_t qpos = target.find('?');
  std::string path = target.substr(0, qpos);
  std::string query = qpos == std::string::npos ? "" : target.substr(qpos + 1);
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    Reply r = Error(http::status::method_not_allowed, "read-only endpoint: use GET");
    r.response.set(http::field::allow, "GET, HEAD");
    return r;
  }
  if (path == "/healthz") return Health();
  if (path == "/metrics")
    return Make(http::status::ok, metrics_->Render(store_->FileBytes(), store_->checkpoints()), "text/plain; version=0.0.4");
  if (path == "/api/events") return ListEvents(req, query, false);
  if (path == "/api/events.ndjson") return ListEvents(req, query, true);
  if (path.rfind("/api/events/", 0) == 0) {
    auto ev = store_->GetEvent(UrlDecode(path.substr(12)));
    if (!ev.ok()) return Error(http::status::service_unavailable, ev.status().message());
    if (!ev->has_value()) return Error(http::status::not_found, "no such event");
    return Make(http::status::ok, **ev + "\n");
  }
  if (path == "/api/summary") return Summary(query);
  if (path == "/api/agents") {
    auto a = store_->Agents();
    if (!a.ok()) return Error(http::status::service_unavailable, a.status().message());
    return Make(http::status::ok, json({{"agents", *a}}).dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
  }
  if (path == "/api/stream") {
    Reply r;
    r.sse = true;
    return r;
  }
  const WebAsset* asset = FindWebAsset(path == "/" || path == "/agents" ? "/index.html" : path);
  if (!asset) return Error(http::status::not_found, "not found");
  Reply r = Make(http::status::ok, std::string(asset->data, asset->size), asset->content_type);
  // Nothing may load from elsewhere: the console works offline and a
  // malicious alert field cannot pull in a script.
  r.response.set("Content-Security-Policy",
                 "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                 "connect-src 'self'; frame-ancestors 'none'");
  r.response.set("X-Content-Type-Options", "nosniff");
  r.response.set(http::field::cache_control, "no-cache");
  return r;
}

Reply Service::ListEvents(const Request&, const std::string& query, bool ndjson) {
  auto params = ParseQuery(query);
  Store::Query q;
  int64_t now = NowNs();
  auto get = [&](const char* k) -> std::string {
    auto it = params.find(k);
    return it == params.end() ? "" : it->second;
  };
  if (auto v = get("since"); !v.empty() && !ParseTime(v, now, &q.since_ns))
    return Error(http::status::bad_request, "since: expected RFC 3339, ns, or -15m/-2h/-7d");
  if (auto v = get("until"); !v.empty() && !ParseTime(v, now, &q.until_ns))
    return Error(http::status::bad_request, "until: expected RFC 3339, ns, or -15m/-2h/-7d");
  q.rules = SplitComma(get("rule"));
  for (const auto& p : SplitComma(get("priority"))) {
    int idx = PriorityIndex(p);
    if (idx < 0) return Error(http::status::bad_request, fmt::format("priority: unknown \"{}\"", p));
    q.priorities.push_back(idx);
  }
  if (auto v = get("min_priority"); !v.empty()) {
    q.min_priority = PriorityIndex(v);
    if (q.min_priority < 0) return Error(http::status::bad_request, fmt::format("min_priority: unknown \"{}\"", v));
  }
  q.text = get("q");
  q.container = get("container");
  q.task = get("task");
  q.agent = get("agent");
  q.cursor = get("cursor");
  q.limit = ndjson ? 10000 : 100;
  if (auto v = get("limit"); !v.empty()) q.limit = std::atoi(v.c_str());
  auto page = store_->QueryEvents(q);
  if (!page.ok()) {
    if (page.status().code() == Status::Code::kInvalidArgument)
      return Error(http::status::bad_request, page.status().message());
    return Error(http::status::service_unavailable, page.status().message());
  }
  std::string body;
  if (ndjson) {
    for (const auto& e : page->events) body += e + "\n";
    Reply r = Make(http::status::ok, std::move(body), "application/x-ndjson");
    if (!page->next_cursor.empty()) r.response.set("X-Next-Cursor", page->next_cursor);
    return r;
  }
  body = "{\"events\":[";
  for (size_t i = 0; i < page->events.size(); ++i) {
    if (i) body += ',';
    body += page->events[i];
  }
  body += "],\"next_cursor\":";
  body += page->next_cursor.empty() ? "null" : "\"" + page->next_cursor + "\"";
  body += "}\n";
  return Make(http::status::ok, std::move(body));
}

Reply Service::Summary(const std::string& query) {
  auto params = ParseQuery(query);
  int64_t now = NowNs();
  int64_t since = now - 3600LL * 1000000000LL;
  if (auto it = params.find("since"); it != params.end() && !ParseTime(it->second, now, &since))
    return Error(http::status::bad_request, "since: expected RFC 3339, ns, or -15m/-2h/-7d");
  int buckets = 60;
  if (auto it = params.find("buckets"); it != params.end()) buckets = std::atoi(it->second.c_str());
  auto s = store_->Summary(since, now, buckets);
  if (!s.ok()) return Error(http::status::service_unavailable, s.status().message());
  return Make(http::status::ok, s->dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
}

}  // namespace sidetrace::backend
