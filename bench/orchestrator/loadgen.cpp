// sidetrace-loadgen: opens N agent connections to sidetrace-orchestrator and
// sends alerts at a set total rate, speaking the agent link protocol
// directly (one Asio loop per thread, connections spread over them). Each
// alert carries its creation time in output_fields["evt.time"] (ns) so the
// receiving end can measure end-to-end latency. At the end it waits for the
// acks and prints one JSON line: agents, sent, acked, seconds, rate.
// <utility> first: Boost 1.74's asio.hpp uses std::exchange without it in C++20.
#include <utility>

#include <boost/asio.hpp>
#include <boost/program_options.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "common/link/protocol.h"

namespace asio = boost::asio;
namespace po = boost::program_options;

int g_containers = 0;  // --containers
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using namespace sidetrace;

namespace {

std::atomic<uint64_t> g_sent{0}, g_acked{0}, g_welcomed{0}, g_rejected{0}, g_errors{0};
std::string g_key, g_run;

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

std::string Rfc3339(uint64_t ns) {
  time_t s = static_cast<time_t>(ns / 1000000000);
  tm t;
  gmtime_r(&s, &t);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                     t.tm_hour, t.tm_min, t.tm_sec, ns % 1000000000);
}

// User + system CPU of this process so far.
double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// CBOR (RFC 8949) by hand: the generator must cost far less than the
// orchestrator it measures. main() checks a frame against DecodeBody.
void CborHead(uint8_t major, uint64_t v, std::string* out) {
  major <<= 5;
  if (v < 24) {
    out->push_back(static_cast<char>(major | v));
    return;
  }
  int bytes = v < 0x100 ? 1 : v < 0x10000 ? 2 : v < 0x100000000 ? 4 : 8;
  out->push_back(static_cast<char>(major | (bytes == 1 ? 24 : bytes == 2 ? 25 : bytes == 4 ? 26 : 27)));
  for (int b = bytes - 1; b >= 0; --b) out->push_back(static_cast<char>(v >> (8 * b)));
}
void CborText(std::string_view s, std::string* out) {
  CborHead(3, s.size(), out);
  out->append(s);
}

// CBOR unsigned integer in its 8-byte form (valid CBOR, not the shortest):
// a fixed width, so a pre-encoded frame can be patched in place.
void CborU64(uint64_t v, std::string* out) {
  out->push_back(static_cast<char>(27));
  for (int b = 7; b >= 0; --b) out->push_back(static_cast<char>(v >> (8 * b)));
}

// One connection's alert frame, encoded once (header + version + CBOR map);
// each alert is a copy with its sequence number and creation time patched
// in, so generating an alert costs a memcpy and a few stores.
class AlertTemplate {
 public:
  explicit AlertTemplate(int index) {
    std::string& out = frame_;
    out.append(link::kHeaderBytes, '\0');
    out.push_back(static_cast<char>(link::kProtocolVersion));
    CborHead(5, 3, &out);
    CborText("alert", &out);
    CborHead(5, 9, &out);
    CborText("uuid", &out);
    // A version 7 uuid like the agent's: the creation time in Unix ms, then
    // the run (12 bits), the connection (14 bits) and the sequence number
    // (48 bits) where the agent has random bits; unique within a run.
    std::string uuid = fmt::format("00000000-0000-7{:03x}-{:04x}-000000000000", std::hash<std::string>{}(g_run) & 0xfff,
                                   0x8000 | (index & 0x3fff));
    CborText(uuid, &out);
    uuid_at_ = out.size() - uuid.size();
    CborText("time", &out);
    CborText(Rfc3339(0), &out);
    time_at_ = out.size() - kTimeChars;
    CborText("rule", &out);
    CborText("Read sensitive file untrusted", &out);
    CborText("priority", &out);
    CborText("Warning", &out);
    CborText("source", &out);
    CborText("syscall", &out);
    CborText("hostname", &out);
    CborText("loadgen", &out);
    CborText("tags", &out);
    CborHead(4, 2, &out);
    CborText("filesystem", &out);
    CborText("mitre_credential_access", &out);
    CborText("output", &out);
    CborText("Sensitive file opened for reading by non-trusted program (file=/etc/shadow gparent=bash)", &out);
    CborText("output_fields", &out);
    CborHead(5, 7, &out);
    CborText("evt.time", &out);
    ns_at_ = out.size() + 1;
    CborU64(0, &out);
    for (const char* kv : {"fd.name", "/etc/shadow", "proc.name", "cat", "proc.cmdline", "cat /etc/shadow",
                           "user.name", "root"}) {
      CborText(kv, &out);
    }
    // By default each connection is an agent in its own container and task,
    // as on ECS: the backend's container and task indexes see as many keys.
    const int container = g_containers > 0 ? index % g_containers : index;
    CborText("container.id", &out);
    CborText(fmt::format("{:012x}", 0x3f1c00000000ULL + static_cast<uint64_t>(container)), &out);
    CborText("aws.ecs.task.arn", &out);
    CborText(fmt::format("arn:aws:ecs:us-east-1:123456789012:task/bench/{:032x}", container), &out);
    CborText("seq", &out);
    seq_at_ = out.size() + 1;
    CborU64(0, &out);
    CborText("type", &out);
    CborText("alert", &out);
    uint32_t length = static_cast<uint32_t>(out.size() - link::kHeaderBytes);
    for (int b = 0; b < 4; ++b) out[b] = static_cast<char>(length >> (8 * (3 - b)));
  }

  size_t size() const { return frame_.size(); }

  // Appends alert `seq` created at `ns`; `time` is Rfc3339(ns).
  void Append(uint64_t seq, uint64_t ns, std::string_view time, std::string* out) const {
    size_t start = out->size();
    out->append(frame_);
    char* f = out->data() + start;
    static const char kHex[] = "0123456789abcdef";
    uint64_t ms = ns / 1000000;
    char* u = f + uuid_at_;
    for (int i = 0; i < 8; ++i) u[i] = kHex[(ms >> (44 - 4 * i)) & 15];       // time_hi: 32 bits
    for (int i = 0; i < 4; ++i) u[9 + i] = kHex[(ms >> (12 - 4 * i)) & 15];   // time_lo: 16 bits
    for (int i = 0; i < 12; ++i) u[24 + i] = kHex[(seq >> (44 - 4 * i)) & 15];
    std::memcpy(f + time_at_, time.data(), kTimeChars);
    for (int b = 0; b < 8; ++b) {
      f[ns_at_ + b] = static_cast<char>(ns >> (8 * (7 - b)));
      f[seq_at_ + b] = static_cast<char>(seq >> (8 * (7 - b)));
    }
  }

 private:
  static constexpr size_t kTimeChars = 30;  // 2026-11-26T06:05:25.123456789Z
  std::string frame_;
  size_t uuid_at_ = 0, time_at_ = 0, ns_at_ = 0, seq_at_ = 0;
};

class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(asio::io_context& ioc, int index) : socket_(ioc), index_(index), alert_(index) {}

  void Start(const tcp::endpoint& ep) {
    socket_.async_connect(ep, [self = shared_from_this()](boost::system::error_code ec) {
      if (ec) {
        g_errors++;
        return;
      }
      self->socket_.set_option(tcp::no_delay(true));
      self->Write(link::EncodeFrame(link::MakeHello(fmt::format("{}-agent-{}", g_run, self->index_), "loadgen",
                                                    g_key, fmt::format("loadgen-{}", self->index_),
                                                    {{"aws.ecs.cluster", "bench"}})));
      self->DoRead();
    });
  }

  bool ready() const { return welcomed_ && !dead_; }
  uint64_t unacked() const { return next_seq_ - 1 - acked_; }

  // Once welcomed, acks are read when the connection writes (or the caller
  // waits for them), not as each arrives: an armed read costs a wake-up, a
  // recv and a recv that finds nothing (asio tries the next one at once)
  // per ack; read lazily, one recv takes the acks that piled up.
  void Poll() {
    if (!reading_ && !dead_) DoRead();
  }

  // Appends `count` alerts created at `ns` (`time` is Rfc3339(ns)) as one
  // write: the caller reads the clock once per tick, not per connection.
  void SendAlerts(int count, uint64_t ns, std::string_view time) {
    std::string& out = Outgoing();
    out.reserve(out.size() + static_cast<size_t>(count) * alert_.size());
    for (int i = 0; i < count; ++i) alert_.Append(next_seq_++, ns, time, &out);
    g_sent += static_cast<uint64_t>(count);
    if (!writing_) StartWrite();
    Poll();
  }

 private:
  // Frames go into the buffer being written when no write is in flight,
  // else into the next one; the two buffers keep their capacity, so
  // sending allocates nothing.
  std::string& Outgoing() { return writing_ ? pending_ : current_; }

  void Write(std::string_view data) {
    Outgoing().append(data);
    if (!writing_) StartWrite();
  }

  void StartWrite() {
    writing_ = true;
    asio::async_write(socket_, asio::buffer(current_), [self = shared_from_this()](boost::system::error_code ec, size_t) {
      self->writing_ = false;
      self->current_.clear();
      if (ec) return self->Fail("write: " + ec.message());
      if (!self->pending_.empty()) {
        self->current_.swap(self->pending_);
        self->StartWrite();
      }
    });
  }

  void DoRead() {
    reading_ = true;
    socket_.async_read_some(asio::buffer(buf_), [self = shared_from_this()](boost::system::error_code ec, size_t n) {
      self->reading_ = false;
      if (ec) return self->Fail("read: " + ec.message());
      self->decoder_.Append(self->buf_.data(), n);
      for (;;) {
        auto body = self->decoder_.NextBody();
        if (!body.ok()) return self->Fail(body.status().message());
        if (!body->has_value()) break;
        // Acks, nearly every frame, in the orchestrator's layout are read in
        // place; anything else gets the full decoder.
        uint64_t seq = 0;
        if (link::ParseAckBody(**body, &seq)) {
          self->OnAck(seq);
          continue;
        }
        auto m = link::DecodeBody(**body);
        if (!m.ok()) return self->Fail(m.status().message());
        switch (m->type) {
          case link::MessageType::kWelcome:
            self->welcomed_ = true;
            g_welcomed++;
            break;
          case link::MessageType::kReject:
            g_rejected++;
            return self->Fail("rejected: " + m->body["reason"].get<std::string>());
          case link::MessageType::kAck:
            self->OnAck(m->body["seq"].get<uint64_t>());
            break;
          default:
            break;
        }
      }
      if (!self->welcomed_) self->DoRead();
    });
  }

  void OnAck(uint64_t seq) {
    if (seq <= acked_ || seq >= next_seq_) return Fail(fmt::format("ack {} outside ({}, {})", seq, acked_, next_seq_));
    g_acked += seq - acked_;
    acked_ = seq;
  }

  void Fail(const std::string& why) {
    if (!dead_ && g_errors++ == 0) std::cerr << "sidetrace-loadgen: first connection failure: " << why << "\n";
    dead_ = true;
    boost::system::error_code ec;
    socket_.close(ec);
  }

  tcp::socket socket_;
  int index_;
  AlertTemplate alert_;
  std::array<char, 8192> buf_;
  link::FrameDecoder decoder_;
  std::string current_, pending_;
  bool writing_ = false, reading_ = false, welcomed_ = false, dead_ = false;
  uint64_t next_seq_ = 1, acked_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  std::string orchestrator;
  int agents = 100, threads = 1, burst = 16;
  double rate = 1000, duration = 10;
  po::options_description desc("sidetrace-loadgen: agent connections sending alerts at a set rate\n\nOptions");
  desc.add_options()("help,h", "show this help")(
      "orchestrator", po::value(&orchestrator)->default_value("127.0.0.1:6667"), "HOST:PORT (IP)")(
      "access-key", po::value(&g_key)->default_value(""), "agent access key")(
      "agents", po::value(&agents)->default_value(agents), "connections")(
      "rate", po::value(&rate)->default_value(rate), "alerts per second, all agents together")(
      "duration", po::value(&duration)->default_value(duration), "seconds of sending")(
      "threads", po::value(&threads)->default_value(threads), "event loops")(
      "burst", po::value(&burst)->default_value(burst),
      "alerts a connection sends in one write (the agent sends up to 512 queued alerts at once)")(
      "containers", po::value(&g_containers)->default_value(0),
      "distinct containers (and tasks) the agents run in; 0: one per agent, as on ECS")(
      "run-id", po::value(&g_run)->default_value(""), "agent id prefix, also hashed into the uuids (default: random)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "sidetrace-loadgen: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (burst < 1) {
    std::cerr << "sidetrace-loadgen: --burst must be at least 1\n";
    return 2;
  }
  if (g_run.empty()) g_run = fmt::format("{:x}", NowNs());
  {
    std::string frame;
    uint64_t ns = NowNs();
    AlertTemplate(7).Append(42, ns, Rfc3339(ns), &frame);
    auto m = link::DecodeBody(std::string_view(frame).substr(link::kHeaderBytes));
    if (!m.ok() || m->type != link::MessageType::kAlert || m->body["seq"] != 42 ||
        m->body["alert"]["output_fields"]["evt.time"] != ns || m->body["alert"]["time"] != Rfc3339(ns) ||
        m->body["alert"]["uuid"] != fmt::format("{:08x}-{:04x}-7{:03x}-8007-00000000002a", ns / 1000000 >> 16,
                                                ns / 1000000 & 0xffff, std::hash<std::string>{}(g_run) & 0xfff)) {
      std::cerr << "sidetrace-loadgen: bad alert frame: " << (m.ok() ? m->body.dump() : m.status().message()) << "\n";
      return 1;
    }
  }
  auto colon = orchestrator.rfind(':');
  tcp::endpoint ep(asio::ip::make_address(orchestrator.substr(0, colon)),
                   static_cast<uint16_t>(std::stoi(orchestrator.substr(colon + 1))));

  std::vector<std::unique_ptr<asio::io_context>> loops;
  std::vector<std::vector<std::shared_ptr<Conn>>> conns(threads);
  for (int t = 0; t < threads; ++t) loops.push_back(std::make_unique<asio::io_context>(1));
  for (int i = 0; i < agents; ++i) {
    auto c = std::make_shared<Conn>(*loops[i % threads], i);
    conns[i % threads].push_back(c);
    c->Start(ep);
  }
  std::atomic<bool> sending{true};
  std::vector<std::thread> workers;
  auto wait_start = Clock::now();
  // Connect everyone before the clock starts.
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      auto& ioc = *loops[t];
      auto& mine = conns[t];
      // With acks read lazily a loop can be without pending operations; it
      // must not count as stopped (run_for would return at once from then on).
      auto work = asio::make_work_guard(ioc);
      while (g_welcomed + g_errors < static_cast<uint64_t>(agents) && Clock::now() - wait_start < std::chrono::seconds(60)) {
        ioc.run_for(std::chrono::milliseconds(10));
      }
      double my_rate = rate / threads;
      auto start = Clock::now();
      std::string time;
      uint64_t sent = 0;
      size_t next = 0;
      while (sending) {
        double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
        if (elapsed >= duration) break;
        uint64_t due = static_cast<uint64_t>(elapsed * my_rate);
        uint64_t ns = NowNs();
        if (sent < due) time = Rfc3339(ns);
        // Spread what is due over the connections, up to --burst alerts in
        // one write per connection (an agent writes what queued meanwhile).
        while (sent < due && !mine.empty()) {
          auto& c = mine[next++ % mine.size()];
          if (!c->ready() || c->unacked() > 5000) {
            c->Poll();
            if (next % mine.size() == 0) break;
            continue;
          }
          int n = static_cast<int>(std::min<uint64_t>(due - sent, static_cast<uint64_t>(burst)));
          c->SendAlerts(n, ns, time);
          sent += static_cast<uint64_t>(n);
        }
        ioc.run_for(std::chrono::milliseconds(5));
      }
      auto drain_until = Clock::now() + std::chrono::seconds(30);
      while (Clock::now() < drain_until) {
        bool all = true;
        for (auto& c : mine) {
          c->Poll();
          all = all && (!c->ready() || c->unacked() == 0);
        }
        if (all) break;
        ioc.run_for(std::chrono::milliseconds(10));
      }
    });
  }
  auto t0 = Clock::now();
  for (auto& w : workers) w.join();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  nlohmann::json out = {{"run_id", g_run},          {"agents", agents},       {"welcomed", g_welcomed.load()},
                        {"rejected", g_rejected.load()}, {"errors", g_errors.load()}, {"target_rate", rate},
                        {"sent", g_sent.load()},     {"acked", g_acked.load()}, {"seconds", secs},
                        {"cpu_seconds", CpuSeconds()}};
  std::cout << out.dump() << std::endl;
  return g_acked == g_sent && g_errors == 0 ? 0 : 1;
}
