// Verifies a client's `auth` frame against the challenge (§2, §7) and builds `welcome`.
// Every failure looks the same from outside: the same bytes, and the same work (one HMAC
// is computed even for unknown users or malformed frames). Thread-safe.
#pragma once

#include <rapidjson/document.h>

#include <optional>
#include <string>

#include "auth/user_store.hpp"
#include "opserver/proof.hpp"

namespace ops::core {

class Authenticator {
 public:
  Authenticator(UserStore& users, std::string server_version);

  struct Success {
    std::string user;
    std::string welcome_frame;
  };
  // nullopt means auth_failed, whatever the reason.
  std::optional<Success> verify(const rapidjson::Value& auth, const proof::Nonce& nonce);

 private:
  UserStore& users_;
  std::string server_version_;
  std::string decoy_key_;  // stands in for unknown users so the work is the same
};

}  // namespace ops::core
