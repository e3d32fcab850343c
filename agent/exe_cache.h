// ExeCache: what opening an executable at an exec's entry told the agent
// (its first bytes, its canonical path, whether it is on an overlay's upper
// layer), kept per path while the file is unchanged. A workload execs the
// same few binaries again and again, and naming one from scratch costs a
// reopen through /proc/self/fd, a read, a readlink of a magic link and, on
// an overlay, a read of mountinfo: ~4x the open and fstat that find the
// entry.
//
// An entry answers only for the same path leading to the same file (device,
// inode) with the same size, mtime and ctime: a write, a copy-up to an
// overlay's upper layer, a rename of the file or a new link to it all change
// ctime. Its canonical path must still name that file (a parent directory
// renamed since changes no ctime of the file).
// Thread-safety: none; the tracer thread's.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <unordered_map>

#include "agent/procfs.h"

namespace sidetrace::agent {

class ExeCache {
 public:
  struct Entry {
    FileId file;
    struct stat st{};
    char head[256] = {};  // the file's first bytes, zero-filled
    // The canonical path, as /proc/PID/exe names the file once it runs
    // (ELF files only; empty when unknown), and is_exe_upper_layer.
    std::string exepath;
    bool upper_layer = false;
  };

  // The entry for the regular file at `path` (absolute, in the agent's view,
  // which is PID's), reached without /proc's magic links (they would name
  // the agent's files, not the tracee's); looked up, or read and kept. No
  // device or FIFO is ever opened for reading. nullptr with errno from the
  // lookup (ENOENT, ENOTDIR: the path names nothing), EACCES for what is not
  // a regular file, ENOEXEC for a file shorter than 4 bytes. The pointer
  // lives until the next call.
  const Entry* Inspect(const std::string& path, pid_t pid);

  size_t size() const { return entries_.size(); }

 private:
  static constexpr size_t kMaxEntries = 256;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace sidetrace::agent
