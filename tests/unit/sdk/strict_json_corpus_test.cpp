// The strict JSON rules against the JSONTestSuite corpus (../shared/corpora): every y_ file
// that is an object is accepted, every n_ file refused, and the validate-only path used on
// plugin results agrees with the full parser on every file, i_ ones included.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "opserver/strict_json.hpp"

namespace ops::json {
namespace {

namespace fs = std::filesystem;

TEST(StrictJsonCorpus, JsonTestSuite) {
  const fs::path dir = fs::path(OPS_CORPORA_DIR) / "jsontestsuite" / "test_parsing";
  if (!fs::is_directory(dir)) GTEST_SKIP() << "no corpus at " << dir;
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    const std::string name = entry.path().filename().string();
    rapidjson::Document doc;
    JsonError error;
    const bool parsed = parse_strict_json(text, doc, error);
    JsonError validate_error;
    const bool validated = validate_strict_object(text, validate_error);
    EXPECT_EQ(validated, parsed && doc.IsObject()) << name;
    if (name.rfind("n_", 0) == 0) {
      EXPECT_FALSE(parsed) << name << " was accepted";
    }
    ++files;
  }
  EXPECT_GT(files, 300u);
}

}  // namespace
}  // namespace ops::json

namespace ops::json {
namespace {

// An object of more than 16 members switches its duplicate check to a hash set; the JSON
// pointers of values nested in its later members must still name them (the shipped
// ops.json, 17 operations, crashed here).
TEST(StrictJsonOffsets, PointersInsideTheSeventeenthMemberOfAnObject) {
  std::string text = R"({"ops": {)";
  for (int i = 0; i < 17; ++i) {
    if (i > 0) text += ',';
    text += "\"op";
    text += std::to_string(i);
    text += R"(": {"allow": ["*"]})";
  }
  text += "}}";
  rapidjson::Document doc;
  JsonError error;
  std::map<std::string, std::size_t> offsets;
  StrictJsonOptions options;
  options.offsets = &offsets;
  ASSERT_TRUE(parse_strict_json(text, doc, error, options)) << error.reason;
  ASSERT_TRUE(offsets.count("/ops/op16/allow"));
  EXPECT_TRUE(offsets.count("/ops/op16/allow/0"));
}

}  // namespace
}  // namespace ops::json
