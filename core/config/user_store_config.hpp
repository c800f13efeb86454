// The "user_store" member of server.json: where users and their keys live.
//
//   "user_store": "file"                       the default: <state_dir>/users.json
//   "user_store": {
//     "postgresql": "host=db.example dbname=opserver user=opserver",   libpq conninfo or URI
//     "key_file": "/etc/opserver/store.key"    64 hex characters (256 bits), mode 0600/0400:
//   }                                          encrypts the users' keys at rest (AES-256-GCM)
//
// Parsed here with unknown members refused like the rest of the file; config.cpp calls
// parse_user_store_settings() and resolves key_file from server.json's directory.
#pragma once

#include <rapidjson/document.h>

#include <filesystem>
#include <string>

#include "config/tls_config.hpp"  // ConfigErrorAt
#include "opserver/error.hpp"

namespace ops::core {

struct UserStoreSettings {
  enum class Kind { file, postgresql };
  Kind kind = Kind::file;
  std::string conninfo;            // postgresql: passed to libpq as given
  std::filesystem::path key_file;  // postgresql: the at-rest encryption key
};

Result<UserStoreSettings> parse_user_store_settings(const rapidjson::Value& value,
                                                    const ConfigErrorAt& error_at);

}  // namespace ops::core
