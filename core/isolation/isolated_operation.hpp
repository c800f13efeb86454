// Builds the worker pool of one isolated operation from its ops.json entry: the command
// line of the worker host (opserver-plugin-host, beside the server's executable) with the
// operation's limits and confinement, and the first worker started to learn what the
// operation is (summary, payload, args schema).
#pragma once

#include <memory>
#include <string>

#include "config/config.hpp"
#include "isolation/process_backend.hpp"

namespace ops::isolation {

struct IsolatedOperation {
  std::shared_ptr<ProcessBackend> backend;
  // What the first worker said; empty when the operation is down from the start.
  std::optional<WorkerReady> ready;
};

// The worker host binary: opserver-plugin-host next to the running executable, else the
// one this build made (tests run from elsewhere).
std::string worker_host_path();

// Never fails: an operation whose worker cannot start is returned down (and logged), so
// that one broken plugin does not keep the rest of the server from starting.
IsolatedOperation start_isolated_operation(const std::string& name,
                                           const core::OperationPolicy& policy,
                                           const core::Config& config);

}  // namespace ops::isolation
