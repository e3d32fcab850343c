// Structured logging to stderr, one logfmt line per record:
//
//   sidetrace-agent level=warn msg="orchestrator unreachable" addr=10.0.0.5:6667
//
// The program name prefix makes our lines easy to pick out of a container's
// CloudWatch stream, where they interleave with the workload's own stderr.
// Records below the global level are dropped before formatting. Thread-safe:
// each record is written with a single write(2). Never pass secrets.
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace sidetrace::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

// Sets the name printed first on every line (e.g. "sidetrace-agent").
void SetProgram(std::string_view program);
void SetLevel(Level level);
Level GetLevel();
// Parses debug|info|warn|warning|error|off; false when unknown.
bool ParseLevel(std::string_view text, Level* level);

// Writes one record. `fields` is pre-formatted "key=value key2=value2" text,
// appended after msg; values with spaces must be quoted with Quote().
void Write(Level level, std::string_view msg, std::string_view fields = {});

// Quotes a value for logfmt when it holds spaces, quotes or '='.
std::string Quote(std::string_view value);

template <typename... Args>
void Debug(std::string_view msg, fmt::format_string<Args...> f, Args&&... args) {
  if (GetLevel() <= Level::kDebug) Write(Level::kDebug, msg, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Info(std::string_view msg, fmt::format_string<Args...> f, Args&&... args) {
  if (GetLevel() <= Level::kInfo) Write(Level::kInfo, msg, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Warn(std::string_view msg, fmt::format_string<Args...> f, Args&&... args) {
  if (GetLevel() <= Level::kWarn) Write(Level::kWarn, msg, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void Error(std::string_view msg, fmt::format_string<Args...> f, Args&&... args) {
  if (GetLevel() <= Level::kError) Write(Level::kError, msg, fmt::format(f, std::forward<Args>(args)...));
}
inline void Debug(std::string_view msg) { if (GetLevel() <= Level::kDebug) Write(Level::kDebug, msg); }
inline void Info(std::string_view msg) { if (GetLevel() <= Level::kInfo) Write(Level::kInfo, msg); }
inline void Warn(std::string_view msg) { if (GetLevel() <= Level::kWarn) Write(Level::kWarn, msg); }
inline void Error(std::string_view msg) { if (GetLevel() <= Level::kError) Write(Level::kError, msg); }

}  // namespace sidetrace::log
