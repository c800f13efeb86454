#include "dispatch/plugin_call.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>

#include "dispatch/handler_pool.hpp"
#include "dispatch/registry.hpp"
#include "net/await_tuple.hpp"
#include "net/connection.hpp"
#include "plugin_host/host_api.hpp"

namespace ops::core {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {
// Opens (creating if needed) the user's directory under the storage root, refusing a
// symlink in its place.
Fd open_user_dir(int storage_fd, const std::string& user) {
  int fd = ::openat(storage_fd, user.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    ::mkdirat(storage_fd, user.c_str(), 0750);
    fd = ::openat(storage_fd, user.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  }
  return Fd(fd);
}

// A call that may outlive the session's wait for it (a deadline): the handler thread keeps
// it alive until the operation returns, so nothing it points to dangles.
struct PendingCall {
  explicit PendingCall(const asio::any_io_executor& executor) : timer(executor) {}
  ops_call call;
  std::string args_json;
  // Holds the operation's backend (and so its .so) for as long as the handler runs, even
  // when the session has moved on.
  std::shared_ptr<const OperationBackend> backend;
  // Set when the call began on the session's strand and a handler thread finishes it.
  std::unique_ptr<StartedCall> started;
  asio::steady_timer timer;  // fires at the deadline, cancelled on completion
  bool done = false;         // strand only
  int code = OPS_INTERNAL;   // strand only, once done
};

CallOutcome refused(Error error, std::uint64_t payload) {
  CallOutcome out;
  out.error = std::move(error);
  out.answer = true;
  out.unread_payload = payload;
  return out;
}

CallOutcome settle_outcome(ops_call& call, int code, const Operation& op);

// What the call state says once the handler has returned `code`, with the bytes it moved.
CallOutcome settle(ops_call& call, int code, const Operation& op) {
  CallOutcome out = settle_outcome(call, code, op);
  out.bytes_in = call.bytes_in;
  out.bytes_out = call.bytes_out;
  out.result_sha256 = std::move(call.result_sha256);
  return out;
}

CallOutcome settle_outcome(ops_call& call, int code, const Operation& op) {
  CallOutcome out;
  out.bytes = call.bytes_in + call.bytes_out;
  if (call.deadline_passed && !call.result_sent) {
    // §12: the payload stopped at the deadline with no byte lost; whatever the handler
    // said after that, the answer is `timeout` and the rest of the payload is discarded.
    out = refused(Error{ErrorCode::timeout, op.name + " did not finish before the request's "
                                                      "deadline; nothing was stored"},
                  call.payload_remaining);
    out.bytes = call.bytes_in + call.bytes_out;
    return out;
  }
  if (code != OPS_OK && !call.error) {
    call.error = Error{error_code_from_abi(code), "operation failed"};
  }
  if (call.error) out.error = *call.error;
  // §3: a response stream that is broken or incomplete closes the connection.
  if (call.broken || (call.result_sent && (call.error || call.response_payload_remaining > 0))) {
    if (!call.error) out.error = Error{ErrorCode::internal, "response payload incomplete"};
    out.close = true;
    out.below_min_rate = call.pace.below_min_rate();
    return out;
  }
  if (!call.result_sent) {
    if (!call.error) call.error = Error{ErrorCode::internal, "internal error"};
    out.error = *call.error;
    out.answer = true;
  }
  out.unread_payload = call.payload_remaining;
  return out;
}

}  // namespace

asio::awaitable<CallOutcome> run_plugin_call(const CallEnvironment& env, CallRequest request) {
  const Operation& op = *request.op;
  auto pending = std::make_shared<PendingCall>(env.strand);
  ops_call& call = pending->call;
  call.connection = &env.connection;
  call.op = &op;
  call.users = &env.users;
  call.services = env.services;
  call.user = request.user;
  call.request_id = request.id;
  call.scratch_dir_fd = env.scratch_fd;
  call.node_scratch_dir_fd = env.node_scratch_fd;
  call.pace = Pace(env.settings.payload_timeout, env.settings.payload_min_rate,
                   env.settings.payload_rate_grace);
  call.payload_total = request.payload;
  call.payload_remaining = request.payload;
  call.deadline = request.deadline;
  call.capture_result_sha256 = request.want_result_sha256;
  call.user_dir = open_user_dir(env.storage_fd, request.user);
  if (!call.user_dir.valid()) {
    spdlog::error("cannot open the storage directory of {}: {}", request.user,
                  std::strerror(errno));
    co_return refused(Error{ErrorCode::unavailable, "your storage directory is not available"},
                      request.payload);
  }
  pending->args_json = std::move(request.args_json);
  pending->backend = op.backend;

  const auto op_timeout = op.policy.timeout.value_or(env.settings.operation_timeout);
  const auto op_deadline = std::min(Clock::now() + op_timeout, request.deadline);
  call.op_deadline = op_deadline;
  call.stall_timeout = env.settings.payload_timeout;
  pending->timer.expires_at(op_deadline);
  // A backend that can begin the call here (an isolated operation with an idle worker)
  // needs no handler thread unless the call does something that blocks.
  if (auto started =
          pending->backend->start_on_strand(host_vtable(), &call, pending->args_json, env.strand)) {
    int code = OPS_INTERNAL;
    if (co_await started->run_on_strand(code) == StartedCall::Step::done) {
      co_return settle(call, code, op);
    }
    pending->started = std::move(started);
  }
  env.workers.submit([pending, strand = env.strand] {
    bool abandoned;
    {
      std::lock_guard lock(pending->call.guard);
      abandoned = pending->call.abandoned;
    }
    // Answered `timeout` while it waited for a handler thread: it must not run at all (a
    // call begun on the strand only cleans up).
    int code = pending->started ? pending->started->finish_blocking(abandoned)
               : abandoned
                   ? OPS_TIMEOUT
                   : pending->backend->invoke(host_vtable(), &pending->call, pending->args_json);
    asio::post(strand, [pending, code] {
      pending->done = true;
      pending->code = code;
      pending->timer.cancel();
    });
  });

  while (!pending->done) {
    co_await pending->timer.async_wait(kAwaitTuple);
    if (pending->done || Clock::now() < op_deadline) continue;
    std::unique_lock lock(call.guard);
    if (call.io_started) {
      // Payload I/O is under way, bounded by its stall limit and (for the request
      // payload) by the request's deadline: wait for the handler.
      pending->timer.expires_at(Clock::time_point::max());
      continue;
    }
    // The handler has not touched the connection: answer for it and move on. It keeps
    // its handler thread until it returns; whatever it does later is dropped.
    call.abandoned = true;
    lock.unlock();
    const bool by_request = request.deadline <= op_deadline;
    if (!by_request) {
      spdlog::warn("op={} user={} id={}: no answer within {} ms, answered timeout", op.name,
                   request.user, request.id,
                   std::chrono::duration_cast<std::chrono::milliseconds>(op_timeout).count());
    }
    co_return refused(Error{ErrorCode::timeout,
                            by_request ? op.name + " did not finish before the request's deadline"
                                       : op.name + " did not finish in time"},
                      request.payload);
  }
  co_return settle(call, pending->code, op);
}

}  // namespace ops::core
