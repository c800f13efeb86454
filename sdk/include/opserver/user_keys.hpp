// The rules of a user's key (§5 register, §10 rekey), once for every plugin that sets one.
#pragma once

#include <rapidjson/document.h>

#include <string>

#include "opserver/error.hpp"

namespace ops::sdk {

inline constexpr std::size_t kMaxKeyBytes = 1024;
inline constexpr std::size_t kGeneratedKeyBytes = 32;  // 64 lowercase hex characters

// The key in args' "key" member (1 to 1024 bytes, no control character; the schema
// counts characters, the rule is bytes), or, when absent, a new one: 256 random bits as
// 64 lowercase hex characters. Errors: invalid_args naming the rule.
Result<std::string> key_from_args(const rapidjson::Value& args);

}  // namespace ops::sdk
