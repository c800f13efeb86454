// The second call implementation (docs/ARCHITECTURE.md): an operation that runs in worker
// processes. invoke() takes a worker from the operation's pool, sends it the call with the
// user's directory and scratch descriptors, and serves the worker's host requests
// (read_payload, send_result, quota_reserve, ...) with the real host vtable on this
// handler thread until the worker says "done". A worker that crashes, exits, hangs past
// the call's deadline or breaks the protocol costs this call only: it is answered
// `unavailable` (or `timeout`), the worker is killed and reaped, and the next call gets a
// fresh one.
#pragma once

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

 private:
  std::shared_ptr<WorkerPool> pool_;
};

}  // namespace ops::isolation
