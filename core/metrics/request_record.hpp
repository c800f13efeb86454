// What the session knows about a finished request, handed to the metrics and the audit log.
// Views only: valid for the duration of the call that receives it.
#pragma once

#include <rapidjson/document.h>

#include <cstdint>
#include <optional>
#include <string_view>

#include "opserver/error.hpp"

namespace ops::core {

struct RequestRecord {
  std::string_view operation;  // as the client named it ("-" when the header had none)
  std::string_view label;      // the metrics label: an enabled operation, describe, unknown
  std::optional<std::uint64_t> id;
  const Error* error = nullptr;  // null: ok
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  const rapidjson::Value* args = nullptr;  // the request's args, when it had an object
  std::string_view result_sha256;          // from the result, when it carried one
};

}  // namespace ops::core
