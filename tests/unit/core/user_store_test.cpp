// UserStore: limits kept with each user (absent, null, a value), rekey, remove, set_limits,
// the old one-member format still read, and every change written through the atomic
// tmp+rename path (no temporary file left, the file re-read by a second instance).
#include "auth/file_user_store.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace ops::core {
namespace {

namespace fs = std::filesystem;

class UserStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ops-userstore-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    fs::create_directories(root_ / "storage");
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string file_text() {
    std::ifstream in(root_ / "state" / "users.json");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  fs::path root_;
};

TEST_F(UserStoreTest, LimitsRoundTripAsAbsentNullOrValue) {
  FileUserStore s(root_ / "state", root_ / "storage");
  ASSERT_TRUE(s.open(false).ok());
  LimitChange limits;
  limits.quota_bytes = UserLimit::of(1000);
  limits.quota_files = UserLimit::none();
  ASSERT_TRUE(s.add("alice", "k1", limits).ok());
  ASSERT_TRUE(s.add("bob", "k2").ok());
  EXPECT_EQ(file_text(), R"({"users":{"alice":{"key":"k1","quota_bytes":1000,"quota_files":null},)"
                         R"("bob":{"key":"k2"}}})"
                         "\n");
  // A second instance (the offline CLI, another process) reads the same.
  FileUserStore other(root_ / "state", root_ / "storage");
  ASSERT_TRUE(other.open(false).ok());
  auto alice = other.find("alice");
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->quota_bytes, UserLimit::of(1000));
  EXPECT_EQ(alice->quota_files, UserLimit::none());
  EXPECT_EQ(alice->upload_rate, UserLimit::server_default());
  EXPECT_EQ(alice->quota_bytes.effective(5), std::optional<std::uint64_t>(1000));
  EXPECT_EQ(alice->quota_files.effective(5), std::nullopt);
  EXPECT_EQ(other.find("bob")->quota_bytes.effective(5), std::optional<std::uint64_t>(5));
  EXPECT_FALSE(fs::exists(root_ / "state" / "users.json.tmp"));
  EXPECT_TRUE(fs::is_directory(root_ / "storage" / "alice"));
}

TEST_F(UserStoreTest, OldFormatIsRead) {
  fs::create_directories(root_ / "state");
  std::ofstream(root_ / "state" / "users.json") << R"({"users":{"admin":{"key":"abc"}}})";
  FileUserStore s(root_ / "state", root_ / "storage");
  ASSERT_TRUE(s.open(false).ok());
  EXPECT_EQ(s.key_for("admin"), std::optional<std::string>("abc"));
  EXPECT_FALSE(s.find("admin")->quota_bytes.own);
}

TEST_F(UserStoreTest, AWrongLimitTypeIsACorruptStore) {
  fs::create_directories(root_ / "state");
  std::ofstream(root_ / "state" / "users.json")
      << R"({"users":{"admin":{"key":"abc","quota_bytes":"lots"}}})";
  FileUserStore s(root_ / "state", root_ / "storage");
  EXPECT_FALSE(s.open(false).ok());
}

TEST_F(UserStoreTest, RekeyReplacesTheKeyAndKeepsTheLimits) {
  FileUserStore s(root_ / "state", root_ / "storage");
  ASSERT_TRUE(s.open(false).ok());
  LimitChange limits;
  limits.quota_files = UserLimit::of(3);
  ASSERT_TRUE(s.add("alice", "old", limits).ok());
  ASSERT_TRUE(s.rekey("alice", "new").ok());
  EXPECT_EQ(s.key_for("alice"), std::optional<std::string>("new"));
  EXPECT_EQ(s.find("alice")->quota_files, UserLimit::of(3));
  EXPECT_EQ(s.rekey("nobody", "x").error().code, ErrorCode::not_found);
  EXPECT_EQ(s.rekey("alice", "").error().code, ErrorCode::invalid_args);
  EXPECT_EQ(s.rekey("alice", "a\nb").error().code, ErrorCode::invalid_args);
  EXPECT_EQ(s.key_for("alice"), std::optional<std::string>("new"));
  FileUserStore other(root_ / "state", root_ / "storage");
  ASSERT_TRUE(other.open(false).ok());
  EXPECT_EQ(other.key_for("alice"), std::optional<std::string>("new"));
}

TEST_F(UserStoreTest, SetLimitsChangesOnlyWhatIsGiven) {
  FileUserStore s(root_ / "state", root_ / "storage");
  ASSERT_TRUE(s.open(false).ok());
  ASSERT_TRUE(s.add("alice", "k").ok());
  LimitChange change;
  change.quota_bytes = UserLimit::of(10);
  auto r = s.set_limits("alice", change);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->quota_bytes, UserLimit::of(10));
  EXPECT_FALSE(r->quota_files.own);
  LimitChange files_only;
  files_only.quota_files = UserLimit::none();
  r = s.set_limits("alice", files_only);
  EXPECT_EQ(r->quota_bytes, UserLimit::of(10));
  EXPECT_EQ(r->quota_files, UserLimit::none());
  LimitChange back;
  back.quota_bytes = UserLimit::server_default();
  r = s.set_limits("alice", back);
  EXPECT_FALSE(r->quota_bytes.own);
  EXPECT_EQ(s.set_limits("nobody", change).error().code, ErrorCode::not_found);
  EXPECT_EQ(file_text(), R"({"users":{"alice":{"key":"k","quota_files":null}}})"
                         "\n");
}

TEST_F(UserStoreTest, RemoveForgetsTheUserButKeepsItsFiles) {
  FileUserStore s(root_ / "state", root_ / "storage");
  ASSERT_TRUE(s.open(false).ok());
  ASSERT_TRUE(s.add("alice", "k").ok());
  std::ofstream(root_ / "storage" / "alice" / "f") << "x";
  ASSERT_TRUE(s.remove("alice").ok());
  EXPECT_FALSE(s.key_for("alice"));
  EXPECT_EQ(s.remove("alice").error().code, ErrorCode::not_found);
  EXPECT_TRUE(fs::exists(root_ / "storage" / "alice" / "f"));  // offline `user remove`
  EXPECT_EQ(file_text(), "{\"users\":{}}\n");
}

}  // namespace
}  // namespace ops::core
