// The second call implementation (docs/ARCHITECTURE.md): an operation that runs in worker
// processes. A call takes a worker from the operation's pool, sends it the call with the
// user's directory and scratch descriptors, and serves the worker's host requests
// (read_payload, send_result, quota_reserve, ...) with the real host vtable until the
// worker says "done": on the session's I/O thread while nothing blocks (start_on_strand),
// on a handler thread from the first request that may (invoke() does all of it there). A
// worker that crashes, exits, hangs past the call's deadline or breaks the protocol costs
// this call only: it is answered `unavailable` (or `timeout`), the worker is killed and
// reaped, and the next call gets a fresh one.
#pragma once

#include <atomic>
#include <memory>

#include "isolation/worker_pool.hpp"
#include "plugin_host/operation_backend.hpp"

namespace ops::isolation {

class ProcessBackend final : public core::OperationBackend {
 public:
  explicit ProcessBackend(std::shared_ptr<WorkerPool> pool) : pool_(std::move(pool)) {}

  int invoke(const ops_host_v1* host, ops_call* call, std::string_view args_json) const override;
  std::unique_ptr<core::StartedCall> start_on_strand(
      const ops_host_v1* host, ops_call* call, std::string_view args_json,
      const boost::asio::any_io_executor& executor) const override;
  bool available() const override { return !pool_->down(); }
  std::optional<core::WorkerStats> worker_stats() const override;
  std::optional<std::string> health() const override {
    return pool_->health(std::chrono::milliseconds(200));
  }

  const std::shared_ptr<WorkerPool>& pool() const noexcept { return pool_; }
  // What the operation's last finished call asked for: something that blocks (payload,
  // quotas, usage, users), or not. The next call begins on the I/O thread only if not.
  void note_calls_block(bool block) const noexcept {
    calls_block_.store(block, std::memory_order_relaxed);
  }

 private:
  std::shared_ptr<WorkerPool> pool_;
  mutable std::atomic<bool> calls_block_{false};
};

}  // namespace ops::isolation
