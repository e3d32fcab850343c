// Whether a process's executable lives on the upper (writable) layer of an
// overlayfs, Falco's proc.is_exe_upper_layer: a container's image is the
// lower layers, so an upper-layer executable was written after the container
// started ("Drop and execute new binary in container").
//
// How, without privileges: statfs(/proc/PID/exe) says whether the file is on
// an overlayfs at all (one call per exec when it is not). If it is, the
// process's /proc/PID/mountinfo names the overlay mount holding the path and
// its upperdir=; the file is on the upper layer exactly when upperdir/<path
// inside the mount> exists (overlayfs shows the upper entry whenever there is
// one). The upperdir path is the mounter's: it resolves in the agent when the
// overlay was mounted in the agent's view (a test, a nested runtime). Under a
// container runtime (Docker, ECS Fargate) upperdir is a host path the agent
// cannot reach, and the answer is false: unknowable, as Falco documents for
// the field when it cannot tell.
// Thread-safety: none needed; plain syscalls.
#pragma once

#include <sys/types.h>

#include <string>

namespace sidetrace::agent {

// `exepath` is readlink(/proc/PID/exe), in the process's view.
bool ExeOnUpperLayer(pid_t pid, const std::string& exepath);
// The same for the file open as `fd` in the agent, named `path` in PID's
// view (an exec's file, judged before the exec runs).
bool FileOnUpperLayer(pid_t pid, int fd, const std::string& path);
// The mountinfo part of both: `path`, known to be on an overlayfs.
bool OverlayPathOnUpperLayer(pid_t pid, const std::string& path);

// One mountinfo line's fields the check uses; exposed for unit tests.
struct MountEntry {
  std::string root;         // field 4: the mount's root within its filesystem
  std::string mount_point;  // field 5
  std::string fstype;
  std::string upperdir;     // from the super options, overlay only
};
// Parses one line of /proc/PID/mountinfo (octal escapes decoded). False when
// malformed.
bool ParseMountInfoLine(std::string_view line, MountEntry* out);

}  // namespace sidetrace::agent
