#include "backend/alert.h"

#include <simdjson.h>
#include <zlib.h>
#include <zstd.h>

#include <cctype>
#include <cstring>
#include <ctime>
#include <memory>

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

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
// days_from_civil); like timegm, a day past the month's end rolls over.
int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

}  // namespace

int PriorityIndex(std::string_view name) {
  for (int i = 0; i < 8; ++i)  // Falco's own spelling first: the common case
    if (name == kPriorityNames[i]) return i;
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
  int64_t secs = DaysFromCivil(Y, M, D) * 86400 + h * 3600 + m * 60 + sec - offset;
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

namespace {

namespace dom = simdjson::dom;
static_assert(kParsePadding >= simdjson::SIMDJSON_PADDING);

// The parser keeps its buffers between batches (no allocation per batch).
dom::parser& ThreadParser() {
  thread_local dom::parser parser;
  return parser;
}

// The small records (agent, agents, stats) as nlohmann values, for ParseAgent.
json ToNlohmann(dom::element e) { return json::parse(simdjson::minify(e), nullptr, false); }

// One alert's members, found in one pass over its keys (and its
// output_fields' keys); the first of duplicate keys counts, as with at_key.
struct AlertMembers {
  enum : unsigned { kUuid = 1, kRule = 2, kPriority = 4, kTime = 8, kFields = 16, kTags = 32, kAgentId = 64 };
  unsigned seen = 0;
  dom::element uuid, rule, priority, time, fields, tags, agent_id;

  explicit AlertMembers(dom::object obj) {
    for (dom::key_value_pair kv : obj) {
      std::string_view k = kv.key;
      switch (k.size()) {
        case 4:
          if (k == "uuid") Take(kUuid, &uuid, kv.value);
          else if (k == "rule") Take(kRule, &rule, kv.value);
          else if (k == "time") Take(kTime, &time, kv.value);
          else if (k == "tags") Take(kTags, &tags, kv.value);
          break;
        case 8:
          if (k == "priority") Take(kPriority, &priority, kv.value);
          else if (k == "agent_id") Take(kAgentId, &agent_id, kv.value);
          break;
        case 13:
          if (k == "output_fields") Take(kFields, &fields, kv.value);
          break;
      }
    }
  }
  void Take(unsigned bit, dom::element* slot, dom::element v) {
    if (seen & bit) return;
    seen |= bit;
    *slot = v;
  }
  // True and `*out` set when the member is present and a string.
  bool String(unsigned bit, dom::element e, std::string_view* out) const {
    return (seen & bit) && !e.get_string().get(*out);
  }
};

Result<Alert> ParseAlert(dom::element e, size_t index) {
  auto bad = [&](const char* field, std::string_view why) {
    return Status::InvalidArgument(fmt::format("events[{}].{}: {}", index, field, why));
  };
  dom::object obj;
  if (e.get_object().get(obj))
    return Status::InvalidArgument(fmt::format("events[{}]: must be an object", index));
  AlertMembers m(obj);
  using M = AlertMembers;
  Alert a;
  std::string_view time;
  // The checks, in the order a reader expects the reasons.
  if (!m.String(M::kUuid, m.uuid, &a.uuid) || a.uuid.empty()) return bad("uuid", "required non-empty string (the dedupe key)");
  if (a.uuid.size() > 128) return bad("uuid", "longer than 128 bytes");
  if (!m.String(M::kRule, m.rule, &a.rule) || a.rule.empty()) return bad("rule", "required non-empty string");
  if (!m.String(M::kPriority, m.priority, &a.priority)) return bad("priority", "required string");
  a.priority_index = PriorityIndex(a.priority);
  if (a.priority_index < 0) return bad("priority", fmt::format("unknown priority \"{}\"", a.priority));
  if (!m.String(M::kTime, m.time, &time)) return bad("time", "required RFC 3339 string");
  if (!ParseRfc3339(time, &a.time_ns)) return bad("time", fmt::format("not RFC 3339: \"{}\"", time));
  dom::object fields;
  if (!(m.seen & M::kFields) || m.fields.get_object().get(fields) || fields.size() == 0)
    return bad("output_fields", "required non-empty object");
  if ((m.seen & M::kTags) && !m.tags.is_null() && !m.tags.is_array()) return bad("tags", "must be an array");
  std::string_view field_agent_id;
  bool container = false, task = false, agent = false;
  for (dom::key_value_pair kv : fields) {
    std::string_view k = kv.key, v;
    if (k.size() == 12 && !container && k == "container.id") {
      container = true;
      if (!kv.value.get_string().get(v)) a.container_id = v;
    } else if (k.size() == 16 && !task && k == "aws.ecs.task.arn") {
      task = true;
      if (!kv.value.get_string().get(v)) a.task_arn = v;
    } else if (k.size() == 8 && !agent && k == "agent.id") {
      agent = true;
      if (!kv.value.get_string().get(v)) field_agent_id = v;
    }
  }
  if (!m.String(M::kAgentId, m.agent_id, &a.agent_id) || a.agent_id.empty()) a.agent_id = field_agent_id;
  return a;
}

// Copies the alerts' indexed fields (views into the parser's memory, reused
// by the thread's next parse) into one block owned by the batch.
void PinStrings(Batch* batch) {
  size_t total = 0;
  for (const Alert& a : batch->alerts)
    total += a.uuid.size() + a.rule.size() + a.container_id.size() + a.task_arn.size() + a.agent_id.size();
  batch->strings = std::make_unique<char[]>(total + 1);
  char* p = batch->strings.get();
  auto pin = [&p](std::string_view* v) {
    std::memcpy(p, v->data(), v->size());
    *v = std::string_view(p, v->size());
    p += v->size();
  };
  for (Alert& a : batch->alerts) {
    pin(&a.uuid);
    pin(&a.rule);
    pin(&a.container_id);
    pin(&a.task_arn);
    pin(&a.agent_id);
    a.priority = kPriorityNames[a.priority_index];
  }
}

bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// One element of the "events" array as the sender wrote it.
struct Slice {
  std::string_view text;
  bool spaced;  // has whitespace between tokens: to be minified
};

// The elements of the top-level "events" array of `s`, found from the
// structural index that stage 1 of the DOM parse already built (the offset
// of every {, }, [, ], :, comma and of the first byte of every string and
// scalar, in order): no second pass over the body's bytes.
// REQUIRES: `parser` has just parsed `s` successfully, an object at the top.
std::vector<Slice> EventSlices(const dom::parser& parser, std::string_view s) {
  const uint32_t* at = parser.implementation->structural_indexes.get();
  const size_t n = parser.implementation->n_structural_indexes;
  auto c = [&](size_t i) { return s[at[i]]; };
  // From structural i (a value's first), the index of the value's last.
  auto last = [&](size_t i) {
    if (c(i) != '{' && c(i) != '[') return i;
    for (int depth = 0;; ++i) {
      if (c(i) == '{' || c(i) == '[') ++depth;
      if ((c(i) == '}' || c(i) == ']') && --depth == 0) return i;
    }
  };
  std::vector<Slice> out;
  for (size_t i = 1; i + 1 < n && c(i) == '"';) {  // a key, then ':'
    std::string_view raw = s.substr(at[i], at[i + 1] - at[i]);
    while (IsSpace(raw.back())) raw.remove_suffix(1);
    bool is_events = raw == "\"events\"";
    if (!is_events && raw.find('\\') != std::string_view::npos) {
      json k = json::parse(raw, nullptr, false);
      is_events = k.is_string() && k.get_ref<const std::string&>() == "events";
    }
    i += 2;
    if (is_events && c(i) == '[') {
      for (++i; c(i) != ']';) {
        // To the element's closing brace, noting whitespace between tokens:
        // it is the byte before a token (no token ends in whitespace, and
        // in valid JSON nothing else between tokens is <= 0x20).
        size_t end = i;
        bool spaced = false;
        for (int depth = 0;;) {
          unsigned char pair[2];  // the byte before the structural, and it
          std::memcpy(pair, s.data() + at[end] - 1, 2);
          spaced |= end > i && pair[0] <= 0x20;
          depth += (pair[1] == '{' || pair[1] == '[') - (pair[1] == '}' || pair[1] == ']');
          if (depth == 0) break;
          ++end;
        }
        out.push_back({s.substr(at[i], at[end] + 1 - at[i]), spaced});
        i = end + 1;
        if (c(i) == ',') ++i;
      }
      return out;
    }
    i = last(i) + 1;
    if (c(i) == ',') ++i;
  }
  return out;
}

}  // namespace

Result<Batch> ParseBatch(std::string body) {
  auto text = std::make_shared<const std::string>(std::move(body));
  dom::parser& parser = ThreadParser();
  dom::element root;
  // No copy of the body into the parser when its capacity has the padding.
  if (parser.parse(*text).get(root)) return Status::InvalidArgument("body: malformed JSON");
  dom::object top;
  if (root.get_object().get(top)) return Status::InvalidArgument("body: must be a JSON object");
  dom::array events;
  if (top.at_key("events").get_array().get(events)) return Status::InvalidArgument("events: required array");

  Batch batch;
  batch.alerts.reserve(events.size());
  size_t index = 0;
  for (dom::element e : events) {
    auto a = ParseAlert(e, index++);
    if (!a.ok()) return a.status();
    batch.alerts.push_back(std::move(a.value()));
  }

  // Each alert's text: a slice of the body, minified only if it is not
  // compact already (a sender writing one-line JSON costs no copy).
  std::vector<Slice> slices = EventSlices(parser, *text);
  if (slices.size() != batch.alerts.size())
    return Status::Internal(fmt::format("events: found {} alert texts for {} alerts", slices.size(), batch.alerts.size()));
  for (size_t i = 0; i < slices.size(); ++i) {
    Alert& a = batch.alerts[i];
    a.json = slices[i].text;
    if (slices[i].spaced) {
      std::string& m = batch.rewritten.emplace_back(a.json.size() + simdjson::SIMDJSON_PADDING, '\0');
      size_t len = 0;
      if (simdjson::minify(a.json.data(), a.json.size(), m.data(), len) != simdjson::SUCCESS)
        return Status::Internal("body: minify failed");
      m.resize(len);
      a.json = m;
    }
    if (a.priority != kPriorityNames[a.priority_index]) {
      // Rare: "warning" instead of "Warning". Store Falco's spelling.
      json j = json::parse(a.json, nullptr, false);
      j["priority"] = kPriorityNames[a.priority_index];
      a.json = batch.rewritten.emplace_back(Dump(j));
    }
  }
  batch.text = std::move(text);

  json stats;
  if (dom::element st; !top.at_key("stats").get(st) && !st.is_null()) {
    if (!st.is_object()) return Status::InvalidArgument("stats: must be an object");
    stats = ToNlohmann(st);
  }
  if (dom::element ag; !top.at_key("agent").get(ag) && !ag.is_null()) {
    auto a = ParseAgent(ag.is_object() ? ToNlohmann(ag) : json(), stats.is_null() ? nullptr : &stats, "agent");
    if (!a.ok()) return a.status();
    batch.agents.push_back(std::move(a.value()));
  }
  if (dom::element ags; !top.at_key("agents").get(ags) && !ags.is_null()) {
    if (!ags.is_array()) return Status::InvalidArgument("agents: must be an array");
    json agents = ToNlohmann(ags);
    for (size_t i = 0; i < agents.size(); ++i) {
      auto a = ParseAgent(agents[i], nullptr, fmt::format("agents[{}]", i));
      if (!a.ok()) return a.status();
      batch.agents.push_back(std::move(a.value()));
    }
  }
  if (batch.agents.size() == 1) {
    const AgentRecord& only = batch.agents[0];
    for (Alert& a : batch.alerts) {
      if (a.agent_id.empty()) a.agent_id = only.id;
      if (a.container_id.empty()) a.container_id = only.container_id;
      if (a.task_arn.empty()) a.task_arn = only.task_arn;
    }
  }
  PinStrings(&batch);
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
    std::unique_ptr<ZSTD_DStream, size_t (*)(ZSTD_DStream*)> ds(ZSTD_createDStream(), ZSTD_freeDStream);
    if (!ds) return Status::Internal("zstd: out of memory");
    ZSTD_inBuffer in{body.data(), body.size(), 0};
    char buf[64 * 1024];
    // One call per output buffer, while input remains or the decoder still
    // holds output; frames may follow one another (zstd allows it).
    for (;;) {
      ZSTD_outBuffer ob{buf, sizeof buf, 0};
      size_t rc = ZSTD_decompressStream(ds.get(), &ob, &in);
      if (ZSTD_isError(rc)) return Status::InvalidArgument("body: corrupt zstd data");
      out->append(buf, ob.pos);
      if (out->size() > max_bytes) return Status::Unavailable("decompressed body too large");
      if (in.pos < in.size) continue;
      if (rc == 0) return Status::Ok();  // the last frame is complete
      if (ob.pos == 0) return Status::InvalidArgument("body: truncated zstd data");
    }
  }
  return Status::InvalidArgument(fmt::format("Content-Encoding: unsupported \"{}\"", encoding));
}

}  // namespace sidetrace::backend
