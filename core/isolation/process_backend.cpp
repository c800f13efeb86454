#include "isolation/process_backend.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "isolation/json_text.hpp"
#include "isolation/worker_codes.hpp"
#include "plugin_host/host_api.hpp"

namespace ops::isolation {
namespace {

namespace asio = boost::asio;
using Value = rapidjson::Value;

// Typed members of a host request; a missing or mistyped one makes the request malformed.
struct Args {
  const Value& v;
  bool ok = true;

  std::string str(const char* key) {
    auto it = v.FindMember(key);
    if (it == v.MemberEnd() || !it->value.IsString()) {
      ok = false;
      return {};
    }
    return {it->value.GetString(), it->value.GetStringLength()};
  }
  std::uint64_t u64(const char* key) {
    auto it = v.FindMember(key);
    if (it == v.MemberEnd() || !it->value.IsUint64()) {
      ok = false;
      return 0;
    }
    return it->value.GetUint64();
  }
  std::int64_t i64(const char* key) {
    auto it = v.FindMember(key);
    if (it == v.MemberEnd() || !it->value.IsInt64()) {
      ok = false;
      return 0;
    }
    return it->value.GetInt64();
  }
  int code(const char* key) {
    auto it = v.FindMember(key);
    int c = -1;
    if (it == v.MemberEnd() || !code_from_json(it->value, c)) ok = false;
    return c;
  }
  bool flag(const char* key) {
    auto it = v.FindMember(key);
    return it != v.MemberEnd() && it->value.IsBool() && it->value.GetBool();
  }
};

// The descriptors a call carries: the user's directory, and the scratch directories too
// when the worker does not have them yet (they never change, so it keeps them).
class CallFds {
 public:
  CallFds(const ops_host_v1* host, ops_call* call, Worker& worker, bool keeps_scratch)
      : fds_{host->user_dir(call), host->scratch_dir(call), host->node_scratch_dir(call)},
        count_(worker.has_scratch ? 1 : 3) {
    // A worker that fails to take this call is not used again.
    worker.has_scratch = keeps_scratch;
  }
  std::span<const int> span() const { return {fds_.data(), count_}; }

 private:
  std::array<int, 3> fds_;
  std::size_t count_;
};

std::string ret(std::int64_t value) {
  return "{\"ret\":" + std::to_string(value) + "}";
}

// One conversation: the worker's requests for one call, served on this handler thread.
class Conversation {
 public:
  Conversation(const ops_host_v1* host, ops_call* call, Worker& worker)
      : host_(host), call_(call), worker_(worker) {}

  enum class End { done, worker_failed, timed_out };

  // Runs until the worker's "done" (its code in `code`) or until it fails.
  End run(int& code, std::string& why) {
    for (;;) {
      WorkerMessage message;
      const ChannelStatus st = worker_.channel.receive(message, wait_deadline());
      if (st == ChannelStatus::timeout) return End::timed_out;
      if (st != ChannelStatus::ok) {
        why = failure(st);
        return End::worker_failed;
      }
      if (auto end = handle(message, code, why)) return *end;
    }
  }

  // Serves one message and sends its reply; the end of the conversation, or nullopt.
  std::optional<End> handle(const WorkerMessage& message, int& code, std::string& why) {
    if (!safe_on_strand(message, SIZE_MAX)) blocked_ = true;
    std::string reply;
    std::span<const std::byte> data;
    bool wants_reply = false;
    if (auto end = serve_message(message, code, why, reply, data, wants_reply)) return end;
    if (wants_reply && !worker_.channel.send(reply, data, {}, wait_deadline())) {
      why = "stopped reading its socket";
      return End::worker_failed;
    }
    return std::nullopt;
  }

  // Serves one message: `reply` (and `data`) to send when `wants_reply`; the end of the
  // conversation, or nullopt.
  std::optional<End> serve_message(const WorkerMessage& message, int& code, std::string& why,
                                   std::string& reply, std::span<const std::byte>& data,
                                   bool& wants_reply) {
    const Value& m = message.json;
    wants_reply = false;
    if (auto done = m.FindMember("done"); done != m.MemberEnd()) {
      if (!code_from_json(done->value, code)) {
        why = "said \"done\" with an unknown code";
        return End::worker_failed;
      }
      return End::done;
    }
    auto fn = m.FindMember("host");
    if (fn == m.MemberEnd() || !fn->value.IsString()) {
      why = "sent a message that is neither \"host\" nor \"done\"";
      return End::worker_failed;
    }
    if (!serve(std::string_view(fn->value.GetString(), fn->value.GetStringLength()), m,
               message.bytes, reply, data, why)) {
      return End::worker_failed;
    }
    // A request the worker sent without waiting for its answer (send_result, fail, log,
    // usage_adjust, marked "reply": false) gets none.
    auto r = m.FindMember("reply");
    wants_reply = !(r != m.MemberEnd() && r->value.IsBool() && !r->value.GetBool());
    return std::nullopt;
  }

  // Whether the worker asked for something an I/O thread must not do (handle() only).
  bool blocked() const noexcept { return blocked_; }

  // Whether `message` may be served on an I/O thread: it neither blocks nor waits for
  // anything (a result without payload only joins the connection's output buffer);
  // payload, quotas, user administration may wait on a disk, a lock or a database. Called
  // before every serve_message(); a get_usage it can answer from memory (a file user
  // store, a user counted already) is answered here and the reply kept for serve_message().
  bool safe_on_strand(const WorkerMessage& message, std::size_t buffered) {
    const Value& m = message.json;
    // Bytes that follow a message may have to be waited for, unless they are here already
    // (a result sent as raw bytes comes in the same write as its line).
    if (message.bytes > 0 && message.bytes > buffered) return false;
    if (m.HasMember("done")) return true;
    auto fn = m.FindMember("host");
    if (fn == m.MemberEnd() || !fn->value.IsString()) return true;  // refused either way
    const std::string_view name(fn->value.GetString(), fn->value.GetStringLength());
    if (name == "fail" || name == "fail_details" || name == "log") return message.bytes == 0;
    if (name == "get_usage") return message.bytes == 0 && usage_now(m);
    if (name != "send_result") return false;
    auto size = m.FindMember("payload_size");
    return size != m.MemberEnd() && size->value.IsUint64() && size->value.GetUint64() == 0;
  }

  static std::string failure(ChannelStatus st) {
    return st == ChannelStatus::closed ? "ended during the call" : "broke the protocol";
  }

  // While the handler has not touched the connection, the operation's deadline bounds it
  // (as in-process); once payload moves, a worker may go quiet for the payload stall limit.
  Clock::time_point wait_deadline() const {
    bool io_started;
    {
      std::lock_guard lock(call_->guard);
      io_started = call_->io_started;
    }
    if (!io_started) return call_->op_deadline;
    return std::max(call_->op_deadline, Clock::now() + call_->stall_timeout);
  }

 private:
  bool serve(std::string_view fn, const Value& m, std::uint64_t bytes, std::string& reply,
             std::span<const std::byte>& data, std::string& why) {
    Args a{m};
    if (bytes > 0 && fn != "write_payload" && fn != "send_result") {
      why = "attached bytes to \"" + std::string(fn.substr(0, 32)) + "\"";
      return false;
    }
    if (fn == "read_payload") {
      const std::uint64_t cap = std::min<std::uint64_t>(a.u64("cap"), kMaxChunk);
      if (!a.ok || cap == 0) return malformed(fn, why);
      buffer_.resize(kMaxChunk);
      const std::int64_t n = host_->read_payload(call_, buffer_.data(), cap);
      if (n > 0) {
        reply = "{\"ret\":" + std::to_string(n) + ",\"bytes\":" + std::to_string(n) + "}";
        data = std::span(reinterpret_cast<const std::byte*>(buffer_.data()),
                         static_cast<std::size_t>(n));
      } else {
        reply = ret(n);
      }
      return true;
    }
    if (fn == "write_payload") {
      if (bytes > kMaxChunk) return malformed(fn, why);
      buffer_.resize(kMaxChunk);
      if (worker_.channel.read_bytes(buffer_.data(), bytes, wait_deadline()) != ChannelStatus::ok) {
        why = "did not send the bytes it announced";
        return false;
      }
      reply = ret(host_->write_payload(call_, buffer_.data(), bytes));
      return true;
    }
    if (fn == "send_result") {
      auto result = m.FindMember("result");
      const std::uint64_t size = a.u64("payload_size");
      if (!a.ok) return malformed(fn, why);
      if (result == m.MemberEnd() && bytes > 0 && bytes <= kMaxLine) {
        // The result's text as raw bytes after the line (what opserver-plugin-host
        // sends): validated once, by send_result, instead of parsed, written out again
        // and validated.
        buffer_.resize(std::max<std::size_t>(buffer_.size(), bytes));
        if (worker_.channel.read_bytes(buffer_.data(), bytes, wait_deadline()) !=
            ChannelStatus::ok) {
          why = "did not send the bytes it announced";
          return false;
        }
        reply = ret(host_->send_result(call_, buffer_.data(), bytes, size));
        return true;
      }
      if (result == m.MemberEnd() || !result->value.IsObject() || bytes > 0) {
        return malformed(fn, why);
      }
      const std::string text = json_text(result->value);
      reply = ret(host_->send_result(call_, text.data(), text.size(), size));
      return true;
    }
    if (fn == "send_file") {
      Fd file = worker_.channel.take_fd();
      const std::uint64_t offset = a.u64("offset");
      const std::uint64_t len = a.u64("len");
      if (!file.valid() || !a.ok) return malformed(fn, why);
      reply = ret(host_->send_file(call_, file.get(), offset, len));
      return true;
    }
    if (fn == "fail" || fn == "fail_details") {
      const int code = a.code("code");
      const std::string message = a.str("message");
      if (!a.ok) return malformed(fn, why);
      auto details = m.FindMember("details");
      if (fn == "fail_details" && details != m.MemberEnd()) {
        const std::string text = json_text(details->value);
        host_->fail_details(call_, code, message.c_str(),
                            details->value.IsObject() ? text.c_str() : nullptr);
      } else {
        host_->fail(call_, code, message.c_str());
      }
      reply = ret(0);
      return true;
    }
    if (fn == "log") {
      int level = OPS_LOG_INFO;
      auto lv = m.FindMember("level");
      if (lv != m.MemberEnd() && !level_from_json(lv->value, level)) return malformed(fn, why);
      const std::string message = a.str("message");
      if (!a.ok) return malformed(fn, why);
      host_->log(call_, level, message.c_str());
      reply = ret(0);
      return true;
    }
    return serve_users(fn, m, a, reply, why);
  }

  // Quotas and user administration: one host function each, same arguments.
  bool serve_users(std::string_view fn, const Value& m, Args& a, std::string& reply,
                   std::string& why) {
    std::int64_t r = 0;
    if (fn == "quota_reserve") {
      std::uint64_t token = 0;
      const auto b = a.u64("reserve_bytes");
      const auto f = a.u64("reserve_files");
      if (!a.ok) return malformed(fn, why);
      r = host_->quota_reserve(call_, b, f, &token);
      reply = "{\"ret\":" + std::to_string(r) + ",\"token\":" + std::to_string(token) + "}";
      return true;
    }
    if (fn == "quota_commit") {
      const auto t = a.u64("token");
      const auto b = a.i64("bytes_delta");
      const auto f = a.i64("files_delta");
      if (!a.ok) return malformed(fn, why);
      r = host_->quota_commit(call_, t, b, f);
    } else if (fn == "quota_release") {
      const auto t = a.u64("token");
      if (!a.ok) return malformed(fn, why);
      r = host_->quota_release(call_, t);
    } else if (fn == "quota_hold") {
      const auto t = a.u64("token");
      const auto tag = a.str("tag");
      if (!a.ok) return malformed(fn, why);
      r = host_->quota_hold(call_, t, tag.c_str());
    } else if (fn == "quota_commit_held") {
      const auto tag = a.str("tag");
      const auto b = a.i64("bytes_delta");
      const auto f = a.i64("files_delta");
      if (!a.ok) return malformed(fn, why);
      r = host_->quota_commit_held(call_, tag.c_str(), b, f);
    } else if (fn == "quota_release_held") {
      const auto tag = a.str("tag");
      if (!a.ok) return malformed(fn, why);
      r = host_->quota_release_held(call_, tag.c_str());
    } else if (fn == "usage_adjust") {
      const auto b = a.i64("bytes_delta");
      const auto f = a.i64("files_delta");
      if (!a.ok) return malformed(fn, why);
      host_->usage_adjust(call_, b, f);
    } else if (fn == "create_user") {
      const auto name = a.str("name");
      const auto key = a.str("key");
      if (!a.ok) return malformed(fn, why);
      r = host_->create_user(call_, name.c_str(), key.c_str());
    } else if (fn == "create_user_with_quota") {
      const auto name = a.str("name");
      const auto key = a.str("key");
      const auto qb = a.i64("quota_bytes");
      const auto qf = a.i64("quota_files");
      if (!a.ok) return malformed(fn, why);
      r = host_->create_user_with_quota(call_, name.c_str(), key.c_str(), qb, qf);
    } else if (fn == "user_exists") {
      const auto name = a.str("name");
      if (!a.ok) return malformed(fn, why);
      r = host_->user_exists(call_, name.c_str());
    } else if (fn == "remove_user") {
      const auto name = a.str("name");
      if (!a.ok) return malformed(fn, why);
      r = host_->remove_user(call_, name.c_str());
    } else if (fn == "rekey_user") {
      const auto name = a.str("name");
      const auto key = a.str("key");
      if (!a.ok) return malformed(fn, why);
      r = host_->rekey_user(call_, name.c_str(), key.c_str());
    } else if (fn == "set_quota") {
      const auto name = a.str("name");
      const auto qb = a.i64("quota_bytes");
      const auto qf = a.i64("quota_files");
      if (!a.ok) return malformed(fn, why);
      r = host_->set_quota(call_, name.c_str(), qb, qf);
    } else if (fn == "close_user_connections") {
      const auto name = a.str("name");
      if (!a.ok) return malformed(fn, why);
      r = host_->close_user_connections(call_, name.c_str(), a.flag("except_this_connection"));
    } else if (fn == "get_usage") {
      // Answered by safe_on_strand() when the answer was in memory; else it may wait here.
      if (usage_reply_) {
        reply = std::move(*usage_reply_);
        usage_reply_.reset();
        return true;
      }
      const std::string who = usage_subject(m);
      std::array<char, 1024> usage{};
      reply = usage_line(
          host_->get_usage(call_, who.empty() ? nullptr : who.c_str(), usage.data(), usage.size()),
          usage);
      return true;
    } else {
      reply = "{\"ret\":-1,\"error\":" +
              json_quote("unknown host request \"" + std::string(fn.substr(0, 64)) + "\"") + "}";
      return true;
    }
    reply = ret(r);
    return true;
  }

  // get_usage's answer without waiting, into usage_reply_; false if only the blocking
  // get_usage can answer.
  bool usage_now(const Value& m) {
    const std::string who = usage_subject(m);
    std::array<char, 1024> usage{};
    auto r =
        core::get_usage_now(call_, who.empty() ? nullptr : who.c_str(), usage.data(), usage.size());
    if (!r) return false;
    usage_reply_ = usage_line(*r, usage);
    return true;
  }

  // The user a get_usage request names ("" for the caller).
  static std::string usage_subject(const Value& m) {
    auto name = m.FindMember("name");
    if (name == m.MemberEnd() || !name->value.IsString()) return {};
    return {name->value.GetString(), name->value.GetStringLength()};
  }

  // The reply line for get_usage's return value `r` with its text in `usage`.
  static std::string usage_line(std::int64_t r, const std::array<char, 1024>& usage) {
    if (r >= 0 && static_cast<std::size_t>(r) < usage.size()) {
      return "{\"ret\":0,\"usage\":" + std::string(usage.data(), static_cast<std::size_t>(r)) + "}";
    }
    return ret(r < 0 ? r : -OPS_INTERNAL);
  }

  static bool malformed(std::string_view fn, std::string& why) {
    why = "sent a malformed \"" + std::string(fn.substr(0, 32)) + "\" request";
    return false;
  }

  const ops_host_v1* host_;
  ops_call* call_;
  Worker& worker_;
  std::vector<char> buffer_;
  bool blocked_ = false;
  std::optional<std::string> usage_reply_;  // see safe_on_strand()
};

// The end of a call, on a handler thread: the worker back to its pool after "done", else
// killed and the call failed (unless its answer was already complete).
int conclude(WorkerPool& pool, const ops_host_v1* host, ops_call* call,
             std::unique_ptr<Worker> worker, Conversation::End end, int code,
             const std::string& why) {
  if (end == Conversation::End::done) {
    pool.give_back(std::move(worker));
    return code;
  }
  const pid_t pid = worker->pid;
  const std::string ended = pool.discard(std::move(worker));
  const std::string& op = pool.spec().operation;
  if (call->result_sent && call->response_payload_remaining == 0 && !call->error) {
    // The answer was already complete when the worker failed: the client has it.
    spdlog::warn("op={} user={} id={}: worker {} {} after answering ({})", op, call->user,
                 call->request_id, pid, why, ended);
    return OPS_OK;
  }
  if (end == Conversation::End::timed_out) {
    spdlog::warn("op={} user={} id={}: worker {} did not finish in time; killed ({})", op,
                 call->user, call->request_id, pid, ended);
    host->fail(call, OPS_TIMEOUT, (op + " did not finish in time").c_str());
    return OPS_TIMEOUT;
  }
  spdlog::error("op={} user={} id={}: worker {} {} ({}); the call is answered unavailable", op,
                call->user, call->request_id, pid, why, ended);
  host->fail(
      call, OPS_UNAVAILABLE,
      (op + " failed: its worker process " + why + "; the request was not completed").c_str());
  return OPS_UNAVAILABLE;
}

// The call message: the request, the user, the arguments (already validated JSON).
std::string call_line(const ops_call* call, std::string_view args_json) {
  std::string line;
  line.reserve(args_json.size() + call->user.size() + 96);
  line += "{\"call\":{\"id\":";
  line += std::to_string(call->request_id);
  line += ",\"user\":";
  line += json_quote(call->user);
  line += ",\"args\":";
  line += args_json.empty() ? std::string_view("{}") : args_json;
  line += ",\"payload\":";
  line += std::to_string(call->payload_total);
  line += "}}";
  return line;
}

// Calls no larger than this start on the I/O thread: an idle worker's socket takes them
// whole at once (its buffer is far larger), so sending never waits there.
constexpr std::size_t kMaxStrandCallLine = 64u << 10;

// The worker's socket watched by the session's io_context for one call: registered with
// Asio, never owned by it (the channel keeps the descriptor).
class SocketWatch {
 public:
  SocketWatch(const asio::any_io_executor& executor, int fd) : descriptor_(executor) {
    boost::system::error_code ec;
    descriptor_.assign(fd, ec);
  }
  ~SocketWatch() { stop(); }
  SocketWatch(const SocketWatch&) = delete;
  SocketWatch& operator=(const SocketWatch&) = delete;

  enum class Wait { readable, expired, failed };

  // Waits until the socket is readable or `deadline`.
  asio::awaitable<Wait> readable(Clock::time_point deadline) {
    // The timer's handler may run after this wait ended another way: it acts only while
    // `state` says the wait is still on.
    auto state = std::make_shared<WaitState>(WaitState{&descriptor_});
    asio::steady_timer timer(descriptor_.get_executor(), deadline);
    timer.async_wait([state](const boost::system::error_code& ec) {
      if (ec || !state->waiting) return;
      state->expired = true;
      boost::system::error_code ignored;
      state->descriptor->cancel(ignored);
    });
    auto [ec] = co_await descriptor_.async_wait(asio::posix::descriptor_base::wait_read,
                                                asio::as_tuple(asio::use_awaitable));
    state->waiting = false;
    timer.cancel();
    if (state->expired) co_return Wait::expired;
    co_return ec ? Wait::failed : Wait::readable;
  }

  bool registered() const { return descriptor_.is_open(); }

  // Unregisters the socket (without closing it): before the worker is handed on.
  void stop() {
    if (descriptor_.is_open()) descriptor_.release();
  }

 private:
  struct WaitState {
    asio::posix::stream_descriptor* descriptor;
    bool waiting = true;
    bool expired = false;
  };
  asio::posix::stream_descriptor descriptor_;
};

// An isolated call begun on the session's I/O thread: the call message went to an idle
// worker, and the conversation goes on there with Asio waiting for the worker's socket, so
// a call whose worker needs nothing that blocks costs I/O thread -> worker -> I/O thread,
// the hops of an in-process call. The first request that may block hands the rest of the
// conversation (and any failure's clean-up) to a handler thread.
class ProcessStartedCall final : public core::StartedCall {
 public:
  ProcessStartedCall(const ProcessBackend& backend, const ops_host_v1* host, ops_call* call,
                     std::string_view args_json, asio::any_io_executor executor)
      : backend_(backend),
        pool_(backend.pool()),
        host_(host),
        call_(call),
        args_json_(args_json),
        executor_(std::move(executor)) {}

  ~ProcessStartedCall() override {
    // Torn down mid-call (the server stopping): the worker's state is unknown.
    if (worker_) pool_->discard(std::move(worker_));
    if (slot_) {
      std::unique_ptr<Worker> unused;
      {
        std::lock_guard lock(slot_->mutex);
        slot_->gone = true;
        unused = std::move(slot_->worker);
      }
      // Not under the slot's lock: the pool takes its own lock, then a slot's.
      if (unused) pool_->give_back_unused(std::move(unused));
    }
  }

  // Sends the call to `worker`, now the call's.
  void begin(std::unique_ptr<Worker> worker) {
    worker_ = std::move(worker);
    const std::string line = call_line(call_, args_json_);
    const CallFds fds(host_, call_, *worker_, pool_->spec().keeps_scratch);
    // An idle worker's socket is empty and takes the line whole (kMaxStrandCallLine):
    // this never waits. A worker that is gone (EPIPE) fails this call only.
    if (!worker_->channel.send(line, {}, fds.span(), Clock::time_point::min())) {
      fail_now("did not take the call");
    }
  }

  // Waits (on the strand) for the worker `slot` was queued for.
  void wait_in(std::shared_ptr<WorkerSlot> slot, std::shared_ptr<asio::steady_timer> timer) {
    slot_ = std::move(slot);
    slot_timer_ = std::move(timer);
  }

  void fail_now(std::string why) {
    state_ = State::failed;
    why_ = std::move(why);
  }

  asio::awaitable<Step> run_on_strand(int& code) override {
    if (slot_ && !co_await take_from_slot(code)) co_return Step::done;
    if (state_ != State::running) co_return Step::needs_handler;
    Conversation conversation(host_, call_, *worker_);
    SocketWatch watch(executor_, worker_->channel.fd());
    if (!watch.registered()) state_ = State::handed_on;  // cannot watch it here: go blocking
    // The worker has just been sent the call: its answer is not there yet, so the first
    // read would only fail. (Asio arms the wait so that an answer already there counts.)
    bool answer_due = false;
    while (state_ == State::running) {
      WorkerMessage message;
      const ChannelStatus st =
          answer_due ? worker_->channel.receive_now(message) : ChannelStatus::timeout;
      answer_due = true;
      if (st == ChannelStatus::timeout) {
        const SocketWatch::Wait waited = co_await watch.readable(conversation.wait_deadline());
        if (waited == SocketWatch::Wait::expired) state_ = State::timed_out;
        // Asio cannot wait for it (it should): the blocking conversation can.
        if (waited == SocketWatch::Wait::failed) state_ = State::handed_on;
        continue;
      }
      if (st != ChannelStatus::ok) {
        fail_now(Conversation::failure(st));
        break;
      }
      if (!conversation.safe_on_strand(message, worker_->channel.buffered())) {
        state_ = State::handed_on;
        pending_ = std::move(message);
        break;
      }
      std::string reply;
      std::span<const std::byte> data;
      bool wants_reply = false;
      std::string why;
      auto end = conversation.serve_message(message, code_, why, reply, data, wants_reply);
      if (end == Conversation::End::done) {
        watch.stop();
        pool_->give_back(std::move(worker_));
        code = code_;
        co_return Step::done;
      }
      if (end) {
        fail_now(std::move(why));
        break;
      }
      if (!wants_reply) continue;
      // A reply is a short line to a worker that waits for it: it goes at once, unless the
      // worker left its socket full; then a handler thread sends the rest.
      reply += '\n';
      const std::ptrdiff_t sent = worker_->channel.send_now({reply.data(), reply.size() - 1});
      if (sent < 0) {
        fail_now("stopped reading its socket");
        break;
      }
      if (static_cast<std::size_t>(sent) < reply.size()) {
        unsent_ = reply.substr(static_cast<std::size_t>(sent));
        state_ = State::handed_on;
        break;
      }
    }
    watch.stop();
    co_return Step::needs_handler;
  }

  int finish_blocking(bool abandoned) override {
    if (state_ == State::acquire_on_handler) {
      return abandoned ? OPS_TIMEOUT : backend_.invoke(host_, call_, args_json_);
    }
    Conversation::End end = Conversation::End::worker_failed;
    int code = OPS_INTERNAL;
    std::string why = why_;
    if (state_ == State::timed_out || (abandoned && state_ != State::failed)) {
      end = Conversation::End::timed_out;
    } else if (state_ == State::handed_on) {
      Conversation conversation(host_, call_, *worker_);
      std::optional<Conversation::End> ended;
      // The rest of a reply the I/O thread could not send (it ends with its "\n").
      if (!unsent_.empty() &&
          !worker_->channel.send(std::string_view(unsent_).substr(0, unsent_.size() - 1), {}, {},
                                 conversation.wait_deadline())) {
        why = "stopped reading its socket";
        ended = Conversation::End::worker_failed;
      } else if (pending_.json.IsObject()) {
        backend_.note_calls_block(true);
        ended = conversation.handle(pending_, code, why);
      }
      end = ended ? *ended : conversation.run(code, why);
    }
    return conclude(*pool_, host_, call_, std::move(worker_), end, code, why);
  }

 private:
  enum class State { running, handed_on, failed, timed_out, acquire_on_handler };

  // The wait for a worker while all are busy, until the operation's deadline. False when
  // the call ended here (`code`: timeout); else the call was sent, or the state says why
  // not (a worker to start: acquire_on_handler).
  asio::awaitable<bool> take_from_slot(int& code) {
    // Delivery posts the timer's cancel to this strand, so it runs after this wait began.
    bool delivered;
    {
      std::lock_guard lock(slot_->mutex);
      delivered = slot_->delivered;
    }
    if (!delivered) co_await slot_timer_->async_wait(asio::as_tuple(asio::use_awaitable));
    std::unique_ptr<Worker> worker;
    {
      std::lock_guard lock(slot_->mutex);
      slot_->gone = true;
      delivered = slot_->delivered;
      worker = std::move(slot_->worker);
    }
    slot_.reset();
    if (delivered && Clock::now() < call_->op_deadline) {
      if (worker) {
        begin(std::move(worker));
      } else {
        state_ = State::acquire_on_handler;  // room to start one: acquire() does that
      }
      co_return true;
    }
    if (worker) pool_->give_back_unused(std::move(worker));
    const std::string message = "all " + std::to_string(pool_->spec().max_concurrent) +
                                " workers of " + pool_->spec().operation +
                                " stayed busy until the deadline";
    host_->fail(call_, OPS_TIMEOUT, message.c_str());
    code = OPS_TIMEOUT;
    co_return false;
  }

  const ProcessBackend& backend_;
  std::shared_ptr<WorkerPool> pool_;
  const ops_host_v1* host_;
  ops_call* call_;
  std::string_view args_json_;
  std::unique_ptr<Worker> worker_;
  asio::any_io_executor executor_;
  std::shared_ptr<WorkerSlot> slot_;
  std::shared_ptr<asio::steady_timer> slot_timer_;
  State state_ = State::running;
  WorkerMessage pending_;  // the request that made the I/O thread hand the call on
  std::string unsent_;     // the end of a reply still to send
  std::string why_;
  int code_ = OPS_INTERNAL;
};

}  // namespace

std::optional<core::WorkerStats> ProcessBackend::worker_stats() const {
  const PoolCounts counts = pool_->counts();
  core::WorkerStats stats;
  stats.down = pool_->down();
  stats.workers = counts.live;
  stats.starts = counts.started;
  stats.start_failures = counts.start_failures;
  stats.crashes = counts.crashed;
  return stats;
}

std::unique_ptr<core::StartedCall> ProcessBackend::start_on_strand(
    const ops_host_v1* host, ops_call* call, std::string_view args_json,
    const asio::any_io_executor& executor) const {
  // Calls that ask for something blocking anyway are cheaper begun on a handler thread:
  // the worker's request then wakes that thread directly, not the I/O thread first.
  if (calls_block_.load(std::memory_order_relaxed)) return nullptr;
  if (args_json.size() > kMaxStrandCallLine - 4096) return nullptr;
  std::unique_ptr<Worker> worker;
  std::shared_ptr<WorkerSlot> slot;
  std::shared_ptr<asio::steady_timer> timer;
  WorkerPool::Now now = pool_->acquire_now(worker, nullptr);
  if (now == WorkerPool::Now::busy) {
    // All busy: wait here for the next one back (the slot and timer only then).
    slot = std::make_shared<WorkerSlot>();
    timer = std::make_shared<asio::steady_timer>(executor, call->op_deadline);
    slot->wake = [executor, timer] { asio::post(executor, [timer] { timer->cancel(); }); };
    now = pool_->acquire_now(worker, slot);
  }
  if (now == WorkerPool::Now::use_acquire) return nullptr;
  auto started = std::make_unique<ProcessStartedCall>(*this, host, call, args_json, executor);
  if (worker) {
    started->begin(std::move(worker));
  } else {
    started->wait_in(std::move(slot), std::move(timer));
  }
  return started;
}

int ProcessBackend::invoke(const ops_host_v1* host, ops_call* call,
                           std::string_view args_json) const {
  auto worker = pool_->acquire(call->op_deadline);
  if (!worker) {
    const int code = worker.error().code == ErrorCode::timeout ? OPS_TIMEOUT : OPS_UNAVAILABLE;
    host->fail(call, code, worker.error().message.c_str());
    return code;
  }
  const std::string line = call_line(call, args_json);
  const CallFds fds(host, call, **worker, pool_->spec().keeps_scratch);
  int code = OPS_INTERNAL;
  std::string why;
  Conversation::End end = Conversation::End::worker_failed;
  if ((*worker)->channel.send(line, {}, fds.span(), call->op_deadline)) {
    Conversation conversation(host, call, **worker);
    end = conversation.run(code, why);
    // A call that needed nothing blocking: the next ones may begin on the I/O thread.
    if (end == Conversation::End::done) note_calls_block(conversation.blocked());
  } else {
    why = "did not take the call";
  }
  return conclude(*pool_, host, call, std::move(*worker), end, code, why);
}

}  // namespace ops::isolation
