// The host side of the plugin ABI: the per-request state a handler sees as `ops_call*`,
// and the ops_host_v1 vtable whose functions act on it. A CallState lives on the session
// coroutine's frame and is used by exactly one worker thread while the handler runs.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "auth/user_services.hpp"
#include "net/pace.hpp"
#include "opserver/error.hpp"
#include "opserver/fd.hpp"
#include "opserver/plugin_abi.h"

namespace ops::core {
class Connection;
class UserStore;
struct Operation;
}  // namespace ops::core

struct ops_call {
  ops_call() = default;
  ops_call(const ops_call&) = delete;
  ops_call& operator=(const ops_call&) = delete;
  ~ops_call() = default;

  ops::core::Connection* connection = nullptr;
  const ops::core::Operation* op = nullptr;
  ops::core::UserStore* users = nullptr;
  std::string user;
  std::uint64_t request_id = 0;
  ops::Fd user_dir;  // the user's storage directory, open for this call
  int scratch_dir_fd = -1;
  int node_scratch_dir_fd = -1;  // <scratch>/node-<id>: this server's temporaries
  ops::core::Pace pace;          // limits every blocking transfer of this call

  // §12: the request's deadline. Reading request payload stops at it (the session then
  // answers `timeout`); once a result is sent it no longer applies.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  bool deadline_passed = false;  // a payload read stopped at `deadline`
  // When the session gives up on a handler that has not touched the connection (the
  // operation timeout, or the request's deadline if sooner), and how long a transfer may
  // stall: an isolated call (isolation/process_backend.cpp) bounds its worker by them.
  std::chrono::steady_clock::time_point op_deadline = std::chrono::steady_clock::time_point::max();
  std::chrono::milliseconds stall_timeout{60000};

  std::uint64_t payload_total = 0;
  std::uint64_t payload_remaining = 0;  // request payload bytes not yet read
  std::uint64_t response_payload_remaining = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;

  // Set once the handler touches the connection or creates a user. Until then the session may give
  // up on a slow handler (operation timeout): it sets `abandoned`, and every later host call that
  // would touch the connection fails instead. Both under `guard`.
  std::mutex guard;
  bool io_started = false;
  bool abandoned = false;

  bool result_sent = false;
  bool broken = false;  // the byte stream can no longer be trusted: close the connection
  std::optional<ops::Error> error;
  // The host itself recorded `error` (a misused or invalid result): the plugin's own
  // fail() after that, reacting to the failed host call, does not replace it.
  bool host_error = false;

  // Users, quotas, sessions and bandwidth (null in tests that build a call by hand), and
  // this call's reservations and buckets, released when the call ends.
  ops::core::UserServices* services = nullptr;
  ops::core::CallUserState user_state;

  // The audit log wants the result's "sha256" (download, upload): copied at send_result
  // only when this is set, so calls pay nothing without an audit log.
  bool capture_result_sha256 = false;
  std::string result_sha256;
};

namespace ops::core {

// The vtable handed to every handler. Valid for the life of the process.
const ops_host_v1* host_vtable() noexcept;

// What the vtable's get_usage would return, when that can be had without waiting
// (UserServices::usage_json_now); nullopt when only get_usage itself can answer. Lets an
// isolated call serve its worker's get_usage on the session's I/O thread.
std::optional<std::int64_t> get_usage_now(ops_call* call, const char* name, char* buf,
                                          std::size_t cap);

// Messages from plugins go to clients: keep them short, valid UTF-8, no control bytes.
std::string sanitize_message(std::string_view message);
// For logs: control characters and invalid bytes escaped as \xNN, at most `limit` bytes.
std::string printable(std::string_view text, std::size_t limit = 128);

}  // namespace ops::core
