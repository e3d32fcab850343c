#include "common/link/protocol.h"

#include <fmt/format.h>

#include <cmath>
#include <utility>

namespace sidetrace::link {

using nlohmann::json;

namespace {

constexpr size_t kMaxIdBytes = 256;
constexpr size_t kMaxKeyBytes = 1024;
constexpr size_t kMaxReasonBytes = 1024;

// A DOM builder that refuses nesting deeper than kMaxNesting. nlohmann's
// binary reader recurses once per nested array/map, so without this a 1 MiB
// frame of 0x81 0x81 ... (array of array of ...) would overflow the stack.
class BoundedDomParser : public nlohmann::detail::json_sax_dom_parser<json> {
 public:
  // input_bytes bounds every declared container length: the base class
  // throws on lengths above a std::map's max_size, which CBOR can declare.
  BoundedDomParser(json& root, size_t input_bytes)
      : json_sax_dom_parser<json>(root, false), input_bytes_(input_bytes) {}

  bool start_object(std::size_t len) {
    if (++depth_ > kMaxNesting) return too_deep_ = true, false;
    if (len != static_cast<std::size_t>(-1) && len > input_bytes_) return false;
    return json_sax_dom_parser<json>::start_object(len);
  }
  bool end_object() { --depth_; return json_sax_dom_parser<json>::end_object(); }
  bool start_array(std::size_t len) {
    if (++depth_ > kMaxNesting) return too_deep_ = true, false;
    if (len != static_cast<std::size_t>(-1) && len > input_bytes_) return false;
    return json_sax_dom_parser<json>::start_array(len);
  }
  bool end_array() { --depth_; return json_sax_dom_parser<json>::end_array(); }

  bool too_deep() const { return too_deep_; }

 private:
  size_t input_bytes_;
  int depth_ = 0;
  bool too_deep_ = false;
};

Status Missing(std::string_view type, std::string_view field, std::string_view want) {
  return Status::InvalidArgument(fmt::format("{}: field '{}' must be {}", type, field, want));
}

Status RequireString(const json& body, std::string_view type, const char* field, size_t min,
                     size_t max) {
  auto it = body.find(field);
  if (it == body.end() || !it->is_string()) return Missing(type, field, "a string");
  size_t n = it->get_ref<const std::string&>().size();
  if (n < min || n > max) {
    return Status::InvalidArgument(
        fmt::format("{}: field '{}' has {} bytes, allowed {}..{}", type, field, n, min, max));
  }
  return Status::Ok();
}

Status RequireObject(const json& body, std::string_view type, const char* field, bool optional) {
  auto it = body.find(field);
  if (it == body.end()) return optional ? Status::Ok() : Missing(type, field, "an object");
  if (!it->is_object()) return Missing(type, field, "an object");
  return Status::Ok();
}

Status RequireSeq(const json& body, std::string_view type, bool allow_zero) {
  auto it = body.find("seq");
  if (it == body.end() || !it->is_number_unsigned() || (!allow_zero && it->get<uint64_t>() == 0)) {
    return Missing(type, "seq", allow_zero ? "an unsigned integer" : "an integer >= 1");
  }
  return Status::Ok();
}

Status RequirePolicies(const json& body, std::string_view type) {
  auto it = body.find("policies");
  if (it == body.end() || !it->is_array()) return Missing(type, "policies", "an array");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& p = (*it)[i];
    if (!p.is_object() || !p.contains("name") || !p["name"].is_string() || !p.contains("yaml") ||
        !p["yaml"].is_string()) {
      return Status::InvalidArgument(
          fmt::format("{}: policies[{}] must be an object with string 'name' and 'yaml'", type, i));
    }
  }
  return Status::Ok();
}

// The Falco alert fields the backend needs to store and dedupe an alert.
Status ValidateAlert(const json& alert) {
  for (const char* field : {"uuid", "rule", "priority", "time"}) {
    auto it = alert.find(field);
    if (it == alert.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) {
      return Status::InvalidArgument(fmt::format("alert: alert.{} must be a non-empty string", field));
    }
  }
  if (alert["uuid"].get_ref<const std::string&>().size() > kMaxIdBytes) {
    return Status::InvalidArgument("alert: alert.uuid is longer than 256 bytes");
  }
  auto of = alert.find("output_fields");
  if (of != alert.end() && !of->is_object()) {
    return Status::InvalidArgument("alert: alert.output_fields must be an object");
  }
  auto out = alert.find("output");
  if (out != alert.end() && !out->is_string()) {
    return Status::InvalidArgument("alert: alert.output must be a string");
  }
  return Status::Ok();
}

Message Make(MessageType type, json body) {
  body["type"] = std::string(MessageTypeName(type));
  return Message{type, std::move(body)};
}

json PoliciesJson(const std::vector<Policy>& policies) {
  json arr = json::array();
  for (const Policy& p : policies) arr.push_back({{"name", p.name}, {"yaml", p.yaml}});
  return arr;
}

}  // namespace

std::string_view MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kHello: return "hello";
    case MessageType::kWelcome: return "welcome";
    case MessageType::kReject: return "reject";
    case MessageType::kAlert: return "alert";
    case MessageType::kAck: return "ack";
    case MessageType::kStats: return "stats";
    case MessageType::kHeartbeat: return "heartbeat";
    case MessageType::kPolicyUpdate: return "policy_update";
  }
  return "?";
}

Message MakeHello(std::string_view agent_id, std::string_view version, std::string_view access_key,
                  std::string_view hostname, const json& metadata) {
  return Make(MessageType::kHello, {{"agent_id", agent_id},
                                    {"version", version},
                                    {"access_key", access_key},
                                    {"hostname", hostname},
                                    {"metadata", metadata.is_object() ? metadata : json::object()}});
}

Message MakeWelcome(const std::vector<Policy>& policies, uint32_t heartbeat_ms) {
  return Make(MessageType::kWelcome, {{"policies", PoliciesJson(policies)},
                                      {"settings", {{"heartbeat_ms", heartbeat_ms}}}});
}

Message MakeReject(std::string_view reason) { return Make(MessageType::kReject, {{"reason", reason}}); }

Message MakeAlert(uint64_t seq, json alert) {
  json body = json::object();
  body["seq"] = seq;
  body["alert"] = std::move(alert);
  return Make(MessageType::kAlert, std::move(body));
}

Message MakeAck(uint64_t seq) { return Make(MessageType::kAck, {{"seq", seq}}); }

Message MakeStats(json stats) {
  json body = json::object();
  body["stats"] = stats.is_object() ? std::move(stats) : json::object();
  return Make(MessageType::kStats, std::move(body));
}

Message MakeHeartbeat(uint64_t time_ns) { return Make(MessageType::kHeartbeat, {{"time_ns", time_ns}}); }

Message MakePolicyUpdate(const std::vector<Policy>& policies) {
  return Make(MessageType::kPolicyUpdate, {{"policies", PoliciesJson(policies)}});
}

std::string EncodeFrame(const Message& message) {
  std::string out(kHeaderBytes + 1, '\0');
  json::to_cbor(message.body, nlohmann::detail::output_adapter<char>(out));
  uint32_t length = static_cast<uint32_t>(out.size() - kHeaderBytes);
  out[0] = static_cast<char>(length >> 24);
  out[1] = static_cast<char>(length >> 16);
  out[2] = static_cast<char>(length >> 8);
  out[3] = static_cast<char>(length);
  out[4] = static_cast<char>(kProtocolVersion);
  return out;
}

Result<uint32_t> ParseHeader(const uint8_t* header, size_t max_frame_bytes) {
  uint32_t length = (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) |
                    (uint32_t{header[2]} << 8) | uint32_t{header[3]};
  if (length == 0) return Status::InvalidArgument("frame: length 0");
  if (length > max_frame_bytes) {
    return Status::InvalidArgument(
        fmt::format("frame: length {} exceeds the cap of {} bytes", length, max_frame_bytes));
  }
  return length;
}

Result<Message> DecodeBody(std::string_view body) {
  if (body.empty()) return Status::InvalidArgument("frame: empty body");
  uint8_t version = static_cast<uint8_t>(body[0]);
  if (version != kProtocolVersion) {
    return Status::Unsupported(
        fmt::format("frame: protocol version {} not supported (this side speaks {})", version,
                    kProtocolVersion));
  }
  json root;
  BoundedDomParser sax(root, body.size());
  bool ok = false;
  try {
    ok = json::sax_parse(body.substr(1), &sax, nlohmann::detail::input_format_t::cbor,
                         /*strict=*/true);
  } catch (const json::exception&) {
    // Not expected (the parser runs without exceptions); a peer's bytes must
    // never take the process down if a nlohmann version throws anyway.
    ok = false;
  }
  if (sax.too_deep()) {
    return Status::InvalidArgument(fmt::format("frame: nesting deeper than {}", kMaxNesting));
  }
  if (!ok || sax.is_errored()) return Status::InvalidArgument("frame: malformed CBOR");
  return Validate(std::move(root));
}

Result<Message> Validate(json body) {
  if (!body.is_object()) return Status::InvalidArgument("frame: payload is not a map");
  auto t = body.find("type");
  if (t == body.end() || !t->is_string()) return Status::InvalidArgument("frame: no string 'type'");
  const std::string& name = t->get_ref<const std::string&>();
  Status st;
  MessageType type;
  if (name == "hello") {
    type = MessageType::kHello;
    st = RequireString(body, name, "agent_id", 1, kMaxIdBytes);
    if (st.ok()) st = RequireString(body, name, "version", 0, kMaxIdBytes);
    if (st.ok()) st = RequireString(body, name, "access_key", 0, kMaxKeyBytes);
    if (st.ok()) st = RequireString(body, name, "hostname", 0, kMaxIdBytes);
    if (st.ok()) st = RequireObject(body, name, "metadata", /*optional=*/true);
  } else if (name == "welcome") {
    type = MessageType::kWelcome;
    st = RequirePolicies(body, name);
    if (st.ok()) st = RequireObject(body, name, "settings", /*optional=*/true);
  } else if (name == "reject") {
    type = MessageType::kReject;
    st = RequireString(body, name, "reason", 0, kMaxReasonBytes);
  } else if (name == "alert") {
    type = MessageType::kAlert;
    st = RequireSeq(body, name, /*allow_zero=*/false);
    if (st.ok()) st = RequireObject(body, name, "alert", /*optional=*/false);
    if (st.ok()) st = ValidateAlert(body["alert"]);
  } else if (name == "ack") {
    type = MessageType::kAck;
    st = RequireSeq(body, name, /*allow_zero=*/true);
  } else if (name == "stats") {
    type = MessageType::kStats;
    st = RequireObject(body, name, "stats", /*optional=*/false);
  } else if (name == "heartbeat") {
    type = MessageType::kHeartbeat;
    auto it = body.find("time_ns");
    if (it != body.end() && !it->is_number_unsigned()) st = Missing(name, "time_ns", "an unsigned integer");
  } else if (name == "policy_update") {
    type = MessageType::kPolicyUpdate;
    st = RequirePolicies(body, name);
  } else {
    return Status::InvalidArgument(fmt::format("frame: unknown type '{}'", name.substr(0, 64)));
  }
  if (!st.ok()) return st;
  return Message{type, std::move(body)};
}

std::vector<Policy> PoliciesOf(const Message& message) {
  std::vector<Policy> out;
  auto it = message.body.find("policies");
  if (it == message.body.end() || !it->is_array()) return out;
  for (const json& p : *it) out.push_back({p["name"].get<std::string>(), p["yaml"].get<std::string>()});
  return out;
}

std::string DumpJson(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// Appends `s` as a JSON string literal. False on invalid UTF-8.
bool AppendJsonString(std::string_view s, std::string* out) {
  out->push_back('"');
  size_t run = 0;  // start of the bytes not yet copied
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Validate one UTF-8 sequence (RFC 3629: no overlongs, no surrogates).
      size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
      if (n == 0 || c > 0xf4 || i + n > s.size()) return false;
      for (size_t k = 1; k < n; ++k) {
        if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
      }
      unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
      if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0) || (c == 0xf0 && c1 < 0x90) ||
          (c == 0xf4 && c1 >= 0x90)) {
        return false;
      }
      i += n;
      continue;
    }
    if (c >= 0x20 && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    out->append(s.data() + run, i - run);
    static const char kHex[] = "0123456789abcdef";
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\t': out->append("\\t"); break;
      case '\r': out->append("\\r"); break;
      default: out->append({'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]});
    }
    run = ++i;
  }
  out->append(s.data() + run, s.size() - run);
  out->push_back('"');
  return true;
}

// SAX events of an alert frame's CBOR map, written as the alert's JSON.
// Returning false from an event stops the parse (the frame then takes the
// DecodeBody path).
class AlertTranscoder {
 public:
  AlertTranscoder(size_t input_bytes, std::string* out) : input_bytes_(input_bytes), out_(out) {}

  bool null() { return Scalar("null"); }
  bool boolean(bool v) { return Scalar(v ? "true" : "false"); }
  bool number_integer(json::number_integer_t v) { return Number(fmt::format_int(v).c_str()); }
  bool number_unsigned(json::number_unsigned_t v) {
    if (depth_ == 1 && key_ == "seq") {
      seq_ = v;
      have_seq_ = true;
      return true;
    }
    return Number(fmt::format_int(v).c_str());
  }
  bool number_float(json::number_float_t v, const json::string_t&) {
    if (!std::isfinite(v)) return false;
    return Number(fmt::format("{}", v).c_str());
  }
  bool string(json::string_t& v) {
    if (depth_ == 1) {
      if (key_ == "type") {
        type_alert_ = v == "alert";
        have_type_ = true;
      }
      return key_ != "seq" && key_ != "alert";  // those are not strings
    }
    if (depth_ == 2 && in_alert_) {
      if (key_ == "uuid" || key_ == "rule" || key_ == "priority" || key_ == "time") {
        if (v.empty() || (key_ == "uuid" && v.size() > kMaxIdBytes)) return false;
        ++required_;
      }
      if (key_ == "output_fields") return false;
    }
    if (!InAlert()) return true;
    Comma();
    return AppendJsonString(v, out_);
  }
  bool binary(json::binary_t&) { return false; }
  bool start_object(std::size_t len) { return Open(len, '{'); }
  bool start_array(std::size_t len) {
    if (depth_ == 2 && in_alert_ && (key_ == "output_fields" || key_ == "output")) return false;
    return Open(len, '[');
  }
  bool end_object() { return Close('}'); }
  bool end_array() { return Close(']'); }
  bool key(json::string_t& k) {
    if (depth_ == 1) {
      key_ = k;
      if (k == "type" || k == "seq" || k == "alert") {
        // A repeated top-level key: DecodeBody keeps the last one.
        unsigned bit = k == "type" ? 1 : k == "seq" ? 2 : 4;
        if (top_keys_ & bit) return false;
        top_keys_ |= bit;
      }
      return true;
    }
    if (depth_ == 2 && in_alert_) {
      for (const auto& seen : alert_keys_) {
        if (seen == k) return false;
      }
      alert_keys_.push_back(k);
      key_ = k;
    }
    if (!InAlert()) return true;
    Comma();
    if (!AppendJsonString(k, out_)) return false;
    out_->push_back(':');
    first_ = true;  // the value needs no comma
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) { return false; }

  // After a successful parse: was it a valid alert frame?
  bool Valid(std::string_view agent_id) {
    if (!have_type_ || !type_alert_ || !have_seq_ || seq_ == 0 || !alert_done_ || required_ != 4) return false;
    bool has_agent = false;
    for (const auto& k : alert_keys_) has_agent = has_agent || k == "agent_id";
    if (!has_agent) {
      out_->pop_back();  // the alert's '}'
      if (alert_keys_.size() > 0) out_->push_back(',');
      out_->append("\"agent_id\":");
      if (!AppendJsonString(agent_id, out_)) return false;
      out_->push_back('}');
    }
    return true;
  }
  uint64_t seq() const { return seq_; }

 private:
  bool InAlert() const { return in_alert_ && depth_ >= 1; }
  void Comma() {
    if (!first_) out_->push_back(',');
    first_ = false;
  }
  bool Scalar(const char* text) {
    if (depth_ == 1) return key_ != "type" && key_ != "seq" && key_ != "alert";
    if (depth_ == 2 && in_alert_ && (key_ == "uuid" || key_ == "rule" || key_ == "priority" || key_ == "time" ||
                                     key_ == "output" || key_ == "output_fields")) {
      return false;
    }
    if (!InAlert()) return true;
    Comma();
    out_->append(text);
    return true;
  }
  bool Number(const char* text) { return Scalar(text); }
  bool Open(std::size_t len, char bracket) {
    if (++depth_ > kMaxNesting) return false;
    if (len != static_cast<std::size_t>(-1) && len > input_bytes_) return false;
    if (depth_ == 1) return bracket == '{';  // the frame's map
    if (depth_ == 2) {
      if (key_ == "type" || key_ == "seq") return false;
      if (key_ == "alert") {
        if (bracket != '{') return false;
        in_alert_ = true;
        first_ = true;
        out_->clear();
        out_->push_back('{');
        return true;
      }
    }
    if (depth_ == 3 && in_alert_ && key_ != "output_fields" && bracket == '{' &&
        (key_ == "uuid" || key_ == "rule" || key_ == "priority" || key_ == "time" || key_ == "output")) {
      return false;
    }
    if (!InAlert()) return true;
    Comma();
    out_->push_back(bracket);
    first_ = true;
    return true;
  }
  bool Close(char bracket) {
    --depth_;
    if (!in_alert_) return true;
    out_->push_back(bracket);
    first_ = false;
    if (depth_ == 1) {
      in_alert_ = false;
      alert_done_ = true;
      key_.clear();
    }
    return true;
  }

  size_t input_bytes_;
  std::string* out_;
  int depth_ = 0;
  std::string key_;  // the current key at depth 1 (frame) or 2 (alert)
  unsigned top_keys_ = 0;
  bool have_type_ = false, type_alert_ = false, have_seq_ = false;
  uint64_t seq_ = 0;
  bool in_alert_ = false, alert_done_ = false, first_ = true;
  int required_ = 0;
  std::vector<std::string> alert_keys_;
};

}  // namespace

bool AlertToJson(std::string_view body, std::string_view agent_id, uint64_t* seq, std::string* json_out) {
  if (body.size() < 2 || static_cast<uint8_t>(body[0]) != kProtocolVersion) return false;
  AlertTranscoder sax(body.size(), json_out);
  bool ok = false;
  try {
    ok = json::sax_parse(body.substr(1), &sax, nlohmann::detail::input_format_t::cbor, /*strict=*/true);
  } catch (const json::exception&) {
    ok = false;
  }
  if (!ok || !sax.Valid(agent_id)) return false;
  *seq = sax.seq();
  return true;
}

void FrameDecoder::Append(const char* data, size_t size) {
  if (offset_ > 0 && offset_ == buffer_.size()) {
    buffer_.clear();
    offset_ = 0;
  }
  buffer_.append(data, size);
}

Result<std::optional<std::string_view>> FrameDecoder::NextBody() {
  if (!error_.ok()) return error_;
  // Compact once the consumed prefix dominates, so the buffer stays bounded
  // by about two frames. Done here, before handing out a view, so that the
  // previous view stays valid until this call.
  if (offset_ > 0 && offset_ > buffer_.size() / 2) {
    buffer_.erase(0, offset_);
    offset_ = 0;
  }
  size_t avail = buffer_.size() - offset_;
  if (avail < kHeaderBytes) return std::optional<std::string_view>();
  auto length = ParseHeader(reinterpret_cast<const uint8_t*>(buffer_.data() + offset_), max_frame_bytes_);
  if (!length.ok()) return error_ = length.status();
  if (avail < kHeaderBytes + *length) return std::optional<std::string_view>();
  std::string_view body = std::string_view(buffer_).substr(offset_ + kHeaderBytes, *length);
  offset_ += kHeaderBytes + *length;
  return std::optional<std::string_view>(body);
}

Result<std::optional<Message>> FrameDecoder::Next() {
  auto body = NextBody();
  if (!body.ok()) return body.status();
  if (!body->has_value()) return std::optional<Message>();
  auto message = DecodeBody(**body);
  if (!message.ok()) return error_ = message.status();
  return std::optional<Message>(std::move(message).value());
}

}  // namespace sidetrace::link
