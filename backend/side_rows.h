// SideRows: the container and task keys of the alert rows above the side
// tables' watermark, kept by the writer as it inserts them, so that
// Store::IndexSideTables writes the side rows sorted from memory instead of
// reading every new row back from `events` and looking its task ARN up in
// `tasks` row by row (that read and join were ~40% of the committer's CPU
// under a 100k alerts/s burst from 1,000 containers).
//
// Each key is kept once (interned): an entry is 24 bytes whatever the
// lengths of its container id and task ARN.
// Thread-safety: none (the Store's writer lock guards it).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sidetrace::backend {

class SideRows {
 public:
  struct Entry {
    int64_t id, time_ns;
    uint32_t container, task;  // interned keys; kNone for an empty one
  };
  static constexpr uint32_t kNone = UINT32_MAX;

  void Add(int64_t id, int64_t time_ns, std::string_view container_id, std::string_view task_arn);
  // Forgets the entries from the `size`-th on (a rolled back transaction's).
  void Truncate(size_t size) { entries_.resize(std::min(size, entries_.size())); }
  void Clear();
  size_t size() const { return entries_.size(); }

  const std::vector<Entry>& entries() const { return entries_; }
  const std::string& container(uint32_t key) const { return containers_[key]; }
  const std::string& task(uint32_t key) const { return tasks_[key]; }
  size_t task_count() const { return tasks_.size(); }
  // Entries with a container, in (container id, time, id) order.
  std::vector<const Entry*> ByContainer() const;

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  static uint32_t Intern(std::string_view key, std::unordered_map<std::string, uint32_t, Hash, std::equal_to<>>* ids,
                         std::vector<std::string>* names);

  std::vector<Entry> entries_;
  std::unordered_map<std::string, uint32_t, Hash, std::equal_to<>> container_ids_, task_ids_;
  std::vector<std::string> containers_, tasks_;
};

}  // namespace sidetrace::backend
