// server.json's user defaults (quotas and bandwidth): absent and null mean none, an
// integer is taken, anything else is refused with the file position.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "config/config.hpp"

namespace ops::core {
namespace {

namespace fs = std::filesystem;

class ConfigLimits : public ::testing::Test {
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
        << "{\"ops_config\": \"" << (dir_ / "ops.json").string() << "\"" << members << "}";
    return load_config(dir_ / "server.json");
  }
  fs::path dir_;
};

TEST_F(ConfigLimits, AbsentAndNullMeanNone) {
  auto c = load(R"(, "default_quota_files": null)");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE(c->default_quota_bytes);
  EXPECT_FALSE(c->default_quota_files);
  EXPECT_FALSE(c->default_upload_bytes_per_second);
  EXPECT_FALSE(c->default_download_bytes_per_second);
}

TEST_F(ConfigLimits, IntegersAreTaken) {
  auto c = load(
      R"(, "default_quota_bytes": 1000, "default_quota_files": 0,)"
      R"( "default_upload_bytes_per_second": 8388608, "default_download_bytes_per_second": 1)");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->default_quota_bytes, std::optional<std::uint64_t>(1000));
  EXPECT_EQ(c->default_quota_files, std::optional<std::uint64_t>(0));
  EXPECT_EQ(c->default_upload_bytes_per_second, std::optional<std::uint64_t>(8388608));
  EXPECT_EQ(c->default_download_bytes_per_second, std::optional<std::uint64_t>(1));
}

TEST_F(ConfigLimits, OtherValuesAreRefused) {
  for (const char* bad :
       {R"(, "default_quota_bytes": -1)", R"(, "default_quota_bytes": 1.5)",
        R"(, "default_quota_files": "10")", R"(, "default_upload_bytes_per_second": true)"}) {
    auto c = load(bad);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_NE(c.error().message.find("must be a non-negative integer"), std::string::npos)
        << c.error().message;
  }
}

}  // namespace
}  // namespace ops::core
