// Where a call leaves the core: the interface between dispatch and plugin code. The first
// implementation runs an in-process .so's handler on the calling handler thread; the
// second (isolation/process_backend.hpp) runs it in a worker process.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "opserver/plugin_abi.h"
#include "plugin_host/lifecycle.hpp"
#include "plugin_host/plugin_loader.hpp"

namespace ops::core {

// How the worker processes of an isolated operation fare (metrics); counts since the
// operation was last loaded (start or reload).
struct WorkerStats {
  bool down = false;
  unsigned workers = 0;  // processes alive now
  std::uint64_t starts = 0;
  std::uint64_t start_failures = 0;
  std::uint64_t crashes = 0;  // workers that failed during a call (or died idle)
};

class OperationBackend {
 public:
  virtual ~OperationBackend() = default;
  // Runs the operation for one request on the calling handler thread, with `call` as the
  // ABI's call state (owned by the caller, valid until this returns). Returns an ops_code.
  virtual int invoke(const ops_host_v1* host, ops_call* call, std::string_view args_json) const = 0;
  // False while the operation cannot be called at all (an isolated plugin marked down):
  // describe leaves it out and calls are answered `unavailable` before anything runs.
  virtual bool available() const { return true; }
  // Set for an operation that runs in worker processes.
  virtual std::optional<WorkerStats> worker_stats() const { return std::nullopt; }
  // The operation's own health (ABI minor 1 health hook): nullopt when healthy or when it
  // cannot tell; otherwise the reason. Asked by the readiness check, never concurrently.
  virtual std::optional<std::string> health() const { return std::nullopt; }
};

// A handler in a .so loaded into this process. Holds the library, so the code stays mapped
// while anything (a snapshot, a running call) holds this backend.
class InProcessBackend final : public OperationBackend {
 public:
  explicit InProcessBackend(LoadedOperation source)
      : source_(std::move(source)), handler_(source_.op->call) {}

  int invoke(const ops_host_v1* host, ops_call* call, std::string_view args_json) const override {
    return handler_(host, call, args_json.data(), args_json.size());
  }
  std::optional<std::string> health() const override { return run_health(source_.op); }
  const LoadedOperation& source() const noexcept { return source_; }

 private:
  LoadedOperation source_;
  ops_handler_fn handler_;
};

}  // namespace ops::core
