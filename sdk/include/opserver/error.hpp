// OPS/1 error codes (§3) and the Result type every fallible SDK and core function returns.
// Header-only; usable from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "opserver/plugin_abi.h"

namespace ops {

// Values equal the C ABI's ops_code, so a code crosses the .so boundary as an int.
enum class ErrorCode : std::uint8_t {
  bad_frame = OPS_BAD_FRAME,
  bad_request = OPS_BAD_REQUEST,
  auth_failed = OPS_AUTH_FAILED,
  unknown_operation = OPS_UNKNOWN_OPERATION,
  forbidden = OPS_FORBIDDEN,
  invalid_args = OPS_INVALID_ARGS,
  not_found = OPS_NOT_FOUND,
  already_exists = OPS_ALREADY_EXISTS,
  conflict = OPS_CONFLICT,
  payload_too_large = OPS_PAYLOAD_TOO_LARGE,
  checksum_mismatch = OPS_CHECKSUM_MISMATCH,
  quota_exceeded = OPS_QUOTA_EXCEEDED,
  timeout = OPS_TIMEOUT,
  unavailable = OPS_UNAVAILABLE,
  internal = OPS_INTERNAL,
};

inline constexpr ErrorCode kAllErrorCodes[] = {
    ErrorCode::bad_frame,         ErrorCode::bad_request,       ErrorCode::auth_failed,
    ErrorCode::unknown_operation, ErrorCode::forbidden,         ErrorCode::invalid_args,
    ErrorCode::not_found,         ErrorCode::already_exists,    ErrorCode::conflict,
    ErrorCode::payload_too_large, ErrorCode::checksum_mismatch, ErrorCode::quota_exceeded,
    ErrorCode::timeout,           ErrorCode::unavailable,       ErrorCode::internal,
};

// The exact wire string of §3.
constexpr std::string_view wire_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::bad_frame:
      return "bad_frame";
    case ErrorCode::bad_request:
      return "bad_request";
    case ErrorCode::auth_failed:
      return "auth_failed";
    case ErrorCode::unknown_operation:
      return "unknown_operation";
    case ErrorCode::forbidden:
      return "forbidden";
    case ErrorCode::invalid_args:
      return "invalid_args";
    case ErrorCode::not_found:
      return "not_found";
    case ErrorCode::already_exists:
      return "already_exists";
    case ErrorCode::conflict:
      return "conflict";
    case ErrorCode::payload_too_large:
      return "payload_too_large";
    case ErrorCode::checksum_mismatch:
      return "checksum_mismatch";
    case ErrorCode::quota_exceeded:
      return "quota_exceeded";
    case ErrorCode::timeout:
      return "timeout";
    case ErrorCode::unavailable:
      return "unavailable";
    case ErrorCode::internal:
      return "internal";
  }
  return "internal";
}

constexpr std::optional<ErrorCode> error_code_from_wire(std::string_view name) noexcept {
  for (ErrorCode code : kAllErrorCodes) {
    if (wire_name(code) == name) return code;
  }
  return std::nullopt;
}

// An int from the C ABI; anything unknown becomes `internal`.
constexpr ErrorCode error_code_from_abi(int value) noexcept {
  if (value >= OPS_BAD_FRAME && value <= OPS_INTERNAL) return static_cast<ErrorCode>(value);
  return ErrorCode::internal;
}

// §3: only these two end the connection.
constexpr bool is_fatal(ErrorCode code) noexcept {
  return code == ErrorCode::bad_frame || code == ErrorCode::auth_failed;
}

struct Error {
  ErrorCode code = ErrorCode::internal;
  std::string message;  // for people: never a key, a proof or a host path
  // §9: machine-readable facts as the text of one JSON object (e.g. {"offset":1048576}),
  // sent as error.details; empty when there are none. Clients ignore members they do not know.
  std::string details;
};

// Unexpected-value marker so `return fail(code, "...")` reads naturally.
inline Error fail(ErrorCode code, std::string message) {
  return Error{code, std::move(message)};
}
// The same with §9 details: `details_json` must be one JSON object.
inline Error fail_with_details(ErrorCode code, std::string message, std::string details_json) {
  return Error{code, std::move(message), std::move(details_json)};
}

// A value or an Error (std::expected is C++23; this is the subset we use).
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;
inline Status ok_status() {
  return Ok{};
}

}  // namespace ops
