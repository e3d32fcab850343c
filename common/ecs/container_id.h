// Container identity without any API: the container id from the cgroup paths
// and mount table the container runtime leaves behind, the name from
// HOSTNAME. Used when ECS task metadata is not available (plain Docker,
// Kubernetes, ECS before the metadata answers) and as the base that ECS
// metadata later overrides.
//
// Recognised (the id is the last path element that matches, after stripping
// a runtime prefix such as "docker-", "cri-containerd-", "crio-", "libpod-"
// and a ".scope" suffix):
//   cgroup v1 and v2 docker      /docker/<64 hex>, /system.slice/docker-<64 hex>.scope
//   containerd / CRI (k8s)       /kubepods/.../<64 hex>, cri-containerd-<64 hex>.scope, crio-<64 hex>.scope
//   ECS on EC2                   /ecs/<task id>/<64 hex>
//   ECS on Fargate               /ecs/<32 hex>/<32 hex>-<10 digits>
// With a private cgroup namespace (cgroup v2 default) /proc/self/cgroup says
// only "0::/", so /proc/self/mountinfo is read next: Docker bind-mounts
// /var/lib/docker/containers/<64 hex>/{hostname,hosts,resolv.conf}, Podman
// .../overlay-containers/<64 hex>/userdata/....
//
// Thread-safety: pure functions; ContainerInfoFromEnvironment reads files and
// the environment and is safe from any thread. Failure: an unknown id or name
// stays empty (printed as <NA>), never an error.
#pragma once

#include <string>
#include <string_view>

#include "common/event/event.h"

namespace sidetrace::ecs {

// Container id found in /proc/<pid>/cgroup text, or "" when none matches.
// 64-hex ids are returned whole (see ContainerInfo for the short form).
std::string ContainerIdFromCgroup(std::string_view cgroup_text);

// Container id found in /proc/<pid>/mountinfo text, or "".
std::string ContainerIdFromMountinfo(std::string_view mountinfo_text);

// Builds a ContainerInfo from the texts given: the id from the cgroup text,
// else from the mountinfo text; the name from `hostname`. Like Falco, a
// 64-hex id becomes the 12-character short id in `id`, and the full one is
// kept in extra as "container.full_id".
event::ContainerInfo ContainerInfoFromTexts(std::string_view cgroup_text,
                                            std::string_view mountinfo_text,
                                            std::string_view hostname);

// Sets info.id from a full container id as Falco does: a 64-hex id becomes
// its 12-character prefix, other ids (Fargate's) stay whole; the full id is
// kept in extra as "container.full_id". An empty id clears both.
void SetContainerId(event::ContainerInfo& info, std::string full_id);

// ContainerInfoFromTexts over /proc/self/cgroup, /proc/self/mountinfo and
// $HOSTNAME. Reads at most a few hundred KiB; never blocks on the network.
event::ContainerInfo ContainerInfoFromEnvironment();

}  // namespace sidetrace::ecs
