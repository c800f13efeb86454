// Codes and log levels as the worker protocol spells them: an integer of the C ABI or its
// name ("not_found", "warn"), so that a script need not know the numbers.
#pragma once

#include <rapidjson/document.h>

#include <string_view>

#include "opserver/error.hpp"
#include "opserver/plugin_abi.h"

namespace ops::isolation {

// 0 / "ok", or an OPS/1 error code. False for anything else.
inline bool code_from_json(const rapidjson::Value& v, int& code) {
  if (v.IsInt()) {
    code = v.GetInt();
    return code >= OPS_OK && code <= OPS_INTERNAL;
  }
  if (!v.IsString()) return false;
  const std::string_view name(v.GetString(), v.GetStringLength());
  if (name == "ok") {
    code = OPS_OK;
    return true;
  }
  auto known = error_code_from_wire(name);
  if (!known) return false;
  code = static_cast<int>(*known);
  return true;
}

inline bool level_from_json(const rapidjson::Value& v, int& level) {
  if (v.IsInt()) {
    level = v.GetInt();
    return level >= OPS_LOG_DEBUG && level <= OPS_LOG_ERROR;
  }
  if (!v.IsString()) return false;
  const std::string_view name(v.GetString(), v.GetStringLength());
  constexpr std::string_view kNames[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; ++i) {
    if (name == kNames[i]) {
      level = i;
      return true;
    }
  }
  return false;
}

}  // namespace ops::isolation
