#include "metrics/operation_health.hpp"

#include "dispatch/registry.hpp"

namespace ops::core {

OperationHealth::OperationHealth(const SnapshotStore& snapshots, Submit submit, Options options)
    : snapshots_(snapshots), submit_(std::move(submit)), options_(options) {}

std::vector<std::string> OperationHealth::unhealthy(bool wait_fresh) {
  const auto now = std::chrono::steady_clock::now();
  std::unique_lock lock(mutex_);
  if (!running_ && (!have_result_ || now - checked_at_ >= options_.max_age)) {
    running_ = true;
    asking_.clear();
    const std::uint64_t before = completed_;
    lock.unlock();
    submit_([this] { check(); });
    lock.lock();
    if (wait_fresh) {
      finished_.wait_for(lock, options_.wait, [&] { return completed_ != before; });
    }
  }
  std::vector<std::string> out = last_;
  if (running_ && !asking_.empty() && now - asked_at_ >= options_.stuck_after) {
    out.push_back(asking_ + ": health check did not return");
  }
  return out;
}

void OperationHealth::check() {
  const auto snapshot = snapshots_.current();
  std::vector<std::string> found;
  for (const auto& [name, op] : snapshot->registry->operations()) {
    {
      std::lock_guard lock(mutex_);
      asking_ = name;
      asked_at_ = std::chrono::steady_clock::now();
    }
    if (auto reason = op.backend->health()) found.push_back(name + ": " + *reason);
  }
  std::lock_guard lock(mutex_);
  last_ = std::move(found);
  checked_at_ = std::chrono::steady_clock::now();
  have_result_ = true;
  running_ = false;
  asking_.clear();
  ++completed_;
  finished_.notify_all();
}

}  // namespace ops::core
