#include "plugin_host/host_api.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstring>

#include "auth/user_store.hpp"
#include "dispatch/registry.hpp"
#include "net/connection.hpp"
#include "proto/messages.hpp"
#include "proto/strict_json.hpp"

namespace ops::core {

std::string sanitize_message(std::string_view message) {
  constexpr std::size_t kLimit = 512;
  std::string out;
  for (std::size_t i = 0; i < message.size() && out.size() < kLimit; ++i) {
    unsigned char c = static_cast<unsigned char>(message[i]);
    if (c < 0x20 || c == 0x7f) {
      out += ' ';
    } else if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      // Copy a whole UTF-8 sequence if valid, else a replacement '?'.
      std::size_t len = (c & 0xE0) == 0xC0   ? 2
                        : (c & 0xF0) == 0xE0 ? 3
                        : (c & 0xF8) == 0xF0 ? 4
                                             : 1;
      std::string_view seq = message.substr(i, len);
      if (seq.size() == len && len > 1 && is_valid_utf8(seq)) {
        out += seq;
        i += len - 1;
      } else {
        out += '?';
      }
    }
  }
  return out;
}

std::string printable(std::string_view text, std::size_t limit) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : text.substr(0, limit)) {
    if (c < 0x20 || c == 0x7f || c == '\\' || c == '"') {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > limit) out += "...";
  return out;
}

namespace {

const char* host_user(ops_call* call) {
  return call->user.c_str();
}
int host_user_dir(ops_call* call) {
  return call->user_dir.get();
}
int host_scratch_dir(ops_call* call) {
  return call->scratch_dir_fd;
}
// This server's own temporaries (storage/node_scratch.hpp); the shared scratch directory
// where a caller (a test) set none.
int host_node_scratch_dir(ops_call* call) {
  return call->node_scratch_dir_fd >= 0 ? call->node_scratch_dir_fd : call->scratch_dir_fd;
}
const char* host_settings(ops_call* call) {
  return call->op->policy.settings_json.c_str();
}
uint64_t host_payload_size(ops_call* call) {
  return call->payload_total;
}

// This call's share of the user services, bound on first use; null without services.
ops::core::CallUserState* user_state(ops_call* call) {
  if (call->services == nullptr) return nullptr;
  if (call->user_state.services == nullptr) {
    call->user_state.services = call->services;
    call->user_state.user = call->user;
  }
  return &call->user_state;
}

// The user's bandwidth bucket for one direction (null: unlimited).
TokenBucket* bucket(ops_call* call, bool upload) {
  CallUserState* state = user_state(call);
  if (state == nullptr) return nullptr;
  state->load_rates();
  return upload ? state->upload.get() : state->download.get();
}

// Claims the connection for the handler; false once the session has given up on it.
bool begin_io(ops_call* call) {
  std::lock_guard lock(call->guard);
  if (call->abandoned) return false;
  call->io_started = true;
  return true;
}

int64_t host_read_payload(ops_call* call, void* buf, size_t cap) {
  if (call->broken || call->deadline_passed || !begin_io(call)) return -1;
  if (call->payload_remaining == 0) return 0;
  if (buf == nullptr || cap == 0) return -1;
  std::size_t want =
      static_cast<std::size_t>(std::min<std::uint64_t>(cap, call->payload_remaining));
  TokenBucket* limit = bucket(call, true);
  if (limit) want = static_cast<std::size_t>(std::min<std::uint64_t>(want, limit->chunk()));
  std::int64_t n = call->connection->read_blocking(buf, want, call->pace, call->deadline);
  if (n > 0) throttle(limit, static_cast<std::uint64_t>(n));
  if (n <= 0) {
    if (n < 0 && std::chrono::steady_clock::now() >= call->deadline) {
      // §12: no byte was lost, so the stream is intact: the session answers `timeout` and
      // discards the rest of the payload.
      call->deadline_passed = true;
      return -1;
    }
    call->broken = true;  // closed early, reset, or no byte within the stall limit (§7)
    return -1;
  }
  call->payload_remaining -= static_cast<std::uint64_t>(n);
  call->bytes_in += static_cast<std::uint64_t>(n);
  return n;
}

// A plugin misusing the ABI makes the response stream unreliable: the connection closes.
int misuse(ops_call* call, const char* what) {
  spdlog::error("plugin {} misused the host API: {}", call->op->plugin, what);
  call->broken = true;
  if (!call->error) call->error = Error{ErrorCode::internal, "internal error"};
  call->host_error = true;
  return -1;
}

// The top-level "sha256" string of a (valid) result object, or empty.
std::string result_sha256_of(std::string_view result) {
  rapidjson::Document doc;
  doc.Parse(result.data(), result.size());
  if (!doc.IsObject()) return {};
  auto it = doc.FindMember("sha256");
  if (it == doc.MemberEnd() || !it->value.IsString() || it->value.GetStringLength() > 128) {
    return {};
  }
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

int host_send_result(ops_call* call, const char* json, size_t len, uint64_t payload) {
  // After a §12 deadline stopped the payload, the session answers `timeout` instead.
  if (call->broken || call->deadline_passed || !begin_io(call)) return -1;
  if (call->result_sent) return misuse(call, "send_result called twice");
  if (json == nullptr) return misuse(call, "send_result without a result");
  if (payload > 0 && call->op->payload != OPS_PAYLOAD_OUT) {
    return misuse(call, "a response payload from an operation that declares none");
  }
  std::string_view result(json, len);
  JsonError error;
  if (!validate_strict_object(result, error)) {
    // Nothing was sent yet, so the request can still be answered cleanly.
    spdlog::error("plugin {} returned a result that is not a JSON object", call->op->plugin);
    call->error = Error{ErrorCode::internal, "internal error"};
    call->host_error = true;
    return -1;
  }
  call->result_sent = true;
  call->response_payload_remaining = payload;
  if (call->capture_result_sha256) call->result_sha256 = result_sha256_of(result);
  call->connection->append(ok_response_frame(call->request_id, result, payload));
  // With a payload to follow, the header must be on the wire first.
  if (payload > 0 && !call->connection->flush_blocking(call->pace)) {
    call->broken = true;
    return -1;
  }
  return 0;
}

int host_write_payload(ops_call* call, const void* buf, size_t len) {
  if (call->broken || !begin_io(call)) return -1;
  if (!call->result_sent) return misuse(call, "payload before send_result");
  if (len > call->response_payload_remaining) return misuse(call, "more payload than announced");
  if (len == 0) return 0;
  TokenBucket* limit = bucket(call, false);
  const char* bytes = static_cast<const char*>(buf);
  for (std::size_t done = 0; done < len;) {
    std::size_t piece =
        limit ? static_cast<std::size_t>(std::min<std::uint64_t>(len - done, limit->chunk()))
              : len - done;
    if (!call->connection->write_blocking(bytes + done, piece, call->pace)) {
      call->broken = true;
      return -1;
    }
    call->response_payload_remaining -= piece;
    call->bytes_out += piece;
    done += piece;
    throttle(limit, piece);
  }
  return 0;
}

int host_send_file(ops_call* call, int fd, uint64_t offset, uint64_t len) {
  if (call->broken || !begin_io(call)) return -1;
  if (!call->result_sent) return misuse(call, "payload before send_result");
  if (len > call->response_payload_remaining) return misuse(call, "more payload than announced");
  // Under a bandwidth limit the file goes in chunks, each followed by its wait.
  TokenBucket* limit = bucket(call, false);
  for (std::uint64_t done = 0; done < len;) {
    std::uint64_t piece = limit ? std::min<std::uint64_t>(len - done, limit->chunk()) : len - done;
    if (!call->connection->sendfile_blocking(fd, offset + done, piece, call->pace)) {
      // §3: a payload that cannot be completed closes the connection.
      call->broken = true;
      return -1;
    }
    call->response_payload_remaining -= piece;
    call->bytes_out += piece;
    done += piece;
    throttle(limit, piece);
  }
  return 0;
}

void host_fail(ops_call* call, int code, const char* message) {
  if (call->host_error) return;
  ErrorCode c = error_code_from_abi(code);
  // A plugin must not end a connection by naming a fatal code.
  if (is_fatal(c)) c = ErrorCode::internal;
  call->error = Error{c, sanitize_message(message ? message : "")};
}

// §9: fail() with a details object. The details go into the response header as they are,
// so they are held to what a strict OPS/1 peer accepts (one JSON object, valid UTF-8, no
// duplicate names, shallow, small); a plugin that gets that wrong answers `internal`.
void host_fail_details(ops_call* call, int code, const char* message, const char* details) {
  if (call->host_error) return;
  constexpr std::size_t kMaxDetails = 16 * 1024;
  StrictJsonOptions options;
  options.max_depth = 16;  // the header nests details three levels down; §7 allows 32
  rapidjson::Document check;
  JsonError error;
  const std::string_view text = details ? std::string_view(details) : std::string_view();
  if (details == nullptr || text.size() > kMaxDetails ||
      !parse_strict_json(text, check, error, options) || !check.IsObject()) {
    spdlog::error("plugin {} gave error details that are not a small JSON object",
                  call->op->plugin);
    call->error = Error{ErrorCode::internal, "internal error"};
    call->host_error = true;
    return;
  }
  host_fail(call, code, message);
  // Re-serialized compactly: what was validated is exactly what is sent.
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  check.Accept(writer);
  call->error->details.assign(buffer.GetString(), buffer.GetSize());
}

void host_log(ops_call* call, int level, const char* message) {
  auto lvl = level <= OPS_LOG_DEBUG  ? spdlog::level::debug
             : level == OPS_LOG_INFO ? spdlog::level::info
             : level == OPS_LOG_WARN ? spdlog::level::warn
                                     : spdlog::level::err;
  spdlog::log(lvl, "op={} user={} id={}: {}", call->op->name, call->user, call->request_id,
              printable(message ? message : "", 1024));
}

// ---- Quotas and user administration (core/auth/user_services.hpp does the work). ----

int host_quota_reserve(ops_call* call, uint64_t bytes, uint64_t files, uint64_t* token) {
  if (token == nullptr) return OPS_INVALID_ARGS;
  *token = 0;
  CallUserState* state = user_state(call);
  if (state == nullptr) return OPS_OK;  // a host without user services: no quotas, token 0
  UserServices& services = *state->services;
  auto id = services.usage().reserve(call->user, bytes, files, services.quota_for(call->user));
  if (!id) return static_cast<int>(id.error().code);
  state->reservations.push_back(*id);
  *token = *id;
  return OPS_OK;
}

int host_quota_commit(ops_call* call, uint64_t token, int64_t bytes_delta, int64_t files_delta) {
  if (token == 0) return OPS_OK;  // nothing was kept (see host_quota_reserve)
  CallUserState* state = user_state(call);
  if (state == nullptr || !state->holds(token)) return OPS_NOT_FOUND;
  state->forget(token);
  state->services->usage().commit(call->user, token, bytes_delta, files_delta);
  return OPS_OK;
}

int host_quota_release(ops_call* call, uint64_t token) {
  return host_quota_commit(call, token, 0, 0);
}

int host_quota_hold(ops_call* call, uint64_t token, const char* tag) {
  CallUserState* state = user_state(call);
  if (state == nullptr || tag == nullptr || !state->holds(token)) return OPS_NOT_FOUND;
  Status held = state->services->usage().hold(call->user, token, tag);
  // Still the call's when the ledger could not be reached: released when the call ends.
  if (held || held.error().code != ErrorCode::unavailable) state->forget(token);
  return held ? OPS_OK : static_cast<int>(held.error().code);
}

int host_quota_commit_held(ops_call* call, const char* tag, int64_t bytes_delta,
                           int64_t files_delta) {
  CallUserState* state = user_state(call);
  if (state == nullptr || tag == nullptr) return OPS_NOT_FOUND;
  return state->services->usage().commit_held(call->user, tag, bytes_delta, files_delta)
             ? OPS_OK
             : OPS_NOT_FOUND;
}

int host_quota_release_held(ops_call* call, const char* tag) {
  return host_quota_commit_held(call, tag, 0, 0);
}

void host_usage_adjust(ops_call* call, int64_t bytes_delta, int64_t files_delta) {
  if (CallUserState* state = user_state(call)) {
    state->services->usage().adjust(call->user, bytes_delta, files_delta);
  }
}

int host_user_exists(ops_call* call, const char* name) {
  if (call->services == nullptr || name == nullptr) return 0;
  return call->services->exists(name) ? 1 : 0;
}

// OPS_LIMIT_* or a count, as a change of one limit (nullopt: keep).
std::optional<std::optional<UserLimit>> limit_arg(int64_t value, bool keep_allowed) {
  if (value >= 0) return std::optional<UserLimit>(UserLimit::of(static_cast<std::uint64_t>(value)));
  if (value == OPS_LIMIT_NONE) return std::optional<UserLimit>(UserLimit::none());
  if (value == OPS_LIMIT_DEFAULT) return std::optional<UserLimit>(UserLimit::server_default());
  if (value == OPS_LIMIT_KEEP && keep_allowed) return std::optional<UserLimit>();
  return std::nullopt;  // not a valid argument
}

// Logs failures the client cannot act on; returns the ABI code.
int admin_result(const Status& status, const char* what, const char* name) {
  if (status) return OPS_OK;
  if (status.error().code == ErrorCode::internal || status.error().code == ErrorCode::unavailable) {
    spdlog::error("{} {} failed: {}", what, printable(name), status.error().message);
  }
  return static_cast<int>(status.error().code);
}

int host_create_user_with_quota(ops_call* call, const char* name, const char* key,
                                int64_t quota_bytes, int64_t quota_files) {
  if (name == nullptr || key == nullptr || call->services == nullptr) return OPS_INVALID_ARGS;
  auto bytes = limit_arg(quota_bytes, false);
  auto files = limit_arg(quota_files, false);
  if (!bytes || !files) return OPS_INVALID_ARGS;
  if (!begin_io(call)) return OPS_TIMEOUT;
  LimitChange limits;
  limits.quota_bytes = *bytes;
  limits.quota_files = *files;
  int code = admin_result(call->services->create_user(name, key, limits), "creating user", name);
  if (code == OPS_OK) spdlog::info("user {} created by {}", printable(name), call->user);
  return code;
}

int host_create_user(ops_call* call, const char* name, const char* key) {
  if (call->services != nullptr) {
    return host_create_user_with_quota(call, name, key, OPS_LIMIT_DEFAULT, OPS_LIMIT_DEFAULT);
  }
  if (name == nullptr || key == nullptr) return OPS_INVALID_ARGS;
  if (!begin_io(call)) return OPS_TIMEOUT;
  return admin_result(call->users->add(name, key), "creating user", name);
}

int host_remove_user(ops_call* call, const char* name) {
  if (name == nullptr || call->services == nullptr) return OPS_INVALID_ARGS;
  // The server's own rules, whatever the plugin: nobody removes itself (its connection
  // would be cut before the answer), and the administrator always exists.
  if (name == call->user || std::string_view(name) == "admin") return OPS_FORBIDDEN;
  if (!begin_io(call)) return OPS_TIMEOUT;
  int code = admin_result(call->services->remove_user(name), "unregistering", name);
  if (code == OPS_OK) spdlog::info("user {} unregistered by {}", printable(name), call->user);
  return code;
}

int host_rekey_user(ops_call* call, const char* name, const char* key) {
  if (name == nullptr || key == nullptr || call->services == nullptr) return OPS_INVALID_ARGS;
  if (!begin_io(call)) return OPS_TIMEOUT;
  int code =
      admin_result(call->services->rekey_user(name, key, call->connection), "rekeying", name);
  if (code == OPS_OK) spdlog::info("user {} rekeyed by {}", printable(name), call->user);
  return code;
}

int host_set_quota(ops_call* call, const char* name, int64_t quota_bytes, int64_t quota_files) {
  if (name == nullptr || call->services == nullptr) return OPS_INVALID_ARGS;
  auto bytes = limit_arg(quota_bytes, true);
  auto files = limit_arg(quota_files, true);
  if (!bytes || !files) return OPS_INVALID_ARGS;
  if (!begin_io(call)) return OPS_TIMEOUT;
  LimitChange change;
  change.quota_bytes = *bytes;
  change.quota_files = *files;
  auto set = call->services->set_limits(name, change);
  if (!set) return admin_result(set.error(), "setting the quota of", name);
  spdlog::info("quota of {} set by {}", printable(name), call->user);
  return OPS_OK;
}

// get_usage's return value for an answer (its length, the text copied when it fits).
int64_t usage_answer(const Result<std::string>& json, char* buf, size_t cap) {
  if (!json) return -static_cast<int64_t>(json.error().code);
  if (buf != nullptr && json->size() < cap) {
    std::memcpy(buf, json->c_str(), json->size() + 1);
  }
  return static_cast<int64_t>(json->size());
}

int64_t host_get_usage(ops_call* call, const char* name, char* buf, size_t cap) {
  if (call->services == nullptr) return -OPS_UNAVAILABLE;
  return usage_answer(call->services->usage_json(name ? std::string(name) : call->user), buf, cap);
}

int64_t host_close_user_connections(ops_call* call, const char* name, int except_this) {
  if (name == nullptr || call->services == nullptr) return 0;
  return static_cast<int64_t>(
      call->services->sessions().close_user(name, except_this ? call->connection : nullptr));
}

const ops_host_v1 kHost = {
    sizeof(ops_host_v1),
    host_user,
    host_user_dir,
    host_scratch_dir,
    host_settings,
    host_payload_size,
    host_read_payload,
    host_send_result,
    host_write_payload,
    host_send_file,
    host_fail,
    host_log,
    host_create_user,
    host_fail_details,
    host_quota_reserve,
    host_quota_commit,
    host_quota_release,
    host_quota_hold,
    host_quota_commit_held,
    host_quota_release_held,
    host_usage_adjust,
    host_user_exists,
    host_create_user_with_quota,
    host_remove_user,
    host_rekey_user,
    host_set_quota,
    host_get_usage,
    host_close_user_connections,
    host_node_scratch_dir,
};

}  // namespace

const ops_host_v1* host_vtable() noexcept {
  return &kHost;
}

std::optional<std::int64_t> get_usage_now(ops_call* call, const char* name, char* buf,
                                          std::size_t cap) {
  if (call->services == nullptr) return -OPS_UNAVAILABLE;
  auto json = call->services->usage_json_now(name ? std::string(name) : call->user);
  if (!json) return std::nullopt;
  return usage_answer(*json, buf, cap);
}

}  // namespace ops::core
