// Writes one valid frame of each message type into DIR (the fuzzer's seed
// corpus).
#include <fstream>
#include <iostream>

#include "common/link/protocol.h"

int main(int argc, char** argv) {
  using namespace sidetrace::link;
  if (argc != 2) {
    std::cerr << "usage: orchestrator_link_seeds DIR\n";
    return 2;
  }
  nlohmann::json alert = {{"uuid", "0f5c"}, {"rule", "r"}, {"priority", "Warning"},
                          {"time", "2026-01-01T00:00:00.000000000Z"}, {"output", "x"},
                          {"output_fields", {{"proc.name", "cat"}}}};
  std::vector<Policy> policies = {{"a.yaml", "- rule: x\n"}};
  Message all[] = {MakeHello("id", "1", "key", "host", {{"aws.ecs.cluster", "c"}}),
                   MakeWelcome(policies, 1000), MakeReject("bad key"), MakeAlert(1, alert),
                   MakeAck(7), MakeStats({{"events", 3}}), MakeHeartbeat(5),
                   MakePolicyUpdate(policies)};
  int i = 0;
  for (const Message& m : all) {
    std::ofstream(std::string(argv[1]) + "/seed" + std::to_string(i++), std::ios::binary) << EncodeFrame(m);
  }
  // Bodies alone (what the alert and ack fast paths read): an alert whose
  // text mixes long plain runs, escapes and multi-byte UTF-8, and an ack.
  alert["output"] = "Sensitive file opened \"/etc/shadow\"\n\tby caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x01 (user=root)";
  std::ofstream(std::string(argv[1]) + "/body-alert", std::ios::binary)
      << EncodeFrame(MakeAlert(3, alert)).substr(kHeaderBytes);
  std::ofstream(std::string(argv[1]) + "/body-ack", std::ios::binary) << EncodeAckFrame(300).substr(kHeaderBytes);
  return 0;
}
