// Builds the frames the server sends (§2, §3): challenge, welcome, the one auth_failed
// frame, and responses. Every function returns the complete frame (length prefix
// included). Pure functions; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "opserver/error.hpp"

namespace ops::core {

// §2, §8: "mechanisms" is ["hmac-sha256-plus"] where the connection has a channel binding
// to offer (TLS with binding required), else ["hmac-sha256"].
std::string challenge_frame(std::string_view nonce_hex, bool channel_binding = false);
std::string welcome_frame(std::string_view user, std::string_view proof_hex,
                          std::string_view server_version);
// §2: byte-identical whatever the reason.
const std::string& auth_failed_frame();

// {"id":N,"ok":true,"result":<result_json>[,"payload":N]}; result_json is trusted to be
// one JSON object.
std::string ok_response_frame(std::uint64_t id, std::string_view result_json,
                              std::uint64_t payload);
// {"id":N|null,"ok":false,"error":{"code":...,"message":...[,"details":{...}]}}; a non-empty
// error.details is trusted to be one JSON object (the host validated it, §9).
std::string error_response_frame(std::optional<std::uint64_t> id, const Error& error);

}  // namespace ops::core
