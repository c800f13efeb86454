#include "opserver/user_keys.hpp"

#include "opserver/proof.hpp"

namespace ops::sdk {

Result<std::string> key_from_args(const rapidjson::Value& args) {
  auto it = args.FindMember("key");
  if (it == args.MemberEnd()) return proof::random_hex(kGeneratedKeyBytes);
  if (!it->value.IsString()) return fail(ErrorCode::invalid_args, "key must be a string");
  std::string key(it->value.GetString(), it->value.GetStringLength());
  if (key.empty() || key.size() > kMaxKeyBytes) {
    return fail(ErrorCode::invalid_args, "key must be 1 to 1024 bytes");
  }
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f) {
      return fail(ErrorCode::invalid_args, "key must not contain control characters");
    }
  }
  return key;
}

}  // namespace ops::sdk
