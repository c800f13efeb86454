// ops.json's isolation keys (docs/PLUGINS.md, "Isolated plugins"): what is taken, how
// relative paths resolve, and a clear, positioned error for every misuse.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "config/config.hpp"

namespace ops::core {
namespace {

namespace fs = std::filesystem;

class IsolationConfig : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ops-isoconfig-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::ofstream(dir_ / "server.json") << R"({"ops_config": "ops.json"})";
  }
  void TearDown() override { fs::remove_all(dir_); }
  Result<Config> load(const std::string& entry) {
    std::ofstream(dir_ / "ops.json")
        << R"({"plugin_dir": "p", "operations": {"op": {"allow": ["*"])" << entry << "}}}";
    return load_config(dir_ / "server.json");
  }
  void expect_error(const std::string& entry, const std::string& words) {
    auto c = load(entry);
    ASSERT_FALSE(c.ok()) << entry;
    EXPECT_NE(c.error().message.find(words), std::string::npos) << c.error().message;
    EXPECT_NE(c.error().message.find("ops.json:1:"), std::string::npos) << c.error().message;
  }
  fs::path dir_;
};

TEST_F(IsolationConfig, InProcessIsTheDefault) {
  auto c = load("");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE(c->operations.at("op").isolation);
  EXPECT_TRUE(isolated_plugin_files(*c).empty());
}

TEST_F(IsolationConfig, AnIsolatedPluginIsTakenWithItsLimits) {
  auto c = load(R"(, "isolation": "process", "plugin": "libop.so",)"
                R"( "limits": {"memory_mb": 64, "cpu_seconds": 2, "open_files": 32,)"
                R"( "max_concurrent": 3, "max_calls": 100}, "run_as": "nobody")");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const IsolationSpec& spec = *c->operations.at("op").isolation;
  EXPECT_EQ(spec.plugin, "libop.so");
  EXPECT_EQ(spec.limits.memory_bytes, std::optional<std::uint64_t>(64u << 20));
  EXPECT_EQ(spec.limits.cpu_seconds, std::optional<std::uint64_t>(2));
  EXPECT_EQ(spec.limits.open_files, std::optional<std::uint64_t>(32));
  EXPECT_EQ(spec.limits.max_concurrent, 3u);
  EXPECT_EQ(spec.limits.max_calls, 100u);
  EXPECT_EQ(spec.run_as, "nobody");
  // The server must not load it itself.
  EXPECT_EQ(isolated_plugin_files(*c), std::set<std::string>{"libop.so"});
}

TEST_F(IsolationConfig, AnExecProgramIsTakenFromOpsJsonsDirectory) {
  auto c = load(R"(, "exec": ["bin/tool", "--flag", "x y"])");
  ASSERT_TRUE(c.ok()) << c.error().message;
  const IsolationSpec& spec = *c->operations.at("op").isolation;
  ASSERT_EQ(spec.exec.size(), 3u);
  EXPECT_EQ(spec.exec[0], (dir_ / "bin/tool").string());
  EXPECT_EQ(spec.exec[2], "x y");
  EXPECT_EQ(spec.working_dir, dir_);
  // A bare program name is left to the PATH.
  auto bare = load(R"(, "exec": ["python3", "op.py"])");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->operations.at("op").isolation->exec[0], "python3");
}

TEST_F(IsolationConfig, MisusesAreRefusedWithTheirPosition) {
  expect_error(R"(, "isolation": "container")", "must be \"in_process\"");
  expect_error(R"(, "isolation": "process")", "needs \"plugin\"");
  expect_error(R"(, "plugin": "libop.so")", "applies only to an isolated operation");
  expect_error(R"(, "limits": {"memory_mb": 64})", "applies only to an isolated operation");
  expect_error(R"(, "exec": [])", "must be a non-empty array");
  expect_error(R"(, "exec": "python3 op.py")", "must be a non-empty array");
  expect_error(R"(, "exec": ["python3", 1])", "must be a string");
  expect_error(R"(, "exec": ["x"], "plugin": "libop.so")", "cannot be combined");
  expect_error(R"(, "exec": ["x"], "isolation": "in_process")", "cannot be \"in_process\"");
  expect_error(R"(, "exec": ["x"], "limits": {"memory_mb": 1})", "must be an integer from 16");
  expect_error(R"(, "exec": ["x"], "limits": {"max_concurrent": 0})", "must be an integer from 1");
  expect_error(R"(, "exec": ["x"], "limits": {"memroy_mb": 64})", "unknown setting \"memroy_mb\"");
}

}  // namespace
}  // namespace ops::core
