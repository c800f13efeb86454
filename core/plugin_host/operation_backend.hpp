// Where a call leaves the core: the interface between dispatch and plugin code. The first
// implementation runs an in-process .so's handler on the calling handler thread; the
// second (isolation/process_backend.hpp) runs it in a worker process.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
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

// A call an operation began on the session's I/O thread (isolation/process_backend.hpp):
// it goes on there, without blocking, for as long as it can, and hands what blocks (payload
// I/O, quotas, user administration, a failed worker's end) to a handler thread.
class StartedCall {
 public:
  virtual ~StartedCall() = default;
  enum class Step { done, needs_handler };
  // On the session's strand: runs until the call ended (`done`, its ops_code in `code`)
  // or until the rest needs a handler thread.
  virtual boost::asio::awaitable<Step> run_on_strand(int& code) = 0;
  // On a handler thread after `needs_handler`: finishes the call and returns its ops_code.
  // `abandoned`: the session answered `timeout` meanwhile; only clean up.
  virtual int finish_blocking(bool abandoned) = 0;
};

class OperationBackend {
 public:
  virtual ~OperationBackend() = default;
  // Runs the operation for one request on the calling handler thread, with `call` as the
  // ABI's call state (owned by the caller, valid until this returns). Returns an ops_code.
  virtual int invoke(const ops_host_v1* host, ops_call* call, std::string_view args_json) const = 0;
  // Begins a call on the session's strand without blocking; null when this backend cannot
  // (in-process handlers block) or should not now (a worker must be started first, the
  // operation is down, its calls ask for blocking services): then invoke() runs it on a
  // handler thread. `call` and `args_json` stay valid until the call ends.
  virtual std::unique_ptr<StartedCall> start_on_strand(const ops_host_v1* /*host*/,
                                                       ops_call* /*call*/,
                                                       std::string_view /*args_json*/,
                                                       const boost::asio::any_io_executor&) const {
    return nullptr;
  }
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
