// §8: the Authenticator accepts exactly the mechanism the challenge offered, and with a
// channel binding both proofs cover it; the challenge lists the matching mechanism.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <filesystem>
#include <string>

#include "auth/file_user_store.hpp"
#include "auth/handshake.hpp"
#include "proto/messages.hpp"

namespace ops::core {
namespace {

namespace fs = std::filesystem;

class ChannelBindingAuth : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ops-cb-auth-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "storage");
    store_ = std::make_unique<FileUserStore>(dir_ / "state", dir_ / "storage");
    auto opened = store_->open(false);
    ASSERT_TRUE(opened) << opened.error().message;
    auto added = store_->add("alice", kKey);
    ASSERT_TRUE(added) << added.error().message;
    auth_ = std::make_unique<Authenticator>(*store_, "opserver/test");
    nonce_ = proof::random_nonce();
    cnonce_ = proof::random_nonce();
    cb_.fill(0x5a);
  }
  void TearDown() override { fs::remove_all(dir_); }

  rapidjson::Document auth_frame(std::string_view mechanism, const proof::Digest& p) {
    std::string json = std::string(R"({"type":"auth","mechanism":")") + std::string(mechanism) +
                       R"(","user":"alice","cnonce":")" + proof::to_hex(cnonce_) +
                       R"(","proof":")" + proof::to_hex(p) + R"("})";
    rapidjson::Document doc;
    doc.Parse(json.c_str());
    return doc;
  }

  static constexpr const char* kKey = "the key of alice";
  fs::path dir_;
  std::unique_ptr<FileUserStore> store_;
  std::unique_ptr<Authenticator> auth_;
  proof::Nonce nonce_{};
  proof::Nonce cnonce_{};
  proof::ChannelBinding cb_{};
};

TEST_F(ChannelBindingAuth, PlusWithTheRightBindingSucceedsAndTheWelcomeCoversIt) {
  auto doc =
      auth_frame(proof::kMechanismPlus, proof::client_proof(kKey, nonce_, cnonce_, "alice", cb_));
  auto ok = auth_->verify(doc, nonce_, cb_);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->user, "alice");
  const std::string server_hex =
      proof::to_hex(proof::server_proof(kKey, nonce_, cnonce_, "alice", cb_));
  EXPECT_NE(ok->welcome_frame.find(server_hex), std::string::npos);
  const std::string plain_hex = proof::to_hex(proof::server_proof(kKey, nonce_, cnonce_, "alice"));
  EXPECT_EQ(ok->welcome_frame.find(plain_hex), std::string::npos);
}

TEST_F(ChannelBindingAuth, AnotherBindingFails) {
  // What a relay terminating TLS on both sides produces: the client's proof covers the
  // binding of its own TLS connection, not the server's.
  proof::ChannelBinding relay = cb_;
  relay[7] ^= 0x01;
  auto doc =
      auth_frame(proof::kMechanismPlus, proof::client_proof(kKey, nonce_, cnonce_, "alice", relay));
  EXPECT_FALSE(auth_->verify(doc, nonce_, cb_));
}

TEST_F(ChannelBindingAuth, PlainMechanismOnABindingConnectionFails) {
  auto plain = auth_frame(proof::kMechanism, proof::client_proof(kKey, nonce_, cnonce_, "alice"));
  EXPECT_FALSE(auth_->verify(plain, nonce_, cb_));
  // Even with a proof that covers the binding: the mechanism was not offered.
  auto mixed =
      auth_frame(proof::kMechanism, proof::client_proof(kKey, nonce_, cnonce_, "alice", cb_));
  EXPECT_FALSE(auth_->verify(mixed, nonce_, cb_));
}

TEST_F(ChannelBindingAuth, PlusOnAPlainConnectionFails) {
  // §8: a plain listener never offers -plus; naming it is auth_failed.
  auto plus =
      auth_frame(proof::kMechanismPlus, proof::client_proof(kKey, nonce_, cnonce_, "alice"));
  EXPECT_FALSE(auth_->verify(plus, nonce_));
  auto plus_cb =
      auth_frame(proof::kMechanismPlus, proof::client_proof(kKey, nonce_, cnonce_, "alice", cb_));
  EXPECT_FALSE(auth_->verify(plus_cb, nonce_));
  // The plain handshake still works there.
  auto plain = auth_frame(proof::kMechanism, proof::client_proof(kKey, nonce_, cnonce_, "alice"));
  EXPECT_TRUE(auth_->verify(plain, nonce_));
}

TEST(ChallengeFrame, OffersTheMechanismOfTheConnection) {
  const std::string nonce(64, 'a');
  EXPECT_NE(challenge_frame(nonce).find(R"("mechanisms":["hmac-sha256"])"), std::string::npos);
  EXPECT_NE(challenge_frame(nonce, false).find(R"("mechanisms":["hmac-sha256"])"),
            std::string::npos);
  EXPECT_NE(challenge_frame(nonce, true).find(R"("mechanisms":["hmac-sha256-plus"])"),
            std::string::npos);
}

}  // namespace
}  // namespace ops::core
