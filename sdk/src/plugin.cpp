#include "opserver/plugin.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <exception>
#include <optional>
#include <string>

namespace ops::sdk {

const rapidjson::Value& Call::settings() {
  if (!settings_parsed_) {
    settings_parsed_ = true;
    const char* text = host_->settings(call_);
    if (settings_.Parse(text ? text : "{}").HasParseError() || !settings_.IsObject()) {
      settings_.SetObject();
    }
  }
  return settings_;
}

std::uint64_t Call::setting_u64(const char* name, std::uint64_t fallback) {
  const rapidjson::Value& all = settings();
  auto it = all.FindMember(name);
  if (it == all.MemberEnd() || !it->value.IsUint64()) return fallback;
  return it->value.GetUint64();
}

int Call::node_scratch_dir() const {
  const bool present = host_->struct_size >= offsetof(ops_host_v1, node_scratch_dir) +
                                                 sizeof(host_->node_scratch_dir) &&
                       host_->node_scratch_dir != nullptr;
  const int fd = present ? host_->node_scratch_dir(call_) : -1;
  return fd >= 0 ? fd : scratch_dir();
}

Status Call::send_result(std::string_view result_json, std::uint64_t payload_size) {
  result_sent_ = true;
  if (host_->send_result(call_, result_json.data(), result_json.size(), payload_size) != 0) {
    return fail(ErrorCode::unavailable, "connection lost");
  }
  return ok_status();
}

Status Call::write_payload(const void* buf, std::size_t len) {
  if (host_->write_payload(call_, buf, len) != 0) {
    return fail(ErrorCode::unavailable, "connection lost");
  }
  return ok_status();
}

Status Call::send_file(int fd, std::uint64_t offset, std::uint64_t len) {
  if (host_->send_file(call_, fd, offset, len) != 0) {
    return fail(ErrorCode::unavailable, "file changed or connection lost while sending");
  }
  return ok_status();
}

Status Call::create_user(const std::string& name, const std::string& key) {
  int code = host_->create_user(call_, name.c_str(), key.c_str());
  switch (code) {
    case OPS_OK:
      return ok_status();
    case OPS_ALREADY_EXISTS:
      return fail(ErrorCode::already_exists, "user already exists: " + name);
    case OPS_INVALID_ARGS:
      return fail(ErrorCode::invalid_args, "invalid user name or key");
    default:
      return fail(error_code_from_abi(code), "could not create the user");
  }
}

// The host offers `member`: its vtable is that long and the entry is set (a test host
// may zero-fill what it does not offer).
#define OPS_HOST_HAS(member) (host_has(offsetof(ops_host_v1, member)) && host_->member != nullptr)

namespace {
Error host_error(int code, const std::string& what, const std::string& name) {
  switch (code) {
    case OPS_NOT_FOUND:
      return fail(ErrorCode::not_found, "no such user: " + name);
    case OPS_FORBIDDEN:
      return fail(ErrorCode::forbidden, "not allowed for user " + name);
    case OPS_ALREADY_EXISTS:
      return fail(ErrorCode::already_exists, "user already exists: " + name);
    case OPS_INVALID_ARGS:
      return fail(ErrorCode::invalid_args, "invalid user name, key or limit");
    case OPS_TIMEOUT:
      return fail(ErrorCode::timeout, "the request timed out before " + what);
    default:
      return fail(error_code_from_abi(code), "could not " + what);
  }
}
Error no_host_support(const std::string& what) {
  return fail(ErrorCode::unavailable, "this server cannot " + what);
}
}  // namespace

void Call::usage_adjust(std::int64_t bytes_delta, std::int64_t files_delta) {
  if (OPS_HOST_HAS(usage_adjust)) host_->usage_adjust(call_, bytes_delta, files_delta);
}

void Call::quota_commit_held(const std::string& tag, std::int64_t bytes_delta,
                             std::int64_t files_delta) {
  if (OPS_HOST_HAS(quota_commit_held)) {
    host_->quota_commit_held(call_, tag.c_str(), bytes_delta, files_delta);
  } else {
    usage_adjust(bytes_delta, files_delta);
  }
}

void Call::quota_release_held(const std::string& tag) {
  if (OPS_HOST_HAS(quota_release_held)) host_->quota_release_held(call_, tag.c_str());
}

bool Call::user_exists(const std::string& name) {
  return OPS_HOST_HAS(user_exists) && host_->user_exists(call_, name.c_str()) == 1;
}

Status Call::create_user(const std::string& name, const std::string& key, std::int64_t quota_bytes,
                         std::int64_t quota_files) {
  if (quota_bytes == kLimitDefault && quota_files == kLimitDefault) return create_user(name, key);
  if (!OPS_HOST_HAS(create_user_with_quota)) return no_host_support("set quotas");
  int code =
      host_->create_user_with_quota(call_, name.c_str(), key.c_str(), quota_bytes, quota_files);
  if (code == OPS_OK) return ok_status();
  return host_error(code, "create the user", name);
}

Status Call::remove_user(const std::string& name) {
  if (!OPS_HOST_HAS(remove_user)) return no_host_support("remove users");
  int code = host_->remove_user(call_, name.c_str());
  if (code == OPS_OK) return ok_status();
  return host_error(code, "remove the user", name);
}

Status Call::rekey_user(const std::string& name, const std::string& key) {
  if (!OPS_HOST_HAS(rekey_user)) return no_host_support("change keys");
  int code = host_->rekey_user(call_, name.c_str(), key.c_str());
  if (code == OPS_OK) return ok_status();
  return host_error(code, "change the key", name);
}

Status Call::set_quota(const std::string& name, std::int64_t quota_bytes,
                       std::int64_t quota_files) {
  if (!OPS_HOST_HAS(set_quota)) return no_host_support("set quotas");
  int code = host_->set_quota(call_, name.c_str(), quota_bytes, quota_files);
  if (code == OPS_OK) return ok_status();
  return host_error(code, "set the quota", name);
}

Result<std::string> Call::usage(const std::string& name) {
  if (!OPS_HOST_HAS(get_usage)) return no_host_support("report usage");
  const char* who = name.empty() ? nullptr : name.c_str();
  std::string buf(256, '\0');
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::int64_t n = host_->get_usage(call_, who, buf.data(), buf.size());
    if (n < 0) return host_error(static_cast<int>(-n), "report usage", name);
    if (static_cast<std::uint64_t>(n) < buf.size()) {
      buf.resize(static_cast<std::size_t>(n));
      return buf;
    }
    buf.assign(static_cast<std::size_t>(n) + 1, '\0');
  }
  return fail(ErrorCode::internal, "usage report keeps growing");
}

std::int64_t Call::close_user_connections(const std::string& name, bool except_this_connection) {
  if (!OPS_HOST_HAS(close_user_connections)) return 0;
  return host_->close_user_connections(call_, name.c_str(), except_this_connection ? 1 : 0);
}

namespace {
// Which quota a refused reservation would pass, from the host's usage report: "quota
// exceeded: 2000000 more bytes would pass your quota of 1048576 bytes (6 in use, 0
// reserved)".
std::string quota_message(Call& call, std::uint64_t bytes) {
  std::string generic =
      "quota exceeded: storing " + std::to_string(bytes) + " more bytes would pass your quota";
  auto report = call.usage();
  if (!report) return generic;
  rapidjson::Document u;
  u.Parse(report->c_str(), report->size());
  auto num = [&](const char* name) -> std::optional<std::uint64_t> {
    if (!u.IsObject() || !u.HasMember(name) || !u[name].IsUint64()) return std::nullopt;
    return u[name].GetUint64();
  };
  auto used = num("bytes"), reserved = num("reserved_bytes"), quota = num("quota_bytes");
  auto files = num("files"), quota_files = num("quota_files");
  if (used && reserved && quota && bytes > 0 &&
      (*used + *reserved > *quota || bytes > *quota - *used - *reserved)) {
    return "quota exceeded: " + std::to_string(bytes) + " more bytes would pass your quota of " +
           std::to_string(*quota) + " bytes (" + std::to_string(*used) + " in use, " +
           std::to_string(*reserved) + " reserved)";
  }
  if (files && quota_files) {
    return "quota exceeded: one more file would pass your quota of " +
           std::to_string(*quota_files) + " files (" + std::to_string(*files) + " stored)";
  }
  return generic;
}
}  // namespace

Result<QuotaReservation> QuotaReservation::reserve(Call& call, std::uint64_t bytes,
                                                   std::uint64_t files) {
  if (!call.host_has(offsetof(ops_host_v1, quota_reserve)) ||
      call.host()->quota_reserve == nullptr) {
    return QuotaReservation(&call, 0);  // a host without quotas
  }
  std::uint64_t token = 0;
  int code = call.host()->quota_reserve(call.raw(), bytes, files, &token);
  if (code == OPS_QUOTA_EXCEEDED)
    return fail(ErrorCode::quota_exceeded, quota_message(call, bytes));
  if (code != OPS_OK) return fail(error_code_from_abi(code), "cannot reserve quota");
  return QuotaReservation(&call, token);
}

void QuotaReservation::commit(std::int64_t bytes_delta, std::int64_t files_delta) {
  if (token_ != 0) {
    call_->host()->quota_commit(call_->raw(), token_, bytes_delta, files_delta);
    token_ = 0;
  }
}

Status QuotaReservation::hold(const std::string& tag) {
  if (token_ == 0) return ok_status();
  int code = call_->host()->quota_hold(call_->raw(), token_, tag.c_str());
  token_ = 0;
  if (code != OPS_OK) return fail(error_code_from_abi(code), "cannot hold the reservation");
  return ok_status();
}

void QuotaReservation::release() noexcept {
  if (token_ != 0) {
    call_->host()->quota_release(call_->raw(), token_);
    token_ = 0;
  }
}

bool host_has_fail_details(const ops_host_v1* host) noexcept {
  return host->struct_size >= offsetof(ops_host_v1, fail_details) + sizeof(host->fail_details) &&
         host->fail_details != nullptr;
}

namespace detail {

int run_handler(Handler handler, const ops_host_v1* host, ops_call* call, const char* args,
                std::size_t args_len) noexcept {
  try {
    Call wrapped(host, call);
    rapidjson::Document doc;
    if (args_len == 0) {
      doc.SetObject();
    } else if (doc.Parse(args, args_len).HasParseError() || !doc.IsObject()) {
      host->fail(call, OPS_INVALID_ARGS, "args must be a JSON object");
      return OPS_INVALID_ARGS;
    }
    Status status = handler(wrapped, doc);
    if (!status) {
      const Error& error = status.error();
      if (!error.details.empty() && host_has_fail_details(host)) {
        host->fail_details(call, static_cast<int>(error.code), error.message.c_str(),
                           error.details.c_str());
      } else {
        // An older server: the code and message still say what happened (§9 details are
        // optional for clients).
        host->fail(call, static_cast<int>(error.code), error.message.c_str());
      }
      return static_cast<int>(error.code);
    }
    if (!wrapped.result_sent()) {
      Status sent = wrapped.send_result("{}");
      if (!sent) return OPS_UNAVAILABLE;
    }
    return OPS_OK;
  } catch (const std::exception& e) {
    // Details go to the log, never to the client (§3 message is for people, not internals).
    try {
      host->log(call, OPS_LOG_ERROR, (std::string("handler threw: ") + e.what()).c_str());
    } catch (...) {
    }
  } catch (...) {
    host->log(call, OPS_LOG_ERROR, "handler threw a non-standard exception");
  }
  host->fail(call, OPS_INTERNAL, "internal error");
  return OPS_INTERNAL;
}

namespace {
// Copies `text` into the server's buffer, NUL-terminated, cut to fit.
void write_reason(char* out, std::size_t cap, const std::string& text) noexcept {
  if (out == nullptr || cap == 0) return;
  const std::size_t n = std::min(text.size(), cap - 1);
  std::memcpy(out, text.data(), n);
  out[n] = '\0';
}
}  // namespace

int run_init(InitHook hook, const char* settings, std::size_t len, char* error,
             std::size_t error_cap) noexcept {
  try {
    rapidjson::Document doc;
    if (settings == nullptr || len == 0) {
      doc.SetObject();
    } else if (doc.Parse(settings, len).HasParseError() || !doc.IsObject()) {
      write_reason(error, error_cap, "settings must be a JSON object");
      return 1;
    }
    Status status = hook(doc);
    if (status) return 0;
    write_reason(error, error_cap, status.error().message);
  } catch (const std::exception& e) {
    try {
      write_reason(error, error_cap, std::string("init threw: ") + e.what());
    } catch (...) {
      write_reason(error, error_cap, "init threw");
    }
  } catch (...) {
    write_reason(error, error_cap, "init threw a non-standard exception");
  }
  return 1;
}

void run_shutdown(ShutdownHook hook, std::uint32_t deadline_ms) noexcept {
  try {
    hook(std::chrono::milliseconds(deadline_ms));
  } catch (...) {
    // Nothing to report to: the server is letting the library go.
  }
}

int run_health(HealthHook hook, char* reason, std::size_t cap) noexcept {
  try {
    std::optional<std::string> problem = hook();
    if (!problem) return 0;
    write_reason(reason, cap, problem->empty() ? std::string("unhealthy") : *problem);
  } catch (const std::exception& e) {
    try {
      write_reason(reason, cap, std::string("health check threw: ") + e.what());
    } catch (...) {
      write_reason(reason, cap, "health check threw");
    }
  } catch (...) {
    write_reason(reason, cap, "health check threw a non-standard exception");
  }
  return 1;
}

}  // namespace detail
}  // namespace ops::sdk
