#include "agent/rules_runner.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "agent/default_policies.h"
#include "agent/procfs.h"
#include "common/util/log.h"

namespace sidetrace::agent {
namespace {

bool IsDir(const std::string& p) {
  struct stat st{};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string BundledPolicies() {
  std::string exe;
  if (Readlink("/proc/self/exe", &exe)) {
    std::string dir = exe.substr(0, exe.rfind('/'));
    for (const char* rel : {"/../policies", "/../share/sidetrace/policies", "/../../policies"}) {
      if (IsDir(dir + rel)) return NormalizePath(dir + rel);
    }
  }
  return "";
}

}  // namespace

RulesRunner::~RulesRunner() {
  if (owns_fd_) close(fd_);
}

Result<std::unique_ptr<RulesRunner>> RulesRunner::Create(const Options& options) {
  rules::LoadOptions lo;
  if (!rules::ParsePriority(options.min_priority, &lo.min_priority)) {
    return Status::InvalidArgument(fmt::format("--min-priority: unknown priority '{}'", options.min_priority));
  }
  if (!rules::ParseResolveMode(options.resolve, &lo.resolve)) {
    return Status::InvalidArgument(fmt::format("--resolve: expected dns, hosts or off, got '{}'", options.resolve));
  }
  std::vector<std::string> paths = options.paths;
  if (paths.empty()) {
    std::string bundled = BundledPolicies();
    if (!bundled.empty()) paths.push_back(bundled);
  }
  // A wrapped container often holds only the agent binary: it then runs the
  // policies compiled in, until the orchestrator pushes its own.
  const bool embedded = paths.empty();
  rules::LoadReport report;
  auto engine = embedded ? rules::Engine::LoadSources(DefaultPolicySources(), lo, &report)
                         : rules::Engine::LoadFiles(paths, lo, &report);
  for (const auto& w : report.warnings) log::Warn("rules warning", "detail={}", log::Quote(w.ToString()));
  if (!engine.ok()) {
    std::string first = report.errors.empty() ? engine.status().message() : report.errors.front().ToString();
    return Status::InvalidArgument(fmt::format("cannot load rules: {}", first));
  }
  std::unique_ptr<RulesRunner> r(new RulesRunner());
  r->load_options_ = lo;
  r->engine_ = std::move(engine).value();
  if (options.alerts_out == "-") {
    r->fd_ = STDERR_FILENO;
  } else {
    r->fd_ = open(options.alerts_out.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (r->fd_ < 0) return Status::IoError(fmt::format("--alerts-out {}: {}", options.alerts_out, strerror(errno)));
    r->owns_fd_ = true;
  }
  log::Info("rules loaded", "rules={} skipped={} paths={}", r->engine_->rules().size(), report.rules_skipped.size(),
            log::Quote(embedded ? std::string("(built in)") : fmt::format("{}", fmt::join(paths, ","))));
  return r;
}

namespace {

SysSet TrappedFor(const rules::Engine& engine) {
  SysSet set;
  auto types = engine.EventTypes();
  for (size_t i = 0; i < event::kEventTypeCount; ++i) {
    if (!types.test(i)) continue;
    for (Sys s : SysForEvent(static_cast<event::EventType>(i))) set.Add(s);
  }
  for (Sys s : BookkeepingSys()) set.Add(s);
  return set;
}

}  // namespace

SysSet RulesRunner::Trapped() const { return TrappedFor(*engine_); }

void RulesRunner::TakePendingPolicies() {
  if (!pending_ready_.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(pending_mu_);
  engine_ = std::move(pending_);
  pending_ready_.store(false, std::memory_order_relaxed);
  log::Info("policies applied", "rules={}", engine_->rules().size());
}

bool RulesRunner::MayMatch(const event::Event& e) {
  TakePendingPolicies();
  return engine_->MayMatch(e);
}

bool RulesRunner::ReadsCwd(event::EventType type) {
  TakePendingPolicies();
  return engine_->CwdEventTypes().test(static_cast<size_t>(type));
}

void RulesRunner::OnEvent(const event::Event& e) {
  TakePendingPolicies();
  engine_->Evaluate(e, [&](const rules::Rule& rule) {
    ++alerts_;
    nlohmann::json alert = engine_->MakeAlert(rule, e).ToJson();
    WriteAlert(alert);
    if (forward_) forward_(std::move(alert));
  });
}

void RulesRunner::WriteAlert(const nlohmann::json& alert) {
  line_ = alert.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line_.push_back('\n');
  size_t off = 0;
  while (off < line_.size()) {
    ssize_t n = write(fd_, line_.data() + off, line_.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
}

void RulesRunner::OfferPolicies(const std::vector<rules::RuleSource>& sources) {
  rules::LoadReport report;
  auto engine = rules::Engine::LoadSources(sources, load_options_, &report);
  if (!engine.ok()) {
    std::string first = report.errors.empty() ? engine.status().message() : report.errors.front().ToString();
    log::Error("pushed policies rejected, keeping the running rules", "reason={}", log::Quote(first));
    return;
  }
  SysSet need = TrappedFor(*engine.value());
  std::string missing;
  for (size_t i = 0; i < kSysCount; ++i) {
    Sys s = static_cast<Sys>(i);
    if (s == Sys::kExecve || s == Sys::kExecveat) continue;  // the tracer's, whatever the rules
    if (!need.Has(s) || filter_.Has(s)) continue;
    if (!missing.empty()) missing.push_back(',');
    missing.append(SysName(s));
  }
  if (!missing.empty()) {
    log::Warn("pushed policies need syscalls this workload's seccomp filter does not trap; rules on them "
              "see nothing until the workload restarts",
              "syscalls={}", missing);
  }
  std::lock_guard<std::mutex> lock(pending_mu_);
  pending_ = std::move(engine).value();
  pending_ready_.store(true, std::memory_order_release);
}

}  // namespace sidetrace::agent
