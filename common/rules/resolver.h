// Name resolution behind fd.sip.name (and fd.cip.name, fd.rip.name).
//
// Like Falco, we never reverse-resolve an address on the event path. The
// domain names that rules compare fd.*.name against are collected when the
// rules are compiled; a Resolver resolves them ahead of time and publishes an
// immutable address -> names table (ResolvedNames). An event then only looks
// its address up in the current table.
//
// Modes (ResolveMode): kDns uses getaddrinfo(), so /etc/hosts and the
// system resolver both count, on a background thread refreshed every
// `refresh` (a slow or unreachable resolver never blocks loading or
// evaluation); kHosts parses a hosts file ourselves, synchronously at start
// and again on every refresh; kOff resolves nothing (fd.*.name is <NA>).
//
// Thread-safety: Snapshot() may be called from any thread; the background
// thread swaps the table under a mutex. The destructor stops and joins it.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/event/event.h"

namespace sidetrace::rules {

enum class ResolveMode { kDns, kHosts, kOff };

struct IpKey {
  std::array<uint8_t, 17> bytes{};  // family tag + 16 address bytes
  bool operator==(const IpKey& o) const { return bytes == o.bytes; }
  static IpKey From(const event::SocketAddress& a);
};
struct IpKeyHash {
  size_t operator()(const IpKey& k) const;
};

// One immutable address -> domain names table.
class ResolvedNames {
 public:
  // Names that resolved to `addr`, in the order the rules listed them, or
  // null when none did.
  const std::vector<std::string>* Lookup(const event::SocketAddress& addr) const;
  void Add(const event::SocketAddress& addr, const std::string& name);
  size_t size() const { return map_.size(); }

 private:
  std::unordered_map<IpKey, std::vector<std::string>, IpKeyHash> map_;
};

class Resolver {
 public:
  // Starts resolving `domains` according to `mode`. kHosts finishes before
  // the constructor returns; kDns runs on a background thread.
  Resolver(ResolveMode mode, std::vector<std::string> domains, std::string hosts_path,
           std::chrono::seconds refresh);
  // Never waits for the background thread: a getaddrinfo() stuck on an
  // unreachable resolver must not hold up the agent's exit or a policy
  // swap. The thread owns what it uses and ends after its current lookup.
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  std::shared_ptr<const ResolvedNames> Snapshot() const;
  // Resolves again now, on the calling thread.
  void RefreshNow();

 private:
  struct Shared;  // configuration and table, shared with the background thread
  static std::shared_ptr<ResolvedNames> ResolveAll(Shared& s);
  static void Loop(const std::shared_ptr<Shared>& s);

  std::shared_ptr<Shared> shared_;
};

}  // namespace sidetrace::rules
