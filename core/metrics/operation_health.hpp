// The operations' own health, for /readyz and the metrics (docs/PLUGINS.md, the health
// hook). Asking a plugin is a call into its code, so it never runs on the caller's thread:
// a check of every enabled operation of the current snapshot runs through `submit` (the
// handler pool), at most once per `max_age`; the caller gets the last finished check's
// answer, waiting at most `wait` for a fresh one. A check still running after
// `stuck_after` reports its operation unhealthy ("health check did not return").
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "dispatch/snapshot.hpp"

namespace ops::core {

class OperationHealth {
 public:
  using Submit = std::function<void(std::function<void()>)>;
  struct Options {
    std::chrono::milliseconds max_age{1000};
    std::chrono::milliseconds wait{250};
    std::chrono::milliseconds stuck_after{5000};
  };

  OperationHealth(const SnapshotStore& snapshots, Submit submit, Options options);
  OperationHealth(const SnapshotStore& snapshots, Submit submit)
      : OperationHealth(snapshots, std::move(submit), Options{}) {}

  // "name: reason" for each unhealthy operation (sorted by name); empty when all are well.
  // Starts a check when the last is older than max_age; waits for it only if `wait_fresh`.
  // Any thread.
  std::vector<std::string> unhealthy(bool wait_fresh = true);

 private:
  void check();  // on a pool thread

  const SnapshotStore& snapshots_;
  Submit submit_;
  Options options_;
  std::mutex mutex_;
  std::condition_variable finished_;
  std::vector<std::string> last_;
  std::chrono::steady_clock::time_point checked_at_{};  // when the last check finished
  bool have_result_ = false;
  bool running_ = false;
  std::uint64_t completed_ = 0;  // checks finished so far
  std::string asking_;           // the operation being asked now
  std::chrono::steady_clock::time_point asked_at_{};
};

}  // namespace ops::core
