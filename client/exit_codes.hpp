// opclient exit statuses: the documented table (docs/CLIENT.md, `opclient --help`).
// 0 only on success; small numbers for failures on our side of the wire; 10 + the OPS/1
// code (plugin_abi.h, §3) for an error the server answered.
#pragma once

#include <string_view>

#include "opserver/client.hpp"
#include "opserver/error.hpp"

namespace ops::opclient {

namespace exit_code {
inline constexpr int kOk = 0;
inline constexpr int kLocal = 1;        // a local file or pipe could not be read or written
inline constexpr int kUsage = 2;        // bad flags or arguments, no user, no key
inline constexpr int kConnect = 3;      // cannot resolve or reach the server
inline constexpr int kAuth = 4;         // login refused, or the server's proof was wrong
inline constexpr int kConnection = 5;   // connection broken, timed out, or OPS/1 broken
inline constexpr int kVerify = 6;       // a downloaded file's SHA-256 is not the server's
inline constexpr int kServerBase = 10;  // + ops_code: 11 bad_frame ... 25 internal
}  // namespace exit_code

// The exit status for an OPS/1 error answered by the server. auth_failed keeps the one
// login status (4) whether it comes at login or later.
constexpr int exit_for(ErrorCode code) noexcept {
  if (code == ErrorCode::auth_failed) return exit_code::kAuth;
  return exit_code::kServerBase + static_cast<int>(code);
}

// The exit status for a failed client call: the failure class first, else the server's code.
constexpr int exit_for(client::Failure failure, ErrorCode code) noexcept {
  switch (failure) {
    case client::Failure::none:
      return exit_for(code);
    case client::Failure::connect:
      return exit_code::kConnect;
    case client::Failure::auth:
    case client::Failure::server_proof:
      return exit_code::kAuth;
    case client::Failure::protocol:
    case client::Failure::io:
      return exit_code::kConnection;
    case client::Failure::local:
      return exit_code::kLocal;
  }
  return exit_code::kConnection;
}

// The <code> word printed in "opclient: <code>: <message>" for a failure on our side.
constexpr std::string_view label_for(client::Failure failure) noexcept {
  switch (failure) {
    case client::Failure::none:
      return "error";
    case client::Failure::connect:
      return "connect_failed";
    case client::Failure::auth:
      return "auth_failed";
    case client::Failure::server_proof:
      return "server_proof_wrong";
    case client::Failure::protocol:
      return "protocol_error";
    case client::Failure::io:
      return "connection_lost";
    case client::Failure::local:
      return "local_error";
  }
  return "error";
}

}  // namespace ops::opclient
