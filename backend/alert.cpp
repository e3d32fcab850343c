#include "backend/alert.h"

#include <zlib.h>
#include <zstd.h>

#include <cctype>
#include <ctime>
#include <iterator>
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

namespace {

void AppendEscaped(std::string* out, std::string_view s) {
  out->push_back('"');
  size_t run = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out->append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      case '\b': out->append("\\b"); break;
      case '\f': out->append("\\f"); break;
      default: fmt::format_to(std::back_inserter(*out), "\\u{:04x}", c);
    }
  }
  out->append(s.data() + run, s.size() - run);
  out->push_back('"');
}

// One pass over the body with nlohmann's SAX parser: validates the JSON and
// extracts the fields the store indexes, without building a DOM (the DOM's
// allocations were most of the ingest CPU). Each alert's text is then taken
// from the body itself (EventSpans). "agent", "agents" and "stats" are small:
// their text is re-emitted while parsing and parsed into a DOM afterwards.
class BatchSax {
 public:
  using json_t = json;
  Status error;
  Batch batch;
  std::vector<size_t> respelled;  // alerts whose priority needs Falco's spelling
  std::string agent_text, agents_text, stats_text;
  bool saw_events = false;

  bool null() { return Scalar("null", Kind::kNull); }
  bool boolean(bool v) { return Scalar(v ? "true" : "false", Kind::kOther); }
  bool number_integer(json::number_integer_t v) { return Number(fmt::format_int(v).str()); }
  bool number_unsigned(json::number_unsigned_t v) { return Number(fmt::format_int(v).str()); }
  bool number_float(json::number_float_t, const std::string& raw) { return Number(raw); }
  bool binary(json::binary_t&) { return Fail(Status::InvalidArgument("body: malformed JSON")); }
  bool string(std::string& v) {
    if (depth_ == 3 && in_events_) {
      StringField(v);
    } else if (depth_ == 4 && in_events_ && in_fields_) {
      FieldString(v);
    }
    if (depth_ == 0) return Fail(Status::InvalidArgument("body: must be a JSON object"));
    if (depth_ == 1) return TopScalar();
    if (depth_ == 2 && in_events_) return NotObject();
    if (out_) {
      BeforeValue();
      AppendEscaped(out_, v);
    }
    return true;
  }
  bool key(std::string& k) {
    if (depth_ == 1) top_key_ = k;
    if (depth_ == 3 && in_events_) ev_key_ = k;
    if (depth_ == 4 && in_events_ && in_fields_) {
      field_key_ = k;
      ++field_count_;
    }
    if (out_) {
      if (!first_.back()) out_->push_back(',');
      first_.back() = false;
      AppendEscaped(out_, k);
      out_->push_back(':');
      after_key_ = true;
    }
    return true;
  }
  bool start_object(std::size_t) { return Start('{', true); }
  bool start_array(std::size_t) { return Start('[', false); }
  bool end_object() { return End('}'); }
  bool end_array() { return End(']'); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) {
    if (error.ok()) error = Status::InvalidArgument("body: malformed JSON");
    return false;
  }

 private:
  enum class Kind { kNull, kOther };

  bool Fail(Status st) {
    if (error.ok()) error = std::move(st);
    return false;
  }
  Status Bad(const char* field, std::string_view why) {
    return Status::InvalidArgument(fmt::format("events[{}].{}: {}", index_, field, why));
  }
  bool NotObject() { return Fail(Status::InvalidArgument(fmt::format("events[{}]: must be an object", index_))); }
  bool TopScalar() {
    if (top_key_ == "events") return Fail(Status::InvalidArgument("events: required array"));
    if (top_key_ == "stats" || top_key_ == "agent" || top_key_ == "agents") {
      // Scalars there: recorded as text, checked after the parse.
      std::string* t = top_key_ == "stats" ? &stats_text : top_key_ == "agent" ? &agent_text : &agents_text;
      *t = "scalar";
    }
    return true;
  }
  void BeforeValue() {
    if (after_key_) {
      after_key_ = false;
    } else if (!first_.empty()) {
      if (!first_.back()) out_->push_back(',');
      first_.back() = false;
    }
  }
  bool Scalar(std::string_view text, Kind kind) {
    if (depth_ == 0) return Fail(Status::InvalidArgument("body: must be a JSON object"));
    if (depth_ == 1) {
      if (kind == Kind::kNull && top_key_ != "events") return true;
      return TopScalar();
    }
    if (depth_ == 2 && in_events_) return NotObject();
    if (depth_ == 3 && in_events_) {
      if (ev_key_ == "tags" && kind != Kind::kNull) tags_bad_ = true;
      if (ev_key_ == "output_fields") fields_bad_ = true;
    }
    if (out_) {
      BeforeValue();
      out_->append(text);
    }
    return true;
  }
  bool Number(const std::string& text) { return Scalar(text, Kind::kOther); }

  void StringField(const std::string& v) {
    if (ev_key_ == "uuid") cur_.uuid = v, has_uuid_ = true;
    else if (ev_key_ == "rule") cur_.rule = v, has_rule_ = true;
    else if (ev_key_ == "priority") cur_.priority = v, has_priority_ = true;
    else if (ev_key_ == "time") time_ = v, has_time_ = true;
    else if (ev_key_ == "output") cur_.output = v;
    else if (ev_key_ == "source") cur_.source = v;
    else if (ev_key_ == "hostname") cur_.hostname = v;
    else if (ev_key_ == "agent_id") cur_.agent_id = v;
    else if (ev_key_ == "tags") tags_bad_ = true;
    else if (ev_key_ == "output_fields") fields_bad_ = true;
  }
  void FieldString(const std::string& v) {
    if (field_key_ == "container.id") cur_.container_id = v;
    else if (field_key_ == "container.name") cur_.container_name = v;
    else if (field_key_ == "container.image.repository") cur_.image = v;
    else if (field_key_ == "aws.ecs.task.arn") cur_.task_arn = v;
    else if (field_key_ == "agent.id" && fields_agent_.empty()) fields_agent_ = v;
  }

  bool Start(char c, bool object) {
    if (depth_ == 0) {
      if (!object) return Fail(Status::InvalidArgument("body: must be a JSON object"));
      depth_ = 1;
      return true;
    }
    if (depth_ == 1) {
      if (top_key_ == "events") {
        if (object) return Fail(Status::InvalidArgument("events: required array"));
        in_events_ = true;
        saw_events = true;
        depth_ = 2;
        return true;
      }
      if (top_key_ == "agent") out_ = &agent_text;
      else if (top_key_ == "agents") out_ = &agents_text;
      else if (top_key_ == "stats") out_ = &stats_text;
      if (out_) out_->clear();
    } else if (depth_ == 2 && in_events_) {
      if (!object) return NotObject();
      cur_ = Alert();
      time_.clear();
      fields_agent_.clear();
      has_uuid_ = has_rule_ = has_priority_ = has_time_ = false;
      fields_seen_ = fields_bad_ = tags_bad_ = false;
      field_count_ = 0;
    } else if (depth_ == 3 && in_events_) {
      if (ev_key_ == "output_fields") {
        if (object) {
          in_fields_ = true;
          fields_seen_ = true;
          field_count_ = 0;
        } else {
          fields_bad_ = true;
        }
      } else if (ev_key_ == "tags" && object) {
        tags_bad_ = true;
      }
    }
    if (out_) {
      BeforeValue();
      out_->push_back(c);
      first_.push_back(true);
    }
    ++depth_;
    return true;
  }

  bool End(char c) {
    --depth_;
    if (out_) {
      out_->push_back(c);
      first_.pop_back();
    }
    if (depth_ == 3 && in_events_ && in_fields_) in_fields_ = false;
    if (depth_ == 1 && in_events_) {
      in_events_ = false;  // the events array closed
      return true;
    }
    if (depth_ == 2 && in_events_) {
      Status st = FinishAlert();
      if (!st.ok()) return Fail(std::move(st));
      ++index_;
      return true;
    }
    if (depth_ == 1) out_ = nullptr;  // agent / agents / stats captured
    return true;
  }

  // The checks, in the order a reader expects the reasons.
  Status FinishAlert() {
    if (!has_uuid_ || cur_.uuid.empty()) return Bad("uuid", "required non-empty string (the dedupe key)");
    if (cur_.uuid.size() > 128) return Bad("uuid", "longer than 128 bytes");
    if (!has_rule_ || cur_.rule.empty()) return Bad("rule", "required non-empty string");
    if (!has_priority_) return Bad("priority", "required string");
    cur_.priority_index = PriorityIndex(cur_.priority);
    if (cur_.priority_index < 0) return Bad("priority", fmt::format("unknown priority \"{}\"", cur_.priority));
    if (cur_.priority != kPriorityNames[cur_.priority_index]) {
      cur_.priority = std::string(kPriorityNames[cur_.priority_index]);
      respelled.push_back(batch.alerts.size());
    }
    if (!has_time_) return Bad("time", "required RFC 3339 string");
    if (!ParseRfc3339(time_, &cur_.time_ns)) return Bad("time", fmt::format("not RFC 3339: \"{}\"", time_));
    if (!fields_seen_ || fields_bad_ || field_count_ == 0) return Bad("output_fields", "required non-empty object");
    if (tags_bad_) return Bad("tags", "must be an array");
    if (cur_.source.empty()) cur_.source = "syscall";
    if (cur_.agent_id.empty()) cur_.agent_id = fields_agent_;
    batch.alerts.push_back(std::move(cur_));
    return Status::Ok();
  }

  int depth_ = 0;
  bool in_events_ = false, in_fields_ = false;
  std::string top_key_, ev_key_, field_key_;
  size_t index_ = 0;
  std::string* out_ = nullptr;  // where the current captured value's text goes
  std::vector<bool> first_;     // per open container in out_: no element yet
  bool after_key_ = false;
  Alert cur_;
  std::string time_, fields_agent_;
  bool has_uuid_ = false, has_rule_ = false, has_priority_ = false, has_time_ = false;
  bool fields_seen_ = false, fields_bad_ = false, tags_bad_ = false;
  size_t field_count_ = 0;
};

size_t SkipWs(std::string_view s, size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

size_t SkipString(std::string_view s, size_t i) {  // at the opening quote
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') ++i;
    else if (s[i] == '"') return i + 1;
  }
  return s.size();
}

size_t SkipValue(std::string_view s, size_t i) {
  if (i >= s.size()) return i;
  if (s[i] == '"') return SkipString(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      char c = s[i];
      if (c == '"') {
        i = SkipString(s, i);
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
      }
      ++i;
    }
    return i;
  }
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\t' &&
         s[i] != '\n' && s[i] != '\r')
    ++i;
  return i;
}

// The elements of every top-level "events" array, in order, as compact text
// (whitespace outside strings removed, so that one alert is one line).
// REQUIRES: `body` is valid JSON with an object at the top (the SAX pass
// checked it), so a depth-and-quotes scan finds the same elements.
std::vector<std::string> EventTexts(std::string_view s) {
  std::vector<std::string> out;
  size_t i = SkipWs(s, 0) + 1;  // past '{'
  for (;;) {
    i = SkipWs(s, i);
    if (i >= s.size() || s[i] != '"') break;
    size_t key_end = SkipString(s, i);
    std::string_view raw = s.substr(i, key_end - i);
    bool is_events = raw == "\"events\"";
    if (!is_events && raw.find('\\') != std::string_view::npos) {
      json k = json::parse(raw, nullptr, false);
      is_events = k.is_string() && k.get_ref<const std::string&>() == "events";
    }
    i = SkipWs(s, key_end) + 1;  // past ':'
    i = SkipWs(s, i);
    if (is_events && i < s.size() && s[i] == '[') {
      ++i;
      for (;;) {
        i = SkipWs(s, i);
        if (i >= s.size() || s[i] == ']') break;
        size_t end = SkipValue(s, i);
        std::string text;
        text.reserve(end - i);
        for (size_t j = i; j < end;) {
          char c = s[j];
          if (c == '"') {
            size_t e = SkipString(s, j);
            text.append(s.data() + j, e - j);
            j = e;
          } else {
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') text.push_back(c);
            ++j;
          }
        }
        out.push_back(std::move(text));
        i = SkipWs(s, end);
        if (i < s.size() && s[i] == ',') ++i;
      }
      ++i;  // past ']'
    } else {
      i = SkipValue(s, i);
    }
    i = SkipWs(s, i);
    if (i < s.size() && s[i] == ',') ++i;
    else break;
  }
  return out;
}

}  // namespace

Result<Batch> ParseBatch(std::string_view body) {
  BatchSax sax;
  bool ok = json::sax_parse(body.begin(), body.end(), &sax, json::input_format_t::json, /*strict=*/true);
  if (!sax.error.ok()) return sax.error;
  if (!ok) return Status::InvalidArgument("body: malformed JSON");
  if (!sax.saw_events) return Status::InvalidArgument("events: required array");
  Batch batch = std::move(sax.batch);
  std::vector<std::string> texts = EventTexts(body);
  if (texts.size() != batch.alerts.size())
    return Status::Internal(fmt::format("events: found {} alert texts for {} alerts", texts.size(), batch.alerts.size()));
  for (size_t i = 0; i < texts.size(); ++i) batch.alerts[i].json = std::move(texts[i]);
  for (size_t i : sax.respelled) {
    // Rare: "warning" instead of "Warning". Store Falco's spelling.
    json j = json::parse(batch.alerts[i].json, nullptr, false);
    j["priority"] = batch.alerts[i].priority;
    batch.alerts[i].json = Dump(j);
  }

  json stats;
  if (!sax.stats_text.empty()) {
    stats = json::parse(sax.stats_text, nullptr, false);
    if (!stats.is_object()) return Status::InvalidArgument("stats: must be an object");
  }
  if (!sax.agent_text.empty()) {
    json agent = json::parse(sax.agent_text, nullptr, false);
    auto a = ParseAgent(agent, stats.is_null() ? nullptr : &stats, "agent");
    if (!a.ok()) return a.status();
    batch.agents.push_back(std::move(a.value()));
  }
  if (!sax.agents_text.empty()) {
    json agents = json::parse(sax.agents_text, nullptr, false);
    if (!agents.is_array()) return Status::InvalidArgument("agents: must be an array");
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
