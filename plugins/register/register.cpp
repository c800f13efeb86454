// register (OPS/1 §5): creates a user with its own key and storage directory.
//
// Decisions:
//  - `user` must match ^[a-z_][a-z0-9_.-]{0,31}$ (§5); an existing name is
//    `already_exists`.
//  - `key`, when given, is used exactly as sent: 1 to 1024 bytes of UTF-8 with no control
//    character (U+0000-U+001F, U+007F), so that it can be typed, stored one per line and
//    passed on a command line. When absent, a key of 64 lowercase hex characters (256 bits
//    from OpenSSL's CSPRNG) is generated. Either way the key is returned once, in the
//    result; the server never shows it again.
//  - The host's create_user does the rest atomically (ops_host_v1::create_user): the user
//    is fully present (key and storage directory) or absent, and can log in at once.
//  - Who may call register is the `allow` list of config/ops.json (only admin by default).
//  - `quota_bytes` and `quota_files` (§10, optional): a non-negative integer, or null for
//    no limit whatever the server's default; left out, the server's default applies.
//    They are stored with the user in the same atomic write, so the user never exists
//    without them.

#include <cstdint>
#include <string>

#include "opserver/json_result.hpp"
#include "opserver/plugin.hpp"
#include "opserver/proof.hpp"
#include "opserver/user_keys.hpp"

namespace {

using ops::ErrorCode;
using ops::Status;
using ops::sdk::Call;

constexpr const char* kSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "user": {"type": "string", "pattern": "^[a-z_][a-z0-9_.-]{0,31}$",
             "description": "the new user's name"},
    "key": {"type": "string", "minLength": 1, "maxLength": 1024,
            "description": "the new user's key (default: 64 random hex characters)"},
    "quota_bytes": {"type": ["integer", "null"], "minimum": 0,
                    "description": "byte quota (null: none; default: the server's)"},
    "quota_files": {"type": ["integer", "null"], "minimum": 0,
                    "description": "file quota (null: none; default: the server's)"}
  },
  "required": ["user"],
  "additionalProperties": false
})json";

// §5 user name rule, checked here too so the plugin does not depend on the host's
// regex engine.
bool valid_user_name(const std::string& name) {
  if (name.empty() || name.size() > 32) return false;
  auto lower_or_underscore = [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; };
  if (!lower_or_underscore(name[0])) return false;
  for (char c : name.substr(1)) {
    if (!lower_or_underscore(c) && !(c >= '0' && c <= '9') && c != '.' && c != '-') return false;
  }
  return true;
}

// A quota argument as the host's limit value: absent = the server's default.
ops::Result<std::int64_t> quota_of(const rapidjson::Value& args, const char* name) {
  auto it = args.FindMember(name);
  if (it == args.MemberEnd()) return Call::kLimitDefault;
  if (it->value.IsNull()) return Call::kLimitNone;
  if (!it->value.IsUint64() || it->value.GetUint64() > (std::uint64_t{1} << 53)) {
    return ops::fail(ErrorCode::invalid_args,
                     std::string(name) + " must be a non-negative integer up to 2^53, or null");
  }
  return static_cast<std::int64_t>(it->value.GetUint64());
}

Status handle_register(Call& call, const rapidjson::Value& args) {
  const rapidjson::Value& user_value = args["user"];
  const std::string user(user_value.GetString(), user_value.GetStringLength());
  if (!valid_user_name(user)) {
    return ops::fail(ErrorCode::invalid_args, "user must match ^[a-z_][a-z0-9_.-]{0,31}$");
  }

  auto new_key = ops::sdk::key_from_args(args);
  if (!new_key) return std::move(new_key).error();
  const std::string key = std::move(*new_key);

  auto quota_bytes = quota_of(args, "quota_bytes");
  if (!quota_bytes) return std::move(quota_bytes).error();
  auto quota_files = quota_of(args, "quota_files");
  if (!quota_files) return std::move(quota_files).error();

  if (Status created = call.create_user(user, key, *quota_bytes, *quota_files); !created) {
    return created;
  }

  return call.send_result(ops::sdk::JsonResult().str("user", user).str("key", key).done());
}

}  // namespace

OPS_EXPORT_PLUGIN("register", "1.0.0",
                  OPS_OPERATION("register", "Create a user with a key and a storage directory",
                                "1.0.0", OPS_PAYLOAD_NONE, kSchema, handle_register))
