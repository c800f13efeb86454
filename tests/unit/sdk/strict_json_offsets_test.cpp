// The byte offsets parse_strict_json records for config error messages, keyed by JSON
// pointer, including inside an object with more members than the linear duplicate check
// holds (the shipped ops.json has 17 operations; the 17th member's values used to be
// looked up through an emptied key list and crashed the server at start-up).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "opserver/strict_json.hpp"

namespace ops::json {
namespace {

TEST(StrictJsonOffsets, PointersIntoAWideObject) {
  std::string text = "{\"operations\": {";
  for (int i = 0; i < 40; ++i) {
    if (i > 0) text += ", ";
    text += "\"op" + std::to_string(i) + "\": {\"allow\": [\"*\"]}";
  }
  text += "}}";
  std::map<std::string, std::size_t> offsets;
  StrictJsonOptions options;
  options.offsets = &offsets;
  rapidjson::Document doc;
  JsonError error;
  ASSERT_TRUE(parse_strict_json(text, doc, error, options)) << error.reason;
  for (int i : {0, 15, 16, 17, 39}) {
    const std::string op = "op" + std::to_string(i);
    // Offsets are for line:col messages: near the value, here between the member's name
    // and its opening bracket (the reader may stop on the whitespace before it).
    const std::string pointer = "/operations/" + op + "/allow";
    ASSERT_EQ(offsets.count(pointer), 1u) << pointer;
    const std::size_t member = text.find("\"" + op + "\"");
    EXPECT_GT(offsets[pointer], member) << pointer;
    EXPECT_LE(offsets[pointer], text.find('[', member)) << pointer;
  }
}

TEST(StrictJsonOffsets, DuplicatesStillRefusedPastTheLinearLimit) {
  std::string text = "{";
  for (int i = 0; i < 20; ++i) text += "\"k" + std::to_string(i) + "\": 1, ";
  text += "\"k3\": 2}";
  rapidjson::Document doc;
  JsonError error;
  std::map<std::string, std::size_t> offsets;
  StrictJsonOptions options;
  options.offsets = &offsets;
  EXPECT_FALSE(parse_strict_json(text, doc, error, options));
  EXPECT_NE(error.reason.find("duplicate member name \"k3\""), std::string::npos) << error.reason;
}

}  // namespace
}  // namespace ops::json
