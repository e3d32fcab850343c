#include "common/link/protocol.h"

#include <fmt/compile.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

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

namespace {
// CBOR of {"seq": <seq>, "type": "ack"}, keys in nlohmann's (sorted) order,
// after the header and version byte.
constexpr std::string_view kAckSeqKey = "\xa2\x63seq";
constexpr std::string_view kAckType = "\x64type\x63" "ack";
}  // namespace

std::string EncodeAckFrame(uint64_t seq) {
  std::string out(kHeaderBytes, '\0');
  out.push_back(static_cast<char>(kProtocolVersion));
  out.append(kAckSeqKey);
  // The shortest head, as nlohmann writes it.
  int bytes = seq < 24 ? 0 : seq < 0x100 ? 1 : seq < 0x10000 ? 2 : seq < 0x100000000 ? 4 : 8;
  out.push_back(static_cast<char>(bytes == 0 ? seq : bytes == 1 ? 24 : bytes == 2 ? 25 : bytes == 4 ? 26 : 27));
  for (int b = bytes - 1; b >= 0; --b) out.push_back(static_cast<char>(seq >> (8 * b)));
  out.append(kAckType);
  uint32_t length = static_cast<uint32_t>(out.size() - kHeaderBytes);
  for (int b = 0; b < 4; ++b) out[b] = static_cast<char>(length >> (8 * (3 - b)));
  return out;
}

bool ParseAckBody(std::string_view body, uint64_t* seq) {
  if (body.size() < 1 + kAckSeqKey.size() + 1 + kAckType.size() ||
      static_cast<uint8_t>(body[0]) != kProtocolVersion || body.substr(1, kAckSeqKey.size()) != kAckSeqKey) {
    return false;
  }
  body.remove_prefix(1 + kAckSeqKey.size());
  uint8_t head = static_cast<uint8_t>(body[0]);
  size_t bytes = head < 24 ? 0 : head == 24 ? 1 : head == 25 ? 2 : head == 26 ? 4 : head == 27 ? 8 : 9;
  if (bytes == 9 || body.size() != 1 + bytes + kAckType.size() || body.substr(1 + bytes) != kAckType) return false;
  uint64_t v = bytes == 0 ? head : 0;
  for (size_t i = 1; i <= bytes; ++i) v = (v << 8) | static_cast<uint8_t>(body[i]);
  *seq = v;
  return true;
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

// What a byte needs inside a JSON string: kPlain bytes are copied, kEscape
// ones ('"', '\\', controls) escaped, kLead2/3/4 start a UTF-8 sequence of
// that length to validate, kBad never appears in valid UTF-8 (continuation
// bytes on their own, 0xc0/0xc1 overlongs, 0xf5.. beyond U+10FFFF).
enum ByteClass : uint8_t { kPlain, kEscape, kLead2, kLead3, kLead4, kBad };

constexpr std::array<uint8_t, 256> MakeByteClasses() {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    t[c] = c < 0x20 || c == '"' || c == '\\' ? kEscape
           : c < 0x80                        ? kPlain
           : c < 0xc2                        ? kBad
           : c < 0xe0                        ? kLead2
           : c < 0xf0                        ? kLead3
           : c < 0xf5                        ? kLead4
                                             : kBad;
  }
  return t;
}
constexpr std::array<uint8_t, 256> kByteClass = MakeByteClasses();

// Non-zero when one of the 8 bytes in `x` is not kPlain: a control byte
// (x - 0x20 borrows), '"' or '\\' (x ^ c - 1 borrows) or a byte >= 0x80.
// Borrows only run upward from a byte that is a hit, so a zero result is
// exact; a non-zero one is resolved byte by byte.
inline uint64_t NeedsCare(uint64_t x) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  return ((x - kOnes * 0x20) | ((x ^ (kOnes * '"')) - kOnes) | ((x ^ (kOnes * '\\')) - kOnes) | x) &
         (kOnes * 0x80);
}

// NeedsCare for 4 bytes.
inline uint32_t NeedsCare4(uint32_t x) {
  constexpr uint32_t kOnes = 0x01010101u;
  return ((x - kOnes * 0x20) | ((x ^ (kOnes * '"')) - kOnes) | ((x ^ (kOnes * '\\')) - kOnes) | x) & (kOnes * 0x80);
}

// True when no byte of `s` needs escaping or UTF-8 validation. No branch
// per byte: whole words, the last one overlapping (a check may look at a
// byte twice); strings under 4 bytes through the table.
inline bool AllPlain(std::string_view s) {
  const char* p = s.data();
  size_t n = s.size();
  if (n >= 8) {
    uint64_t care = 0, word;
    for (size_t i = 0; i + 8 < n; i += 8) {
      std::memcpy(&word, p + i, 8);
      care |= NeedsCare(word);
    }
    std::memcpy(&word, p + n - 8, 8);
    return (care | NeedsCare(word)) == 0;
  }
  if (n >= 4) {
    uint32_t a, b;
    std::memcpy(&a, p, 4);
    std::memcpy(&b, p + n - 4, 4);
    return (NeedsCare4(a) | NeedsCare4(b)) == 0;
  }
  unsigned care = 0;
  for (size_t i = 0; i < n; ++i) care |= kByteClass[static_cast<unsigned char>(p[i])];
  return care == 0;
}

// memcpy for the short strings of an alert without a call: word copies,
// the last one overlapping.
inline void CopySmall(char* out, const char* p, size_t n) {
  if (n >= 8) {
    uint64_t word;
    for (size_t i = 0; i + 8 < n; i += 8) {
      std::memcpy(&word, p + i, 8);
      std::memcpy(out + i, &word, 8);
    }
    std::memcpy(&word, p + n - 8, 8);
    std::memcpy(out + n - 8, &word, 8);
  } else if (n >= 4) {
    uint32_t a, b;
    std::memcpy(&a, p, 4);
    std::memcpy(&b, p + n - 4, 4);
    std::memcpy(out, &a, 4);
    std::memcpy(out + n - 4, &b, 4);
  } else if (n > 0) {
    out[0] = p[0];
    out[n / 2] = p[n / 2];
    out[n - 1] = p[n - 1];
  }
}

// Writes `s` as a JSON string literal at *o (which has room for 6 bytes per
// byte of s, plus 2) and advances it; the escapes are nlohmann's, so the
// text is what DumpJson writes. False on invalid UTF-8 (RFC 3629: no
// overlongs, no surrogates, nothing above U+10FFFF).
bool PutJsonString(std::string_view s, char** o) {
  static constexpr char kHex[] = "0123456789abcdef";
  char* out = *o;
  *out++ = '"';
  const char* p = s.data();
  const char* end = p + s.size();
  // Nearly every string (keys, rule names, paths, output) is plain ASCII:
  // one pass without branches says so, then it is copied as is.
  if (AllPlain(s)) {
    CopySmall(out, p, s.size());
    out += s.size();
    *out++ = '"';
    *o = out;
    return true;
  }
  while (p < end) {
    // Eight plain bytes at a time: nearly all of an alert's text.
    if (end - p >= 8) {
      uint64_t word;
      std::memcpy(&word, p, 8);
      if (NeedsCare(word) == 0) {
        std::memcpy(out, p, 8);
        out += 8;
        p += 8;
        continue;
      }
    }
    unsigned char c = static_cast<unsigned char>(*p);
    switch (kByteClass[c]) {
      case kPlain:
        *out++ = static_cast<char>(c);
        ++p;
        break;
      case kEscape:
        *out++ = '\\';
        switch (c) {
          case '"': *out++ = '"'; break;
          case '\\': *out++ = '\\'; break;
          case '\n': *out++ = 'n'; break;
          case '\t': *out++ = 't'; break;
          case '\r': *out++ = 'r'; break;
          case '\b': *out++ = 'b'; break;
          case '\f': *out++ = 'f'; break;
          default:
            std::memcpy(out, "u00", 3);
            out[3] = kHex[c >> 4];
            out[4] = kHex[c & 15];
            out += 5;
        }
        ++p;
        break;
      case kBad:
        return false;
      default: {
        size_t n = kByteClass[c] - kLead2 + 2;
        if (static_cast<size_t>(end - p) < n) return false;
        for (size_t k = 1; k < n; ++k) {
          if ((static_cast<unsigned char>(p[k]) & 0xc0) != 0x80) return false;
        }
        unsigned char c1 = static_cast<unsigned char>(p[1]);
        if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0) || (c == 0xf0 && c1 < 0x90) ||
            (c == 0xf4 && c1 >= 0x90)) {
          return false;
        }
        std::memcpy(out, p, n);
        out += n;
        p += n;
      }
    }
  }
  *out++ = '"';
  *o = out;
  return true;
}

// The most JSON text AlertReader writes for a CBOR body of `cbor_bytes`
// bytes: no input byte becomes more than 6 bytes of output (a control
// character in a string is \u00XX; "false," is one byte; a 9-byte integer
// at most 21), plus the agent_id it may add.
size_t AlertJsonBound(size_t cbor_bytes, size_t agent_id_bytes) {
  return 6 * cbor_bytes + 6 * agent_id_bytes + 64;
}

// An alert frame's CBOR, read by hand and written as the alert's JSON in
// one pass (no document, no string copies: nlohmann's reader builds every
// string a byte at a time) into a buffer of AlertJsonBound bytes, so no
// write needs a bounds check. It takes only the plain subset agents send:
// definite lengths, text strings, integers, 32/64-bit floats, true/false/
// null. Anything else (half floats, byte strings, tags, indefinite lengths, invalid UTF-8, repeated
// keys where the last would win) returns false and the frame takes the
// DecodeBody path, so this is never more permissive than DecodeBody; the
// fuzzer checks that they agree.
class AlertReader {
 public:
  // `keys` is scratch space for the alert map's keys, kept by the caller so
  // that its capacity outlives the reader (no allocation per alert).
  AlertReader(std::string_view cbor, char* out, std::vector<std::string_view>* keys)
      : p_(reinterpret_cast<const uint8_t*>(cbor.data())), end_(p_ + cbor.size()), input_bytes_(cbor.size()),
        out_(out), keys_(*keys) {}

  // The frame: a map with "type": "alert", "seq": N > 0, "alert": {...}.
  // On success the alert's JSON is [out, *json_end).
  bool Frame(std::string_view agent_id, uint64_t* seq, char** json_end) {
    uint64_t pairs = 0;
    if (!Container(5, &pairs)) return false;
    bool have_type = false, have_seq = false, have_alert = false;
    char* const start = out_;
    char* alert_end = out_;
    for (uint64_t i = 0; i < pairs; ++i) {
      std::string_view key;
      if (!Text(&key)) return false;
      if (Is(key, "type")) {
        std::string_view type;
        if (have_type || !Text(&type) || !Is(type, "alert")) return false;
        have_type = true;
      } else if (Is(key, "seq")) {
        uint8_t major = 0;
        if (have_seq || !Head(&major, seq) || major != 0 || *seq == 0) return false;
        have_seq = true;
      } else if (Is(key, "alert")) {
        if (have_alert) return false;
        out_ = start;
        if (!Alert(agent_id)) return false;
        alert_end = out_;
        have_alert = true;
      } else {
        // Another field: checked, written after the alert and forgotten.
        out_ = alert_end;
        if (!Value(1)) return false;
      }
    }
    *json_end = alert_end;
    return have_type && have_seq && have_alert && p_ == end_;
  }

 private:
  template <size_t N>
  static bool Is(std::string_view s, const char (&literal)[N]) {
    return s.size() == N - 1 && std::memcmp(s.data(), literal, N - 1) == 0;
  }
  void Put(char c) { *out_++ = c; }
  void Put(std::string_view s) {
    std::memcpy(out_, s.data(), s.size());
    out_ += s.size();
  }

  // One item's head: major type and argument. Indefinite lengths and the
  // reserved values are refused.
  bool Head(uint8_t* major, uint64_t* value) {
    if (p_ == end_) return false;
    uint8_t b = *p_++;
    *major = b >> 5;
    uint8_t info = b & 31;
    if (info < 24) {
      *value = info;
      return true;
    }
    if (info > 27) return false;
    size_t n = size_t{1} << (info - 24);
    if (static_cast<size_t>(end_ - p_) < n) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v = (v << 8) | *p_++;
    *value = v;
    return true;
  }
  bool Text(std::string_view* s) {
    uint8_t major = 0;
    uint64_t len = 0;
    if (!Head(&major, &len) || major != 3 || len > static_cast<uint64_t>(end_ - p_)) return false;
    *s = std::string_view(reinterpret_cast<const char*>(p_), len);
    p_ += len;
    return true;
  }
  bool Container(uint8_t want, uint64_t* n) {
    uint8_t major = 0;
    return Head(&major, n) && major == want && *n <= input_bytes_;
  }
  // Any item inside a container at nesting `depth` (the frame's map is 1),
  // as JSON.
  bool Value(int depth) {
    const uint8_t* at = p_;
    uint8_t major = 0;
    uint64_t v = 0;
    if (!Head(&major, &v)) return false;
    switch (major) {
      case 0:
        out_ = fmt::format_to(out_, FMT_COMPILE("{}"), v);
        return true;
      case 1:
        if (v > static_cast<uint64_t>(INT64_MAX)) return false;
        out_ = fmt::format_to(out_, FMT_COMPILE("{}"), -1 - static_cast<int64_t>(v));
        return true;
      case 3: {
        p_ = at;
        std::string_view s;
        return Text(&s) && PutJsonString(s, &out_);
      }
      case 4:
      case 5: {
        if (depth + 1 > kMaxNesting || v > input_bytes_) return false;
        Put(major == 4 ? '[' : '{');
        for (uint64_t i = 0; i < v; ++i) {
          if (i > 0) Put(',');
          if (major == 5) {
            std::string_view key;
            if (!Text(&key) || !PutJsonString(key, &out_)) return false;
            Put(':');
          }
          if (!Value(depth + 1)) return false;
        }
        Put(major == 4 ? ']' : '}');
        return true;
      }
      case 7:
        if ((*at & 31) == 26 || (*at & 31) == 27) {  // float32, float64
          double d;
          if ((*at & 31) == 26) {
            uint32_t bits = static_cast<uint32_t>(v);
            float f;
            std::memcpy(&f, &bits, sizeof f);
            d = f;
          } else {
            std::memcpy(&d, &v, sizeof d);
          }
          if (!std::isfinite(d)) return false;
          out_ = fmt::format_to(out_, "{}", d);
          return true;
        }
        if (v == 20 || v == 21 || v == 22) {
          Put(v == 20 ? std::string_view("false") : v == 21 ? std::string_view("true") : std::string_view("null"));
          return (*at & 31) == v;  // not a one-byte simple value in disguise
        }
        return false;
      default:  // byte strings, tags
        return false;
    }
  }
  // The alert's map (depth 2): required fields as DecodeBody wants them, no
  // repeated keys, agent_id added when the agent did not name itself.
  bool Alert(std::string_view agent_id) {
    uint64_t pairs = 0;
    if (!Container(5, &pairs)) return false;
    Put('{');
    std::vector<std::string_view>& keys = keys_;
    keys.clear();
    int required = 0;
    bool has_agent = false;
    for (uint64_t i = 0; i < pairs; ++i) {
      std::string_view key;
      if (!Text(&key)) return false;
      for (std::string_view seen : keys) {
        if (seen.size() == key.size() &&
            (key.empty() || (seen[0] == key[0] && std::memcmp(seen.data(), key.data(), key.size()) == 0))) {
          return false;
        }
      }
      keys.push_back(key);
      if (i > 0) Put(',');
      if (!PutJsonString(key, &out_)) return false;
      Put(':');
      has_agent = has_agent || Is(key, "agent_id");
      bool output = Is(key, "output");
      bool uuid = Is(key, "uuid");
      if (output || uuid || Is(key, "rule") || Is(key, "priority") || Is(key, "time")) {
        std::string_view s;
        if (!Text(&s) || !PutJsonString(s, &out_)) return false;
        if (output) continue;
        if (s.empty() || (uuid && s.size() > kMaxIdBytes)) return false;
        ++required;
      } else if (Is(key, "output_fields")) {
        if (p_ == end_ || (*p_ >> 5) != 5 || !Value(2)) return false;
      } else if (!Value(2)) {
        return false;
      }
    }
    if (required != 4) return false;
    if (!has_agent) {
      Put(",\"agent_id\":");
      if (!PutJsonString(agent_id, &out_)) return false;
    }
    Put('}');
    return true;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  size_t input_bytes_;
  char* out_;
  // Keys of the alert map so far, to refuse repeats. Few (about ten), so a
  // linear scan beats hashing.
  std::vector<std::string_view>& keys_;
};

}  // namespace

bool AlertToJson(std::string_view body, std::string_view agent_id, uint64_t* seq, std::string* json_out) {
  if (body.size() < 2 || static_cast<uint8_t>(body[0]) != kProtocolVersion) return false;
  // The JSON is written into a per-thread scratch buffer that is never
  // shrunk (so never zero-filled again), then appended in one copy.
  thread_local std::vector<char> scratch;
  thread_local std::vector<std::string_view> keys;
  size_t bound = AlertJsonBound(body.size(), agent_id.size());
  if (scratch.size() < bound) scratch.resize(bound);
  char* end = nullptr;
  if (!AlertReader(body.substr(1), scratch.data(), &keys).Frame(agent_id, seq, &end)) return false;
  json_out->append(scratch.data(), static_cast<size_t>(end - scratch.data()));
  return true;
}

char* FrameDecoder::Prepare(size_t size) {
  if (offset_ > 0) {
    std::memmove(buffer_.get(), buffer_.get() + offset_, end_ - offset_);
    end_ -= offset_;
    offset_ = 0;
  }
  if (capacity_ - end_ < size) {
    size_t capacity = std::max(end_ + size, 2 * capacity_);
    auto grown = std::make_unique_for_overwrite<char[]>(capacity);
    if (end_ > 0) std::memcpy(grown.get(), buffer_.get(), end_);
    buffer_ = std::move(grown);
    capacity_ = capacity;
  }
  return buffer_.get() + end_;
}

void FrameDecoder::Append(const char* data, size_t size) {
  if (size == 0) return;
  std::memcpy(Prepare(size), data, size);
  Commit(size);
}

Result<std::optional<std::string_view>> FrameDecoder::NextBody() {
  if (!error_.ok()) return error_;
  size_t avail = end_ - offset_;
  if (avail < kHeaderBytes) return std::optional<std::string_view>();
  auto length = ParseHeader(reinterpret_cast<const uint8_t*>(buffer_.get() + offset_), max_frame_bytes_);
  if (!length.ok()) return error_ = length.status();
  if (avail < kHeaderBytes + *length) return std::optional<std::string_view>();
  std::string_view body(buffer_.get() + offset_ + kHeaderBytes, *length);
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
