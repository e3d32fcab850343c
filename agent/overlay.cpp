#include "agent/overlay.h"

#include <sys/stat.h>
#include <sys/vfs.h>

#include <string_view>
#include <vector>

#include "agent/procfs.h"

namespace sidetrace::agent {
namespace {

constexpr long kOverlayMagic = 0x794c7630;  // OVERLAYFS_SUPER_MAGIC, linux/magic.h

// mountinfo escapes space, tab, newline and backslash as \ooo (show_path).
std::string Unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string_view::npos) end = s.size();
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Whether `path` is `dir` or below it.
bool Under(std::string_view path, std::string_view dir) {
  if (dir == "/") return true;
  return path.substr(0, dir.size()) == dir && (path.size() == dir.size() || path[dir.size()] == '/');
}

}  // namespace

bool ParseMountInfoLine(std::string_view line, MountEntry* out) {
  // id parent major:minor root mount_point options [optional...] - fstype source super_options
  std::vector<std::string_view> f = Split(line, ' ');
  size_t sep = 0;
  for (size_t i = 6; i < f.size(); ++i) {
    if (f[i] == "-") {
      sep = i;
      break;
    }
  }
  if (sep == 0 || sep + 3 >= f.size()) return false;
  *out = MountEntry();
  out->root = Unescape(f[3]);
  out->mount_point = Unescape(f[4]);
  out->fstype = Unescape(f[sep + 1]);
  if (out->fstype == "overlay") {
    // Option values escape ',' as "\," (ovl_show_options via seq_show_option).
    std::string_view opts = f[sep + 3];
    size_t pos = opts.find("upperdir=");
    while (pos != std::string_view::npos && pos != 0 && opts[pos - 1] != ',') pos = opts.find("upperdir=", pos + 1);
    if (pos != std::string_view::npos) {
      std::string raw;
      for (size_t i = pos + 9; i < opts.size(); ++i) {
        if (opts[i] == '\\' && i + 1 < opts.size() && opts[i + 1] == ',') {
          raw += ',';
          ++i;
        } else if (opts[i] == ',') {
          break;
        } else {
          raw += opts[i];
        }
      }
      out->upperdir = Unescape(raw);
    }
  }
  return true;
}

bool ExeOnUpperLayer(pid_t pid, const std::string& exepath) {
  struct statfs sfs{};
  const std::string exe = "/proc/" + std::to_string(pid) + "/exe";
  return statfs(exe.c_str(), &sfs) == 0 && sfs.f_type == kOverlayMagic && OverlayPathOnUpperLayer(pid, exepath);
}

bool FileOnUpperLayer(pid_t pid, int fd, const std::string& path) {
  struct statfs sfs{};
  return fstatfs(fd, &sfs) == 0 && sfs.f_type == kOverlayMagic && OverlayPathOnUpperLayer(pid, path);
}

bool OverlayPathOnUpperLayer(pid_t pid, const std::string& exepath) {
  if (exepath.empty() || exepath[0] != '/') return false;
  const std::string proc = "/proc/" + std::to_string(pid);
  std::string text;
  if (!ReadSmallFile(proc + "/mountinfo", 1 << 20, &text)) return false;
  // The deepest mount point holding the path; among mounts stacked on the
  // same point, the last listed is on top.
  MountEntry best;
  bool found = false;
  for (std::string_view line : Split(text, '\n')) {
    MountEntry e;
    if (!ParseMountInfoLine(line, &e) || !Under(exepath, e.mount_point)) continue;
    if (found && e.mount_point.size() < best.mount_point.size()) continue;
    best = std::move(e);
    found = true;
  }
  if (!found || best.fstype != "overlay" || best.upperdir.empty()) return false;
  std::string rel = exepath.substr(best.mount_point == "/" ? 0 : best.mount_point.size());
  std::string upper = best.upperdir + (best.root == "/" ? "" : best.root) + rel;
  struct stat st{};
  return lstat(upper.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace sidetrace::agent
