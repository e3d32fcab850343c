// ECS task metadata endpoint v4: what the agent learns about its task and
// container from ${ECS_CONTAINER_METADATA_URI_V4} (the container) and
// ${ECS_CONTAINER_METADATA_URI_V4}/task (the task), mapped onto Falco-style
// fields:
//
//   container.id                DockerId (on Fargate "<32 hex task id>-<10 digits>")
//   container.name              Name (the container's name in the task definition)
//   container.image[.repository|.tag]  Image, split as Docker does
//   aws.ecs.task.arn            TaskARN           (else label com.amazonaws.ecs.task-arn)
//   aws.ecs.task.family         Family            (else label ...task-definition-family)
//   aws.ecs.task.revision       Revision          (else label ...task-definition-version)
//   aws.ecs.cluster             Cluster (an ARN on Fargate; else label ...cluster)
//   aws.availability_zone       AvailabilityZone  (Fargate platform 1.4+)
//   aws.ecs.launch_type         LaunchType        (FARGATE or EC2)
//   aws.ecs.container.arn       ContainerARN
//
// Thread-safety: all functions are reentrant. FetchEcsMetadata blocks the
// calling thread for at most `timeout` (twice: one GET for the container, one
// for the task), so call it from a background thread, never from the thread
// that starts the workload; MetadataFetcher (metadata_fetcher.h) does that
// with retries.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/ecs/http_get.h"
#include "common/event/event.h"
#include "common/util/status.h"

namespace sidetrace::ecs {

// The environment variable ECS sets in every container (agent 1.39+, Fargate 1.4+).
inline constexpr const char* kMetadataUriEnv = "ECS_CONTAINER_METADATA_URI_V4";

struct ImageReference {
  std::string repository;  // "111122223333.dkr.ecr.us-west-2.amazonaws.com/app", "nginx"
  std::string tag;         // "1.2", "latest" when neither tag nor digest is given
  std::string digest;      // "sha256:..." or ""
};

// Splits "[registry[:port]/]name[:tag][@digest]" the way Docker does: a ':'
// after the last '/' starts the tag, '@' starts the digest.
ImageReference ParseImageReference(std::string_view image);

// Maps the two JSON documents onto a ContainerInfo. `task_json` may be empty
// (only the container document is known yet). Fails with kIoError naming the
// document and field when a document is not JSON or not an object, or when
// the container document has no string DockerId.
Result<event::ContainerInfo> ParseEcsMetadata(std::string_view container_json,
                                              std::string_view task_json);

// GETs `${uri}` and `${uri}/task` and parses them. `timeout` bounds each GET.
// A task document that cannot be fetched is not an error when the container
// document was (the labels carry the task ARN, family, revision, cluster).
// `canceller`, when given, aborts a fetch in progress from another thread.
Result<event::ContainerInfo> FetchEcsMetadata(std::string_view uri,
                                              std::chrono::milliseconds timeout,
                                              HttpCanceller* canceller = nullptr);

// Returns `base` with every non-empty field of `overlay` written over it, and
// overlay's extra pairs replacing base's pairs of the same key.
event::ContainerInfo MergeContainerInfo(event::ContainerInfo base,
                                        const event::ContainerInfo& overlay);

// Value of extra key `key`, or nullptr.
const std::string* ExtraValue(const event::ContainerInfo& info, std::string_view key);

}  // namespace sidetrace::ecs
