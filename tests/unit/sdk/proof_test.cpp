// The §2 proofs against fixed vectors shared with the Python client
// (tests/vectors/handshake.json, computed with Python's hmac).
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <fstream>
#include <sstream>
#include <string>

#include "opserver/proof.hpp"

#ifndef OPS_VECTORS_DIR
#error "OPS_VECTORS_DIR must name tests/vectors"
#endif

namespace {

rapidjson::Document load_vectors() {
  std::ifstream in(std::string(OPS_VECTORS_DIR) + "/handshake.json");
  std::stringstream text;
  text << in.rdbuf();
  rapidjson::Document doc;
  doc.Parse(text.str().c_str());
  return doc;
}

std::string member(const rapidjson::Value& v, const char* name) {
  return {v[name].GetString(), v[name].GetStringLength()};
}

TEST(ProofVectors, FileIsThere) {
  auto doc = load_vectors();
  ASSERT_FALSE(doc.HasParseError());
  ASSERT_TRUE(doc.HasMember("vectors"));
  EXPECT_GE(doc["vectors"].Size(), 4u);
}

TEST(ProofVectors, ClientAndServerProofsMatch) {
  auto doc = load_vectors();
  ASSERT_FALSE(doc.HasParseError());
  for (const auto& v : doc["vectors"].GetArray()) {
    SCOPED_TRACE(member(v, "name"));
    auto nonce = ops::proof::from_hex<32>(member(v, "nonce"));
    auto cnonce = ops::proof::from_hex<32>(member(v, "cnonce"));
    ASSERT_TRUE(nonce && cnonce);
    const std::string key = member(v, "key");
    const std::string user = member(v, "user");

    auto client = ops::proof::client_proof(key, *nonce, *cnonce, user);
    auto server = ops::proof::server_proof(key, *nonce, *cnonce, user);
    EXPECT_EQ(ops::proof::to_hex(client), member(v, "client_proof"));
    EXPECT_EQ(ops::proof::to_hex(server), member(v, "server_proof"));

    auto expected = ops::proof::from_hex<32>(member(v, "server_proof"));
    ASSERT_TRUE(expected);
    EXPECT_TRUE(ops::proof::equal(server, *expected));
    EXPECT_FALSE(ops::proof::equal(client, *expected));  // the labels keep them apart
  }
}

TEST(ProofVectors, EveryInputChangesTheProof) {
  auto doc = load_vectors();
  ASSERT_FALSE(doc.HasParseError());
  const auto& v = doc["vectors"][0];
  auto nonce = *ops::proof::from_hex<32>(member(v, "nonce"));
  auto cnonce = *ops::proof::from_hex<32>(member(v, "cnonce"));
  const std::string key = member(v, "key");
  const std::string user = member(v, "user");
  const auto base = ops::proof::client_proof(key, nonce, cnonce, user);

  EXPECT_FALSE(ops::proof::equal(base, ops::proof::client_proof(key + "x", nonce, cnonce, user)));
  EXPECT_FALSE(ops::proof::equal(base, ops::proof::client_proof(key, nonce, cnonce, user + "x")));
  auto n2 = nonce;
  n2[31] ^= 1;
  EXPECT_FALSE(ops::proof::equal(base, ops::proof::client_proof(key, n2, cnonce, user)));
  // Swapping the nonces is a different message.
  EXPECT_FALSE(ops::proof::equal(base, ops::proof::client_proof(key, cnonce, nonce, user)));
}

// §8: hmac-sha256-plus appends the channel binding to both proofs.
TEST(ProofVectors, ChannelBindingProofsMatch) {
  auto doc = load_vectors();
  ASSERT_FALSE(doc.HasParseError());
  ASSERT_TRUE(doc.HasMember("plus_vectors"));
  ASSERT_GE(doc["plus_vectors"].Size(), 3u);
  for (const auto& v : doc["plus_vectors"].GetArray()) {
    SCOPED_TRACE(member(v, "name"));
    auto nonce = ops::proof::from_hex<32>(member(v, "nonce"));
    auto cnonce = ops::proof::from_hex<32>(member(v, "cnonce"));
    auto cb = ops::proof::from_hex<32>(member(v, "cb"));
    ASSERT_TRUE(nonce && cnonce && cb);
    const std::string key = member(v, "key");
    const std::string user = member(v, "user");
    auto client = ops::proof::client_proof(key, *nonce, *cnonce, user, *cb);
    auto server = ops::proof::server_proof(key, *nonce, *cnonce, user, *cb);
    EXPECT_EQ(ops::proof::to_hex(client), member(v, "client_proof"));
    EXPECT_EQ(ops::proof::to_hex(server), member(v, "server_proof"));
    // Never the plain proof: a relay cannot reuse one for the other.
    EXPECT_FALSE(ops::proof::equal(client, ops::proof::client_proof(key, *nonce, *cnonce, user)));
    auto other = *cb;
    other[0] ^= 1;
    EXPECT_FALSE(
        ops::proof::equal(client, ops::proof::client_proof(key, *nonce, *cnonce, user, other)));
  }
}

TEST(ProofHex, RoundTripAndStrictness) {
  auto doc = load_vectors();
  ASSERT_FALSE(doc.HasParseError());
  for (const auto& v : doc["vectors"].GetArray()) {
    const std::string hex = member(v, "client_proof");
    auto bytes = ops::proof::from_hex<32>(hex);
    ASSERT_TRUE(bytes);
    EXPECT_EQ(ops::proof::to_hex(*bytes), hex);
  }
  const std::string upper(64, 'A');
  EXPECT_FALSE(ops::proof::from_hex<32>(upper));                 // §2: lowercase only
  EXPECT_FALSE(ops::proof::from_hex<32>(std::string(62, 'a')));  // too short
  EXPECT_FALSE(ops::proof::from_hex<32>(std::string(66, 'a')));  // too long
  EXPECT_FALSE(ops::proof::from_hex<32>(std::string(63, 'a') + "g"));
}

}  // namespace
