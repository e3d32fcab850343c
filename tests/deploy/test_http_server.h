// A tiny HTTP/1.1 server on 127.0.0.1 (ephemeral port) for the deploy tests:
// serves fixed bodies by path, or, in kSilent mode, accepts connections and
// never answers (to test client timeouts). One thread, poll(2) with a stop
// pipe; every loop is bounded by Stop() and by the test's lifetime.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace sidetrace::testing {

class TestHttpServer {
 public:
  enum class Mode { kServe, kSilent };

  explicit TestHttpServer(std::map<std::string, std::string> routes, Mode mode = Mode::kServe)
      : routes_(std::move(routes)), mode_(mode) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 16) != 0) {
      throw std::runtime_error("test server: bind/listen failed");
    }
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    if (::pipe2(stop_pipe_, O_CLOEXEC) != 0) throw std::runtime_error("test server: pipe");
    thread_ = std::thread([this] { Loop(); });
  }

  ~TestHttpServer() { Stop(); }

  void Stop() {
    if (!thread_.joinable()) return;
    char c = 'x';
    (void)!::write(stop_pipe_[1], &c, 1);
    thread_.join();
    for (int fd : clients_) ::close(fd);
    ::close(listen_fd_);
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
  }

  // Replaces the routes served from now on.
  void SetRoutes(std::map<std::string, std::string> routes) {
    std::lock_guard<std::mutex> lock(mu_);
    routes_ = std::move(routes);
  }

  uint16_t port() const { return port_; }
  std::string url(const std::string& path = "") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int requests() const { return requests_.load(); }
  std::vector<std::string> targets() const {
    std::lock_guard<std::mutex> lock(mu_);
    return targets_;
  }

 private:
  void Loop() {
    for (;;) {
      std::vector<pollfd> fds = {{stop_pipe_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
      if (::poll(fds.data(), fds.size(), 10000) < 0) return;
      if (fds[0].revents != 0) return;
      if (fds[1].revents == 0) continue;
      int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      if (mode_ == Mode::kSilent) {
        clients_.push_back(client);  // held open, never answered, closed by Stop()
        continue;
      }
      Serve(client);
      ::close(client);
    }
  }

  void Serve(int client) {
    std::string request;
    char buf[4096];
    while (request.find("\r\n\r\n") == std::string::npos && request.size() < 65536) {
      pollfd p{client, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) return;
      ssize_t n = ::read(client, buf, sizeof buf);
      if (n <= 0) return;
      request.append(buf, static_cast<size_t>(n));
    }
    size_t sp1 = request.find(' ');
    size_t sp2 = request.find(' ', sp1 + 1);
    std::string target = request.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string response;
    {
      std::lock_guard<std::mutex> lock(mu_);
      targets_.push_back(target);
      auto it = routes_.find(target);
      if (it == routes_.end()) {
        response = "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found";
      } else {
        response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                   std::to_string(it->second.size()) + "\r\nConnection: close\r\n\r\n" + it->second;
      }
    }
    ++requests_;
    size_t off = 0;
    while (off < response.size()) {
      ssize_t n = ::write(client, response.data() + off, response.size() - off);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }

  std::map<std::string, std::string> routes_;  // guarded by mu_
  Mode mode_;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::vector<int> clients_;  // only touched by the server thread, then Stop()
  std::atomic<int> requests_{0};
  mutable std::mutex mu_;
  std::vector<std::string> targets_;
  std::thread thread_;
};

}  // namespace sidetrace::testing
