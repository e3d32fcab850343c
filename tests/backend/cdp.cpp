#include "tests/backend/cdp.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <vector>

#include "tests/backend/harness.h"

namespace sidetrace::backend_test {

using json = nlohmann::json;

namespace {

std::string Base64Decode(const std::string& in) {
  static const std::string kChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -8;
  for (unsigned char c : in) {
    size_t p = kChars.find(static_cast<char>(c));
    if (p == std::string::npos) break;
    val = (val << 6) + static_cast<int>(p);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((val >> bits) & 0xFF));
      bits -= 8;
    }
  }
  return out;
}

}  // namespace

Chromium::~Chromium() { Close(); }

std::string Chromium::Open(const std::string& url, int width, int height) {
  profile_dir_ = MakeTempDir("backend_chromium_profile");
  int to[2], from[2];
  if (pipe2(to, O_CLOEXEC) != 0 || pipe2(from, O_CLOEXEC) != 0) return "pipe failed";
  pid_ = fork();
  if (pid_ == 0) {
    // fd 3: what the browser reads; fd 4: what it writes.
    // Move both ends above 4 first so that neither dup2 clobbers the other.
    int r = fcntl(to[0], F_DUPFD, 10), w = fcntl(from[1], F_DUPFD, 10);
    dup2(r, 3);
    dup2(w, 4);
    int devnull = ::open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    std::string profile = "--user-data-dir=" + profile_dir_;
    std::string size = "--window-size=" + std::to_string(width) + "," + std::to_string(height);
    execlp("chromium", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--remote-debugging-pipe",
           profile.c_str(), size.c_str(), "about:blank", static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(to[0]);
  ::close(from[1]);
  to_browser_ = to[1];
  from_browser_ = from[0];
  if (pid_ < 0) return "fork failed";
  std::string err;
  json created = Call("Target.createTarget", {{"url", "about:blank"}}, false, &err, 60000);
  if (!err.empty()) return "createTarget: " + err;
  json attached = Call("Target.attachToTarget", {{"targetId", created["targetId"]}, {"flatten", true}}, false, &err);
  if (!err.empty()) return "attachToTarget: " + err;
  session_ = attached["sessionId"].get<std::string>();
  Call("Emulation.setDeviceMetricsOverride",
       {{"width", width}, {"height", height}, {"deviceScaleFactor", 1}, {"mobile", false}}, true, &err);
  if (!err.empty()) return "setDeviceMetricsOverride: " + err;
  Call("Page.navigate", {{"url", url}}, true, &err);
  if (!err.empty()) return "navigate: " + err;
  return "";
}

json Chromium::Call(const std::string& method, const json& params, bool in_session, std::string* error,
                    int timeout_ms) {
  error->clear();
  int id = next_id_++;
  json msg = {{"id", id}, {"method", method}, {"params", params}};
  if (in_session) msg["sessionId"] = session_;
  std::string out = msg.dump();
  out.push_back('\0');
  for (size_t off = 0; off < out.size();) {
    ssize_t n = ::write(to_browser_, out.data() + off, out.size() - off);
    if (n <= 0) {
      *error = "write to browser failed";
      return nullptr;
    }
    off += static_cast<size_t>(n);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    size_t nul;
    while ((nul = pending_.find('\0')) != std::string::npos) {
      json reply = json::parse(pending_.substr(0, nul), nullptr, false);
      pending_.erase(0, nul + 1);
      if (!reply.is_object() || !reply.contains("id") || reply["id"] != id) continue;  // events, other replies
      if (reply.contains("error")) {
        *error = reply["error"].dump();
        return nullptr;
      }
      return reply["result"];
    }
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0) {
      *error = "timeout waiting for " + method;
      return nullptr;
    }
    pollfd p{from_browser_, POLLIN, 0};
    if (poll(&p, 1, left) <= 0) continue;
    char buf[65536];
    ssize_t n = ::read(from_browser_, buf, sizeof buf);
    if (n <= 0) {
      *error = "browser closed the pipe";
      return nullptr;
    }
    pending_.append(buf, static_cast<size_t>(n));
  }
}

json Chromium::Eval(const std::string& expression, std::string* error) {
  std::string err;
  json r = Call("Runtime.evaluate", {{"expression", expression}, {"returnByValue", true}, {"awaitPromise", true}},
                true, &err);
  if (err.empty() && r.contains("exceptionDetails")) err = r["exceptionDetails"].dump();
  if (error) *error = err;
  if (!err.empty()) return nullptr;
  return r["result"].value("value", json());
}

std::string Chromium::Screenshot(const std::string& path) {
  std::string err;
  json r = Call("Page.captureScreenshot", {{"format", "png"}}, true, &err);
  if (!err.empty()) return err;
  std::ofstream out(path, std::ios::binary);
  out << Base64Decode(r["data"].get<std::string>());
  return out ? "" : "cannot write " + path;
}

void Chromium::Close() {
  if (pid_ > 0) {
    std::string err;
    Call("Browser.close", json::object(), false, &err, 5000);
    int status;
    bool exited = WaitFor([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, 10000);
    if (!exited) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }
  if (to_browser_ >= 0) ::close(to_browser_);
  if (from_browser_ >= 0) ::close(from_browser_);
  to_browser_ = from_browser_ = -1;
  if (!profile_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(profile_dir_, ec);
    profile_dir_.clear();
  }
}

}  // namespace sidetrace::backend_test
