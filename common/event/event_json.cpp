#include "common/event/event_json.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace sidetrace::event {
namespace {

// Appends a JSON string literal, escaped.
void AppendString(std::string_view s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (c < 0x20) {
          fmt::format_to(std::back_inserter(*out), "\\u{:04x}", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

// Non-UTF-8 bytes are valid in paths but not in JSON; nlohmann rejects them
// on dump, so every string goes through AppendString, which passes bytes on
// and leaves validation to readers that care (EventFromJson reads with
// replacement of invalid sequences disabled: it rejects them).
class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) { out_->push_back('{'); }
  ~Writer() { out_->push_back('}'); }

  void Key(std::string_view key) {
    if (!first_) out_->push_back(',');
    first_ = false;
    AppendString(key, out_);
    out_->push_back(':');
  }
  void Str(std::string_view key, std::string_view v) { Key(key); AppendString(v, out_); }
  void Int(std::string_view key, int64_t v) { Key(key); fmt::format_to(std::back_inserter(*out_), "{}", v); }
  void Uint(std::string_view key, uint64_t v) { Key(key); fmt::format_to(std::back_inserter(*out_), "{}", v); }
  void Bool(std::string_view key, bool v) { Key(key); out_->append(v ? "true" : "false"); }
  void StrArray(std::string_view key, const std::vector<std::string>& v) {
    Key(key);
    out_->push_back('[');
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) out_->push_back(',');
      AppendString(v[i], out_);
    }
    out_->push_back(']');
  }
  std::string* out() { return out_; }

 private:
  std::string* out_;
  bool first_ = true;
};

std::string Cmdline(const ProcessInfo& p) {
  std::string s = p.name;
  for (const auto& a : p.args) {
    s += ' ';
    s += a;
  }
  return s;
}

void WriteProcessBrief(const ProcessInfo& p, std::string* out) {
  Writer w(out);
  w.Int("pid", p.pid);
  w.Int("ppid", p.ppid);
  w.Str("name", p.name);
  w.Str("exe", p.exe);
  w.Str("exepath", p.exepath);
  w.StrArray("args", p.args);
  w.Str("cwd", p.cwd);
  w.Uint("uid", p.uid);
}

const char* L4Name(uint8_t proto) {
  switch (proto) {
    case IPPROTO_TCP: return "tcp";
    case IPPROTO_UDP: return "udp";
    case IPPROTO_ICMP: return "icmp";
    default: return "";
  }
}

bool ParseAddress(const std::string& text, SocketAddress* addr) {
  if (inet_pton(AF_INET, text.c_str(), addr->ip.data()) == 1) {
    addr->family = AF_INET;
    return true;
  }
  if (inet_pton(AF_INET6, text.c_str(), addr->ip.data()) == 1) {
    addr->family = AF_INET6;
    return true;
  }
  return false;
}

// Typed getters that report the key at fault.
class Reader {
 public:
  explicit Reader(const nlohmann::json& o) : o_(o) {}

  template <typename T>
  bool Get(const char* key, T* out) {
    auto it = o_.find(key);
    if (it == o_.end() || it->is_null()) return true;
    if constexpr (std::is_same_v<T, std::string>) {
      if (!it->is_string()) return Fail(key, "expected a string");
      *out = it->template get<std::string>();
    } else if constexpr (std::is_same_v<T, bool>) {
      if (!it->is_boolean()) return Fail(key, "expected true or false");
      *out = it->template get<bool>();
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      if (!it->is_array()) return Fail(key, "expected an array of strings");
      out->clear();
      for (const auto& v : *it) {
        if (!v.is_string()) return Fail(key, "expected an array of strings");
        out->push_back(v.template get<std::string>());
      }
    } else {
      if (!it->is_number_integer()) return Fail(key, "expected an integer");
      if constexpr (std::is_unsigned_v<T>) {
        if (it->is_number_unsigned() || it->template get<int64_t>() >= 0) {
          *out = static_cast<T>(it->template get<uint64_t>());
        } else {
          *out = static_cast<T>(it->template get<int64_t>());
        }
      } else {
        *out = static_cast<T>(it->template get<int64_t>());
      }
    }
    return true;
  }
  bool Fail(std::string_view key, std::string_view why) {
    if (error_.empty()) error_ = fmt::format("{}: {}", key, why);
    return false;
  }
  const std::string& error() const { return error_; }

 private:
  const nlohmann::json& o_;
  std::string error_;
};

}  // namespace

void AppendEventJson(const Event& e, std::string* out) {
  Writer w(out);
  w.Uint("evt.num", e.num);
  w.Str("evt.type", EventTypeName(e.type));
  w.Uint("evt.time", e.time_ns);
  w.Int("evt.res", e.res);
  w.Int("thread.tid", e.tid);
  if (const ProcessInfo* p = e.proc) {
    w.Int("proc.pid", p->pid);
    w.Int("proc.ppid", p->ppid);
    w.Int("proc.vpid", p->vpid);
    w.Int("proc.sid", p->sid);
    w.Int("proc.tty", p->tty);
    w.Str("proc.name", p->name);
    w.Str("proc.exe", p->exe);
    w.Str("proc.exepath", p->exepath);
    w.StrArray("proc.args", p->args);
    w.Str("proc.cmdline", Cmdline(*p));
    w.Str("proc.cwd", p->cwd);
    w.Uint("proc.start", p->start_ns);
    w.Bool("proc.is_exe_from_memfd", p->exe_from_memfd);
    w.Bool("proc.is_exe_upper_layer", p->exe_upper_layer);
    w.Uint("user.uid", p->uid);
    w.Str("user.name", p->user_name);
    w.Int("user.loginuid", p->loginuid == UINT32_MAX ? -1 : static_cast<int64_t>(p->loginuid));
    w.Uint("group.gid", p->gid);
    w.Str("group.name", p->group_name);
    w.Uint("thread.cap_effective", p->cap_effective);
    if (p->parent) w.Str("proc.pname", p->parent->name);
    w.Key("proc.ancestors");
    out->push_back('[');
    int depth = 0;
    for (const ProcessInfo* a = p->parent.get(); a && depth < kMaxAncestorsInJson; a = a->parent.get(), ++depth) {
      if (depth) out->push_back(',');
      WriteProcessBrief(*a, out);
    }
    out->push_back(']');
  }
  if (e.fd.num >= 0 || !e.fd.name.empty()) {
    w.Int("fd.num", e.fd.num);
    w.Str("fd.typechar", std::string_view(&e.fd.typechar, 1));
    w.Str("fd.name", e.fd.name);
    if (e.fd.open_flags || e.fd.typechar == 'f' || e.fd.typechar == 'd') {
      w.Uint("fd.open_flags", e.fd.open_flags);
    }
    if (e.type == EventType::kOpen || e.type == EventType::kOpenat || e.type == EventType::kOpenat2 ||
        e.type == EventType::kCreat) {
      // Falco's evt.is_open_read / evt.is_open_write, from the open flags.
      uint32_t acc = e.fd.open_flags & O_ACCMODE;
      w.Bool("evt.is_open_read", acc == O_RDONLY || acc == O_RDWR);
      w.Bool("evt.is_open_write", acc == O_WRONLY || acc == O_RDWR);
    }
    if (e.fd.l4proto) w.Str("fd.l4proto", L4Name(e.fd.l4proto));
    if (!e.fd.local.empty()) {
      w.Str("fd.lip", e.fd.local.IpString());
      w.Uint("fd.lport", e.fd.local.port);
    }
    if (!e.fd.remote.empty()) {
      w.Str("fd.rip", e.fd.remote.IpString());
      w.Uint("fd.rport", e.fd.remote.port);
    }
    if (!e.fd.local.empty() || !e.fd.remote.empty()) {
      w.Bool("fd.is_server", e.fd.local_is_server);
      w.Bool("fd.connected", e.fd.connected);
    }
  }
  for (size_t i = 0; i < e.arg_count(); ++i) {
    const auto& [name, value] = e.ArgAt(i);
    w.Str("evt.arg." + name, value);
  }
  if (const ContainerInfo* c = e.container) {
    w.Str("container.id", c->id);
    w.Str("container.name", c->name);
    w.Str("container.image", c->image);
    w.Str("container.image.repository", c->image_repository);
    w.Str("container.image.tag", c->image_tag);
    w.Bool("container.privileged", c->privileged);
    for (const auto& [k, v] : c->extra) w.Str(k, v);
  }
}

Result<ReplayedEvent> EventFromJson(const nlohmann::json& o) {
  if (!o.is_object()) return Status::InvalidArgument("event: expected a JSON object");
  ReplayedEvent r;
  Event& e = r.event;
  Reader rd(o);
  std::string type;
  if (!rd.Get("evt.type", &type)) return Status::InvalidArgument(rd.error());
  auto t = EventTypeFromName(type);
  if (!t) return Status::InvalidArgument(fmt::format("evt.type: unknown event type '{}'", type));
  e.type = *t;
  bool ok = rd.Get("evt.num", &e.num) && rd.Get("evt.time", &e.time_ns) && rd.Get("evt.res", &e.res) &&
            rd.Get("thread.tid", &e.tid);
  if (!ok) return Status::InvalidArgument(rd.error());

  if (o.contains("proc.pid")) {
    auto p = std::make_shared<ProcessInfo>();
    int64_t loginuid = -1;
    ok = rd.Get("proc.pid", &p->pid) && rd.Get("proc.ppid", &p->ppid) && rd.Get("proc.vpid", &p->vpid) &&
         rd.Get("proc.sid", &p->sid) && rd.Get("proc.tty", &p->tty) && rd.Get("proc.name", &p->name) &&
         rd.Get("proc.exe", &p->exe) && rd.Get("proc.exepath", &p->exepath) && rd.Get("proc.args", &p->args) &&
         rd.Get("proc.cwd", &p->cwd) && rd.Get("proc.start", &p->start_ns) &&
         rd.Get("proc.is_exe_from_memfd", &p->exe_from_memfd) &&
         rd.Get("proc.is_exe_upper_layer", &p->exe_upper_layer) && rd.Get("user.uid", &p->uid) &&
         rd.Get("user.name", &p->user_name) && rd.Get("user.loginuid", &loginuid) && rd.Get("group.gid", &p->gid) &&
         rd.Get("group.name", &p->group_name) && rd.Get("thread.cap_effective", &p->cap_effective);
    if (!ok) return Status::InvalidArgument(rd.error());
    p->loginuid = loginuid < 0 ? UINT32_MAX : static_cast<uint32_t>(loginuid);
    // Rebuild the ancestor chain from the innermost (oldest) outwards.
    auto it = o.find("proc.ancestors");
    if (it != o.end()) {
      if (!it->is_array()) return Status::InvalidArgument("proc.ancestors: expected an array");
      std::shared_ptr<ProcessInfo> child = p;
      for (const auto& a : *it) {
        auto anc = std::make_shared<ProcessInfo>();
        Reader ar(a);
        if (!a.is_object() || !(ar.Get("pid", &anc->pid) && ar.Get("ppid", &anc->ppid) && ar.Get("name", &anc->name) &&
                                ar.Get("exe", &anc->exe) && ar.Get("exepath", &anc->exepath) &&
                                ar.Get("args", &anc->args) && ar.Get("cwd", &anc->cwd) && ar.Get("uid", &anc->uid))) {
          return Status::InvalidArgument(fmt::format("proc.ancestors: {}", a.is_object() ? ar.error() : "expected objects"));
        }
        child->parent = anc;
        child = anc;
      }
    }
    r.process = p;
    e.proc = p.get();
  }

  if (o.contains("fd.num") || o.contains("fd.name")) {
    std::string typechar, l4, lip, rip;
    ok = rd.Get("fd.num", &e.fd.num) && rd.Get("fd.typechar", &typechar) && rd.Get("fd.name", &e.fd.name) &&
         rd.Get("fd.open_flags", &e.fd.open_flags) && rd.Get("fd.l4proto", &l4) && rd.Get("fd.lip", &lip) &&
         rd.Get("fd.lport", &e.fd.local.port) && rd.Get("fd.rip", &rip) && rd.Get("fd.rport", &e.fd.remote.port) &&
         rd.Get("fd.is_server", &e.fd.local_is_server) && rd.Get("fd.connected", &e.fd.connected);
    if (!ok) return Status::InvalidArgument(rd.error());
    if (typechar.size() > 1) return Status::InvalidArgument("fd.typechar: expected one character");
    if (!typechar.empty()) e.fd.typechar = typechar[0];
    if (l4 == "tcp") e.fd.l4proto = IPPROTO_TCP;
    else if (l4 == "udp") e.fd.l4proto = IPPROTO_UDP;
    else if (l4 == "icmp") e.fd.l4proto = IPPROTO_ICMP;
    else if (!l4.empty()) return Status::InvalidArgument(fmt::format("fd.l4proto: unknown protocol '{}'", l4));
    // Unix sockets carry their path where IP sockets carry the address (the
    // writer prints SocketAddress::IpString(), which is the path for them).
    if (e.fd.typechar == 'u') {
      if (!lip.empty()) e.fd.local = SocketAddress{AF_UNIX, {}, 0, lip};
      if (!rip.empty()) e.fd.remote = SocketAddress{AF_UNIX, {}, 0, rip};
    } else {
      if (!lip.empty() && !ParseAddress(lip, &e.fd.local)) {
        return Status::InvalidArgument(fmt::format("fd.lip: not an IP address '{}'", lip));
      }
      if (!rip.empty() && !ParseAddress(rip, &e.fd.remote)) {
        return Status::InvalidArgument(fmt::format("fd.rip: not an IP address '{}'", rip));
      }
    }
  }

  for (auto it = o.begin(); it != o.end(); ++it) {
    std::string_view key = it.key();
    if (key.substr(0, 8) != "evt.arg.") continue;
    if (!it->is_string()) return Status::InvalidArgument(fmt::format("{}: expected a string", key));
    e.SetArg(key.substr(8), it->get_ref<const std::string&>());
  }

  if (o.contains("container.id")) {
    auto c = std::make_shared<ContainerInfo>();
    ok = rd.Get("container.id", &c->id) && rd.Get("container.name", &c->name) &&
         rd.Get("container.image", &c->image) && rd.Get("container.image.repository", &c->image_repository) &&
         rd.Get("container.image.tag", &c->image_tag) && rd.Get("container.privileged", &c->privileged);
    if (!ok) return Status::InvalidArgument(rd.error());
    for (auto it = o.begin(); it != o.end(); ++it) {
      if (it.key().rfind("aws.", 0) == 0 && it->is_string()) c->extra.emplace_back(it.key(), it->get<std::string>());
    }
    r.container = c;
    e.container = c.get();
  }
  return r;
}

}  // namespace sidetrace::event
