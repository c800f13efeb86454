// The dispatch rules as a pure function (core/dispatch/dispatcher.hpp): each check in its
// order, shown by requests that break two rules at once, so the earlier rule must win.
#include "dispatch/dispatcher.hpp"

#include <gtest/gtest.h>

#include "dispatch/registry.hpp"
#include "plugin_host/plugin_loader.hpp"
#include "proto/header.hpp"

namespace ops::core {
namespace {

class Dispatcher : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Config config;
    config.plugin_dir = OPS_TEST_PLUGIN_DIR;
    config.operations["upload"].allow = {"*"};
    config.operations["upload"].max_payload = 10;
    config.operations["list"].allow = {"alice"};
    config.operations["register"].allow = {"admin"};
    auto loaded = load_plugins(config.plugin_dir);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    auto registry = Registry::build(config, std::move(*loaded));
    ASSERT_TRUE(registry.ok()) << registry.error().message;
    snapshot_ = new Snapshot{RuntimeSettings{}, std::move(*registry), 1};
  }
  static void TearDownTestSuite() { delete snapshot_; }

  // The error code the dispatcher gives `json` for `user`, or "call"/"describe".
  static std::string decide(const std::string& json, const std::string& user = "alice") {
    auto header = parse_header(json);
    EXPECT_TRUE(header.ok()) << json;
    auto interpreted = interpret_request(*header);
    EXPECT_TRUE(std::holds_alternative<Request>(interpreted)) << json;
    Decision d = dispatch(*snapshot_, user, std::get<Request>(interpreted));
    if (std::holds_alternative<DescribeDecision>(d)) return "describe";
    if (auto* call = std::get_if<CallDecision>(&d)) return "call " + call->op->name;
    return std::string(wire_name(std::get<Error>(d).code));
  }

  static Snapshot* snapshot_;
};
Snapshot* Dispatcher::snapshot_ = nullptr;

TEST_F(Dispatcher, EachCheckInItsOrder) {
  // 1. another user's name comes before everything, describe included
  EXPECT_EQ(decide(R"({"id":1,"operate":"describe","user":"bob","payload":5})"), "forbidden");
  EXPECT_EQ(decide(R"({"id":1,"operate":"nope","user":"bob"})"), "forbidden");
  EXPECT_EQ(decide(R"({"id":1,"operate":"list","user":7})"), "forbidden");
  // 2. describe is built in, takes no payload
  EXPECT_EQ(decide(R"({"id":1,"operate":"describe","user":"alice"})"), "describe");
  EXPECT_EQ(decide(R"({"id":1,"operate":"describe","payload":1})"), "bad_request");
  // 3. unknown before anything about the operation
  EXPECT_EQ(decide(R"({"id":1,"operate":"download","args":3,"payload":9})"), "unknown_operation");
  // 4. the allow list before the args and the payload
  EXPECT_EQ(decide(R"({"id":1,"operate":"list","args":3,"payload":9})", "bob"), "forbidden");
  EXPECT_EQ(decide(R"({"id":1,"operate":"register","args":[]})"), "forbidden");
  // 5. args must be an object, before the payload direction
  EXPECT_EQ(decide(R"({"id":1,"operate":"list","args":"x","payload":9})"), "invalid_args");
  // 6. a payload only where the operation takes one, before max_payload
  EXPECT_EQ(decide(R"({"id":1,"operate":"list","payload":99})"), "bad_request");
  // 7. max_payload before the schema
  EXPECT_EQ(decide(R"({"id":1,"operate":"upload","args":{},"payload":11})"), "payload_too_large");
  // 8. the schema last
  EXPECT_EQ(decide(R"({"id":1,"operate":"upload","args":{},"payload":10})"), "invalid_args");
  EXPECT_EQ(decide(R"({"id":1,"operate":"upload","args":{"path":"a"},"payload":10})"),
            "call upload");
  EXPECT_EQ(decide(R"({"id":1,"operate":"list"})"), "call list");
  EXPECT_EQ(decide(R"({"id":1,"operate":"list","args":null})"), "call list");
}

TEST(RequestDeadline, ParsedAsSection12Says) {
  auto interpret = [](const std::string& json) { return interpret_request(*parse_header(json)); };
  auto ok = interpret(R"({"id":1,"operate":"x","deadline_ms":2147483647})");
  ASSERT_TRUE(std::holds_alternative<Request>(ok));
  EXPECT_EQ(std::get<Request>(ok).deadline_ms, 2147483647u);
  EXPECT_FALSE(std::get<Request>(interpret(R"({"id":1,"operate":"x"})")).deadline_ms);
  for (const char* bad : {"0", "2147483648", "-1", "1.5", "\"5\"", "null", "1e3", "[]"}) {
    auto r = interpret(std::string(R"({"id":4,"operate":"x","deadline_ms":)") + bad + "}");
    if (!std::holds_alternative<RequestError>(r)) {
      // Malformed numbers never parse as a header at all (bad_frame); those that do must
      // be refused here.
      ADD_FAILURE() << bad;
      continue;
    }
    EXPECT_EQ(std::get<RequestError>(r).error.code, ErrorCode::bad_request) << bad;
    EXPECT_EQ(std::get<RequestError>(r).id, 4u) << bad;
  }
}

}  // namespace
}  // namespace ops::core
