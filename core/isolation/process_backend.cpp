#include "isolation/process_backend.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string_view>

#include "isolation/json_text.hpp"
#include "isolation/worker_codes.hpp"
#include "plugin_host/host_api.hpp"

namespace ops::isolation {
namespace {

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
        why = st == ChannelStatus::closed ? "ended during the call" : "broke the protocol";
        return End::worker_failed;
      }
      const Value& m = message.json;
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
      std::string reply;
      std::span<const std::byte> data;
      if (!serve(std::string_view(fn->value.GetString(), fn->value.GetStringLength()), m,
                 message.bytes, reply, data, why)) {
        return End::worker_failed;
      }
      // A request the worker sent without waiting for its answer (send_result, fail, log,
      // usage_adjust, marked "reply": false) gets none.
      if (auto r = m.FindMember("reply");
          r != m.MemberEnd() && r->value.IsBool() && !r->value.GetBool()) {
        continue;
      }
      if (!worker_.channel.send(reply, data, {}, wait_deadline())) {
        why = "stopped reading its socket";
        return End::worker_failed;
      }
    }
  }

 private:
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

  bool serve(std::string_view fn, const Value& m, std::uint64_t bytes, std::string& reply,
             std::span<const std::byte>& data, std::string& why) {
    Args a{m};
    if (bytes > 0 && fn != "write_payload") {
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
      if (result == m.MemberEnd() || !result->value.IsObject() || !a.ok) {
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
      auto name = m.FindMember("name");
      std::string who;
      if (name != m.MemberEnd() && name->value.IsString()) {
        who.assign(name->value.GetString(), name->value.GetStringLength());
      }
      std::array<char, 1024> usage{};
      r = host_->get_usage(call_, who.empty() ? nullptr : who.c_str(), usage.data(), usage.size());
      if (r >= 0 && static_cast<std::size_t>(r) < usage.size()) {
        reply =
            "{\"ret\":0,\"usage\":" + std::string(usage.data(), static_cast<std::size_t>(r)) + "}";
      } else {
        reply = ret(r < 0 ? r : -OPS_INTERNAL);
      }
      return true;
    } else {
      reply = "{\"ret\":-1,\"error\":" +
              json_quote("unknown host request \"" + std::string(fn.substr(0, 64)) + "\"") + "}";
      return true;
    }
    reply = ret(r);
    return true;
  }

  static bool malformed(std::string_view fn, std::string& why) {
    why = "sent a malformed \"" + std::string(fn.substr(0, 32)) + "\" request";
    return false;
  }

  const ops_host_v1* host_;
  ops_call* call_;
  Worker& worker_;
  std::vector<char> buffer_;
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

int ProcessBackend::invoke(const ops_host_v1* host, ops_call* call,
                           std::string_view args_json) const {
  auto worker = pool_->acquire(call->op_deadline);
  if (!worker) {
    const int code = worker.error().code == ErrorCode::timeout ? OPS_TIMEOUT : OPS_UNAVAILABLE;
    host->fail(call, code, worker.error().message.c_str());
    return code;
  }
  const std::string line = "{\"call\":{\"id\":" + std::to_string(call->request_id) +
                           ",\"user\":" + json_quote(call->user) +
                           ",\"args\":" + std::string(args_json.empty() ? "{}" : args_json) +
                           ",\"payload\":" + std::to_string(call->payload_total) + "}}";
  const std::array<int, 3> fds{host->user_dir(call), host->scratch_dir(call),
                               host->node_scratch_dir(call)};
  int code = OPS_INTERNAL;
  std::string why;
  Conversation::End end = Conversation::End::worker_failed;
  if ((*worker)->channel.send(line, {}, fds, call->op_deadline)) {
    end = Conversation(host, call, **worker).run(code, why);
  } else {
    why = "did not take the call";
  }
  if (end == Conversation::End::done) {
    pool_->give_back(std::move(*worker));
    return code;
  }
  const pid_t pid = (*worker)->pid;
  const std::string ended = pool_->discard(std::move(*worker));
  const std::string& op = pool_->spec().operation;
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

}  // namespace ops::isolation
