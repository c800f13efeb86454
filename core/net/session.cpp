#include "net/session.hpp"

#include <fcntl.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "auth/handshake.hpp"
#include "auth/user_services.hpp"
#include "config/config.hpp"
#include "dispatch/handler_pool.hpp"
#include "dispatch/registry.hpp"
#include "opserver/frame.hpp"
#include "opserver/proof.hpp"
#include "plugin_host/host_api.hpp"
#include "proto/messages.hpp"

namespace ops::core {
namespace asio = boost::asio;

namespace {

constexpr auto kAwaitTuple = asio::as_tuple(asio::use_awaitable);

std::string to_json(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return {buffer.GetString(), buffer.GetSize()};
}

// Opens (creating if needed) the user's directory under the storage root, refusing a
// symlink in its place.
int open_user_dir(int storage_fd, const std::string& user) {
  int fd = ::openat(storage_fd, user.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    ::mkdirat(storage_fd, user.c_str(), 0750);
    fd = ::openat(storage_fd, user.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  }
  return fd;
}

}  // namespace

Session::Session(ServerContext& context, asio::ip::tcp::socket socket)
    : ctx_(context), connection_(std::move(socket)), timer_(connection_.socket().get_executor()) {
  peer_ = connection_.peer();
  // The accept loop has counted this connection in `connections` and `unauthenticated`.
  const std::size_t open = ctx_.connections.load();
  std::size_t peak = ctx_.connections_peak.load();
  while (open > peak && !ctx_.connections_peak.compare_exchange_weak(peak, open)) {
  }
}

Session::~Session() {
  if (authenticated_ && ctx_.services) ctx_.services->sessions().remove(user_, &connection_);
  ctx_.connections.fetch_sub(1);
  if (!authenticated_) ctx_.unauthenticated.fetch_sub(1);
  std::lock_guard lock(ctx_.sessions_mutex);
  ctx_.sessions.erase(this);
}

void Session::start() {
  {
    std::lock_guard lock(ctx_.sessions_mutex);
    ctx_.sessions.emplace(this, weak_from_this());
  }
  auto executor = connection_.socket().get_executor();
  auto self = shared_from_this();
  asio::co_spawn(
      executor, [self]() { return self->run(); }, asio::detached);
  asio::co_spawn(
      executor, [self]() { return self->watchdog(); }, asio::detached);
}

void Session::request_stop() {
  auto self = shared_from_this();
  asio::post(connection_.socket().get_executor(), [self] {
    self->stop_requested_ = true;
    // Waiting for a request (or a handshake): nothing is in flight, close now.
    if (self->idle_) self->connection_.close();
  });
}

void Session::set_deadline(Clock::time_point deadline) {
  bool earlier = deadline < deadline_;
  deadline_ = deadline;
  if (earlier) timer_.cancel();  // the watchdog re-arms for the nearer deadline
}

asio::awaitable<void> Session::watchdog() {
  auto self = shared_from_this();  // lives as long as the watchdog
  while (connection_.is_open()) {
    if (Clock::now() >= deadline_) {
      timed_out_ = true;
      connection_.close();  // fails the pending read or write
      co_return;
    }
    timer_.expires_at(deadline_);
    co_await timer_.async_wait(kAwaitTuple);
  }
}

asio::awaitable<bool> Session::flush() {
  // A reader that stops reading stalls these writes: §7 allows it the payload timeout of
  // no progress, re-armed by every byte that goes out.
  auto saved = deadline_;
  while (connection_.pending_output() > 0) {
    set_deadline(std::min(saved, Clock::now() + ctx_.config.payload_timeout));
    if (Status st = co_await connection_.flush_some(); !st) co_return false;
  }
  deadline_ = saved;
  co_return true;
}

asio::awaitable<Result<Header>> Session::read_frame(std::uint32_t max_len) {
  if (Status st = co_await connection_.fill(4); !st) co_return st.error();
  std::uint32_t len = frame::decode_length(connection_.data());
  // §1: the limit is checked before a single byte of the header is buffered for it.
  if (len < 2 || len > max_len) {
    co_return fail(ErrorCode::bad_frame, "frame length " + std::to_string(len) + " is outside 2.." +
                                             std::to_string(max_len));
  }
  if (Status st = co_await connection_.fill(4 + std::size_t{len}); !st) co_return st.error();
  std::string_view bytes(reinterpret_cast<const char*>(connection_.data()) + 4, len);
  Result<Header> header = parse_header(bytes);
  connection_.consume(4 + std::size_t{len});
  co_return header;
}

bool Session::complete_frame_buffered() const {
  if (connection_.buffered() < 4) return false;
  std::uint32_t len = frame::decode_length(connection_.data());
  return connection_.buffered() >= 4 + std::size_t{len};
}

asio::awaitable<void> Session::run() {
  auto self = shared_from_this();
  if (co_await handshake()) {
    while (!stop_requested_) {
      // Batch responses while more requests are already here; flush before waiting.
      if (!complete_frame_buffered() || connection_.pending_output() >= ctx_.config.output_buffer) {
        if (!co_await flush()) break;
      }
      if (stop_requested_) break;
      idle_ = true;
      set_deadline(Clock::now() + ctx_.config.idle_timeout);
      if (Status st = co_await connection_.wait_idle(); !st) {
        if (timed_out_) spdlog::info("conn {} user={} closed: idle timeout", peer_, user_);
        break;
      }
      Result<Header> header = co_await read_frame(ctx_.config.max_frame);
      idle_ = false;
      if (!header) {
        if (header.error().code == ErrorCode::bad_frame) {
          answer_error(std::nullopt, header.error());
          log_request("-", std::nullopt, &header.error(), 0, Clock::now());
          co_await flush();
        } else if (timed_out_) {
          spdlog::info("conn {} user={} closed: idle timeout", peer_, user_);
        }
        break;
      }
      if (!co_await serve(*header)) break;
    }
    co_await flush();
  }
  connection_.close();
  timer_.cancel();
  spdlog::debug("conn {} closed", peer_);
}

asio::awaitable<bool> Session::handshake() {
  // §7: one total deadline from accept; arriving bytes never extend it.
  set_deadline(Clock::now() + ctx_.config.handshake_timeout);
  idle_ = true;
  proof::Nonce nonce = proof::random_nonce();
  connection_.append(challenge_frame(proof::to_hex(nonce)));
  if (!co_await flush()) co_return false;

  // No buffer is held while a client thinks (or never answers): pre-auth connections are
  // the cheap kind an attacker opens by the thousand.
  if (Status st = co_await connection_.wait_idle(); !st) {
    if (ctx_.preauth_log.admit()) {
      spdlog::info("conn {} closed before authenticating{}", peer_,
                   timed_out_ ? ": handshake timeout" : "");
    }
    co_return false;
  }
  Result<Header> header = co_await read_frame(ctx_.config.max_auth_frame);
  idle_ = false;
  if (!header && header.error().code != ErrorCode::bad_frame) {
    if (ctx_.preauth_log.admit()) {
      spdlog::info("conn {} closed before authenticating{}", peer_,
                   timed_out_ ? ": handshake timeout" : "");
    }
    co_return false;
  }
  std::optional<Authenticator::Success> success;
  // Read before the key is checked: a rekey or unregister in between makes add() refuse.
  const std::uint64_t epoch = ctx_.services ? ctx_.services->sessions().epoch() : 0;
  // §7: before welcome only an `auth` frame is accepted, and it carries no payload.
  if (header && header->payload == 0) {
    success = ctx_.authenticator.verify(header->doc, nonce);
  }
  if (success && ctx_.services &&
      !ctx_.services->sessions().add(success->user, &connection_, weak_from_this(), epoch)) {
    success.reset();
  }
  if (!success) {
    connection_.append(auth_failed_frame());
    co_await flush();
    if (ctx_.preauth_log.admit()) spdlog::info("conn {} auth_failed", peer_);
    co_return false;
  }
  user_ = std::move(success->user);
  authenticated_ = true;
  ctx_.unauthenticated.fetch_sub(1);
  connection_.append(success->welcome_frame);
  spdlog::info("conn {} authenticated as {}", peer_, user_);
  co_return !stop_requested_;
}

void Session::answer_error(std::optional<std::uint64_t> id, const Error& error) {
  connection_.append(error_response_frame(id, error));
}

void Session::log_request(std::string_view op, std::optional<std::uint64_t> id, const Error* error,
                          std::uint64_t bytes, Clock::time_point started) const {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
  spdlog::info("req user={} op={} id={} result={} bytes={} us={}", user_, printable(op),
               id ? std::to_string(*id) : "null", error ? wire_name(error->code) : "ok", bytes, us);
}

asio::awaitable<bool> Session::serve(Header& header) {
  const auto started = Clock::now();
  auto interpreted = interpret_request(header);
  if (auto* bad = std::get_if<RequestError>(&interpreted)) {
    answer_error(bad->id, bad->error);
    log_request("-", bad->id, &bad->error, 0, started);
    co_return co_await discard(header.payload);
  }
  Request& request = std::get<Request>(interpreted);

  auto refuse = [&](ErrorCode code, std::string message) -> asio::awaitable<bool> {
    Error error{code, std::move(message)};
    answer_error(request.id, error);
    log_request(request.operate, request.id, &error, 0, started);
    co_return co_await discard(request.payload);
  };

  if (request.user != nullptr &&
      !(request.user->IsString() &&
        std::string_view(request.user->GetString(), request.user->GetStringLength()) == user_)) {
    co_return co_await refuse(ErrorCode::forbidden, "\"user\" must be the authenticated user");
  }
  if (request.operate == "describe") {
    if (request.payload > 0) {
      co_return co_await refuse(ErrorCode::bad_request, "describe takes no payload");
    }
    connection_.append(ok_response_frame(request.id, ctx_.registry.describe_for(user_), 0));
    log_request(request.operate, request.id, nullptr, 0, started);
    co_return true;
  }
  const Operation* op = ctx_.registry.find(request.operate);
  if (op == nullptr) {
    co_return co_await refuse(
        ErrorCode::unknown_operation,
        "no such operation: " + sanitize_message(request.operate.substr(0, 64)));
  }
  if (!op->policy.allows(user_)) {
    co_return co_await refuse(ErrorCode::forbidden, "not allowed to call " + op->name);
  }
  if (request.args != nullptr && !request.args->IsObject()) {
    co_return co_await refuse(ErrorCode::invalid_args, "\"args\" must be an object");
  }
  if (request.payload > 0 && op->payload != OPS_PAYLOAD_IN) {
    co_return co_await refuse(ErrorCode::bad_request, op->name + " takes no request payload");
  }
  if (op->policy.max_payload && request.payload > *op->policy.max_payload) {
    co_return co_await refuse(ErrorCode::payload_too_large,
                              "payload of " + std::to_string(request.payload) +
                                  " bytes is over this operation's limit of " +
                                  std::to_string(*op->policy.max_payload));
  }
  rapidjson::Value empty(rapidjson::kObjectType);
  const rapidjson::Value& args = request.args ? *request.args : empty;
  if (Status valid = validate_args(*op, args); !valid) {
    co_return co_await refuse(valid.error().code, valid.error().message);
  }

  // Earlier responses should not wait behind a slow handler, nor behind a payload; but
  // while more pipelined requests are already buffered, the batch goes out in one write.
  if (op->payload != OPS_PAYLOAD_NONE || !complete_frame_buffered()) {
    if (!co_await flush()) co_return false;
  }
  std::optional<Error> outcome;
  std::uint64_t bytes = 0;
  bool keep = co_await call_plugin(*op, request.id, to_json(args), request.payload, outcome, bytes);
  log_request(op->name, request.id, outcome ? &*outcome : nullptr, bytes, started);
  co_return keep;
}

namespace {

// A handler call that may outlive the session's wait for it (operation timeout): the
// worker keeps it alive until the handler returns.
struct PendingCall {
  explicit PendingCall(const asio::any_io_executor& executor) : timer(executor) {}
  ops_call call;
  std::string args_json;
  asio::steady_timer timer;  // fires at the operation deadline, cancelled on completion
  bool done = false;         // strand only
  int code = OPS_INTERNAL;   // strand only, once done
};

}  // namespace

asio::awaitable<bool> Session::call_plugin(const Operation& op, std::uint64_t id,
                                           std::string args_json, std::uint64_t payload,
                                           std::optional<Error>& outcome, std::uint64_t& bytes) {
  auto executor = connection_.socket().get_executor();
  auto pending = std::make_shared<PendingCall>(executor);
  ops_call& call = pending->call;
  call.connection = &connection_;
  call.op = &op;
  call.users = &ctx_.users;
  call.services = ctx_.services;
  call.user = user_;
  call.request_id = id;
  call.scratch_dir_fd = ctx_.scratch_fd;
  call.pace = Pace(ctx_.config.payload_timeout, ctx_.config.payload_min_rate,
                   ctx_.config.payload_rate_grace);
  call.payload_total = payload;
  call.payload_remaining = payload;
  call.user_dir_fd = open_user_dir(ctx_.storage_fd, user_);
  if (call.user_dir_fd < 0) {
    spdlog::error("cannot open the storage directory of {}: {}", user_, std::strerror(errno));
    outcome = Error{ErrorCode::unavailable, "your storage directory is not available"};
    answer_error(id, *outcome);
    co_return co_await discard(payload);
  }
  pending->args_json = std::move(args_json);

  // The watchdog stands aside: the handler's I/O has its own no-progress limit, and the
  // operation deadline below covers a handler that never starts any.
  deadline_ = Clock::time_point::max();
  const auto op_deadline = Clock::now() + op.policy.timeout.value_or(ctx_.config.operation_timeout);
  pending->timer.expires_at(op_deadline);
  ctx_.workers.submit([pending, executor, handler = op.handler] {
    bool abandoned;
    {
      std::lock_guard lock(pending->call.guard);
      abandoned = pending->call.abandoned;
    }
    // Answered `timeout` while it waited for a worker: it must not run at all.
    int code = abandoned ? OPS_TIMEOUT
                         : handler(host_vtable(), &pending->call, pending->args_json.data(),
                                   pending->args_json.size());
    asio::post(executor, [pending, code] {
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
      // Payload I/O is under way and bounded by its stall limit: wait for the handler.
      pending->timer.expires_at(Clock::time_point::max());
      continue;
    }
    // The handler has not touched the connection: answer for it and move on. It keeps
    // its worker thread until it returns; whatever it does later is dropped.
    call.abandoned = true;
    lock.unlock();
    spdlog::warn("op={} user={} id={}: no answer within {} ms, answered timeout", op.name, user_,
                 id,
                 std::chrono::duration_cast<std::chrono::milliseconds>(
                     op.policy.timeout.value_or(ctx_.config.operation_timeout))
                     .count());
    outcome = Error{ErrorCode::timeout, op.name + " did not finish in time"};
    answer_error(id, *outcome);
    co_return co_await discard(payload);
  }
  const int code = pending->code;
  bytes = call.bytes_in + call.bytes_out;

  if (code != OPS_OK && !call.error) {
    call.error = Error{error_code_from_abi(code), "operation failed"};
  }
  if (call.error) outcome = *call.error;
  // The response stream is broken or incomplete: §3 says close.
  if (call.broken || (call.result_sent && (call.error || call.response_payload_remaining > 0))) {
    if (!call.error) outcome = Error{ErrorCode::internal, "response payload incomplete"};
    spdlog::warn("conn {} user={} op={} id={}: connection closed mid-request{}", peer_, user_,
                 op.name, id, call.pace.below_min_rate() ? ": payload below payload_min_rate" : "");
    co_return false;
  }
  if (!call.result_sent) {
    if (!call.error) call.error = Error{ErrorCode::internal, "internal error"};
    outcome = *call.error;
    answer_error(id, *outcome);
  }
  co_return co_await discard(call.payload_remaining);
}

asio::awaitable<bool> Session::discard(std::uint64_t n) {
  if (n == 0) co_return true;
  // §3: beyond the limit, answer (already queued) and close instead of reading on.
  if (n > ctx_.config.discard_limit) {
    co_await flush();
    co_return false;
  }
  Pace pace(ctx_.config.payload_timeout, ctx_.config.payload_min_rate,
            ctx_.config.payload_rate_grace);
  pace.start();
  std::size_t now = static_cast<std::size_t>(std::min<std::uint64_t>(n, connection_.buffered()));
  connection_.consume(now);
  n -= now;
  while (n > 0) {
    set_deadline(pace.deadline());
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(n, 64 * 1024));
    if (Status st = co_await connection_.fill(want); !st) co_return false;
    connection_.consume(want);
    pace.credit(want);
    n -= want;
  }
  co_return true;
}

}  // namespace ops::core
