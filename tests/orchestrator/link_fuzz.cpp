// libFuzzer target for the agent link frame decoder: arbitrary bytes, fed in
// arbitrary chunks, must give messages or a clean error, never a crash, a
// hang or unbounded memory. The alert fast path (AlertToJson) must agree
// with DecodeBody: whatever it accepts, DecodeBody accepts as the same alert.
// Built and run by run_link_fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/link/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidetrace::link;
  // The first byte picks the chunk size, so split headers are explored too.
  size_t chunk = size > 0 ? (data[0] % 17) + 1 : 1;
  FrameDecoder decoder(64 * 1024);
  for (size_t off = 0; off < size; off += chunk) {
    decoder.Append(reinterpret_cast<const char*>(data) + off, std::min(chunk, size - off));
    for (;;) {
      auto msg = decoder.Next();
      if (!msg.ok() || !msg->has_value()) break;
      // What a receiver does with a valid message must not throw either.
      (void)DumpJson((*msg)->body);
      (void)PoliciesOf(**msg);
      (void)EncodeFrame(**msg);
    }
  }
  std::string_view body(reinterpret_cast<const char*>(data), size);
  auto decoded = DecodeBody(body);
  uint64_t seq = 0;
  std::string json = "x";  // appended to, left alone on false
  if (AlertToJson(body, "fuzz-agent", &seq, &json)) {
    if (!decoded.ok() || decoded->type != MessageType::kAlert || decoded->body["seq"] != seq) std::abort();
    auto want = decoded->body["alert"];
    if (!want.contains("agent_id")) want["agent_id"] = "fuzz-agent";
    if (json[0] != 'x' || nlohmann::json::parse(json.substr(1), nullptr, false) != want) std::abort();
  } else if (json != "x") {
    std::abort();
  }
  // The ack reader takes only acks DecodeBody takes, with the same seq.
  if (ParseAckBody(body, &seq)) {
    if (!decoded.ok() || decoded->type != MessageType::kAck || decoded->body["seq"] != seq) std::abort();
  }
  return 0;
}
