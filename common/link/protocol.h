// The agent link protocol: what sidetrace-agent and sidetrace-orchestrator
// say to each other over one persistent TCP (optionally TLS) connection on
// port 6667.
//
// Framing (all integers big-endian):
//
//    0        4         5
//    +--------+---------+------------------------------+
//    | length | version | CBOR map (RFC 8949)          |
//    +--------+---------+------------------------------+
//    length  = 1 + CBOR bytes, at most the receiver's frame cap (1 MiB by
//              default); 0 is invalid.
//    version = kProtocolVersion (1). A receiver rejects other versions with a
//              reason, so a future v2 peer learns why on its very first frame.
//
// The CBOR map always holds "type" plus the fields of that type:
//
//    hello          agent -> orch  agent_id, version, access_key, hostname,
//                                   metadata{} (ECS task/container, optional)
//    welcome        orch -> agent  policies[{name, yaml}], settings{heartbeat_ms}
//    reject         orch -> agent  reason                (then the orch closes)
//    alert          agent -> orch  seq (>= 1, strictly increasing per
//                                   connection), alert{Falco alert JSON}
//    ack            orch -> agent  seq: every alert with seq <= this one is on
//                                   the orchestrator's disk (cumulative)
//    stats          agent -> orch  stats{...}  (events seen, drops, health)
//    heartbeat      both ways      time_ns (optional)
//    policy_update  orch -> agent  policies[{name, yaml}]
//
// Unknown extra keys are ignored (forward compatibility); missing or mistyped
// known keys, unknown types, oversize frames, nesting deeper than
// kMaxNesting, trailing bytes and bad versions are errors. An error leaves
// the stream unusable: the receiver closes the connection.
//
// Thread-safety: free functions are pure; a FrameDecoder is owned by one
// thread (one per connection).
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/status.h"

namespace sidetrace::link {

inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr size_t kHeaderBytes = 4;
inline constexpr size_t kDefaultMaxFrameBytes = 1 << 20;
inline constexpr int kMaxNesting = 32;
inline constexpr uint16_t kDefaultPort = 6667;

enum class MessageType { kHello, kWelcome, kReject, kAlert, kAck, kStats, kHeartbeat, kPolicyUpdate };

std::string_view MessageTypeName(MessageType type);

struct Message {
  MessageType type = MessageType::kHeartbeat;
  nlohmann::json body;  // the whole map, "type" included; validated
};

// One policy file as the orchestrator pushes it: a name (the file name) and
// its Falco rules YAML text, unparsed.
struct Policy {
  std::string name;
  std::string yaml;
  bool operator==(const Policy&) const = default;
};

// Builders. They produce bodies that Validate() accepts.
Message MakeHello(std::string_view agent_id, std::string_view version, std::string_view access_key,
                  std::string_view hostname, const nlohmann::json& metadata);
Message MakeWelcome(const std::vector<Policy>& policies, uint32_t heartbeat_ms);
Message MakeReject(std::string_view reason);
Message MakeAlert(uint64_t seq, nlohmann::json alert);
Message MakeAck(uint64_t seq);
Message MakeStats(nlohmann::json stats);
Message MakeHeartbeat(uint64_t time_ns);
Message MakePolicyUpdate(const std::vector<Policy>& policies);

// Header + version + CBOR, ready to write.
std::string EncodeFrame(const Message& message);

// The ack, sent once per agent read, written by hand: the same bytes as
// EncodeFrame(MakeAck(seq)) without building a document.
std::string EncodeAckFrame(uint64_t seq);
// True with *seq set when `body` (version byte + CBOR) is an ack laid out as
// EncodeAckFrame writes it (any width of the integer); false for anything
// else, which DecodeBody then judges (other valid encodings of an ack too).
bool ParseAckBody(std::string_view body, uint64_t* seq);

// Parses the 4-byte length prefix. Error when 0 or above max_frame_bytes.
Result<uint32_t> ParseHeader(const uint8_t* header, size_t max_frame_bytes);

// Decodes and validates a frame body (the `length` bytes after the header:
// version byte + CBOR).
Result<Message> DecodeBody(std::string_view body);

// Checks a decoded map against the schema of its "type".
Result<Message> Validate(nlohmann::json body);

// Reads policies[] from a welcome or policy_update (already validated).
std::vector<Policy> PoliciesOf(const Message& message);

// JSON text of a value; invalid UTF-8 (possible in CBOR strings) is replaced
// by U+FFFD instead of throwing.
std::string DumpJson(const nlohmann::json& value);

// The fast path for the orchestrator's hottest frame: an alert frame body
// (version byte + CBOR) turned straight into the alert's JSON text, without
// building a document. When the alert has no "agent_id", `agent_id` is added.
// Returns true with *seq set and the JSON appended to *json for a valid alert
// frame. Returns false, *json untouched, for anything else (another type, an
// invalid or unusual alert: duplicate keys, byte strings, non-finite floats,
// invalid UTF-8): DecodeBody then
// gives the exact answer, so this never accepts what DecodeBody rejects.
bool AlertToJson(std::string_view body, std::string_view agent_id, uint64_t* seq, std::string* json);

// Incremental decoder for a byte stream: Append what was read (or read
// straight into Prepare()'s room and Commit), then call Next() until it
// returns nullopt (needs more bytes) or an error (the stream is unusable
// from then on and every later call returns the same error).
class FrameDecoder {
 public:
  explicit FrameDecoder(size_t max_frame_bytes = kDefaultMaxFrameBytes)
      : max_frame_bytes_(max_frame_bytes) {}

  void Append(const char* data, size_t size);
  // Room for at least `size` more bytes, for a read that skips the copy of
  // Append: the bytes consumed so far are dropped (what is left, a partial
  // frame, moves to the front). Invalidates views from NextBody.
  char* Prepare(size_t size);
  size_t room() const { return capacity_ - end_; }
  // Adds `size` bytes written at Prepare()'s pointer. REQUIRES: size <= room().
  void Commit(size_t size) { end_ += size; }

  Result<std::optional<Message>> Next();
  // The next whole frame's body (version byte + CBOR), undecoded; valid
  // until Append/Prepare. Errors (header only) are sticky like Next()'s.
  Result<std::optional<std::string_view>> NextBody();
  size_t buffered() const { return end_ - offset_; }

 private:
  size_t max_frame_bytes_;
  // [offset_, end_) of buffer_ is unconsumed. Not a std::string: growing
  // one zero-fills the bytes a read then overwrites.
  std::unique_ptr<char[]> buffer_;
  size_t capacity_ = 0;
  size_t offset_ = 0;
  size_t end_ = 0;
  Status error_;
};

}  // namespace sidetrace::link
