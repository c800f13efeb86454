// Fuzz target: the handshake verifier (§2, §7) with a real user store in a temporary
// directory. Inputs are auth frames' JSON; half of them (first byte odd) start from a
// valid auth frame for alice and have the rest of the input XORed over it, so the
// verifier sees near-misses as well as garbage. With the first byte's second bit set the
// connection has a TLS channel binding (§8): the valid frame is hmac-sha256-plus and
// verify() is given the binding. Property: verify() succeeds only for a well-formed frame
// naming the connection's mechanism whose proof is alice's real proof for that nonce,
// cnonce, user (and binding).
#include <rapidjson/document.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "auth/file_user_store.hpp"
#include "auth/handshake.hpp"
#include "opserver/proof.hpp"
#include "proto/strict_json.hpp"

namespace {

namespace fs = std::filesystem;

const std::string kKey = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

void check(bool ok) {
  if (!ok) std::abort();
}

struct World {
  fs::path dir;
  std::unique_ptr<ops::core::FileUserStore> users;
  std::unique_ptr<ops::core::Authenticator> auth;
  ops::proof::Nonce nonce{};
  ops::proof::Nonce cnonce{};
  ops::proof::ChannelBinding cb{};

  World() {
    std::string templ = (fs::temp_directory_path() / "opsfuzz-auth-XXXXXX").string();
    check(::mkdtemp(templ.data()) != nullptr);
    dir = templ;
    fs::create_directories(dir / "storage");
    users = std::make_unique<ops::core::FileUserStore>(dir / "state", dir / "storage");
    check(users->open(false).ok());
    check(users->add("alice", kKey).ok());
    auth = std::make_unique<ops::core::Authenticator>(*users, "opserver/fuzz");
    for (std::size_t i = 0; i < nonce.size(); ++i) {
      nonce[i] = static_cast<unsigned char>(i * 7 + 1);
      cnonce[i] = static_cast<unsigned char>(i * 13 + 5);
      cb[i] = static_cast<unsigned char>(i * 29 + 3);
    }
  }
};

World& world() {
  static World* w = new World();
  return *w;
}

std::string string_member(const rapidjson::Value& v, const char* name) {
  auto it = v.FindMember(name);
  if (it == v.MemberEnd() || !it->value.IsString()) return {};
  return {it->value.GetString(), it->value.GetStringLength()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  World& w = world();
  if (size == 0) return 0;
  std::string text;
  const bool bound = (data[0] & 2) != 0;
  const std::string mechanism(bound ? ops::proof::kMechanismPlus : ops::proof::kMechanism);
  if (data[0] & 1) {
    auto proof = bound ? ops::proof::client_proof(kKey, w.nonce, w.cnonce, "alice", w.cb)
                       : ops::proof::client_proof(kKey, w.nonce, w.cnonce, "alice");
    text = R"({"type":"auth","mechanism":")" + mechanism + R"(","user":"alice","cnonce":")" +
           ops::proof::to_hex(w.cnonce) + R"(","proof":")" + ops::proof::to_hex(proof) + "\"}";
    for (std::size_t i = 1; i < size; ++i)
      text[(i - 1) % text.size()] ^= static_cast<char>(data[i]);
  } else {
    text.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
  }
  rapidjson::Document doc;
  ops::core::JsonError error;
  if (!ops::core::parse_strict_json(text, doc, error)) return 0;  // bad_frame before verify
  auto result = bound ? w.auth->verify(doc, w.nonce, w.cb) : w.auth->verify(doc, w.nonce);
  if (!result) return 0;
  // Accepted: it must be exactly a correct proof.
  check(result->user == "alice");
  check(string_member(doc, "type") == "auth");
  check(string_member(doc, "mechanism") == mechanism);
  auto cnonce = ops::proof::from_hex<32>(string_member(doc, "cnonce"));
  check(cnonce.has_value() && *cnonce != w.nonce);
  auto given = ops::proof::from_hex<32>(string_member(doc, "proof"));
  check(given.has_value());
  check(*given == (bound ? ops::proof::client_proof(kKey, w.nonce, *cnonce, "alice", w.cb)
                         : ops::proof::client_proof(kKey, w.nonce, *cnonce, "alice")));
  check(result->welcome_frame.find("\"welcome\"") != std::string::npos);
  return 0;
}
