#include "auth/handshake.hpp"

#include <string_view>

#include "proto/messages.hpp"

namespace ops::core {
namespace {

std::string_view string_member(const rapidjson::Value& obj, const char* name) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsString()) return {};
  return {it->value.GetString(), it->value.GetStringLength()};
}

}  // namespace

Authenticator::Authenticator(UserStore& users, std::string server_version)
    : users_(users),
      server_version_(std::move(server_version)),
      decoy_key_(proof::random_hex(32)) {}

std::optional<Authenticator::Success> Authenticator::verify(
    const rapidjson::Value& auth, const proof::Nonce& nonce,
    const std::optional<proof::ChannelBinding>& cb) {
  bool well_formed = auth.IsObject();
  std::string_view type, mechanism, user, cnonce_hex, proof_hex;
  if (well_formed) {
    type = string_member(auth, "type");
    mechanism = string_member(auth, "mechanism");
    user = string_member(auth, "user");
    cnonce_hex = string_member(auth, "cnonce");
    proof_hex = string_member(auth, "proof");
  }
  // §8: only the mechanism this connection's challenge offered.
  const std::string_view offered = cb ? proof::kMechanismPlus : proof::kMechanism;
  well_formed = well_formed && type == "auth" && mechanism == offered;

  auto cnonce = proof::from_hex<proof::kNonceBytes>(cnonce_hex);
  auto claimed = proof::from_hex<proof::kProofBytes>(proof_hex);
  // §7: a client that echoes the server's nonce could replay the server's own proof.
  well_formed = well_formed && cnonce && claimed && *cnonce != nonce;

  std::optional<std::string> key = well_formed ? users_.key_for(user) : std::nullopt;
  const std::string& used_key = key ? *key : decoy_key_;
  proof::Nonce cn = cnonce.value_or(proof::Nonce{});
  // Always one HMAC and one constant-time compare, whatever failed above.
  const proof::ChannelBinding* binding = cb ? &*cb : nullptr;
  proof::Digest expected = proof::compute(used_key, proof::kClientLabel, nonce, cn, user, binding);
  proof::Digest given = claimed.value_or(proof::Digest{});
  bool match = proof::equal(expected, given);
  if (!well_formed || !key || !match) return std::nullopt;

  proof::Digest server = proof::compute(*key, proof::kServerLabel, nonce, cn, user, binding);
  return Success{std::string(user), welcome_frame(user, proof::to_hex(server), server_version_)};
}

}  // namespace ops::core
