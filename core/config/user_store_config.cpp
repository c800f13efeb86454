#include "config/user_store_config.hpp"

#include <string_view>

namespace ops::core {

Result<UserStoreSettings> parse_user_store_settings(const rapidjson::Value& value,
                                                    const ConfigErrorAt& error_at) {
  const std::string pointer = "/user_store";
  UserStoreSettings settings;
  if (value.IsString()) {
    if (std::string_view(value.GetString(), value.GetStringLength()) == "file") return settings;
    return error_at(pointer,
                    "\"user_store\" must be \"file\" or an object {\"postgresql\": CONNINFO, "
                    "\"key_file\": PATH}");
  }
  if (!value.IsObject()) {
    return error_at(pointer,
                    "\"user_store\" must be \"file\" or an object {\"postgresql\": CONNINFO, "
                    "\"key_file\": PATH}");
  }
  for (auto it = value.MemberBegin(); it != value.MemberEnd(); ++it) {
    std::string_view name(it->name.GetString(), it->name.GetStringLength());
    if (name != "postgresql" && name != "key_file") {
      return error_at(pointer + "/" + std::string(name),
                      "unknown setting \"" + std::string(name) + "\"");
    }
    const rapidjson::Value& v = it->value;
    if (!v.IsString() || v.GetStringLength() == 0 ||
        std::string_view(v.GetString(), v.GetStringLength()).find('\0') != std::string::npos) {
      return error_at(pointer + "/" + std::string(name),
                      "\"" + std::string(name) + "\" must be a non-empty string");
    }
  }
  auto pg = value.FindMember("postgresql");
  auto key = value.FindMember("key_file");
  if (pg == value.MemberEnd()) {
    return error_at(pointer,
                    "\"user_store\" needs \"postgresql\": a libpq connection string such as "
                    "\"host=/run/postgresql dbname=opserver\"");
  }
  if (key == value.MemberEnd()) {
    return error_at(pointer,
                    "\"user_store\" needs \"key_file\": the file holding the 256-bit key that "
                    "encrypts users' keys in the database");
  }
  settings.kind = UserStoreSettings::Kind::postgresql;
  settings.conninfo.assign(pg->value.GetString(), pg->value.GetStringLength());
  settings.key_file = std::string(key->value.GetString(), key->value.GetStringLength());
  return settings;
}

}  // namespace ops::core
