#include "common/event/event.h"

#include <arpa/inet.h>
#include <sys/socket.h>

namespace sidetrace::event {
namespace {

constexpr std::array<std::string_view, kEventTypeCount> kNames = {
    "execve", "execveat", "clone", "clone3", "fork", "vfork", "procexit",
    "open", "openat", "openat2", "creat",
    "connect", "accept", "accept4", "bind", "listen", "socket", "sendto", "sendmsg",
    "dup", "dup2", "dup3", "fcntl", "close",
    "chdir", "fchdir",
    "symlink", "symlinkat", "link", "linkat", "unlink", "unlinkat",
    "rename", "renameat", "renameat2", "mkdir", "mkdirat",
    "chmod", "fchmod", "fchmodat",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "capset",
    "ptrace", "memfd_create", "init_module", "finit_module", "mount", "io_uring_setup",
};

}  // namespace

std::string_view EventTypeName(EventType type) {
  auto i = static_cast<size_t>(type);
  return i < kNames.size() ? kNames[i] : std::string_view("<NA>");
}

std::optional<EventType> EventTypeFromName(std::string_view name) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == name) return static_cast<EventType>(i);
  }
  return std::nullopt;
}

std::string SocketAddress::IpString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == AF_INET) return inet_ntop(AF_INET, ip.data(), buf, sizeof buf) ? buf : "";
  if (family == AF_INET6) return inet_ntop(AF_INET6, ip.data(), buf, sizeof buf) ? buf : "";
  if (family == AF_UNIX) return unix_path;
  return "";
}

void FdInfo::Clear() {
  num = -1;
  typechar = 'o';
  name.clear();
  l4proto = 0;
  local = SocketAddress();
  remote = SocketAddress();
  local_is_server = false;
  connected = false;
  open_flags = 0;
}

void Event::Clear() {
  type = EventType::kCount;
  num = 0;
  time_ns = 0;
  res = 0;
  tid = 0;
  proc = nullptr;
  container = nullptr;
  fd.Clear();
  proc_cwd_unknown = false;
  args_used_ = 0;
}

void Event::SetArg(std::string_view name, std::string_view value) {
  for (size_t i = 0; i < args_used_; ++i) {
    if (args_[i].first == name) {
      args_[i].second.assign(value);
      return;
    }
  }
  if (args_used_ == args_.size()) args_.emplace_back();
  auto& slot = args_[args_used_++];
  slot.first.assign(name);
  slot.second.assign(value);
}

const std::string* Event::Arg(std::string_view name) const {
  for (size_t i = 0; i < args_used_; ++i) {
    if (args_[i].first == name) return &args_[i].second;
  }
  return nullptr;
}

}  // namespace sidetrace::event
