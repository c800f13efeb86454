// One call of an operation for one request, from the session's side: it prepares the
// ABI's call state (owned here, not by the session), runs the operation on a handler
// thread, waits for it or for its deadline, and reports one outcome. The session only
// acts on that outcome: answer, discard, or close.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "opserver/error.hpp"

namespace ops::core {

class Connection;
class HandlerPool;
class UserServices;
class UserStore;
struct Operation;

struct CallOutcome {
  std::optional<Error> error;        // how the request ended (for the log); none: ok
  bool answer = false;               // the session must send `error` as the response
  bool close = false;                // the byte stream is broken: close the connection
  bool below_min_rate = false;       // ... because the payload fell below payload_min_rate
  std::uint64_t unread_payload = 0;  // request payload bytes left to discard
  std::uint64_t bytes = 0;           // payload bytes moved either way
  std::uint64_t bytes_in = 0;        // ... of which request payload read (metrics, audit)
  std::uint64_t bytes_out = 0;       // ... of which response payload written
  std::string result_sha256;         // the result's "sha256", when asked for (audit log)
};

struct CallRequest {
  const Operation* op = nullptr;
  std::string user;
  std::uint64_t id = 0;
  std::string args_json;
  std::uint64_t payload = 0;
  // §12: the request's deadline (time_point::max() when it has none).
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  bool want_result_sha256 = false;  // the audit log records the result's "sha256"
};

struct CallEnvironment {
  boost::asio::any_io_executor strand;
  Connection& connection;
  HandlerPool& workers;
  UserStore& users;
  UserServices* services;  // quotas, users online, bandwidth (null in some tests)
  const RuntimeSettings& settings;
  int storage_fd = -1;
  int scratch_fd = -1;
  int node_scratch_fd = -1;  // <scratch>/node-<id> (storage/node_scratch.hpp)
};

// Runs `request` and returns how it ended. Must be awaited on env.strand; the connection
// is the handler's from submission until the result is posted back.
boost::asio::awaitable<CallOutcome> run_plugin_call(const CallEnvironment& env,
                                                    CallRequest request);

}  // namespace ops::core
