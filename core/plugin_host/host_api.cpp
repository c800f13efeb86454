#include "plugin_host/host_api.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "auth/user_store.hpp"
#include "dispatch/registry.hpp"
#include "net/connection.hpp"
#include "proto/messages.hpp"
#include "proto/strict_json.hpp"

ops_call::~ops_call() {
  if (user_dir_fd >= 0) ::close(user_dir_fd);
}

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
  return call->user_dir_fd;
}
int host_scratch_dir(ops_call* call) {
  return call->scratch_dir_fd;
}
const char* host_settings(ops_call* call) {
  return call->op->policy.settings_json.c_str();
}
uint64_t host_payload_size(ops_call* call) {
  return call->payload_total;
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
  std::int64_t n = call->connection->read_blocking(buf, want, call->pace, call->deadline);
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
  if (!call->connection->write_blocking(buf, len, call->pace)) {
    call->broken = true;
    return -1;
  }
  call->response_payload_remaining -= len;
  call->bytes_out += len;
  return 0;
}

int host_send_file(ops_call* call, int fd, uint64_t offset, uint64_t len) {
  if (call->broken || !begin_io(call)) return -1;
  if (!call->result_sent) return misuse(call, "payload before send_result");
  if (len > call->response_payload_remaining) return misuse(call, "more payload than announced");
  if (!call->connection->sendfile_blocking(fd, offset, len, call->pace)) {
    // §3: a payload that cannot be completed closes the connection.
    call->broken = true;
    return -1;
  }
  call->response_payload_remaining -= len;
  call->bytes_out += len;
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

int host_create_user(ops_call* call, const char* name, const char* key) {
  if (name == nullptr || key == nullptr) return OPS_INVALID_ARGS;
  // A side effect the client must learn about: once the session has answered `timeout`
  // it is refused, and once it has begun the session waits for its answer.
  if (!begin_io(call)) return OPS_TIMEOUT;
  Status status = call->users->add(name, key);
  if (status) {
    spdlog::info("user {} created by {}", printable(name), call->user);
    return OPS_OK;
  }
  if (status.error().code == ErrorCode::internal || status.error().code == ErrorCode::unavailable) {
    spdlog::error("creating user {} failed: {}", printable(name), status.error().message);
  }
  return static_cast<int>(status.error().code);
}

const ops_host_v1 kHost = {
    sizeof(ops_host_v1), host_user,         host_user_dir,    host_scratch_dir,   host_settings,
    host_payload_size,   host_read_payload, host_send_result, host_write_payload, host_send_file,
    host_fail,           host_log,          host_create_user, host_fail_details,
};

}  // namespace

const ops_host_v1* host_vtable() noexcept {
  return &kHost;
}

}  // namespace ops::core
