#include "common/ecs/metadata_fetcher.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdlib>

#include "common/ecs/container_id.h"
#include "common/ecs/ecs_metadata.h"
#include "common/util/log.h"

namespace sidetrace::ecs {

SharedContainerInfo::SharedContainerInfo()
    : current_(std::make_shared<const event::ContainerInfo>()) {}

SharedContainerInfo::SharedContainerInfo(event::ContainerInfo initial)
    : current_(std::make_shared<const event::ContainerInfo>(std::move(initial))) {}

void SharedContainerInfo::Publish(event::ContainerInfo info) {
  auto next = std::make_shared<const event::ContainerInfo>(std::move(info));
  std::lock_guard<std::mutex> lock(mu_);
  current_ = std::move(next);
  version_.fetch_add(1, std::memory_order_release);
}

std::shared_ptr<const event::ContainerInfo> SharedContainerInfo::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

MetadataFetcher::MetadataFetcher(Options options, SharedContainerInfo* target)
    : options_(std::move(options)), target_(target) {
  // The thread starts with every signal blocked (it inherits the creator's
  // mask, set here for the moment of creation): process-directed signals
  // must reach the agent's main thread, which takes them from a signalfd
  // (signal(7): such a signal goes to any one thread that does not block it).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), kThreadName);
    Run();
  });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

MetadataFetcher::~MetadataFetcher() { Stop(); }

void MetadataFetcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  canceller_.Cancel();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void MetadataFetcher::Run() {
  std::chrono::milliseconds backoff = options_.first_backoff;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    attempts_.store(attempt, std::memory_order_release);
    Result<event::ContainerInfo> fetched =
        FetchEcsMetadata(options_.uri, options_.timeout, &canceller_);
    if (fetched.ok()) {
      target_->Publish(MergeContainerInfo(*target_->Get(), *fetched));
      succeeded_.store(true, std::memory_order_release);
      const std::string* task = ExtraValue(*fetched, "aws.ecs.task.arn");
      log::Info("ECS task metadata loaded", "container={} task={} attempt={}",
                log::Quote(fetched->name), log::Quote(task != nullptr ? *task : ""), attempt);
      break;
    }
    if (canceller_.cancelled()) break;
    if (attempt == options_.max_attempts) {
      log::Warn("ECS task metadata unavailable, events carry no task fields",
                "attempts={} error={}", attempt, log::Quote(fetched.status().message()));
      break;
    }
    log::Debug("ECS task metadata not available yet", "attempt={} error={}", attempt,
               log::Quote(fetched.status().message()));
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_for(lock, backoff, [this] { return stop_; })) break;
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  done_.store(true, std::memory_order_release);
}

std::unique_ptr<MetadataFetcher> StartContainerMetadata(SharedContainerInfo* target) {
  target->Publish(ContainerInfoFromEnvironment());
  const char* uri = std::getenv(kMetadataUriEnv);
  if (uri == nullptr || *uri == '\0') return nullptr;
  MetadataFetcher::Options options;
  options.uri = uri;
  return std::make_unique<MetadataFetcher>(std::move(options), target);
}

}  // namespace sidetrace::ecs
