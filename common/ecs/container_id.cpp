#include "common/ecs/container_id.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

namespace sidetrace::ecs {
namespace {

constexpr size_t kMaxProcFileBytes = 512 * 1024;

bool IsHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool IsDigits(std::string_view s) {
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Fargate's DockerId: the 32-hex task id, a dash, 10 digits.
bool IsFargateId(std::string_view s) {
  return s.size() == 43 && s[32] == '-' && IsHex(s.substr(0, 32)) && IsDigits(s.substr(33));
}

// One cgroup path element to a container id, or "".
std::string IdFromElement(std::string_view element) {
  static constexpr std::string_view kPrefixes[] = {"docker-", "cri-containerd-", "crio-",
                                                   "libpod-", "containerd-"};
  constexpr std::string_view kScope = ".scope";
  if (element.size() > kScope.size() && element.substr(element.size() - kScope.size()) == kScope) {
    element.remove_suffix(kScope.size());
  }
  for (std::string_view prefix : kPrefixes) {
    if (element.substr(0, prefix.size()) == prefix) {
      element.remove_prefix(prefix.size());
      break;
    }
  }
  if (element.size() == 64 && IsHex(element)) return std::string(element);
  if (IsFargateId(element)) return std::string(element);
  return {};
}

std::vector<std::string_view> Split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(sep, start);
    if (end == std::string_view::npos) end = text.size();
    parts.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

std::string ReadSmallFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::string data(kMaxProcFileBytes, '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  data.resize(static_cast<size_t>(in.gcount()));
  return data;
}

}  // namespace

std::string ContainerIdFromCgroup(std::string_view cgroup_text) {
  for (std::string_view line : Split(cgroup_text, '\n')) {
    // "hierarchy-ID:controller-list:cgroup-path" (cgroups(7)); the path may
    // itself hold ':' on some systemd setups, so split on the first two only.
    size_t first = line.find(':');
    if (first == std::string_view::npos) continue;
    size_t second = line.find(':', first + 1);
    if (second == std::string_view::npos) continue;
    std::vector<std::string_view> elements = Split(line.substr(second + 1), '/');
    for (auto it = elements.rbegin(); it != elements.rend(); ++it) {
      std::string id = IdFromElement(*it);
      if (!id.empty()) return id;
    }
  }
  return {};
}

std::string ContainerIdFromMountinfo(std::string_view mountinfo_text) {
  static constexpr std::string_view kMarkers[] = {"/containers/", "/overlay-containers/"};
  for (std::string_view line : Split(mountinfo_text, '\n')) {
    // Field 4 is the root of the mount within its filesystem (proc(5)).
    std::vector<std::string_view> fields = Split(line, ' ');
    if (fields.size() < 5) continue;
    std::string_view root = fields[3];
    for (std::string_view marker : kMarkers) {
      size_t pos = root.find(marker);
      if (pos == std::string_view::npos) continue;
      std::string_view rest = root.substr(pos + marker.size());
      std::string_view candidate = rest.substr(0, rest.find('/'));
      if (candidate.size() == 64 && IsHex(candidate)) return std::string(candidate);
    }
  }
  return {};
}

event::ContainerInfo ContainerInfoFromTexts(std::string_view cgroup_text,
                                            std::string_view mountinfo_text,
                                            std::string_view hostname) {
  event::ContainerInfo info;
  std::string id = ContainerIdFromCgroup(cgroup_text);
  if (id.empty()) id = ContainerIdFromMountinfo(mountinfo_text);
  SetContainerId(info, std::move(id));
  info.name = std::string(hostname);
  return info;
}

void SetContainerId(event::ContainerInfo& info, std::string full_id) {
  constexpr std::string_view kFullIdKey = "container.full_id";
  std::erase_if(info.extra, [&](const auto& kv) { return kv.first == kFullIdKey; });
  if (full_id.empty()) {
    info.id.clear();
    return;
  }
  info.id = full_id.size() == 64 && IsHex(full_id) ? full_id.substr(0, 12) : full_id;
  info.extra.emplace_back(std::string(kFullIdKey), std::move(full_id));
}

event::ContainerInfo ContainerInfoFromEnvironment() {
  const char* hostname = std::getenv("HOSTNAME");
  return ContainerInfoFromTexts(ReadSmallFile("/proc/self/cgroup"),
                                ReadSmallFile("/proc/self/mountinfo"),
                                hostname != nullptr ? hostname : "");
}

}  // namespace sidetrace::ecs
