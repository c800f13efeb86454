// KeySealer: users' keys sealed with AES-256-GCM, bound to the user name, opened only with
// the same key; the key file's format and mode checked like ssh's private keys.
#include "auth/key_sealer.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

namespace ops::core {
namespace {

namespace fs = std::filesystem;

std::array<std::uint8_t, 32> key_of(std::uint8_t fill) {
  std::array<std::uint8_t, 32> k{};
  k.fill(fill);
  return k;
}

TEST(KeySealer, SealsAndOpensForTheSameUserOnly) {
  KeySealer sealer(key_of(7));
  const std::string sealed = sealer.seal("alice", "the key of alice");
  ASSERT_EQ(sealed.size(), 1u + 12 + 16 + 16);
  EXPECT_EQ(sealed.find("the key of alice"), std::string::npos);
  EXPECT_EQ(sealer.open("alice", sealed), "the key of alice");
  EXPECT_EQ(sealer.open("bob", sealed), std::nullopt);                  // moved to another row
  EXPECT_EQ(KeySealer(key_of(8)).open("alice", sealed), std::nullopt);  // another key file
  // A fresh nonce each time.
  EXPECT_NE(sealer.seal("alice", "the key of alice"), sealed);
  // Any altered byte (version, nonce, ciphertext, tag) or a cut is refused.
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    std::string bad = sealed;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    EXPECT_EQ(sealer.open("alice", bad), std::nullopt) << "byte " << i;
  }
  EXPECT_EQ(sealer.open("alice", sealed.substr(0, sealed.size() - 1)), std::nullopt);
  EXPECT_EQ(sealer.open("alice", ""), std::nullopt);
}

class KeyFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ops-sealer-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& text, mode_t mode) {
    fs::path f = dir_ / "store.key";
    fs::remove(f);
    std::ofstream(f) << text;
    ::chmod(f.c_str(), mode);
    return f;
  }
  fs::path dir_;
};

TEST_F(KeyFile, SixtyFourHexCharactersOwnerOnly) {
  const std::string hex(64, 'a');
  auto ok = KeySealer::from_file(write(hex + "\n", 0600));
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(KeySealer(key_of(0xaa)).open("u", ok->seal("u", "k")), "k");
  EXPECT_TRUE(KeySealer::from_file(write(hex, 0400)).ok());

  for (mode_t mode : {0640, 0604, 0660, 0644}) {
    auto r = KeySealer::from_file(write(hex, mode));
    ASSERT_FALSE(r.ok()) << std::oct << mode;
    EXPECT_NE(r.error().message.find("readable by its owner only"), std::string::npos);
  }
  for (const std::string& bad :
       {std::string(63, 'a'), std::string(65, 'a'), std::string(62, 'a') + "zz", std::string("")}) {
    auto r = KeySealer::from_file(write(bad, 0600));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("64 hexadecimal characters"), std::string::npos);
  }
  auto missing = KeySealer::from_file(dir_ / "none");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("cannot open"), std::string::npos);
  // A symlink is not followed.
  fs::path target = write(hex, 0600);
  fs::create_symlink(target, dir_ / "link.key");
  EXPECT_FALSE(KeySealer::from_file(dir_ / "link.key").ok());
}

}  // namespace
}  // namespace ops::core
