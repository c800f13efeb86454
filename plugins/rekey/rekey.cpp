// rekey (OPS/1 §10): gives a user a new key.
//
// Decisions:
//  - `user` defaults to the caller. Any user may rekey itself. Rekeying another user is
//    allowed only to the callers named in this operation's settings in ops.json,
//    "rekey_others": ["admin", ...] ("*" for everyone); without that setting, only
//    `admin`. Anyone else gets `forbidden`; an unknown user `not_found` (checked after
//    permission, so the answer does not tell a non-admin which users exist).
//  - `key` follows register's rules: used exactly as sent, 1 to 1024 bytes of UTF-8
//    without control characters; when absent, 64 lowercase hex characters (256 bits from
//    OpenSSL's CSPRNG) are generated. It is returned once, in the result.
//  - The host (ops_host_v1::rekey_user) writes the store atomically and durably, so the
//    old key stops working at once, and closes every connection of that user except the
//    one that asked, which stays authenticated and gets this answer.

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
    "user": {"type": "string", "minLength": 1, "maxLength": 32,
             "description": "whose key to change (default: yours)"},
    "key": {"type": "string", "minLength": 1, "maxLength": 1024,
            "description": "the new key (default: 64 random hex characters)"}
  },
  "additionalProperties": false
})json";

// "rekey_others" from the settings: may `caller` rekey other users?
bool may_rekey_others(Call& call, std::string_view caller) {
  const rapidjson::Value& settings = call.settings();
  auto it = settings.FindMember("rekey_others");
  if (it == settings.MemberEnd() || !it->value.IsArray()) return caller == "admin";
  for (const auto& name : it->value.GetArray()) {
    if (!name.IsString()) continue;
    std::string_view allowed(name.GetString(), name.GetStringLength());
    if (allowed == "*" || allowed == caller) return true;
  }
  return false;
}

Status handle_rekey(Call& call, const rapidjson::Value& args) {
  const std::string caller(call.user());
  std::string user = caller;
  if (auto it = args.FindMember("user"); it != args.MemberEnd()) {
    user.assign(it->value.GetString(), it->value.GetStringLength());
  }
  if (user != caller && !may_rekey_others(call, caller)) {
    return ops::fail(ErrorCode::forbidden, "you may change only your own key");
  }

  auto new_key = ops::sdk::key_from_args(args);
  if (!new_key) return std::move(new_key).error();
  const std::string key = std::move(*new_key);

  if (Status changed = call.rekey_user(user, key); !changed) return changed;

  return call.send_result(ops::sdk::JsonResult().str("user", user).str("key", key).done());
}

}  // namespace

OPS_EXPORT_PLUGIN("rekey", "1.0.0",
                  OPS_OPERATION("rekey", "Give a user (by default yourself) a new key", "1.0.0",
                                OPS_PAYLOAD_NONE, kSchema, handle_rekey))
