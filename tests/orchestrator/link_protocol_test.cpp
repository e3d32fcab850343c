#include <catch2/catch.hpp>

#include "common/link/protocol.h"

using namespace sidetrace::link;
using nlohmann::json;

namespace {

json Alert() {
  return {{"uuid", "u-1"}, {"rule", "Read sensitive file untrusted"}, {"priority", "Warning"},
          {"time", "2026-01-01T00:00:00.123456789Z"}, {"output", "o"},
          {"output_fields", {{"fd.name", "/etc/shadow"}}}, {"source", "syscall"}};
}

// A frame whose body is the given JSON value, CBOR-encoded, unvalidated.
std::string RawFrame(const json& body, uint8_t version = kProtocolVersion) {
  std::vector<uint8_t> cbor = json::to_cbor(body);
  uint32_t len = static_cast<uint32_t>(cbor.size() + 1);
  std::string out = {char(len >> 24), char(len >> 16), char(len >> 8), char(len), char(version)};
  out.append(cbor.begin(), cbor.end());
  return out;
}

std::string DecodeError(const std::string& frame) {
  FrameDecoder d;
  d.Append(frame.data(), frame.size());
  auto r = d.Next();
  if (r.ok()) return r->has_value() ? "ok" : "incomplete";
  return r.status().message();
}

}  // namespace

TEST_CASE("every message type round-trips through a frame", "[link]") {
  std::vector<Policy> policies = {{"falco_rules.yaml", "- rule: a\n"}, {"extra.yaml", ""}};
  std::vector<Message> all = {
      MakeHello("agent-1", "0.1.0", "k", "host", {{"aws.ecs.cluster", "arn:c"}}),
      MakeWelcome(policies, 5000), MakeReject("wrong access key"), MakeAlert(42, Alert()),
      MakeAck(42), MakeStats({{"events", {{"openat", 10}}}}), MakeHeartbeat(123),
      MakePolicyUpdate(policies)};
  std::string stream;
  for (const auto& m : all) stream += EncodeFrame(m);
  // Fed one byte at a time: headers and bodies split everywhere.
  FrameDecoder d;
  std::vector<Message> got;
  for (char c : stream) {
    d.Append(&c, 1);
    for (;;) {
      auto r = d.Next();
      REQUIRE(r.ok());
      if (!r->has_value()) break;
      got.push_back(std::move(**r));
    }
  }
  REQUIRE(got.size() == all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    CHECK(got[i].type == all[i].type);
    CHECK(got[i].body == all[i].body);
  }
  CHECK(PoliciesOf(got[1]) == policies);
  CHECK(got[3].body["alert"] == Alert());
  CHECK(d.buffered() == 0);
}

TEST_CASE("frames are validated with a reason", "[link]") {
  CHECK(DecodeError(std::string("\0\0\0\0", 4)) == "frame: length 0");
  CHECK(DecodeError(std::string("\x00\x20\x00\x00", 4)) ==
        "frame: length 2097152 exceeds the cap of 1048576 bytes");
  CHECK(DecodeError(RawFrame({{"type", "ack"}, {"seq", 1}}, 2)) ==
        "frame: protocol version 2 not supported (this side speaks 1)");
  CHECK(DecodeError(RawFrame(json::array({1, 2}))) == "frame: payload is not a map");
  CHECK(DecodeError(RawFrame({{"seq", 1}})) == "frame: no string 'type'");
  CHECK(DecodeError(RawFrame({{"type", "launch"}})) == "frame: unknown type 'launch'");
  CHECK(DecodeError(RawFrame({{"type", "ack"}, {"seq", -1}})) == "ack: field 'seq' must be an unsigned integer");
  CHECK(DecodeError(RawFrame({{"type", "alert"}, {"seq", 0}, {"alert", Alert()}})) ==
        "alert: field 'seq' must be an integer >= 1");
  json no_uuid = Alert();
  no_uuid.erase("uuid");
  CHECK(DecodeError(RawFrame({{"type", "alert"}, {"seq", 1}, {"alert", no_uuid}})) ==
        "alert: alert.uuid must be a non-empty string");
  json bad_fields = Alert();
  bad_fields["output_fields"] = "x";
  CHECK(DecodeError(RawFrame({{"type", "alert"}, {"seq", 1}, {"alert", bad_fields}})) ==
        "alert: alert.output_fields must be an object");
  CHECK(DecodeError(RawFrame({{"type", "hello"}, {"agent_id", ""}, {"version", "1"}, {"access_key", "k"},
                              {"hostname", "h"}})) == "hello: field 'agent_id' has 0 bytes, allowed 1..256");
  CHECK(DecodeError(RawFrame({{"type", "hello"}, {"agent_id", "a"}, {"version", "1"}, {"hostname", "h"}})) ==
        "hello: field 'access_key' must be a string");
  CHECK(DecodeError(RawFrame({{"type", "welcome"}, {"policies", {{{"name", "a"}}}}})) ==
        "welcome: policies[0] must be an object with string 'name' and 'yaml'");
  CHECK(DecodeError(RawFrame({{"type", "stats"}, {"stats", 3}})) == "stats: field 'stats' must be an object");
  CHECK(DecodeError(RawFrame({{"type", "heartbeat"}})) == "ok");
}

TEST_CASE("malformed CBOR, trailing bytes and deep nesting are errors", "[link]") {
  std::string truncated = RawFrame({{"type", "heartbeat"}});
  truncated[3] = static_cast<char>(truncated[3] - 1);  // claim one byte less
  truncated.pop_back();
  CHECK(DecodeError(truncated) == "frame: malformed CBOR");
  std::string trailing = RawFrame({{"type", "heartbeat"}});
  trailing[3] = static_cast<char>(trailing[3] + 1);
  trailing.push_back('\0');
  CHECK(DecodeError(trailing) == "frame: malformed CBOR");
  // 100,000 nested one-element arrays: must not recurse 100,000 deep.
  std::string deep(100000, '\x81');
  deep.push_back('\x01');
  uint32_t len = static_cast<uint32_t>(deep.size() + 1);
  std::string frame = {char(len >> 24), char(len >> 16), char(len >> 8), char(len), char(1)};
  CHECK(DecodeError(frame + deep) == "frame: nesting deeper than 32");
  // A map declaring 2^63 entries (found by the fuzzer: nlohmann throws).
  std::string huge = {char(0), char(0), char(0), char(10), char(1), char(0xbb), char(0x7f)};
  huge.append(7, char(0xff));
  CHECK(DecodeError(huge) == "frame: malformed CBOR");
}

TEST_CASE("a decoder error is sticky", "[link]") {
  FrameDecoder d;
  std::string bad = RawFrame({{"type", "nope"}}) + EncodeFrame(MakeAck(1));
  d.Append(bad.data(), bad.size());
  REQUIRE_FALSE(d.Next().ok());
  auto again = d.Next();
  REQUIRE_FALSE(again.ok());
  CHECK(again.status().message() == "frame: unknown type 'nope'");
}

TEST_CASE("invalid UTF-8 from CBOR is dumped, not thrown", "[link]") {
  json alert = Alert();
  alert["output"] = std::string("bad \xff byte");
  auto m = DecodeBody(EncodeFrame(MakeAlert(1, alert)).substr(kHeaderBytes));
  REQUIRE(m.ok());
  CHECK(DumpJson(m->body["alert"]["output"]) == "\"bad \xef\xbf\xbd byte\"");
}

TEST_CASE("the alert fast path gives the alert's JSON or defers to DecodeBody", "[link]") {
  nlohmann::json alert = {{"uuid", "u-1"},
                          {"time", "2026-11-26T00:00:00.000000000Z"},
                          {"rule", "R \"quoted\"\n"},
                          {"priority", "Warning"},
                          {"output", "caf\xc3\xa9 \x01"},
                          {"output_fields", {{"evt.time", 1764115200000000000ull}, {"x", -3}, {"f", 0.5}, {"n", nullptr}}},
                          {"tags", {"a", "b"}}};
  auto body = [](const Message& m) { return EncodeFrame(m).substr(kHeaderBytes); };
  uint64_t seq = 0;
  std::string json;
  REQUIRE(AlertToJson(body(MakeAlert(7, alert)), "agent-1", &seq, &json));
  CHECK(seq == 7);
  auto want = alert;
  want["agent_id"] = "agent-1";
  CHECK(nlohmann::json::parse(json) == want);
  // An agent_id the alert carries is kept; the JSON is appended.
  alert["agent_id"] = "own";
  json = "kept\n";
  REQUIRE(AlertToJson(body(MakeAlert(8, alert)), "agent-1", &seq, &json));
  REQUIRE(json.substr(0, 5) == "kept\n");
  CHECK(nlohmann::json::parse(json.substr(5))["agent_id"] == "own");

  // Every control character, quotes and backslashes escaped, multi-byte
  // UTF-8 kept, at every position relative to the 8-byte scan.
  std::string text;
  for (int c = 1; c < 0x20; ++c) text += static_cast<char>(c);
  text += "\"\\/plain text that is long enough\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  for (size_t shift = 0; shift < 9; ++shift) {
    auto a = alert;
    a["output"] = std::string(shift, 'x') + text;
    json.clear();
    REQUIRE(AlertToJson(body(MakeAlert(9, a)), "agent-1", &seq, &json));
    CHECK(nlohmann::json::parse(json) == a);
    CHECK(json.find(DumpJson(a["output"])) != std::string::npos);
  }
  // Short strings (the word checks have 8-, 4- and 1-byte paths): one
  // special byte at each position of each length.
  for (std::string special : {"\"", "\\", "\n", "\x1f", "\xc3\xa9", "\x7f"}) {
    for (size_t len = 0; len < 12; ++len) {
      for (size_t at = 0; at <= len; ++at) {
        auto a = alert;
        a["output"] = std::string(at, 'a') + special + std::string(len - at, 'b');
        json.clear();
        REQUIRE(AlertToJson(body(MakeAlert(9, a)), "agent-1", &seq, &json));
        CHECK(json.find("\"output\":" + DumpJson(a["output"])) != std::string::npos);
      }
    }
  }

  // Not alerts, or alerts DecodeBody refuses or stores differently: false.
  auto no_uuid = alert;
  no_uuid.erase("uuid");
  auto bad_fields = alert;
  bad_fields["output_fields"] = "x";
  std::vector<std::string> bad_texts = {"\xff", "0123456789\x80", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                        "abcdefgh\xe2\x82"};
  std::vector<std::string> bodies = {body(MakeAlert(0, alert)), body(MakeAlert(1, no_uuid)),
                                     body(MakeAlert(1, bad_fields)), body(MakeHeartbeat(5)), std::string("\x01\xff")};
  for (const std::string& t : bad_texts) {
    auto bad_utf8 = alert;
    bad_utf8["output"] = t;
    bodies.push_back(body(MakeAlert(1, bad_utf8)));
  }
  for (const std::string& b : bodies) {
    json = "kept";
    CHECK_FALSE(AlertToJson(b, "agent-1", &seq, &json));
    CHECK(json == "kept");
  }
}

TEST_CASE("acks are written and read by hand, byte for byte as the encoder's", "[link]") {
  for (uint64_t seq : {0ull, 1ull, 23ull, 24ull, 255ull, 256ull, 65535ull, 65536ull, 4294967295ull, 4294967296ull,
                       18446744073709551615ull}) {
    std::string frame = EncodeAckFrame(seq);
    CHECK(frame == EncodeFrame(MakeAck(seq)));
    uint64_t got = 0;
    REQUIRE(ParseAckBody(std::string_view(frame).substr(kHeaderBytes), &got));
    CHECK(got == seq);
  }
  uint64_t got = 0;
  std::string body = EncodeAckFrame(5).substr(kHeaderBytes);
  CHECK_FALSE(ParseAckBody(body + "x", &got));
  CHECK_FALSE(ParseAckBody(body.substr(0, body.size() - 1), &got));
  CHECK_FALSE(ParseAckBody(EncodeFrame(MakeHeartbeat(5)).substr(kHeaderBytes), &got));
  body[0] = 2;  // another protocol version
  CHECK_FALSE(ParseAckBody(body, &got));
}
