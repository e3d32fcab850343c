// ParseBatch and friends on inline inputs: the stored alert text is the
// sender's alert, compacted to one line, with Falco's priority spelling.
#include <zstd.h>

#include <ctime>

#include <fmt/format.h>

#include <catch2/catch.hpp>

#include "backend/alert.h"

using namespace sidetrace::backend;
using json = nlohmann::json;

TEST_CASE("backend_alert: stored text is the sender's alert on one line", "[unit]") {
  std::string body = R"({
    "agent": {"id": "a1", "container.id": "c1"},
    "\u0065vents": [
      {
        "uuid": "u1", "time": "2026-11-26T00:00:00.000000001Z", "rule": "R \"q\" {x}",
        "priority": "warning", "output": "line1\nline2 [ok]",
        "output_fields": {"evt.time": 1795651200000000001, "fd.name": "/etc/shadow", "x": 1.50},
        "tags": ["a", "b"]
      },
      {"uuid":"u2","time":"2026-11-26T01:00:00+01:00","rule":"R2","priority":"Critical","output_fields":{"k":"v"}}
    ],
    "stats": {"events_seen": 9, "drops": 2}
  })";
  auto b = ParseBatch(body);
  REQUIRE(b.ok());
  REQUIRE(b->alerts.size() == 2);
  const Alert& a = b->alerts[0];
  CHECK(a.uuid == "u1");
  CHECK(a.priority == "Warning");
  CHECK(a.priority_index == 4);
  CHECK(a.time_ns == 1795651200000000001);
  CHECK(a.agent_id == "a1");
  CHECK(a.container_id == "c1");
  CHECK(a.json.find('\n') == std::string::npos);
  json j = json::parse(a.json);
  CHECK(j["priority"] == "Warning");
  CHECK(j["rule"] == "R \"q\" {x}");
  CHECK(j["output"] == "line1\nline2 [ok]");
  CHECK(j["output_fields"]["evt.time"].get<int64_t>() == 1795651200000000001);
  CHECK(b->alerts[1].json ==
        R"({"uuid":"u2","time":"2026-11-26T01:00:00+01:00","rule":"R2","priority":"Critical","output_fields":{"k":"v"}})");
  CHECK(b->alerts[1].time_ns == b->alerts[0].time_ns - 1);
  REQUIRE(b->agents.size() == 1);
  CHECK(b->agents[0].events_seen == 9);
  CHECK(b->agents[0].drops == 2);
  CHECK(b->agents[0].alerts == -1);
}

TEST_CASE("backend_alert: a compact alert is stored as a slice of the body, a spaced one minified", "[unit]") {
  std::string compact = R"({"uuid":"c","time":"2026-11-26T00:00:00Z","rule":"r x","priority":"Notice","output":"a  b","output_fields":{"k":1}})";
  std::string spaced = R"({"uuid":"s","time":"2026-11-26T00:00:00Z","rule":"r","priority":"Notice","output_fields":{"k": [1, 2]}})";
  auto b = ParseBatch("{\"n\": 1 ,\"x\":{\"events\":[]}, \"events\" :\t[ " + compact + " ,\r\n" + spaced + " ] }");
  REQUIRE(b.ok());
  REQUIRE(b->alerts.size() == 2);
  CHECK(b->alerts[0].json == compact);
  const std::string& body = *b->text;
  CHECK(b->alerts[0].json.data() >= body.data());
  CHECK(b->alerts[0].json.data() < body.data() + body.size());
  CHECK(b->alerts[1].json ==
        R"({"uuid":"s","time":"2026-11-26T00:00:00Z","rule":"r","priority":"Notice","output_fields":{"k":[1,2]}})");
}

TEST_CASE("backend_alert: reasons for bad input", "[unit]") {
  auto reason = [](const std::string& body) {
    auto b = ParseBatch(body);
    return b.ok() ? std::string("ok") : b.status().message();
  };
  CHECK(reason(R"({"events":[]})") == "ok");
  CHECK(reason(R"({"events":[1]})") == "events[0]: must be an object");
  CHECK(reason(R"({"events":[{"uuid":"u","time":"2026-11-26T00:00:00Z","rule":"r","priority":"Info","output_fields":{"a":1},"tags":"x"}]})") ==
        "events[0].tags: must be an array");
  CHECK(reason(R"({"events":[{"uuid":"u","time":"2026-11-26T00:00:00Z","rule":"r","priority":"Info","output_fields":[1]}]})") ==
        "events[0].output_fields: required non-empty object");
  CHECK(reason(R"({"events":[], "stats": 3})") == "stats: must be an object");
  CHECK(reason(R"({"events":[], "agents": {}})") == "agents: must be an array");
  CHECK(reason(R"({"events":[], "agents": [{"id": "a"}, {"hostname": "h"}]})") == "agents[1].id: required string");
  CHECK(reason(R"({"events":[]} x)") == "body: malformed JSON");
  CHECK(reason("") == "body: malformed JSON");
}

TEST_CASE("backend_alert: RFC 3339 round trip", "[unit]") {
  int64_t ns = 0;
  REQUIRE(ParseRfc3339("2026-11-26T00:15:20.123456789Z", &ns));
  CHECK(FormatRfc3339(ns) == "2026-11-26T00:15:20.123456789Z");
  REQUIRE(ParseRfc3339("2026-11-26T02:15:20.5+02:00", &ns));
  CHECK(FormatRfc3339(ns) == "2026-11-26T00:15:20.500000000Z");
  CHECK(!ParseRfc3339("2026-11-26 00:15:20", &ns));
  CHECK(!ParseRfc3339("2026-13-26T00:15:20Z", &ns));
  CHECK(!ParseRfc3339("2026-11-26T00:15:20.Z", &ns));
  // The calendar arithmetic agrees with timegm, leap years and roll-over
  // (Feb 31, second 60) included, from 1900 to 2200.
  for (int y = 1900; y <= 2200; y += 7) {
    for (int m = 1; m <= 12; ++m) {
      for (int d : {1, 28, 29, 31}) {
        std::tm tm{};
        tm.tm_year = y - 1900, tm.tm_mon = m - 1, tm.tm_mday = d, tm.tm_hour = 23, tm.tm_min = 59, tm.tm_sec = 60;
        std::string text = fmt::format("{:04}-{:02}-{:02}T23:59:60Z", y, m, d);
        INFO(text);
        REQUIRE(ParseRfc3339(text, &ns));
        CHECK(ns == static_cast<int64_t>(timegm(&tm)) * 1000000000LL);
      }
    }
  }
}

TEST_CASE("backend_alert: a batch's fields outlive the next parse on the thread", "[unit]") {
  auto first = ParseBatch(R"({"events":[{"uuid":"first-uuid-0123456789","time":"2026-11-26T00:00:00Z",)"
                          R"("rule":"First rule, long enough for the heap","priority":"ERROR",)"
                          R"("output_fields":{"container.id":"c-first","aws.ecs.task.arn":"arn:first","agent.id":"ag1"}}]})");
  REQUIRE(first.ok());
  auto second = ParseBatch(R"({"events":[{"uuid":"second-uuid-9876543210","time":"2026-11-26T00:00:00Z",)"
                           R"("rule":"Second rule, overwriting the parser's strings","priority":"Notice",)"
                           R"("agent_id":"ag2","output_fields":{"container.id":"c-second","agent.id":"x"}}]})");
  REQUIRE(second.ok());
  const Alert& a = first->alerts[0];
  CHECK(a.uuid == "first-uuid-0123456789");
  CHECK(a.rule == "First rule, long enough for the heap");
  CHECK(a.priority == "Error");
  CHECK(a.container_id == "c-first");
  CHECK(a.task_arn == "arn:first");
  CHECK(a.agent_id == "ag1");
  const Alert& b = second->alerts[0];
  CHECK(b.agent_id == "ag2");  // agent_id wins over output_fields["agent.id"]
  CHECK(b.task_arn.empty());
}

namespace {
std::string ZstdFrame(const std::string& text) {
  std::string out(ZSTD_compressBound(text.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 3);
  REQUIRE_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}
}  // namespace

TEST_CASE("backend_alert: zstd bodies, concatenated, truncated, over the limit", "[unit]") {
  std::string big(200 * 1024, 'a');  // more than one 64 KiB output buffer
  std::string out;
  REQUIRE(Decode("zstd", ZstdFrame(big) + ZstdFrame("tail"), 1 << 20, &out).ok());
  CHECK(out == big + "tail");
  std::string frame = ZstdFrame(big);
  out.clear();
  sidetrace::Status truncated = Decode("zstd", frame.substr(0, frame.size() - 3), 1 << 20, &out);
  CHECK(truncated.message() == "body: truncated zstd data");
  out.clear();
  CHECK(Decode("zstd", "", 1 << 20, &out).message() == "body: truncated zstd data");
  out.clear();
  CHECK(Decode("zstd", frame, 100 * 1024, &out).message() == "decompressed body too large");
}
