#include "common/ecs/ecs_metadata.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "common/ecs/container_id.h"

namespace sidetrace::ecs {
namespace {

using nlohmann::json;

// String member `key` of `obj`, or "" when absent or not a string. Numbers
// are accepted too: some ECS agents have sent Revision as a number.
std::string StringField(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<long long>());
  return {};
}

std::string Label(const json& container, const char* key) {
  auto labels = container.find("Labels");
  if (labels == container.end() || !labels->is_object()) return {};
  return StringField(*labels, key);
}

void SetExtra(event::ContainerInfo& info, std::string_view key, std::string value) {
  if (value.empty()) return;
  for (auto& [k, v] : info.extra) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  info.extra.emplace_back(std::string(key), std::move(value));
}

Result<json> ParseObject(std::string_view text, std::string_view what) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return Status::IoError(fmt::format("ECS {} metadata: not valid JSON", what));
  }
  if (!doc.is_object()) {
    return Status::IoError(fmt::format("ECS {} metadata: expected a JSON object", what));
  }
  return doc;
}

}  // namespace

ImageReference ParseImageReference(std::string_view image) {
  ImageReference ref;
  if (size_t at = image.find('@'); at != std::string_view::npos) {
    ref.digest = std::string(image.substr(at + 1));
    image = image.substr(0, at);
  }
  size_t slash = image.rfind('/');
  size_t colon = image.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    ref.tag = std::string(image.substr(colon + 1));
    image = image.substr(0, colon);
  }
  ref.repository = std::string(image);
  if (ref.tag.empty() && ref.digest.empty() && !ref.repository.empty()) ref.tag = "latest";
  return ref;
}

Result<event::ContainerInfo> ParseEcsMetadata(std::string_view container_json,
                                              std::string_view task_json) {
  Result<json> container = ParseObject(container_json, "container");
  if (!container.ok()) return container.status();
  const json& c = *container;
  event::ContainerInfo info;
  auto id_it = c.find("DockerId");
  std::string docker_id = id_it != c.end() && id_it->is_string() ? id_it->get<std::string>() : "";
  if (docker_id.empty()) {
    return Status::IoError("ECS container metadata: field \"DockerId\" missing or not a string");
  }
  SetContainerId(info, std::move(docker_id));
  info.name = StringField(c, "Name");
  if (info.name.empty()) info.name = Label(c, "com.amazonaws.ecs.container-name");
  info.image = StringField(c, "Image");
  if (!info.image.empty()) {
    ImageReference ref = ParseImageReference(info.image);
    info.image_repository = std::move(ref.repository);
    info.image_tag = std::move(ref.tag);
  }
  SetExtra(info, "aws.ecs.task.arn", Label(c, "com.amazonaws.ecs.task-arn"));
  SetExtra(info, "aws.ecs.task.family", Label(c, "com.amazonaws.ecs.task-definition-family"));
  SetExtra(info, "aws.ecs.task.revision", Label(c, "com.amazonaws.ecs.task-definition-version"));
  SetExtra(info, "aws.ecs.cluster", Label(c, "com.amazonaws.ecs.cluster"));

  if (!task_json.empty()) {
    Result<json> task = ParseObject(task_json, "task");
    if (!task.ok()) return task.status();
    const json& t = *task;
    SetExtra(info, "aws.ecs.task.arn", StringField(t, "TaskARN"));
    SetExtra(info, "aws.ecs.task.family", StringField(t, "Family"));
    SetExtra(info, "aws.ecs.task.revision", StringField(t, "Revision"));
    SetExtra(info, "aws.ecs.cluster", StringField(t, "Cluster"));
    SetExtra(info, "aws.availability_zone", StringField(t, "AvailabilityZone"));
    SetExtra(info, "aws.ecs.launch_type", StringField(t, "LaunchType"));
  }
  SetExtra(info, "aws.ecs.container.arn", StringField(c, "ContainerARN"));
  return info;
}

Result<event::ContainerInfo> FetchEcsMetadata(std::string_view uri,
                                              std::chrono::milliseconds timeout,
                                              HttpCanceller* canceller) {
  std::string base(uri);
  while (!base.empty() && base.back() == '/') base.pop_back();
  Result<std::string> container = HttpGet(base, timeout, canceller);
  if (!container.ok()) return container.status();
  Result<std::string> task = HttpGet(base + "/task", timeout, canceller);
  // The container document alone is useful (its labels name the task), so a
  // failed or malformed task document degrades to fewer fields instead of
  // failing the fetch.
  if (task.ok()) {
    Result<event::ContainerInfo> both = ParseEcsMetadata(*container, *task);
    if (both.ok()) return both;
  }
  return ParseEcsMetadata(*container, {});
}

event::ContainerInfo MergeContainerInfo(event::ContainerInfo base,
                                        const event::ContainerInfo& overlay) {
  if (!overlay.id.empty()) base.id = overlay.id;
  if (!overlay.name.empty()) base.name = overlay.name;
  if (!overlay.image.empty()) base.image = overlay.image;
  if (!overlay.image_repository.empty()) base.image_repository = overlay.image_repository;
  if (!overlay.image_tag.empty()) base.image_tag = overlay.image_tag;
  base.privileged = base.privileged || overlay.privileged;
  for (const auto& [key, value] : overlay.extra) SetExtra(base, key, value);
  return base;
}

const std::string* ExtraValue(const event::ContainerInfo& info, std::string_view key) {
  for (const auto& [k, v] : info.extra) {
    if (k == key) return &v;
  }
  return nullptr;
}

}  // namespace sidetrace::ecs
