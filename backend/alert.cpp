#include "backend/alert.h"

#include <zlib.h>
#include <zstd.h>

#include <cctype>
#include <ctime>

#include <fmt/format.h>

namespace sidetrace::backend {

using json = nlohmann::json;

namespace {

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// A string field of `obj`, or "" when missing or not a string.
std::string Str(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) return {};
  if (it->is_string()) return it->get_ref<const std::string&>();
  if (it->is_number()) return Dump(*it);
  return {};
}

int64_t Counter(const json& obj, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    auto it = obj.find(k);
    if (it != obj.end() && it->is_number()) return it->get<int64_t>();
  }
  return -1;
}

// Looks a key up in the record itself, then in its "metadata" object.
std::string MetaStr(const json& rec, const char* key) {
  std::string v = Str(rec, key);
  if (v.empty()) {
    auto m = rec.find("metadata");
    if (m != rec.end() && m->is_object()) v = Str(*m, key);
  }
  return v;
}

Result<AgentRecord> ParseAgent(const json& rec, const json* stats, const std::string& where) {
  if (!rec.is_object()) return Status::InvalidArgument(where + ": must be an object");
  AgentRecord a;
  a.id = Str(rec, "id");
  if (a.id.empty()) a.id = Str(rec, "agent_id");
  if (a.id.empty()) return Status::InvalidArgument(where + ".id: required string");
  a.hostname = MetaStr(rec, "hostname");
  a.container_id = MetaStr(rec, "container.id");
  a.container_name = MetaStr(rec, "container.name");
  a.task_arn = MetaStr(rec, "aws.ecs.task.arn");
  a.cluster = MetaStr(rec, "aws.ecs.cluster");
  json meta = rec;
  const json* st = stats;
  auto sit = rec.find("stats");
  if (sit != rec.end()) st = &*sit;
  meta.erase("stats");
  a.metadata_json = Dump(meta);
  if (st != nullptr && !st->is_null()) {
    if (!st->is_object()) return Status::InvalidArgument(where + ".stats: must be an object");
    a.stats_json = Dump(*st);
    a.events_seen = Counter(*st, {"events_seen", "events"});
    a.alerts = Counter(*st, {"alerts", "alerts_sent"});
    a.drops = Counter(*st, {"drops", "dropped", "alerts_dropped"});
  }
  return a;
}

}  // namespace

int PriorityIndex(std::string_view name) {
  for (int i = 0; i < 8; ++i)
    if (IEquals(name, kPriorityNames[i])) return i;
  if (IEquals(name, "info")) return 6;
  return -1;
}

bool ParseRfc3339(std::string_view s, int64_t* ns) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
  auto digits = [&](size_t pos, size_t n, int* out) {
    if (pos + n > s.size()) return false;
    int v = 0;
    for (size_t i = pos; i < pos + n; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
      v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
  };
  int Y, M, D, h, m, sec;
  if (s.size() < 20 || !digits(0, 4, &Y) || s[4] != '-' || !digits(5, 2, &M) || s[7] != '-' ||
      !digits(8, 2, &D) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(11, 2, &h) ||
      s[13] != ':' || !digits(14, 2, &m) || s[16] != ':' || !digits(17, 2, &sec))
    return false;
  if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60) return false;
  size_t pos = 19;
  int64_t frac = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int n = 0;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
      if (n < 9) frac = frac * 10 + (s[pos] - '0'), ++n;
      ++pos;
    }
    if (n == 0) return false;
    while (n < 9) frac *= 10, ++n;
  }
  int64_t offset = 0;
  if (pos >= s.size()) return false;
  if (s[pos] == 'Z' || s[pos] == 'z') {
    ++pos;
  } else if (s[pos] == '+' || s[pos] == '-') {
    int oh, om;
    if (!digits(pos + 1, 2, &oh) || pos + 3 >= s.size() || s[pos + 3] != ':' || !digits(pos + 4, 2, &om))
      return false;
    offset = (oh * 3600 + om * 60) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return false;
  }
  if (pos != s.size()) return false;
  std::tm tm{};
  tm.tm_year = Y - 1900;
  tm.tm_mon = M - 1;
  tm.tm_mday = D;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = sec;
  int64_t secs = static_cast<int64_t>(timegm(&tm)) - offset;
  *ns = secs * 1000000000LL + frac;
  return true;
}

std::string FormatRfc3339(int64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1000000000LL);
  int64_t frac = ns % 1000000000LL;
  if (frac < 0) frac += 1000000000LL, --secs;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

Result<Batch> ParseBatch(std::string_view body) {
  json doc = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Status::InvalidArgument("body: malformed JSON");
  if (!doc.is_object()) return Status::InvalidArgument("body: must be a JSON object");
  auto events = doc.find("events");
  if (events == doc.end() || !events->is_array())
    return Status::InvalidArgument("events: required array");

  Batch batch;
  auto agent = doc.find("agent");
  auto stats = doc.find("stats");
  if (stats != doc.end() && !stats->is_null() && !stats->is_object())
    return Status::InvalidArgument("stats: must be an object");
  if (agent != doc.end() && !agent->is_null()) {
    auto a = ParseAgent(*agent, stats != doc.end() ? &*stats : nullptr, "agent");
    if (!a.ok()) return a.status();
    batch.agents.push_back(std::move(a.value()));
  }
  auto agents = doc.find("agents");
  if (agents != doc.end() && !agents->is_null()) {
    if (!agents->is_array()) return Status::InvalidArgument("agents: must be an array");
    for (size_t i = 0; i < agents->size(); ++i) {
      auto a = ParseAgent((*agents)[i], nullptr, fmt::format("agents[{}]", i));
      if (!a.ok()) return a.status();
      batch.agents.push_back(std::move(a.value()));
    }
  }
  const AgentRecord* only_agent = batch.agents.size() == 1 ? &batch.agents[0] : nullptr;

  batch.alerts.reserve(events->size());
  for (size_t i = 0; i < events->size(); ++i) {
    json& e = (*events)[i];
    auto bad = [&](const char* field, std::string_view why) {
      return Status::InvalidArgument(fmt::format("events[{}].{}: {}", i, field, why));
    };
    if (!e.is_object()) return Status::InvalidArgument(fmt::format("events[{}]: must be an object", i));
    Alert a;
    auto uuid = e.find("uuid");
    if (uuid == e.end() || !uuid->is_string() || uuid->get_ref<const std::string&>().empty())
      return bad("uuid", "required non-empty string (the dedupe key)");
    a.uuid = uuid->get_ref<const std::string&>();
    if (a.uuid.size() > 128) return bad("uuid", "longer than 128 bytes");
    auto rule = e.find("rule");
    if (rule == e.end() || !rule->is_string() || rule->get_ref<const std::string&>().empty())
      return bad("rule", "required non-empty string");
    a.rule = rule->get_ref<const std::string&>();
    auto prio = e.find("priority");
    if (prio == e.end() || !prio->is_string()) return bad("priority", "required string");
    a.priority_index = PriorityIndex(prio->get_ref<const std::string&>());
    if (a.priority_index < 0)
      return bad("priority", fmt::format("unknown priority \"{}\"", prio->get_ref<const std::string&>()));
    a.priority = std::string(kPriorityNames[a.priority_index]);
    *prio = a.priority;  // canonical spelling in the stored JSON
    auto time = e.find("time");
    if (time == e.end() || !time->is_string()) return bad("time", "required RFC 3339 string");
    if (!ParseRfc3339(time->get_ref<const std::string&>(), &a.time_ns))
      return bad("time", fmt::format("not RFC 3339: \"{}\"", time->get_ref<const std::string&>()));
    auto fields = e.find("output_fields");
    if (fields == e.end() || !fields->is_object() || fields->empty())
      return bad("output_fields", "required non-empty object");
    auto tags = e.find("tags");
    if (tags != e.end() && !tags->is_array() && !tags->is_null()) return bad("tags", "must be an array");
    a.output = Str(e, "output");
    a.source = Str(e, "source");
    if (a.source.empty()) a.source = "syscall";
    a.hostname = Str(e, "hostname");
    a.container_id = Str(*fields, "container.id");
    a.container_name = Str(*fields, "container.name");
    a.image = Str(*fields, "container.image.repository");
    a.task_arn = Str(*fields, "aws.ecs.task.arn");
    a.agent_id = Str(e, "agent_id");
    if (a.agent_id.empty()) a.agent_id = Str(*fields, "agent.id");
    if (a.agent_id.empty() && only_agent) a.agent_id = only_agent->id;
    if (only_agent && a.container_id.empty()) a.container_id = only_agent->container_id;
    if (only_agent && a.task_arn.empty()) a.task_arn = only_agent->task_arn;
    a.json = Dump(e);
    batch.alerts.push_back(std::move(a));
  }
  return batch;
}

Status Decode(std::string_view encoding, std::string_view body, size_t max_bytes, std::string* out) {
  out->clear();
  if (encoding.empty() || IEquals(encoding, "identity")) {
    if (body.size() > max_bytes) return Status::Unavailable("body too large");
    out->assign(body);
    return Status::Ok();
  }
  if (IEquals(encoding, "gzip") || IEquals(encoding, "deflate") || IEquals(encoding, "x-gzip")) {
    z_stream zs{};
    // 15 + 32: zlib or gzip header, detected automatically.
    if (inflateInit2(&zs, 15 + 32) != Z_OK) return Status::Internal("inflateInit2 failed");
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(body.data()));
    zs.avail_in = static_cast<uInt>(body.size());
    char buf[64 * 1024];
    int rc;
    do {
      zs.next_out = reinterpret_cast<Bytef*>(buf);
      zs.avail_out = sizeof buf;
      rc = inflate(&zs, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END) {
        inflateEnd(&zs);
        return Status::InvalidArgument(fmt::format("body: corrupt {} data", encoding));
      }
      out->append(buf, sizeof buf - zs.avail_out);
      if (out->size() > max_bytes) {
        inflateEnd(&zs);
        return Status::Unavailable("decompressed body too large");
      }
    } while (rc != Z_STREAM_END && (zs.avail_in > 0 || zs.avail_out == 0));
    inflateEnd(&zs);
    if (rc != Z_STREAM_END) return Status::InvalidArgument(fmt::format("body: truncated {} data", encoding));
    return Status::Ok();
  }
  if (IEquals(encoding, "zstd")) {
    ZSTD_DStream* ds = ZSTD_createDStream();
    ZSTD_inBuffer in{body.data(), body.size(), 0};
    char buf[64 * 1024];
    size_t rc = 1;
    while (in.pos < in.size) {
      ZSTD_outBuffer ob{buf, sizeof buf, 0};
      rc = ZSTD_decompressStream(ds, &ob, &in);
      if (ZSTD_isError(rc)) {
        ZSTD_freeDStream(ds);
        return Status::InvalidArgument("body: corrupt zstd data");
      }
      out->append(buf, ob.pos);
      if (out->size() > max_bytes) {
        ZSTD_freeDStream(ds);
        return Status::Unavailable("decompressed body too large");
      }
      if (rc == 0 && in.pos < in.size) {
        // Another frame follows: zstd allows concatenation.
        continue;
      }
    }
    // Flush what is still buffered.
    while (rc != 0) {
      ZSTD_outBuffer ob{buf, sizeof buf, 0};
      rc = ZSTD_decompressStream(ds, &ob, &in);
      if (ZSTD_isError(rc)) {
        ZSTD_freeDStream(ds);
        return Status::InvalidArgument("body: corrupt zstd data");
      }
      out->append(buf, ob.pos);
      if (out->size() > max_bytes) {
        ZSTD_freeDStream(ds);
        return Status::Unavailable("decompressed body too large");
      }
      if (ob.pos == 0 && rc != 0) {
        ZSTD_freeDStream(ds);
        return Status::InvalidArgument("body: truncated zstd data");
      }
    }
    ZSTD_freeDStream(ds);
    return Status::Ok();
  }
  return Status::InvalidArgument(fmt::format("Content-Encoding: unsupported \"{}\"", encoding));
}

}  // namespace sidetrace::backend
