#include "common/rules/resolver.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "common/util/log.h"

namespace sidetrace::rules {
namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

IpKey IpKey::From(const event::SocketAddress& a) {
  IpKey k;
  k.bytes[0] = static_cast<uint8_t>(a.family);
  size_t n = a.family == AF_INET ? 4 : 16;
  std::memcpy(k.bytes.data() + 1, a.ip.data(), n);
  return k;
}

size_t IpKeyHash::operator()(const IpKey& k) const {
  // FNV-1a over the 17 bytes.
  uint64_t h = 1469598103934665603ull;
  for (uint8_t b : k.bytes) h = (h ^ b) * 1099511628211ull;
  return static_cast<size_t>(h);
}

const std::vector<std::string>* ResolvedNames::Lookup(const event::SocketAddress& addr) const {
  if (map_.empty()) return nullptr;
  auto it = map_.find(IpKey::From(addr));
  return it == map_.end() ? nullptr : &it->second;
}

void ResolvedNames::Add(const event::SocketAddress& addr, const std::string& name) {
  auto& names = map_[IpKey::From(addr)];
  if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
}

struct Resolver::Shared {
  ResolveMode mode;
  std::vector<std::string> domains;
  std::string hosts_path;
  std::chrono::seconds refresh;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;                              // guarded by mu
  std::shared_ptr<const ResolvedNames> current;  // guarded by mu
};

Resolver::Resolver(ResolveMode mode, std::vector<std::string> domains, std::string hosts_path,
                   std::chrono::seconds refresh)
    : shared_(std::make_shared<Shared>()) {
  shared_->mode = mode;
  shared_->domains = std::move(domains);
  shared_->hosts_path = std::move(hosts_path);
  shared_->refresh = refresh;
  shared_->current = std::make_shared<ResolvedNames>();
  if (mode == ResolveMode::kOff || shared_->domains.empty()) return;
  if (mode == ResolveMode::kHosts) RefreshNow();
  std::thread([s = shared_] { Loop(s); }).detach();
}

Resolver::~Resolver() {
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->stop = true;
  }
  shared_->cv.notify_all();
}

std::shared_ptr<const ResolvedNames> Resolver::Snapshot() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->current;
}

void Resolver::RefreshNow() {
  auto table = ResolveAll(*shared_);
  std::lock_guard<std::mutex> lock(shared_->mu);
  shared_->current = std::move(table);
}

std::shared_ptr<ResolvedNames> Resolver::ResolveAll(Shared& s) {
  auto table = std::make_shared<ResolvedNames>();
  if (s.mode == ResolveMode::kHosts) {
    std::unordered_set<std::string> wanted;
    for (const auto& d : s.domains) wanted.insert(Lower(d));
    std::ifstream in(s.hosts_path);
    std::string line;
    // hosts(5): address, canonical name, aliases; '#' starts a comment.
    while (std::getline(in, line)) {
      line = line.substr(0, line.find('#'));
      std::istringstream words(line);
      std::string ip, name;
      if (!(words >> ip)) continue;
      event::SocketAddress addr;
      if (inet_pton(AF_INET, ip.c_str(), addr.ip.data()) == 1) {
        addr.family = AF_INET;
      } else if (inet_pton(AF_INET6, ip.c_str(), addr.ip.data()) == 1) {
        addr.family = AF_INET6;
      } else {
        continue;
      }
      while (words >> name) {
        if (wanted.count(Lower(name))) table->Add(addr, Lower(name));
      }
    }
    return table;
  }
  for (const auto& d : s.domains) {
    {
      std::lock_guard<std::mutex> lock(s.mu);
      if (s.stop) break;
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(d.c_str(), nullptr, &hints, &res) != 0) continue;
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      event::SocketAddress addr;
      if (ai->ai_family == AF_INET) {
        addr.family = AF_INET;
        std::memcpy(addr.ip.data(), &reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, 4);
      } else if (ai->ai_family == AF_INET6) {
        addr.family = AF_INET6;
        std::memcpy(addr.ip.data(), &reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr, 16);
      } else {
        continue;
      }
      table->Add(addr, Lower(d));
    }
    freeaddrinfo(res);
  }
  return table;
}

void Resolver::Loop(const std::shared_ptr<Shared>& s) {
  bool first = s->mode == ResolveMode::kDns;  // kHosts already ran once
  while (true) {
    if (!first) {
      std::unique_lock<std::mutex> lock(s->mu);
      if (s->cv.wait_for(lock, s->refresh, [&] { return s->stop; })) return;
    }
    first = false;
    auto table = ResolveAll(*s);
    std::lock_guard<std::mutex> lock(s->mu);
    if (s->stop) return;
    log::Debug("resolved rule domains", "addresses={}", table->size());
    s->current = std::move(table);
  }
}

}  // namespace sidetrace::rules
