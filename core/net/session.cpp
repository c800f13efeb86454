#include "net/session.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "auth/handshake.hpp"
#include "auth/user_services.hpp"
#include "config/config.hpp"
#include "dispatch/dispatcher.hpp"
#include "dispatch/plugin_call.hpp"
#include "dispatch/registry.hpp"
#include "metrics/audit_log.hpp"
#include "metrics/metrics.hpp"
#include "metrics/request_record.hpp"
#include "net/await_tuple.hpp"
#include "net/defender.hpp"
#include "opserver/frame.hpp"
#include "opserver/proof.hpp"
#include "opserver/strict_json.hpp"
#include "plugin_host/host_api.hpp"
#include "proto/messages.hpp"

namespace ops::core {
namespace asio = boost::asio;

namespace {
// The metrics label of a request for `name`: only enabled operations (and describe) are
// labels of their own; any other name a client sends is "unknown", so clients cannot add
// series.
std::string_view operation_label(const Snapshot& snapshot, std::string_view name) {
  if (name == "describe") return name;
  if (const Operation* op = snapshot.registry->find(name)) return op->name;
  return kUnknownOperation;
}

}  // namespace

Session::Session(ServerContext& context, std::unique_ptr<Transport> transport)
    : ctx_(context), connection_(std::move(transport)), timer_(connection_.executor()) {
  peer_ = connection_.peer();
  id_ = ctx_.next_connection_id.fetch_add(1);
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
  auto executor = connection_.executor();
  auto self = shared_from_this();
  asio::co_spawn(
      executor, [self]() { return self->run(); }, asio::detached);
  asio::co_spawn(
      executor, [self]() { return self->watchdog(); }, asio::detached);
}

void Session::request_stop() {
  auto self = shared_from_this();
  asio::post(connection_.executor(), [self] {
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

asio::awaitable<bool> Session::flush(const RuntimeSettings& settings) {
  // A reader that stops reading stalls these writes: §7 allows it the payload timeout of
  // no progress, re-armed by every byte that goes out.
  auto saved = deadline_;
  while (connection_.pending_output() > 0) {
    set_deadline(std::min(saved, Clock::now() + settings.payload_timeout));
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
  header_arrived_ = connection_.arrival_of(4 + std::size_t{len});
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
    // Waiting and reading use a copy of the settings of the snapshot the last request
    // took (at most one request old); each request takes the newest snapshot (one atomic
    // load) and lets it go when it ends, so an idle connection holds no old plugins.
    RuntimeSettings settings = ctx_.snapshots.current()->settings;
    while (!stop_requested_) {
      // Batch responses while more requests are already here; flush before waiting.
      if (!complete_frame_buffered() || connection_.pending_output() >= settings.output_buffer) {
        if (!co_await flush(settings)) break;
      }
      if (stop_requested_) break;
      idle_ = true;
      set_deadline(Clock::now() + settings.idle_timeout);
      if (Status st = co_await connection_.wait_idle(); !st) {
        if (timed_out_) spdlog::info("conn {} user={} closed: idle timeout", peer_, user_);
        break;
      }
      Result<Header> header = co_await read_frame(settings.max_frame);
      idle_ = false;
      if (!header) {
        if (header.error().code == ErrorCode::bad_frame) {
          answer_error(std::nullopt, header.error());
          log_request(RequestRecord{"-", kUnknownOperation, std::nullopt, &header.error()},
                      Clock::now());
          co_await flush(settings);
        } else if (timed_out_) {
          spdlog::info("conn {} user={} closed: idle timeout", peer_, user_);
        }
        break;
      }
      std::shared_ptr<const Snapshot> snapshot = ctx_.snapshots.current();
      settings = snapshot->settings;
      if (!co_await serve(*header, header_arrived_, *snapshot)) break;
    }
    co_await flush(settings);
  }
  connection_.close();
  timer_.cancel();
  spdlog::debug("conn {} closed", peer_);
}

asio::awaitable<bool> Session::handshake() {
  std::shared_ptr<const Snapshot> snapshot = ctx_.snapshots.current();
  const RuntimeSettings& settings = snapshot->settings;
  // §7, §8: one total deadline from accept, covering the transport's own handshake (PROXY
  // header, TLS); arriving bytes never extend it.
  set_deadline(Clock::now() + settings.handshake_timeout);
  idle_ = true;
  if (auto ec = co_await connection_.transport().handshake(); ec) {
    if (ctx_.preauth_log.admit()) {
      spdlog::info("conn {} closed in the transport handshake: {}", peer_,
                   timed_out_ ? "handshake timeout" : ec.message());
    }
    if (ctx_.metrics) ctx_.metrics->on_handshake(HandshakeResult::transport_error);
    co_return false;
  }
  peer_ = connection_.peer();  // a PROXY header may have named the real client
  // Behind a PROXY header the accept loop saw the balancer; the client's own address is
  // only known now, so a ban is checked (again) here, before any OPS/1 work.
  if (banned_peer()) {
    if (ctx_.metrics) ctx_.metrics->on_connection_refused_banned();
    co_return false;
  }
  // §8: on TLS with channel binding the challenge offers hmac-sha256-plus only, and the
  // proofs cover the channel's tls-exporter value.
  const std::optional<ChannelBinding> binding = connection_.transport().channel_binding();
  proof::Nonce nonce = proof::random_nonce();
  connection_.append(challenge_frame(proof::to_hex(nonce), binding.has_value()));
  if (!co_await flush(settings)) co_return false;

  // No buffer is held while a client thinks (or never answers): pre-auth connections are
  // the cheap kind an attacker opens by the thousand.
  if (Status st = co_await connection_.wait_idle(); !st) {
    if (ctx_.preauth_log.admit()) {
      spdlog::info("conn {} closed before authenticating{}", peer_,
                   timed_out_ ? ": handshake timeout" : "");
    }
    if (ctx_.metrics) ctx_.metrics->on_handshake(HandshakeResult::abandoned);
    co_return false;
  }
  Result<Header> header = co_await read_frame(settings.max_auth_frame);
  idle_ = false;
  if (!header && header.error().code != ErrorCode::bad_frame) {
    if (ctx_.preauth_log.admit()) {
      spdlog::info("conn {} closed before authenticating{}", peer_,
                   timed_out_ ? ": handshake timeout" : "");
    }
    if (ctx_.metrics) ctx_.metrics->on_handshake(HandshakeResult::abandoned);
    co_return false;
  }
  std::optional<Authenticator::Success> success;
  // Read before the key is checked: a rekey or unregister in between makes add() refuse.
  const std::uint64_t epoch = ctx_.services ? ctx_.services->sessions().epoch() : 0;
  // §7: before welcome only an `auth` frame is accepted, and it carries no payload.
  if (header && header->payload == 0) {
    success = ctx_.authenticator.verify(header->doc, nonce, binding);
  }
  if (success && ctx_.services &&
      !ctx_.services->sessions().add(success->user, &connection_, weak_from_this(), epoch)) {
    success.reset();
  }
  if (!success) {
    login_failed(header ? &*header : nullptr);
    connection_.append(auth_failed_frame());
    co_await flush(settings);
    if (ctx_.preauth_log.admit()) spdlog::info("conn {} auth_failed", peer_);
    co_return false;
  }
  user_ = std::move(success->user);
  authenticated_ = true;
  if (ctx_.metrics) ctx_.metrics->on_handshake(HandshakeResult::ok);
  ctx_.unauthenticated.fetch_sub(1);
  connection_.append(success->welcome_frame);
  spdlog::info("conn {} authenticated as {}", peer_, user_);
  co_return !stop_requested_;
}

void Session::answer_error(std::optional<std::uint64_t> id, const Error& error) {
  connection_.append(error_response_frame(id, error));
}

void Session::log_request(const RequestRecord& record, Clock::time_point started) const {
  const auto took = Clock::now() - started;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(took).count();
  spdlog::info("req user={} op={} id={} result={} bytes={} us={}", user_,
               printable(record.operation), record.id ? std::to_string(*record.id) : "null",
               record.error ? wire_name(record.error->code) : "ok",
               record.bytes_in + record.bytes_out, us);
  if (ctx_.metrics) {
    ctx_.metrics->on_request(
        record.label, record.error ? std::optional(record.error->code) : std::nullopt,
        record.bytes_in, record.bytes_out, std::chrono::duration<double>(took).count());
  }
  if (ctx_.audit) ctx_.audit->request(id_, peer_, user_, record, took);
}

bool Session::banned_peer() const {
  if (!ctx_.defender || !ctx_.defender->enabled()) return false;
  auto address = Defender::address_of_peer(peer_);
  if (!address || !ctx_.defender->banned(*address)) return false;
  if (ctx_.preauth_log.admit()) spdlog::info("conn {} closed: banned by the defender", peer_);
  return true;
}

void Session::login_failed(const Header* auth_frame) {
  if (ctx_.metrics) ctx_.metrics->on_handshake(HandshakeResult::auth_failed);
  if (ctx_.defender && ctx_.defender->enabled()) {
    if (auto address = Defender::address_of_peer(peer_)) ctx_.defender->on_failure(*address);
  }
  if (ctx_.audit) {
    // Only the name tried: never the key, the proof or anything else of the frame.
    std::string_view tried;
    if (auth_frame && auth_frame->doc.IsObject()) {
      auto it = auth_frame->doc.FindMember("user");
      if (it != auth_frame->doc.MemberEnd() && it->value.IsString()) {
        tried = std::string_view(it->value.GetString(), it->value.GetStringLength());
      }
    }
    ctx_.audit->failed_login(id_, peer_, tried);
  }
}

asio::awaitable<bool> Session::serve(Header& header, Clock::time_point arrived,
                                     const Snapshot& snapshot) {
  const auto started = Clock::now();
  // `snapshot` is held by run() until this request ends: its settings and operations
  // cannot change under it.
  const RuntimeSettings& settings = snapshot.settings;
  auto interpreted = interpret_request(header);
  if (auto* bad = std::get_if<RequestError>(&interpreted)) {
    answer_error(bad->id, bad->error);
    log_request(RequestRecord{"-", kUnknownOperation, bad->id, &bad->error}, started);
    co_return co_await discard(header.payload, settings);
  }
  Request& request = std::get<Request>(interpreted);

  auto refuse = [&](const Error& error) -> asio::awaitable<bool> {
    answer_error(request.id, error);
    log_request(RequestRecord{request.operate, operation_label(snapshot, request.operate),
                              request.id, &error, 0, 0, request.args},
                started);
    co_return co_await discard(request.payload, settings);
  };

  Decision decision = dispatch(snapshot, user_, request);
  if (const Error* error = std::get_if<Error>(&decision)) co_return co_await refuse(*error);

  // §12: counted from the header's arrival; passed before the operation starts, it is
  // answered `timeout` without running.
  const auto deadline = request.deadline_ms
                            ? arrived + std::chrono::milliseconds(*request.deadline_ms)
                            : Clock::time_point::max();
  if (Clock::now() >= deadline) {
    // A named local: GCC 12 may destroy a temporary in co_await's operand twice.
    const Error late{ErrorCode::timeout, "the request's deadline passed before it could start"};
    co_return co_await refuse(late);
  }

  if (std::holds_alternative<DescribeDecision>(decision)) {
    connection_.append(ok_response_frame(request.id, snapshot.registry->describe_for(user_), 0));
    log_request(RequestRecord{request.operate, "describe", request.id}, started);
    co_return true;
  }
  const CallDecision& call = std::get<CallDecision>(decision);
  const Operation& op = *call.op;

  // Earlier responses should not wait behind a slow handler, nor behind a payload; but
  // while more pipelined requests are already buffered, the batch goes out in one write.
  if (op.payload != OPS_PAYLOAD_NONE || !complete_frame_buffered()) {
    if (!co_await flush(settings)) co_return false;
  }
  // The watchdog stands aside: the handler's I/O has its own no-progress limit, and the
  // call's deadline covers a handler that never starts any.
  deadline_ = Clock::time_point::max();
  CallEnvironment env{connection_.executor(), connection_, ctx_.workers,    ctx_.users,
                      ctx_.services,          settings,    ctx_.storage_fd, ctx_.scratch_fd,
                      ctx_.node_scratch_fd};
  CallRequest run{&op,
                  user_,
                  request.id,
                  call.args ? json::to_string(*call.args) : std::string("{}"),
                  request.payload,
                  deadline,
                  ctx_.audit != nullptr};
  CallOutcome outcome = co_await run_plugin_call(env, std::move(run));
  if (outcome.answer) answer_error(request.id, *outcome.error);
  log_request(RequestRecord{op.name, op.name, request.id, outcome.error ? &*outcome.error : nullptr,
                            outcome.bytes_in, outcome.bytes_out, call.args, outcome.result_sha256},
              started);
  if (outcome.close) {
    spdlog::warn("conn {} user={} op={} id={}: connection closed mid-request{}", peer_, user_,
                 op.name, request.id,
                 outcome.below_min_rate ? ": payload below payload_min_rate" : "");
    co_return false;
  }
  co_return co_await discard(outcome.unread_payload, settings);
}

asio::awaitable<bool> Session::discard(std::uint64_t n, const RuntimeSettings& settings) {
  if (n == 0) co_return true;
  // §3: beyond the limit, answer (already queued) and close instead of reading on.
  if (n > settings.discard_limit) {
    co_await flush(settings);
    co_return false;
  }
  Pace pace(settings.payload_timeout, settings.payload_min_rate, settings.payload_rate_grace);
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
