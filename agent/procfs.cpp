#include "agent/procfs.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>

namespace sidetrace::agent {
namespace {

constexpr size_t kPage = 4096;

bool ParseUint(std::string_view s, uint32_t* v) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc();
}

// Splits "a\tb\tc" into up to four numbers.
int ParseIds(std::string_view s, uint32_t ids[4]) {
  int n = 0;
  while (n < 4) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    if (s.empty()) break;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), ids[n]);
    if (ec != std::errc()) break;
    ++n;
    s.remove_prefix(static_cast<size_t>(p - s.data()));
  }
  return n;
}

}  // namespace

int ReadTraceeMemory(pid_t pid, uint64_t addr, void* buf, size_t len) {
  iovec local{buf, len};
  iovec remote{reinterpret_cast<void*>(addr), len};
  ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  if (n < 0) return -errno;
  return static_cast<size_t>(n) == len ? 0 : -EFAULT;
}

int WriteTraceeMemory(pid_t pid, uint64_t addr, const void* buf, size_t len) {
  iovec local{const_cast<void*>(buf), len};
  iovec remote{reinterpret_cast<void*>(addr), len};
  ssize_t n = process_vm_writev(pid, &local, 1, &remote, 1, 0);
  if (n < 0) return -errno;
  return static_cast<size_t>(n) == len ? 0 : -EFAULT;
}

int ReadTraceeString(pid_t pid, uint64_t addr, size_t max, std::string* out) {
  out->clear();
  if (addr == 0) return -EFAULT;
  char buf[kPage];
  while (out->size() < max) {
    size_t chunk = kPage - (addr % kPage);
    if (chunk > max - out->size()) chunk = max - out->size();
    iovec local{buf, chunk};
    iovec remote{reinterpret_cast<void*>(addr), chunk};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n <= 0) return n < 0 ? -errno : -EFAULT;
    const char* nul = static_cast<const char*>(memchr(buf, '\0', static_cast<size_t>(n)));
    if (nul) {
      out->append(buf, static_cast<size_t>(nul - buf));
      return 0;
    }
    out->append(buf, static_cast<size_t>(n));
    addr += static_cast<uint64_t>(n);
  }
  return -ENAMETOOLONG;
}

bool ReadSmallFile(const std::string& path, size_t max, std::string* out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  // Read through a stack buffer: most files here are a few hundred bytes,
  // and sizing `out` to `max` first would clear up to 1 MiB per call. A
  // short read is not the end of a seq_file, so read until 0.
  out->clear();
  char buf[4096];
  while (out->size() < max) {
    ssize_t n = read(fd, buf, std::min(sizeof buf, max - out->size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return true;
}

bool Readlink(const std::string& path, std::string* out) {
  char buf[PATH_MAX];
  ssize_t n = readlink(path.c_str(), buf, sizeof buf);
  if (n < 0) return false;
  out->assign(buf, static_cast<size_t>(n));
  return true;
}

bool ReadCmdline(pid_t pid, std::vector<std::string>* argv) {
  std::string raw;
  if (!ReadSmallFile("/proc/" + std::to_string(pid) + "/cmdline", 64 * 1024, &raw)) return false;
  argv->clear();
  size_t start = 0;
  while (start < raw.size()) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    argv->emplace_back(raw, start, end - start);
    start = end + 1;
  }
  return true;
}

bool ReadProcStat(pid_t pid, ProcStat* out) {
  std::string text;
  if (!ReadSmallFile("/proc/" + std::to_string(pid) + "/stat", 4096, &text)) return false;
  // comm (field 2) may hold spaces and parentheses: fields resume after the
  // last ')'. Then: state ppid pgrp session tty_nr.
  size_t pos = text.rfind(')');
  if (pos == std::string::npos) return false;
  std::string_view rest(text);
  rest.remove_prefix(pos + 1);
  for (int field = 3; field <= 7; ++field) {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    size_t end = rest.find(' ');
    std::string_view value = rest.substr(0, end);
    if (field >= 4) {
      long v = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || p != value.data() + value.size()) return false;
      if (field == 4) out->ppid = static_cast<pid_t>(v);
      if (field == 6) out->sid = static_cast<pid_t>(v);
      if (field == 7) {
        out->tty = static_cast<int32_t>(v);
        return true;
      }
    }
    if (end == std::string_view::npos) return false;
    rest.remove_prefix(end);
  }
  return false;
}

namespace {

// include/uapi/linux/pidfd.h (Linux 6.13); Debian 12's headers predate it.
struct KernelPidfdInfo {
  uint64_t mask;
  uint64_t cgroupid;
  uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
  uint32_t spare0[1];
};
static_assert(sizeof(KernelPidfdInfo) == 64, "PIDFD_INFO_SIZE_VER0");
constexpr uint64_t kPidfdInfoPid = 1u << 0, kPidfdInfoCreds = 1u << 1;
constexpr unsigned long kPidfdGetInfo = _IOWR(0xFF, 11, KernelPidfdInfo);

}  // namespace

bool ReadPidfdInfo(int pidfd, PidfdInfo* out) {
  KernelPidfdInfo k{};
  k.mask = kPidfdInfoPid | kPidfdInfoCreds;
  if (ioctl(pidfd, kPidfdGetInfo, &k) != 0 || (k.mask & (kPidfdInfoPid | kPidfdInfoCreds)) !=
                                                   (kPidfdInfoPid | kPidfdInfoCreds)) {
    return false;
  }
  out->tgid = static_cast<pid_t>(k.tgid);
  out->ppid = static_cast<pid_t>(k.ppid);
  out->uid = k.ruid, out->euid = k.euid, out->fsuid = k.fsuid;
  out->gid = k.rgid, out->egid = k.egid, out->fsgid = k.fsgid;
  return true;
}

bool ReadCapEffective(pid_t tid, uint64_t* out) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, tid};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  *out = uint64_t{data[1].effective} << 32 | data[0].effective;
  return true;
}

FileId ExeFileId(pid_t pid) {
  struct stat st{};
  if (stat(("/proc/" + std::to_string(pid) + "/exe").c_str(), &st) != 0) return {};
  return {st.st_dev, st.st_ino};
}

bool ReadProcStatus(pid_t tid, ProcStatus* st) {
  std::string text;
  if (!ReadSmallFile("/proc/" + std::to_string(tid) + "/status", 8192, &text) || text.empty()) return false;
  std::string_view rest(text);
  while (!rest.empty()) {
    size_t eol = rest.find('\n');
    std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view key = line.substr(0, colon), val = line.substr(colon + 1);
    uint32_t ids[4] = {};
    if (key == "Tgid") {
      uint32_t v = 0;
      ParseUint(val, &v);
      st->tgid = static_cast<pid_t>(v);
    } else if (key == "PPid") {
      uint32_t v = 0;
      ParseUint(val, &v);
      st->ppid = static_cast<pid_t>(v);
    } else if (key == "Uid" && ParseIds(val, ids) == 4) {
      st->uid = ids[0], st->euid = ids[1], st->fsuid = ids[3];
    } else if (key == "Gid" && ParseIds(val, ids) == 4) {
      st->gid = ids[0], st->egid = ids[1], st->fsgid = ids[3];
    } else if (key == "Groups") {
      st->groups.clear();
      std::string_view g = val;
      while (true) {
        while (!g.empty() && (g.front() == ' ' || g.front() == '\t')) g.remove_prefix(1);
        if (g.empty()) break;
        uint32_t v = 0;
        auto [p, ec] = std::from_chars(g.data(), g.data() + g.size(), v);
        if (ec != std::errc()) break;
        st->groups.push_back(v);
        g.remove_prefix(static_cast<size_t>(p - g.data()));
      }
    } else if (key == "CapEff") {
      std::string_view v = val;
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      std::from_chars(v.data(), v.data() + v.size(), st->cap_eff, 16);
    } else if (key == "Umask") {
      std::string_view v = val;
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      std::from_chars(v.data(), v.data() + v.size(), st->umask, 8);
      st->has_umask = true;
    }
  }
  return st->tgid != 0;
}

std::string NormalizePath(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i, j - i);
    if (part.empty() || part == ".") {
    } else if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else {
      parts.push_back(part);
    }
    i = j;
  }
  std::string out;
  for (auto p : parts) {
    out += '/';
    out += p;
  }
  return out.empty() ? "/" : out;
}

std::string JoinPath(std::string_view base, std::string_view path) {
  if (!path.empty() && path[0] == '/') return NormalizePath(path);
  std::string joined(base);
  joined += '/';
  joined += path;
  return NormalizePath(joined);
}

}  // namespace sidetrace::agent
