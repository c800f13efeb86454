// Turns one frame's header bytes into a validated header (§1, §7) and a request (§3).
// Pure functions; any thread.
#pragma once

#include <rapidjson/document.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "opserver/error.hpp"

namespace ops::core {

inline constexpr std::uint64_t kMaxWireInteger = (std::uint64_t{1} << 53) - 1;  // §1, §7

struct Header {
  rapidjson::Document doc;    // always an object
  std::uint64_t payload = 0;  // bytes that follow the frame
};

// §1/§7: a JSON object, strictly parsed; `payload`, when present, a plain integer in
// [0, 2^53-1]. Any failure is a bad_frame (the payload length can no longer be known).
Result<Header> parse_header(std::string_view bytes);

struct Request {
  std::uint64_t id = 0;
  std::string operate;
  const rapidjson::Value* user = nullptr;  // the "user" member, if present
  const rapidjson::Value* args = nullptr;  // the "args" member, if present and not null
  std::uint64_t payload = 0;
  // §12: how long the client will wait, from the header's arrival (1 .. 2^31-1 ms).
  std::optional<std::uint32_t> deadline_ms;
};

inline constexpr std::uint64_t kMaxDeadlineMs = (std::uint64_t{1} << 31) - 1;  // §12

// The failure of a request whose header was well-formed: answered, connection kept.
struct RequestError {
  std::optional<std::uint64_t> id;  // null on the wire when absent or malformed
  Error error;
};

// §3/§7: `id` a non-negative integer <= 2^53-1, `operate` a string, `deadline_ms` (§12)
// absent or an integer 1..2^31-1. A second `auth` after welcome is bad_request. The Request points
// into `header`, which must outlive it.
std::variant<Request, RequestError> interpret_request(const Header& header);

}  // namespace ops::core
