#include "opserver/plugin.hpp"

#include <cstddef>
#include <exception>
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
    case OPS_OK: return ok_status();
    case OPS_ALREADY_EXISTS: return fail(ErrorCode::already_exists, "user already exists: " + name);
    case OPS_INVALID_ARGS: return fail(ErrorCode::invalid_args, "invalid user name or key");
    default: return fail(error_code_from_abi(code), "could not create the user");
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

}  // namespace detail
}  // namespace ops::sdk
