// §9: an error may carry a `details` object. The host's fail_details (plugin ABI) accepts
// only one strict JSON object and the error frame carries it as error.details.
#include <gtest/gtest.h>

#include <string>

#include "dispatch/registry.hpp"
#include "opserver/error.hpp"
#include "plugin_host/host_api.hpp"
#include "proto/messages.hpp"
#include "proto/strict_json.hpp"

namespace ops::core {
namespace {

rapidjson::Document parse_frame(const std::string& frame) {
  rapidjson::Document doc;
  JsonError error;
  EXPECT_TRUE(parse_strict_json(frame.substr(4), doc, error)) << frame << error.reason;
  return doc;
}

TEST(ErrorDetails, FrameCarriesDetailsObject) {
  Error e = fail_with_details(ErrorCode::conflict, "offset mismatch", R"({"offset":1048576})");
  rapidjson::Document doc = parse_frame(error_response_frame(7, e));
  ASSERT_TRUE(doc["error"].HasMember("details"));
  EXPECT_EQ(doc["error"]["details"]["offset"].GetUint64(), 1048576u);
  EXPECT_EQ(std::string(doc["error"]["code"].GetString()), "conflict");
}

TEST(ErrorDetails, FrameWithoutDetailsHasNoMember) {
  rapidjson::Document doc = parse_frame(error_response_frame(7, fail(ErrorCode::conflict, "x")));
  EXPECT_FALSE(doc["error"].HasMember("details"));
}

class HostFailDetails : public ::testing::Test {
 protected:
  void SetUp() override {
    op_.name = "test_op";
    op_.plugin = "test_plugin";
    call_.op = &op_;
    call_.user = "alice";
  }
  Operation op_;
  ops_call call_;
};

TEST_F(HostFailDetails, AppendedAtTheEndOfTheVtable) {
  const ops_host_v1* host = host_vtable();
  EXPECT_EQ(host->struct_size, sizeof(ops_host_v1));
  ASSERT_NE(host->fail_details, nullptr);
  // Appended after create_user: older plugins see the same layout up to there.
  EXPECT_GT(offsetof(ops_host_v1, fail_details), offsetof(ops_host_v1, create_user));
}

TEST_F(HostFailDetails, ValidObjectIsKeptCompact) {
  host_vtable()->fail_details(&call_, OPS_CONFLICT, "behind", "{ \"offset\" : 5 }");
  ASSERT_TRUE(call_.error.has_value());
  EXPECT_EQ(call_.error->code, ErrorCode::conflict);
  EXPECT_EQ(call_.error->message, "behind");
  EXPECT_EQ(call_.error->details, R"({"offset":5})");
}

TEST_F(HostFailDetails, AnythingButOneStrictObjectIsInternal) {
  for (const char* bad : {"[1]", "5", "\"s\"", "{\"a\":1,\"a\":2}", "{\"a\":1} x", "{",
                          "\xEF\xBB\xBF{}", "{\"a\":\"\xC0\xAF\"}"}) {
    ops_call call;
    call.op = &op_;
    host_vtable()->fail_details(&call, OPS_CONFLICT, "m", bad);
    ASSERT_TRUE(call.error.has_value()) << bad;
    EXPECT_EQ(call.error->code, ErrorCode::internal) << bad;
    EXPECT_TRUE(call.error->details.empty()) << bad;
    EXPECT_TRUE(call.host_error) << bad;
  }
  ops_call null_details;
  null_details.op = &op_;
  host_vtable()->fail_details(&null_details, OPS_CONFLICT, "m", nullptr);
  EXPECT_EQ(null_details.error->code, ErrorCode::internal);
}

TEST_F(HostFailDetails, TooDeepOrTooLargeIsInternal) {
  std::string deep(20, '[');
  deep = "{\"a\":" + deep + std::string(20, ']') + "}";
  host_vtable()->fail_details(&call_, OPS_CONFLICT, "m", deep.c_str());
  EXPECT_EQ(call_.error->code, ErrorCode::internal);

  ops_call big;
  big.op = &op_;
  std::string large = "{\"a\":\"" + std::string(20000, 'x') + "\"}";
  host_vtable()->fail_details(&big, OPS_CONFLICT, "m", large.c_str());
  EXPECT_EQ(big.error->code, ErrorCode::internal);
}

TEST_F(HostFailDetails, FatalCodeBecomesInternalButKeepsDetails) {
  host_vtable()->fail_details(&call_, OPS_BAD_FRAME, "m", "{\"x\":true}");
  EXPECT_EQ(call_.error->code, ErrorCode::internal);
}

}  // namespace
}  // namespace ops::core
