// Verifies a client's `auth` frame against the challenge (§2, §7, §8) and builds `welcome`.
// Every failure looks the same from outside: the same bytes, and the same work (one HMAC
// is computed even for unknown users, malformed frames or a mechanism not offered).
// Thread-safe.
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
  // `cb` is the connection's channel binding where the challenge offered
  // hmac-sha256-plus (TLS with binding required): then that is the only mechanism
  // accepted and both proofs cover `cb` (§8). Without it only hmac-sha256 is accepted.
  // The challenge must be built with the same choice: challenge_frame(hex, cb.has_value()).
  std::optional<Success> verify(const rapidjson::Value& auth, const proof::Nonce& nonce,
                                const std::optional<proof::ChannelBinding>& cb = std::nullopt);

 private:
  UserStore& users_;
  std::string server_version_;
  std::string decoy_key_;  // stands in for unknown users so the work is the same
};

}  // namespace ops::core
