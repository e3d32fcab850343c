// Drives Debian's headless Chromium over the DevTools protocol on a pipe
// (--remote-debugging-pipe: requests on fd 3, replies on fd 4, each message
// JSON followed by a NUL byte). Unlike --dump-dom, this lets a test watch a
// page that keeps a live connection (Server-Sent Events) open, evaluate
// JavaScript in it repeatedly, and take screenshots.
//
// The browser runs with a fresh profile in a temp dir and every background
// feature that could reach the network disabled; tests only open loopback
// URLs. Thread-safety: none; one test thread.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>

namespace sidetrace::backend_test {

class Chromium {
 public:
  Chromium() = default;
  ~Chromium();
  // Starts chromium and opens `url` in a new tab of width x height.
  // Returns "" or the error.
  std::string Open(const std::string& url, int width = 1440, int height = 900);
  // Evaluates a JavaScript expression in the page; returns its value (by
  // value), or a null json with *error set.
  nlohmann::json Eval(const std::string& expression, std::string* error = nullptr);
  // Writes a PNG screenshot of the viewport to `path`; "" or the error.
  std::string Screenshot(const std::string& path);
  void Close();

 private:
  nlohmann::json Call(const std::string& method, const nlohmann::json& params, bool in_session,
                      std::string* error, int timeout_ms = 30000);
  pid_t pid_ = -1;
  int to_browser_ = -1, from_browser_ = -1;
  int next_id_ = 1;
  std::string session_, profile_dir_, pending_;
};

}  // namespace sidetrace::backend_test
