#include "common/util/log.h"

#include <unistd.h>

#include <atomic>
#include <ctime>
#include <string>

namespace sidetrace::log {
namespace {

std::atomic<Level> g_level{Level::kWarn};
// Set once at start-up, before any thread logs.
std::string g_program = "sidetrace";

constexpr std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
    case Level::kOff: return "off";
  }
  return "?";
}

}  // namespace

void SetProgram(std::string_view program) { g_program = std::string(program); }
void SetLevel(Level level) { g_level.store(level, std::memory_order_relaxed); }
Level GetLevel() { return g_level.load(std::memory_order_relaxed); }

bool ParseLevel(std::string_view text, Level* level) {
  if (text == "debug") *level = Level::kDebug;
  else if (text == "info") *level = Level::kInfo;
  else if (text == "warn" || text == "warning") *level = Level::kWarn;
  else if (text == "error") *level = Level::kError;
  else if (text == "off") *level = Level::kOff;
  else return false;
  return true;
}

std::string Quote(std::string_view value) {
  bool needs = value.empty();
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || static_cast<unsigned char>(c) < 0x20) needs = true;
  }
  if (!needs) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') { out += '\\'; out += c; }
    else if (c == '\n') out += "\\n";
    else if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\x{:02x}", c);
    else out += c;
  }
  out += '"';
  return out;
}

void Write(Level level, std::string_view msg, std::string_view fields) {
  if (level < GetLevel()) return;
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc{};
  gmtime_r(&ts.tv_sec, &utc);
  std::string line = fmt::format("{} ts={:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z level={} msg={}", g_program,
                                 utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                                 utc.tm_sec, ts.tv_nsec / 1000000, LevelName(level), Quote(msg));
  if (!fields.empty()) {
    line += ' ';
    line += fields;
  }
  line += '\n';
  // One write(2) per record so that lines from several threads never mix.
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) return;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace sidetrace::log
