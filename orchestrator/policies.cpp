#include "orchestrator/policies.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace sidetrace::orchestrator {

namespace fs = std::filesystem;

namespace {

Result<link::Policy> LoadOne(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Status::IoError(fmt::format("{}: cannot read", file.string()));
  std::stringstream text;
  text << in.rdbuf();
  try {
    YAML::Node root = YAML::Load(text.str());
    if (!root.IsNull() && !root.IsSequence()) {
      return Status::InvalidArgument(fmt::format("{}: a rules file must be a YAML sequence", file.string()));
    }
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(
        fmt::format("{}:{}:{}: {}", file.string(), e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  return link::Policy{file.filename().string(), text.str()};
}

}  // namespace

Result<std::vector<link::Policy>> LoadPolicies(const std::string& path) {
  std::error_code ec;
  std::vector<fs::path> files;
  if (fs::is_directory(path, ec)) {
    for (const auto& entry : fs::directory_iterator(path, ec)) {
      auto ext = entry.path().extension();
      if (entry.is_regular_file() && (ext == ".yaml" || ext == ".yml")) files.push_back(entry.path());
    }
    if (ec) return Status::IoError(fmt::format("{}: {}", path, ec.message()));
    std::sort(files.begin(), files.end());
  } else if (fs::exists(path, ec)) {
    files.push_back(path);
  } else {
    return Status::NotFound(fmt::format("{}: no such file or folder", path));
  }
  std::vector<link::Policy> out;
  for (const auto& f : files) {
    auto p = LoadOne(f);
    if (!p.ok()) return p.status();
    out.push_back(std::move(p).value());
  }
  return out;
}

}  // namespace sidetrace::orchestrator
