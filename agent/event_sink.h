// EventSink: where captured events go. Numbers each event (evt.num), writes
// it as a JSON line to --events-out when set, and hands it to the consumer
// (the rules engine) when one is attached.
//
// Writes are buffered and flushed by the tracer before it blocks, so a line
// is out within one loop iteration; a full or failing output drops lines and
// counts them rather than stalling the workload.
// Thread-safety: none; used by the tracer thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/ecs/metadata_fetcher.h"
#include "common/event/event.h"
#include "common/util/status.h"

namespace sidetrace::agent {

class EventSink {
 public:
  EventSink() = default;
  ~EventSink();
  EventSink(const EventSink&) = delete;
  EventSink& operator=(const EventSink&) = delete;

  // "-" writes to stderr, anything else is a file created or truncated.
  Status OpenOutput(const std::string& path);
  // Called for every event after it is written (the rules engine, stats).
  // `may_alert` is false for an event the tracer already knows no rule can
  // match (it asked before paying for the result): count it, skip rules.
  using Consumer = std::function<void(const event::Event& e, bool may_alert)>;
  void SetConsumer(Consumer consumer) { consumer_ = std::move(consumer); }
  // Where the container every event points at comes from (may be null). The
  // sink takes a new snapshot whenever the source publishes one (ECS task
  // metadata arrives in the background after the workload started).
  void SetContainerSource(const ecs::SharedContainerInfo* source) { container_source_ = source; }

  // True when anything looks at events: building one is then worth it.
  bool wanted() const { return fd_ >= 0 || consumer_ != nullptr; }
  // Whether every event is written out (--events-out), in full.
  bool records() const { return fd_ >= 0; }
  void Emit(event::Event& e, bool may_alert = true);
  // Points e.container at the current container snapshot, as Emit does: for
  // a look at an event before it is emitted (the rules' MayMatch at entry).
  void StampContainer(event::Event& e);
  void Flush();

  uint64_t emitted() const { return num_; }
  uint64_t dropped() const { return dropped_; }

 private:
  int fd_ = -1;
  bool owns_fd_ = false;
  std::string buf_;
  uint64_t num_ = 0;
  uint64_t dropped_ = 0;
  const ecs::SharedContainerInfo* container_source_ = nullptr;
  uint64_t container_version_ = 0;
  std::shared_ptr<const event::ContainerInfo> container_;
  Consumer consumer_;
};

}  // namespace sidetrace::agent
