// sidetrace-backend over real TLS: certificates generated in the test, the
// real binary, real SQLite. Covers the ingest contract (auth, validation,
// dedupe, compression, size limit) and the read API.
#include <catch2/catch.hpp>

#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <zlib.h>
#include <zstd.h>

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "common/tls/cert_gen.h"
#include "common/tls/tls.h"
#include "tests/backend/harness.h"

using namespace sidetrace;
using namespace sidetrace::backend_test;
using json = nlohmann::json;
namespace http = boost::beast::http;

namespace {

constexpr char kKey[] = "test-access-key-1";

struct Fixture {
  std::string dir = MakeTempDir("backend_ingest_test");
  tls::TestPki pki;
  BackendProcess backend;
  std::string db = dir + "/sidetrace.db";

  explicit Fixture(std::vector<std::string> extra = {}) {
    auto p = tls::GenerateTestPki(dir + "/pki");
    REQUIRE(p.ok());
    pki = *p;
    std::vector<std::string> args = {"--ingest", "127.0.0.1:0", "--http", "127.0.0.1:0", "--cert",
                                      pki.server_cert, "--key", pki.server_key, "--db", db};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string err = backend.Start(args, dir + "/backend.log", {std::string("SIDETRACE_ACCESS_KEY=") + kKey});
    REQUIRE(err == "");
  }
  ~Fixture() {
    backend.Kill(SIGTERM);
    backend.Wait();
    std::filesystem::remove_all(dir);
  }
  HttpClient Ingest() { return HttpClient(backend.ingest_port(), pki.ca_cert); }
  HttpClient Api() { return HttpClient(backend.http_port()); }

  // Rows in the events table, read straight from the database file.
  int64_t StoredRows() {
    sqlite3* db_handle = nullptr;
    REQUIRE(sqlite3_open_v2(db.c_str(), &db_handle, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db_handle, "SELECT count(*) FROM events", -1, &s, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(s) == SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db_handle);
    return n;
  }
};

std::string Gzip(const std::string& in) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&zs, in.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string Zstd(const std::string& in) {
  std::string out(ZSTD_compressBound(in.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 3);
  REQUIRE(!ZSTD_isError(n));
  out.resize(n);
  return out;
}

}  // namespace

TEST_CASE("backend_ingest: TLS client rejects a server certificate from another CA", "[integration]") {
  Fixture f;
  auto other = tls::GenerateTestPki(f.dir + "/other", {}, "attacker CA");
  REQUIRE(other.ok());
  HttpClient wrong(f.backend.ingest_port(), other->ca_cert);
  CHECK(wrong.Connect().find("certificate verify failed") != std::string::npos);
  HttpClient wrong_name(f.backend.ingest_port(), f.pki.ca_cert, "backend.example");
  CHECK(wrong_name.Connect().find("certificate verify failed") != std::string::npos);
  HttpClient right = f.Ingest();
  CHECK(right.Connect() == "");
}

TEST_CASE("backend_ingest: the ingest port speaks TLS only", "[integration]") {
  Fixture f;
  HttpClient plain(f.backend.ingest_port());
  auto r = plain.PostBatch(BatchBody({MakeAlert("plain-1")}), kKey);
  CHECK(r.status == 0);
  CHECK(f.StoredRows() == 0);
}

TEST_CASE("backend_ingest: missing or wrong access key is 401 and stores nothing", "[integration]") {
  Fixture f;
  HttpClient c = f.Ingest();
  std::string body = BatchBody({MakeAlert("auth-1")});
  CHECK(c.PostBatch(body, "").status == 401);
  CHECK(c.PostBatch(body, "wrong-key").status == 401);
  CHECK(c.PostBatch(body, std::string(kKey) + "x").status == 401);
  CHECK(c.PostBatch(body, std::string(kKey).substr(1)).status == 401);
  auto basic = c.Request(http::verb::post, "/api/v1/events:batch", body, {{"Authorization", kKey}});
  CHECK(basic.status == 401);
  CHECK(f.StoredRows() == 0);
  auto ok = c.PostBatch(body, kKey);
  CHECK(ok.status == 200);
  CHECK(f.StoredRows() == 1);
  std::string log;
  {
    std::ifstream in(f.dir + "/backend.log");
    log.assign(std::istreambuf_iterator<char>(in), {});
  }
  CHECK(log.find(kKey) == std::string::npos);
  CHECK(log.find("wrong-key") == std::string::npos);
}

TEST_CASE("backend_ingest: malformed bodies are 400 with a reason and store nothing", "[integration]") {
  Fixture f;
  HttpClient c = f.Ingest();
  json good = MakeAlert("good-1");
  auto without = [&](const char* field) {
    json a = MakeAlert("bad-" + std::string(field));
    a.erase(field);
    return a;
  };
  json bad_priority = MakeAlert("bad-prio");
  bad_priority["priority"] = "Urgent";
  json bad_time = MakeAlert("bad-time");
  bad_time["time"] = "yesterday";
  json empty_fields = MakeAlert("bad-fields");
  empty_fields["output_fields"] = json::object();
  struct Case {
    std::string body, reason;
  };
  std::vector<Case> cases = {
      {"{\"events\": [", "body: malformed JSON"},
      {"[1,2,3]", "body: must be a JSON object"},
      {"{\"events\": {}}", "events: required array"},
      {"{}", "events: required array"},
      {BatchBody({good, without("priority")}), "events[1].priority: required string"},
      {BatchBody({good, without("rule")}), "events[1].rule: required non-empty string"},
      {BatchBody({good, without("time")}), "events[1].time: required RFC 3339 string"},
      {BatchBody({good, without("output_fields")}), "events[1].output_fields: required non-empty object"},
      {BatchBody({good, without("uuid")}), "events[1].uuid: required non-empty string (the dedupe key)"},
      {BatchBody({good, bad_priority}), "events[1].priority: unknown priority \"Urgent\""},
      {BatchBody({good, bad_time}), "events[1].time: not RFC 3339: \"yesterday\""},
      {BatchBody({good, empty_fields}), "events[1].output_fields: required non-empty object"},
      {json({{"events", {good}}, {"agent", {{"hostname", "x"}}}}).dump(), "agent.id: required string"},
      {std::string("{\"events\":[\"\xff\xfe\"]}"), "body: malformed JSON"},
  };
  for (const auto& tc : cases) {
    INFO(tc.body.substr(0, 200));
    auto r = c.PostBatch(tc.body, kKey);
    CHECK(r.status == 400);
    auto j = json::parse(r.body, nullptr, false);
    REQUIRE(j.is_object());
    CHECK(j.value("error", "") == tc.reason);
  }
  // Corrupt compressed data is a 400 too, an unknown encoding a 415.
  CHECK(c.PostBatch("not gzip at all", kKey, {{"Content-Encoding", "gzip"}}).status == 400);
  CHECK(c.PostBatch("not zstd at all", kKey, {{"Content-Encoding", "zstd"}}).status == 400);
  CHECK(c.PostBatch(BatchBody({good}), kKey, {{"Content-Encoding", "br"}}).status == 415);
  CHECK(f.StoredRows() == 0);
  // The connection survived all of that, and the server still works.
  CHECK(c.PostBatch(BatchBody({good}), kKey).status == 200);
  CHECK(f.StoredRows() == 1);
}

TEST_CASE("backend_ingest: duplicates are ignored and counted", "[integration]") {
  Fixture f;
  HttpClient c = f.Ingest();
  std::vector<json> alerts;
  for (int i = 0; i < 50; ++i) alerts.push_back(MakeAlert("dup-" + std::to_string(i)));
  auto r1 = c.PostBatch(BatchBody(alerts), kKey);
  REQUIRE(r1.status == 200);
  CHECK(json::parse(r1.body) == json({{"accepted", 50}, {"new", 50}, {"duplicates", 0}}));
  // The same batch again (an orchestrator retry), then an overlapping one
  // that also repeats a uuid inside itself.
  auto r2 = c.PostBatch(BatchBody(alerts), kKey);
  CHECK(json::parse(r2.body) == json({{"accepted", 50}, {"new", 0}, {"duplicates", 50}}));
  std::vector<json> overlap = {MakeAlert("dup-0"), MakeAlert("dup-new"), MakeAlert("dup-new")};
  auto r3 = c.PostBatch(BatchBody(overlap), kKey);
  CHECK(json::parse(r3.body) == json({{"accepted", 3}, {"new", 1}, {"duplicates", 2}}));
  CHECK(f.StoredRows() == 51);
  HttpClient api = f.Api();
  auto m = api.Get("/metrics");
  CHECK(m.body.find("sidetrace_ingest_events_duplicate_total 52") != std::string::npos);
  CHECK(m.body.find("sidetrace_ingest_events_stored_total 51") != std::string::npos);
}

TEST_CASE("backend_ingest: pipelined batches on one connection are answered in order", "[integration]") {
  Fixture f({"--pipeline", "4"});
  // Batch i holds i + 1 alerts, so each reply says which batch it answers.
  // Batch 2 is malformed (400, nothing stored), batch 4 repeats batch 0.
  std::vector<std::string> bodies;
  for (int b = 0; b < 7; ++b) {
    std::vector<json> alerts;
    for (int i = 0; i <= b; ++i) alerts.push_back(MakeAlert("pipe-" + std::to_string(b) + "-" + std::to_string(i)));
    bodies.push_back(BatchBody(alerts));
  }
  bodies[2] = R"({"events":[{"uuid":"pipe-bad"}]})";
  bodies[4] = bodies[0];
  tls::ClientConfig cc;
  cc.ca_file = f.pki.ca_cert;
  auto ctx = tls::MakeClientContext(cc);
  REQUIRE(ctx.ok());
  boost::asio::io_context io;
  boost::beast::ssl_stream<boost::beast::tcp_stream> stream(io, *ctx);
  boost::beast::get_lowest_layer(stream).connect(
      {boost::asio::ip::make_address("127.0.0.1"), f.backend.ingest_port()});
  REQUIRE(tls::SetPeerName(stream.native_handle(), "127.0.0.1").ok());
  stream.handshake(boost::asio::ssl::stream_base::client);
  // Every request is written before any reply is read.
  for (const auto& body : bodies) {
    http::request<http::string_body> req{http::verb::post, "/api/v1/events:batch", 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::authorization, std::string("Bearer ") + kKey);
    req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
  }
  boost::beast::flat_buffer buffer;
  std::vector<json> expected = {
      {{"accepted", 1}, {"new", 1}, {"duplicates", 0}}, {{"accepted", 2}, {"new", 2}, {"duplicates", 0}},
      nullptr,
      {{"accepted", 4}, {"new", 4}, {"duplicates", 0}}, {{"accepted", 1}, {"new", 0}, {"duplicates", 1}},
      {{"accepted", 6}, {"new", 6}, {"duplicates", 0}}, {{"accepted", 7}, {"new", 7}, {"duplicates", 0}}};
  for (size_t i = 0; i < bodies.size(); ++i) {
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    INFO("reply " << i << ": " << res.body());
    if (i == 2) {
      CHECK(res.result_int() == 400);
      CHECK(res.body().find("events[0]") != std::string::npos);
    } else {
      CHECK(res.result_int() == 200);
      CHECK(json::parse(res.body()) == expected[i]);
    }
    CHECK(res.keep_alive());
  }
  CHECK(f.StoredRows() == 1 + 2 + 4 + 6 + 7);
}

TEST_CASE("backend_ingest: gzip and zstd bodies, and the size limit", "[integration]") {
  Fixture f({"--max-body-bytes", "200000"});
  HttpClient c = f.Ingest();
  std::vector<json> a, b;
  for (int i = 0; i < 100; ++i) a.push_back(MakeAlert("gz-" + std::to_string(i)));
  for (int i = 0; i < 100; ++i) b.push_back(MakeMinerAlert("zs-" + std::to_string(i)));
  std::string body_a = BatchBody(a), body_b = BatchBody(b);
  REQUIRE(body_a.size() > 100000);
  auto ra = c.PostBatch(Gzip(body_a), kKey, {{"Content-Encoding", "gzip"}});
  CHECK(ra.status == 200);
  auto rb = c.PostBatch(Zstd(body_b), kKey, {{"Content-Encoding", "zstd"}});
  CHECK(rb.status == 200);
  CHECK(f.StoredRows() == 200);
  std::vector<json> big;
  for (int i = 0; i < 300; ++i) big.push_back(MakeAlert("big-" + std::to_string(i)));
  auto r = c.PostBatch(BatchBody(big), kKey);
  CHECK(r.status == 413);
  CHECK(f.StoredRows() == 200);
  // Far over the limit, from a client that writes the whole body before it
  // reads: the server drops the rest of the body before closing, so the
  // connection is not reset and the 413 reaches the client.
  std::vector<json> huge;
  for (int i = 0; i < 8000; ++i) huge.push_back(MakeAlert("huge-" + std::to_string(i)));
  std::string huge_body = BatchBody(huge);
  REQUIRE(huge_body.size() > (8u << 20));
  for (int round = 0; round < 3; ++round) {
    HttpClient fresh = f.Ingest();
    auto rh = fresh.PostBatch(huge_body, kKey);
    INFO("round " << round << ": " << rh.error);
    CHECK(rh.status == 413);
  }
  CHECK(f.StoredRows() == 200);
}

TEST_CASE("backend_ingest: agents, read API filters, cursor paging, ndjson, SSE", "[integration]") {
  Fixture f;
  HttpClient c = f.Ingest();
  int64_t t0 = NowNs() - 60LL * 1000000000LL;
  std::vector<json> alerts;
  for (int i = 0; i < 25; ++i) alerts.push_back(MakeAlert("r-" + std::to_string(i), "Read sensitive file untrusted", "Warning", t0 + i * 1000000000LL));
  for (int i = 0; i < 5; ++i) alerts.push_back(MakeMinerAlert("m-" + std::to_string(i), t0 + (30 + i) * 1000000000LL));
  for (auto& a : alerts) a["agent_id"] = "agent-b";
  json body = {{"events", alerts},
               {"agents",
                {{{"id", "agent-a"}, {"hostname", "task-a"}, {"container.id", "aaa"}, {"stats", {{"events_seen", 10}, {"alerts", 0}, {"drops", 0}}}},
                 {{"id", "agent-b"},
                  {"hostname", "task-b"},
                  {"aws.ecs.task.arn", "arn:aws:ecs:us-east-1:123456789012:task/demo/3f1c9e0a5b7d4c1e8a9b"},
                  {"stats", {{"events_seen", 1234}, {"alerts", 30}, {"drops", 7}}}}}}};
  auto r = c.PostBatch(body.dump(), kKey);
  REQUIRE(r.status == 200);

  HttpClient api = f.Api();
  auto all = json::parse(api.Get("/api/events?limit=10").body);
  REQUIRE(all["events"].size() == 10);
  CHECK(all["events"][0]["uuid"] == "m-4");  // newest first
  std::set<std::string> seen;
  std::string cursor = all["next_cursor"];
  for (auto& e : all["events"]) seen.insert(e["uuid"].get<std::string>());
  while (!cursor.empty()) {
    auto page = json::parse(api.Get("/api/events?limit=10&cursor=" + cursor).body);
    for (auto& e : page["events"]) seen.insert(e["uuid"].get<std::string>());
    cursor = page["next_cursor"].is_null() ? "" : page["next_cursor"].get<std::string>();
  }
  CHECK(seen.size() == 30);
  auto miners = json::parse(api.Get("/api/events?priority=Critical").body);
  CHECK(miners["events"].size() == 5);
  auto by_rule = json::parse(api.Get("/api/events?rule=Read%20sensitive%20file%20untrusted&limit=1000").body);
  CHECK(by_rule["events"].size() == 25);
  auto text = json::parse(api.Get("/api/events?q=203.0.113.10").body);
  CHECK(text["events"].size() == 5);
  auto min_prio = json::parse(api.Get("/api/events?min_priority=error").body);
  CHECK(min_prio["events"].size() == 5);
  auto task = json::parse(api.Get("/api/events?task=arn:aws:ecs:us-east-1:123456789012:task/demo/3f1c9e0a5b7d4c1e8a9b").body);
  CHECK(task["events"].size() == 30);
  CHECK(api.Get("/api/events?priority=urgent").status == 400);
  auto one = api.Get("/api/events/m-2");
  REQUIRE(one.status == 200);
  CHECK(json::parse(one.body)["output_fields"]["fd.sip"] == "203.0.113.10");
  CHECK(api.Get("/api/events/nope").status == 404);
  auto nd = api.Get("/api/events.ndjson");
  CHECK(std::count(nd.body.begin(), nd.body.end(), '\n') == 30);
  CHECK(nd.headers["Content-Type"] == "application/x-ndjson");

  auto summary = json::parse(api.Get("/api/summary?since=-1h").body);
  CHECK(summary["total"] == 30);
  CHECK(summary["by_priority"]["Critical"] == 5);
  CHECK(summary["by_rule"][0]["rule"] == "Read sensitive file untrusted");
  REQUIRE(summary["agents"].size() == 2);
  json agent_b;
  for (auto& a : summary["agents"]) if (a["id"] == "agent-b") agent_b = a;
  CHECK(agent_b["drops"] == 7);
  CHECK(agent_b["events_seen"] == 1234);
  CHECK(agent_b["alerts_stored"] == 30);
  CHECK(agent_b["hostname"] == "task-b");

  CHECK(api.Get("/healthz").status == 200);
  auto page = api.Get("/");
  CHECK(page.status == 200);
  CHECK(page.headers["Content-Security-Policy"].find("default-src 'self'") != std::string::npos);
  CHECK(api.Get("/app.js").status == 200);
  CHECK(api.Request(http::verb::post, "/api/events", "{}").status == 405);

  // SSE: a raw stream client sees a new alert after it connects.
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket s(io);
  s.connect({boost::asio::ip::make_address("127.0.0.1"), f.backend.http_port()});
  std::string req = "GET /api/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
  boost::asio::write(s, boost::asio::buffer(req));
  std::string got;
  char buf[4096];
  while (got.find(": connected") == std::string::npos) got.append(buf, s.read_some(boost::asio::buffer(buf)));
  CHECK(got.find("text/event-stream") != std::string::npos);
  REQUIRE(c.PostBatch(BatchBody({MakeMinerAlert("live-1")}), kKey).status == 200);
  while (got.find("live-1") == std::string::npos) got.append(buf, s.read_some(boost::asio::buffer(buf)));
  CHECK(got.find("event: alert\ndata: {") != std::string::npos);
}

TEST_CASE("backend_ingest: idle keep-alive connections time out, connection cap holds", "[integration]") {
  Fixture f({"--timeout", "1", "--max-connections", "2"});
  HttpClient c1 = f.Ingest(), c2 = f.Ingest(), c3 = f.Ingest();
  REQUIRE(c1.Connect() == "");
  REQUIRE(c2.Connect() == "");
  // Third connection: accepted by the kernel, closed by the server at once.
  CHECK(c3.Connect() != "");
  // After the idle timeout the server closed c1 and c2; new ones work.
  HttpClient c4 = f.Ingest();
  CHECK(WaitFor([&] { return c4.Connect() == ""; }, 30000));
  CHECK(c4.PostBatch(BatchBody({MakeAlert("after-idle")}), kKey).status == 200);
  auto r = c1.PostBatch(BatchBody({MakeAlert("stale")}), kKey);
  CHECK(r.status == 0);
}

namespace {

// A raw TLS connection to the ingest port: the test decides how the bytes
// of a request are cut into TLS records (one record per write).
struct RawTls {
  boost::asio::io_context io;
  boost::asio::ssl::context ctx;
  boost::beast::ssl_stream<boost::beast::tcp_stream> stream;

  explicit RawTls(Fixture& f) : ctx(MakeCtx(f)), stream(io, ctx) {
    boost::beast::get_lowest_layer(stream).connect(
        {boost::asio::ip::make_address("127.0.0.1"), f.backend.ingest_port()});
    boost::beast::get_lowest_layer(stream).socket().set_option(boost::asio::ip::tcp::no_delay(true));
    REQUIRE(tls::SetPeerName(stream.native_handle(), "127.0.0.1").ok());
    stream.handshake(boost::asio::ssl::stream_base::client);
  }
  static boost::asio::ssl::context MakeCtx(Fixture& f) {
    tls::ClientConfig cc;
    cc.ca_file = f.pki.ca_cert;
    auto ctx = tls::MakeClientContext(cc);
    REQUIRE(ctx.ok());
    return std::move(*ctx);
  }
  static std::string Request(const std::string& body, size_t content_length) {
    return fmt::format("POST /api/v1/events:batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n"
                       "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                       kKey, content_length, body);
  }
  // Writes `bytes` as records of `piece` bytes, pausing now and then so
  // that the server drains the socket mid-body.
  void WriteInPieces(const std::string& bytes, size_t piece) {
    for (size_t i = 0; i < bytes.size(); i += piece) {
      boost::asio::write(stream, boost::asio::buffer(bytes.data() + i, std::min(piece, bytes.size() - i)));
      if ((i / piece) % 64 == 63) usleep(2000);
    }
  }
  http::response<http::string_body> ReadReply() {
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    return res;
  }
};

}  // namespace

TEST_CASE("backend_ingest: a body cut into many small TLS records, two requests sharing records", "[integration]") {
  Fixture f;
  std::vector<json> a, b;
  for (int i = 0; i < 60; ++i) a.push_back(MakeAlert("piece-a-" + std::to_string(i)));
  for (int i = 0; i < 3; ++i) b.push_back(MakeMinerAlert("piece-b-" + std::to_string(i)));
  std::string body_a = BatchBody(a), body_b = BatchBody(b);
  REQUIRE(body_a.size() > 60000);
  RawTls c(f);
  // Header and body in 97-byte records; the second request starts inside
  // the last record of the first.
  c.WriteInPieces(RawTls::Request(body_a, body_a.size()) + RawTls::Request(body_b, body_b.size()), 97);
  auto r1 = c.ReadReply();
  CHECK(r1.result_int() == 200);
  CHECK(json::parse(r1.body()) == json({{"accepted", 60}, {"new", 60}, {"duplicates", 0}}));
  auto r2 = c.ReadReply();
  CHECK(r2.result_int() == 200);
  CHECK(json::parse(r2.body()) == json({{"accepted", 3}, {"new", 3}, {"duplicates", 0}}));
  CHECK(f.StoredRows() == 63);
  // The same connection, one large record-sized write per request.
  std::vector<json> big;
  for (int i = 0; i < 500; ++i) big.push_back(MakeAlert("piece-big-" + std::to_string(i)));
  std::string body_big = BatchBody(big);
  c.WriteInPieces(RawTls::Request(body_big, body_big.size()), 1 << 20);
  CHECK(c.ReadReply().result_int() == 200);
  CHECK(f.StoredRows() == 563);
}

TEST_CASE("backend_ingest: a client that stalls mid-body is cut off, nothing stored", "[integration]") {
  Fixture f({"--timeout", "1"});
  std::vector<json> alerts;
  for (int i = 0; i < 50; ++i) alerts.push_back(MakeAlert("stall-" + std::to_string(i)));
  std::string body = BatchBody(alerts);
  RawTls c(f);
  std::string request = RawTls::Request(body, body.size());
  c.WriteInPieces(request.substr(0, request.size() - body.size() / 2), 4096);
  // The server gives up on the request after its read timeout and closes
  // the connection: the read ends with an error instead of a reply.
  auto start = std::chrono::steady_clock::now();
  boost::beast::error_code ec;
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(c.stream, buffer, res, ec);
  CHECK(ec);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));
  CHECK(f.StoredRows() == 0);
  // The rest of the body, too late, goes nowhere; a new connection works.
  HttpClient fresh = f.Ingest();
  CHECK(fresh.PostBatch(body, kKey).status == 200);
  CHECK(f.StoredRows() == 50);
}

TEST_CASE("backend_ingest: Connection: close ends with a TLS close_notify after the reply", "[integration]") {
  Fixture f;
  RawTls c(f);
  std::string body = BatchBody({MakeAlert("close-1")});
  std::string request = RawTls::Request(body, body.size());
  request.insert(request.find("\r\n\r\n"), "\r\nConnection: close");
  c.WriteInPieces(request, 1 << 20);
  auto res = c.ReadReply();
  CHECK(res.result_int() == 200);
  CHECK(!res.keep_alive());
  // A clean TLS end (eof), not a truncated stream or a reset.
  char byte;
  boost::beast::error_code ec;
  c.stream.read_some(boost::asio::buffer(&byte, 1), ec);
  CHECK(ec == boost::asio::error::eof);
  CHECK(f.StoredRows() == 1);
}

namespace {

// Each thread of `pid` by name, with its nice value (field 19 of its stat).
std::multimap<std::string, int> ThreadNice(pid_t pid) {
  std::multimap<std::string, int> out;
  for (const auto& t : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid))) {
    std::ifstream comm(t.path() / "comm"), stat(t.path() / "stat");
    std::string name, line;
    std::getline(comm, name);
    std::getline(stat, line);
    std::istringstream fields(line.substr(line.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 19 && fields >> field; ++i) {}
    out.emplace(name, std::stoi(field));
  }
  return out;
}

}  // namespace

TEST_CASE("backend_ingest: the committer thread alone takes --committer-nice", "[integration]") {
  auto check = [](std::vector<std::string> extra, int want) {
    Fixture f(std::move(extra));
    auto threads = ThreadNice(f.backend.pid());
    REQUIRE(threads.count("st-committer") == 1);
    CHECK(threads.find("st-committer")->second == want);
    for (const auto& [name, nice] : threads)
      if (name != "st-committer") CHECK(nice == 0);
    // It still commits.
    HttpClient c = f.Ingest();
    CHECK(c.PostBatch(BatchBody({MakeAlert("nice-1")}), kKey).status == 200);
    CHECK(f.StoredRows() == 1);
  };
  check({"--committer-nice", "5"}, 5);  // any process may lower its own priority
  // The default, -10, needs CAP_SYS_NICE or RLIMIT_NICE; without them the
  // committer keeps nice 0 and says so.
  errno = 0;
  const bool privileged = setpriority(PRIO_PROCESS, 0, -1) == 0;
  if (privileged) setpriority(PRIO_PROCESS, 0, 0);
  check({}, privileged ? -10 : 0);

  const std::string dir = MakeTempDir("backend_nice_test");
  const std::string cmd = fmt::format("{} --self-signed --db {}/x.db --access-key k --committer-nice -21 2>{}/err",
                                      BackendBinary(), dir, dir);
  int status = std::system(cmd.c_str());
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);
  std::ifstream err(dir + "/err");
  std::string line;
  std::getline(err, line);
  CHECK(line == "sidetrace-backend: --committer-nice: must be -20..19, got -21");
  std::filesystem::remove_all(dir);
}
