// Hand-built events for the rules tests: processes with parent chains, file
// opens, connects, execs, as the agent fills them.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <memory>
#include <string>
#include <vector>

#include "common/event/event.h"
#include "common/rules/rules.h"

namespace sidetrace::rules::testing {

using event::ContainerInfo;
using event::Event;
using event::EventType;
using event::ProcessInfo;

inline std::shared_ptr<ProcessInfo> Proc(const std::string& name, std::vector<std::string> args = {},
                                         std::shared_ptr<ProcessInfo> parent = nullptr) {
  static int next_pid = 100;
  auto p = std::make_shared<ProcessInfo>();
  p->pid = p->vpid = next_pid++;
  p->ppid = parent ? parent->pid : 1;
  p->name = name;
  p->exe = name;
  p->exepath = "/usr/bin/" + name;
  p->args = std::move(args);
  p->cwd = "/app/";
  p->user_name = "root";
  p->group_name = "root";
  p->start_ns = 1764115200000000000ull;
  p->parent = std::move(parent);
  return p;
}

// An event that keeps what it points at alive.
struct TestEvent {
  std::shared_ptr<ProcessInfo> proc;
  std::shared_ptr<ContainerInfo> container;
  Event e;

  TestEvent(EventType type, std::shared_ptr<ProcessInfo> p) : proc(std::move(p)) {
    container = std::make_shared<ContainerInfo>();
    container->id = "3f2a1b4c5d6e";
    container->name = "playground";
    container->image = "example/playground:1.0";
    container->image_repository = "example/playground";
    container->image_tag = "1.0";
    e.type = type;
    e.num = 7;
    e.time_ns = 1764115200123456789ull;
    e.res = 0;
    e.tid = proc ? proc->pid : 0;
    e.proc = proc.get();
    e.container = container.get();
  }
  TestEvent(const TestEvent& o) : proc(o.proc), container(o.container), e(o.e) {
    e.proc = proc.get();
    e.container = container.get();
  }
};

inline std::string FlagsText(int flags) {
  std::string s;
  int acc = flags & O_ACCMODE;
  s = acc == O_RDONLY ? "O_RDONLY" : acc == O_WRONLY ? "O_WRONLY" : "O_RDWR";
  if (flags & O_CREAT) s += "|O_CREAT";
  if (flags & O_TRUNC) s += "|O_TRUNC";
  if (flags & O_APPEND) s += "|O_APPEND";
  return s;
}

inline TestEvent Open(std::shared_ptr<ProcessInfo> p, const std::string& path, int flags = O_RDONLY,
                      int64_t fd = 3) {
  TestEvent t(EventType::kOpenat, std::move(p));
  t.e.res = fd;
  t.e.fd.num = fd;
  t.e.fd.typechar = 'f';
  t.e.fd.name = path;
  t.e.fd.open_flags = static_cast<uint32_t>(flags);
  t.e.SetArg("name", path);
  t.e.SetArg("flags", FlagsText(flags));
  return t;
}

inline TestEvent Exec(std::shared_ptr<ProcessInfo> p) {
  TestEvent t(EventType::kExecve, std::move(p));
  t.e.SetArg("filename", t.proc->exepath);
  return t;
}

inline void SetIp(const std::string& ip, uint16_t port, event::SocketAddress* a) {
  if (inet_pton(AF_INET, ip.c_str(), a->ip.data()) == 1) {
    a->family = AF_INET;
  } else {
    inet_pton(AF_INET6, ip.c_str(), a->ip.data());
    a->family = AF_INET6;
  }
  a->port = port;
}

inline TestEvent Connect(std::shared_ptr<ProcessInfo> p, const std::string& ip, uint16_t port, int64_t res = 0,
                         EventType type = EventType::kConnect) {
  TestEvent t(type, std::move(p));
  t.e.res = res;
  t.e.fd.num = 4;
  t.e.fd.typechar = ip.find(':') == std::string::npos ? '4' : '6';
  t.e.fd.l4proto = IPPROTO_TCP;
  SetIp(t.e.fd.typechar == '4' ? "10.1.2.3" : "fd00::2", 40000, &t.e.fd.local);
  SetIp(ip, port, &t.e.fd.remote);
  t.e.fd.connected = res == 0;
  t.e.fd.name = t.e.fd.local.IpString() + ":40000->" + ip + ":" + std::to_string(port);
  t.e.SetArg("fd", "4");
  return t;
}

// Names of the rules that fire on e, in order.
inline std::vector<std::string> Fired(const Engine& engine, const Event& e) {
  std::vector<std::string> out;
  engine.Evaluate(e, [&](const Rule& r) { out.push_back(r.name); });
  return out;
}

}  // namespace sidetrace::rules::testing
