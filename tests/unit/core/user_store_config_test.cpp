// server.json's "user_store": "file" (the default) or {"postgresql", "key_file"}, refused
// with the file position otherwise; key_file taken from server.json's directory.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "config/config.hpp"

namespace ops::core {
namespace {

namespace fs = std::filesystem;

class UserStoreConfig : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ops-config-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ / "ops.json") << R"({"plugin_dir": "p", "operations": {}})";
  }
  void TearDown() override { fs::remove_all(dir_); }
  Result<Config> load(const std::string& members) {
    std::ofstream(dir_ / "server.json")
        << "{\"ops_config\": \"" << (dir_ / "ops.json").string() << "\",\n"
        << members << "}";
    return load_config(dir_ / "server.json");
  }
  fs::path dir_;
};

TEST_F(UserStoreConfig, TheFileStoreIsTheDefault) {
  auto absent = load(R"("log_level": "info")");
  ASSERT_TRUE(absent.ok()) << absent.error().message;
  EXPECT_EQ(absent->user_store.kind, UserStoreSettings::Kind::file);
  auto file = load(R"("user_store": "file")");
  ASSERT_TRUE(file.ok()) << file.error().message;
  EXPECT_EQ(file->user_store.kind, UserStoreSettings::Kind::file);
}

TEST_F(UserStoreConfig, PostgresqlTakesAConnectionStringAndAKeyFileBesideServerJson) {
  auto c = load(R"("user_store": {"postgresql": "host=/run/postgresql dbname=ops",)"
                R"( "key_file": "keys/store.key"})");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->user_store.kind, UserStoreSettings::Kind::postgresql);
  EXPECT_EQ(c->user_store.conninfo, "host=/run/postgresql dbname=ops");
  EXPECT_EQ(c->user_store.key_file, dir_ / "keys/store.key");
}

TEST_F(UserStoreConfig, AnythingElseIsRefusedWithItsPosition) {
  struct Case {
    const char* members;
    const char* message;
  } cases[] = {
      {R"("user_store": "sql")", ":2:19: \"user_store\" must be \"file\" or an object"},
      {R"("user_store": 1)", ":2:15: \"user_store\" must be \"file\" or an object"},
      {R"("user_store": {"postgresql": "dbname=x"})", ":2:14: \"user_store\" needs \"key_file\""},
      {R"("user_store": {"key_file": "k"})", ":2:14: \"user_store\" needs \"postgresql\""},
      {R"("user_store": {"postgresql": "", "key_file": "k"})",
       ":2:31: \"postgresql\" must be a non-empty string"},
      {R"("user_store": {"postgresql": "dbname=x", "key_file": 5})",
       ":2:54: \"key_file\" must be a non-empty string"},
      {R"("user_store": {"postgresql": "dbname=x", "key_file": "k", "pasword": "x"})",
       ":2:72: unknown setting \"pasword\""},
  };
  for (const Case& c : cases) {
    auto r = load(c.members);
    ASSERT_FALSE(r.ok()) << c.members;
    EXPECT_NE(r.error().message.find((dir_ / "server.json").string() + c.message),
              std::string::npos)
        << c.members << " -> " << r.error().message;
  }
}

}  // namespace
}  // namespace ops::core
