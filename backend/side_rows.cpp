#include "backend/side_rows.h"

#include <algorithm>
#include <numeric>

namespace sidetrace::backend {

uint32_t SideRows::Intern(std::string_view key, std::unordered_map<std::string, uint32_t, Hash, std::equal_to<>>* ids,
                          std::vector<std::string>* names) {
  if (key.empty()) return kNone;
  if (auto it = ids->find(key); it != ids->end()) return it->second;
  auto id = static_cast<uint32_t>(names->size());
  names->emplace_back(key);
  ids->emplace(std::string(key), id);
  return id;
}

void SideRows::Add(int64_t id, int64_t time_ns, std::string_view container_id, std::string_view task_arn) {
  entries_.push_back(
      Entry{id, time_ns, Intern(container_id, &container_ids_, &containers_), Intern(task_arn, &task_ids_, &tasks_)});
}

void SideRows::Clear() {
  entries_.clear();
  container_ids_.clear();
  task_ids_.clear();
  containers_.clear();
  tasks_.clear();
}

std::vector<const SideRows::Entry*> SideRows::ByContainer() const {
  // Each interned key's rank in byte order (SQLite's BINARY collation).
  std::vector<uint32_t> order(containers_.size()), rank(containers_.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return containers_[a] < containers_[b]; });
  for (uint32_t r = 0; r < order.size(); ++r) rank[order[r]] = r;
  std::vector<const Entry*> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_)
    if (e.container != kNone) out.push_back(&e);
  std::sort(out.begin(), out.end(), [&](const Entry* a, const Entry* b) {
    if (a->container != b->container) return rank[a->container] < rank[b->container];
    return a->time_ns != b->time_ns ? a->time_ns < b->time_ns : a->id < b->id;
  });
  return out;
}

}  // namespace sidetrace::backend
