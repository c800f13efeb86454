#include <gtest/gtest.h>

#include <set>

#include "opserver/error.hpp"
#include "proto/messages.hpp"
#include "proto/strict_json.hpp"

namespace ops::core {
namespace {

TEST(ErrorCodes, EveryCodeHasItsWireNameAndRoundTrips) {
  std::set<std::string_view> names;
  for (ErrorCode code : kAllErrorCodes) {
    std::string_view name = wire_name(code);
    EXPECT_TRUE(names.insert(name).second) << name;
    EXPECT_EQ(error_code_from_wire(name), code);
    EXPECT_EQ(error_code_from_abi(static_cast<int>(code)), code);
  }
  EXPECT_EQ(names.size(), 15u);  // the complete set of §3
  EXPECT_TRUE(is_fatal(ErrorCode::bad_frame));
  EXPECT_TRUE(is_fatal(ErrorCode::auth_failed));
  EXPECT_FALSE(is_fatal(ErrorCode::bad_request));
  EXPECT_EQ(error_code_from_abi(0), ErrorCode::internal);
  EXPECT_EQ(error_code_from_abi(99), ErrorCode::internal);
}

TEST(Messages, AuthFailedIsTheExactSection2Frame) {
  const std::string& f = auth_failed_frame();
  EXPECT_EQ(f.substr(4),
            R"({"type":"error","error":{"code":"auth_failed","message":"authentication failed"}})");
  EXPECT_EQ(static_cast<unsigned char>(f[3]), f.size() - 4);
}

TEST(Messages, ResponsesAreValidJson) {
  for (const std::string& frame :
       {ok_response_frame(7, R"({"a":1})", 0), ok_response_frame(8, "{}", 10),
        error_response_frame(std::nullopt, {ErrorCode::bad_request, "quote \" and \x01"}),
        error_response_frame(9, {ErrorCode::not_found, "x"}), challenge_frame(std::string(64, 'a')),
        welcome_frame("u", std::string(64, 'b'), "opserver/0")}) {
    rapidjson::Document doc;
    JsonError error;
    EXPECT_TRUE(parse_strict_json(frame.substr(4), doc, error)) << frame << error.reason;
  }
  EXPECT_EQ(ok_response_frame(8, "{}", 10).substr(4),
            R"({"id":8,"ok":true,"result":{},"payload":10})");
}

TEST(StrictJson, ReportsLineAndColumn) {
  rapidjson::Document doc;
  JsonError error;
  std::string text = "{\n  \"a\": 1,\n  \"a\": 2\n}";
  ASSERT_FALSE(parse_strict_json(text, doc, error));
  LineCol lc = line_col(text, error.offset);
  EXPECT_EQ(lc.line, 3u);
}

}  // namespace
}  // namespace ops::core
