// §1, §3, §4 and §7: frames, requests, responses, pipelining and payload discard, against
// the real server with the real plugins and the misbehave test plugin.
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>

#include "harness/server_process.hpp"
#include "scratch_util.hpp"

namespace ops::test {
namespace {

std::string ops_with_test_plugin(const fs::path& dir, const std::string& sleep_extra = "") {
  fs::create_directories(dir);
  for (const char* name : {"libupload.so", "libdownload.so", "liblist.so", "libregister.so"}) {
    fs::copy_file(fs::path(OPS_PLUGIN_DIR) / name, dir / name,
                  fs::copy_options::overwrite_existing);
  }
  fs::copy_file(fs::path(OPS_TEST_PLUGIN_DIR) / "libmisbehave.so", dir / "libmisbehave.so",
                fs::copy_options::overwrite_existing);
  return R"({"plugin_dir": ")" + dir.string() + R"(", "operations": {
    "upload": {"allow": ["*"], "max_payload": 1000000},
    "download": {"allow": ["*"]},
    "list": {"allow": ["*"]},
    "register": {"allow": ["admin"]},
    "throw": {"allow": ["*"]},
    "sleep": {"allow": ["*"])" +
         sleep_extra + R"(},
    "drain": {"allow": ["*"]},
    "half": {"allow": ["*"]},
    "fail": {"allow": ["admin"]}
  }})";
}

class ProtocolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    plugins_ = new TempDir();
    server_ = new ServerProcess(
        ServerOptions{ops_with_test_plugin(plugins_->path() / "p"), R"("discard_limit": 100000)"});
  }
  static void TearDownTestSuite() {
    delete server_;
    delete plugins_;
  }
  std::unique_ptr<RawConnection> admin() {
    auto c = std::make_unique<RawConnection>(server_->port());
    EXPECT_TRUE(c->authenticate("admin", server_->admin_key()));
    return c;
  }
  void expect_bad_frame_and_close(const std::string& bytes) {
    auto c = admin();
    c->send(bytes);
    auto reply = c->read_frame();
    ASSERT_TRUE(reply) << "no reply to " << bytes.size() << " bytes";
    EXPECT_NE(reply->find(R"("code":"bad_frame")"), std::string::npos) << *reply;
    EXPECT_NE(reply->find(R"("id":null)"), std::string::npos) << *reply;
    EXPECT_TRUE(c->closed_within(std::chrono::seconds(3)));
  }
  void expect_usable(RawConnection& c) {
    std::string reply = exchange_frame(c, request_json(4242, "describe"));
    EXPECT_NE(reply.find(R"("id":4242,"ok":true)"), std::string::npos) << reply;
  }
  static TempDir* plugins_;
  static ServerProcess* server_;
};
TempDir* ProtocolTest::plugins_ = nullptr;
ServerProcess* ProtocolTest::server_ = nullptr;

TEST_F(ProtocolTest, LengthLimitsAreExactAtBothEnds) {
  expect_bad_frame_and_close(std::string("\0\0\0\0", 4));
  expect_bad_frame_and_close(std::string("\0\0\0\1{", 5));
  // One byte over max_frame (1 MiB), declared but never sent: refused before reading it.
  expect_bad_frame_and_close(std::string("\0\x10\0\1", 4));
  expect_bad_frame_and_close(std::string("\xff\xff\xff\xff", 4));
  // Exactly max_frame is accepted.
  auto c = admin();
  std::string header = R"({"id":1,"operate":"describe","pad":")";
  header += std::string((1u << 20) - header.size() - 2, 'x') + "\"}";
  ASSERT_EQ(header.size(), 1u << 20);
  EXPECT_NE(exchange_frame(*c, header).find(R"("id":1,"ok":true)"), std::string::npos);
  // Two bytes, the smallest frame, is a valid (empty) object: a request without an id.
  EXPECT_NE(exchange_frame(*c, "{}").find(R"("code":"bad_request")"), std::string::npos);
}

TEST_F(ProtocolTest, MalformedHeadersAreBadFrame) {
  const std::vector<std::string> bad = {
      "[1,2]",
      "\"text\"",
      "{\"id\":1,",
      "{\"id\":1,\"id\":2,\"operate\":\"describe\"}",
      "{\"a\":{\"b\":1,\"b\":2}}",
      "\xEF\xBB\xBF{\"id\":1,\"operate\":\"describe\"}",
      "{\"id\":1,\"operate\":\"describe\"} ",
      "{\"id\":1,\"operate\":\"describe\"}{}",
      "{\"s\":\"\xC3\x28\"}",
      "{\"s\":\"\xED\xA0\x80\"}",
      "{\"s\":\"\\ud800\"}",
      "{\"s\":\"\\udc00\"}",
      "{\"id\":1,\"operate\":\"describe\",\"payload\":1.0}",
      "{\"id\":1,\"operate\":\"describe\",\"payload\":1e2}",
      "{\"id\":1,\"operate\":\"describe\",\"payload\":-1}",
      "{\"id\":1,\"operate\":\"describe\",\"payload\":-0}",
      "{\"id\":1,\"operate\":\"describe\",\"payload\":\"5\"}",
      "{\"id\":1,\"operate\":\"describe\",\"payload\":9007199254740992}",
      "{\"id\":1,\"operate\":\"describe\",\"payload\":null}",
  };
  for (const std::string& h : bad) {
    SCOPED_TRACE(h);
    expect_bad_frame_and_close(frame_of(h));
  }
}

TEST_F(ProtocolTest, NestingLimitIsThirtyTwo) {
  auto nested = [](int depth) {
    std::string s = "{\"id\":1,\"operate\":\"describe\",\"x\":";
    for (int i = 1; i < depth; ++i) s += "[";
    for (int i = 1; i < depth; ++i) s += "]";
    if (depth == 1) s += "0";
    return s + "}";
  };
  auto c = admin();
  EXPECT_NE(exchange_frame(*c, nested(32)).find(R"("ok":true)"), std::string::npos);
  expect_bad_frame_and_close(frame_of(nested(33)));
}

TEST_F(ProtocolTest, IdRulesAndEcho) {
  auto c = admin();
  EXPECT_NE(exchange_frame(*c, R"({"id":9007199254740991,"operate":"describe"})")
                .find(R"("id":9007199254740991,"ok":true)"),
            std::string::npos);
  EXPECT_NE(exchange_frame(*c, R"({"id":0,"operate":"describe"})").find(R"("id":0,"ok":true)"),
            std::string::npos);
  for (const char* h : {R"({"operate":"describe"})", R"({"id":-1,"operate":"describe"})",
                        R"({"id":1.5,"operate":"describe"})", R"({"id":"7","operate":"describe"})",
                        R"({"id":9007199254740992,"operate":"describe"})"}) {
    std::string reply = exchange_frame(*c, h);
    EXPECT_NE(reply.find(R"({"id":null,"ok":false,"error":{"code":"bad_request")"),
              std::string::npos)
        << h << " -> " << reply;
  }
  EXPECT_NE(
      exchange_frame(*c, R"({"id":5})").find(R"({"id":5,"ok":false,"error":{"code":"bad_request")"),
      std::string::npos);
  EXPECT_NE(exchange_frame(*c, R"({"id":6,"operate":7})").find(R"("id":6,"ok":false)"),
            std::string::npos);
  // Unknown top-level members are ignored.
  EXPECT_NE(exchange_frame(*c, R"({"id":8,"operate":"describe","future":{"x":[1]}})")
                .find(R"("id":8,"ok":true)"),
            std::string::npos);
  expect_usable(*c);
}

TEST_F(ProtocolTest, UserMustBeTheAuthenticatedOne) {
  auto c = admin();
  EXPECT_NE(
      exchange_frame(*c, R"({"id":1,"operate":"describe","user":"admin"})").find(R"("ok":true)"),
      std::string::npos);
  EXPECT_NE(
      exchange_frame(*c, R"({"id":2,"operate":"list","user":"bob"})").find(R"("code":"forbidden")"),
      std::string::npos);
  EXPECT_NE(
      exchange_frame(*c, R"({"id":3,"operate":"list","user":7})").find(R"("code":"forbidden")"),
      std::string::npos);
}

TEST_F(ProtocolTest, ErrorsKeepTheConnectionAndDiscardThePayload) {
  auto c = admin();
  std::string payload(5000, 'p');
  EXPECT_NE(exchange_frame(*c, request_json(1, "nosuchop", "", payload.size()), payload)
                .find(R"({"id":1,"ok":false,"error":{"code":"unknown_operation")"),
            std::string::npos);
  EXPECT_NE(exchange_frame(*c, request_json(2, "list", "", payload.size()), payload)
                .find(R"("code":"bad_request")"),
            std::string::npos);
  EXPECT_NE(exchange_frame(
                *c, request_json(3, "upload", R"({"path":"x","bogus":1})", payload.size()), payload)
                .find(R"("code":"invalid_args")"),
            std::string::npos);
  EXPECT_NE(
      exchange_frame(*c, request_json(4, "upload", R"({"path":5})", 3), "abc").find("args/path"),
      std::string::npos);
  EXPECT_NE(exchange_frame(*c, request_json(5, "half", "{}", payload.size()), payload)
                .find(R"("read":2500)"),
            std::string::npos);
  expect_usable(*c);
}

TEST_F(ProtocolTest, PayloadOverTheOperationLimitIsRefusedUnread) {
  auto c = admin();
  // Declared 2 MB against a 1 MB limit: answered at once, and since 2 MB is past the
  // discard limit (100 kB here) the server then closes rather than read it all.
  c->send(frame_of(request_json(1, "upload", R"({"path":"big"})", 2000000)));
  auto reply = c->read_frame();
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->find(R"("code":"payload_too_large")"), std::string::npos) << *reply;
  EXPECT_TRUE(c->closed_within(std::chrono::seconds(3)));
  EXPECT_FALSE(fs::exists(server_->storage_dir() / "admin" / "big"));
}

TEST_F(ProtocolTest, PipelinedRequestsAreAnsweredInOrder) {
  auto c = admin();
  std::string batch;
  for (int i = 1; i <= 50; ++i) {
    if (i % 7 == 0) {
      batch += frame_of(request_json(i, "nosuchop"));
    } else if (i % 5 == 0) {
      batch +=
          frame_of(request_json(
              i, "upload", R"({"path":"pipe/)" + std::to_string(i) + R"(","overwrite":true})", 3)) +
          "abc";
    } else {
      batch += frame_of(request_json(i, "describe"));
    }
  }
  c->send(batch);
  for (int i = 1; i <= 50; ++i) {
    auto reply = c->read_frame();
    ASSERT_TRUE(reply) << "response " << i;
    EXPECT_EQ(reply->rfind("{\"id\":" + std::to_string(i) + ",", 0), 0u) << *reply;
  }
}

TEST_F(ProtocolTest, DescribeListsOnlyWhatTheCallerMayCall) {
  auto c = admin();
  std::string as_admin = exchange_frame(*c, request_json(1, "describe"));
  EXPECT_NE(as_admin.find(R"("name":"register")"), std::string::npos);
  EXPECT_NE(as_admin.find(R"("name":"fail")"), std::string::npos);
  EXPECT_NE(as_admin.find(R"("payload":"in")"), std::string::npos);
  EXPECT_NE(as_admin.find(R"("plugin":"upload")"), std::string::npos);

  std::string key = server_->add_user("carol");
  RawConnection carol(server_->port());
  ASSERT_TRUE(carol.authenticate("carol", key));
  std::string as_carol = exchange_frame(carol, request_json(1, "describe"));
  EXPECT_EQ(as_carol.find(R"("name":"register")"), std::string::npos) << as_carol;
  EXPECT_EQ(as_carol.find(R"("name":"fail")"), std::string::npos);
  EXPECT_NE(as_carol.find(R"("name":"upload")"), std::string::npos);
  EXPECT_NE(exchange_frame(carol, request_json(2, "register", R"({"user":"dave"})"))
                .find(R"("code":"forbidden")"),
            std::string::npos);
}

TEST_F(ProtocolTest, AThrowingHandlerIsInternalAndLeaksNothing) {
  auto c = admin();
  std::string reply = exchange_frame(*c, request_json(1, "throw"));
  EXPECT_NE(reply.find(R"({"id":1,"ok":false,"error":{"code":"internal")"), std::string::npos)
      << reply;
  EXPECT_EQ(reply.find("shadow"), std::string::npos);
  reply = exchange_frame(*c, request_json(2, "throw", R"({"int":1})"));
  EXPECT_NE(reply.find(R"("code":"internal")"), std::string::npos) << reply;
  expect_usable(*c);
  EXPECT_NE(server_->log().find("secret detail"), std::string::npos) << "details belong in the log";
}

TEST_F(ProtocolTest, HandlerErrorsCarryTheirCodeAndMessage) {
  auto c = admin();
  std::string reply =
      exchange_frame(*c, request_json(1, "fail", R"({"message":"no such thing\u0001"})"));
  EXPECT_NE(
      reply.find(R"({"id":1,"ok":false,"error":{"code":"not_found","message":"no such thing )"),
      std::string::npos)
      << reply;
}

TEST_F(ProtocolTest, ASlowHandlerDoesNotStallOtherConnections) {
  auto slow = admin();
  slow->send(frame_of(request_json(1, "sleep", R"({"ms":1500})")));
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    auto fast = admin();
    expect_usable(*fast);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1200));
  EXPECT_NE(slow->read_frame().value_or("").find(R"("slept":true)"), std::string::npos);
}

TEST(ProtocolTimeouts, IdleAndStalledConnectionsAreClosed) {
  ServerProcess server(ServerOptions{"", R"("idle_timeout_ms": 600, "payload_timeout_ms": 600)"});
  {
    RawConnection c(server.port());
    ASSERT_TRUE(c.authenticate("admin", server.admin_key()));
    auto start = std::chrono::steady_clock::now();
    EXPECT_TRUE(c.closed_within(std::chrono::seconds(5)));
    EXPECT_GT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(400));
  }
  {
    // An upload that stops halfway: closed after the payload timeout, nothing left.
    RawConnection c(server.port());
    ASSERT_TRUE(c.authenticate("admin", server.admin_key()));
    c.send(frame_of(request_json(1, "upload", R"({"path":"stalled.bin"})", 1000)) +
           std::string(500, 'x'));
    EXPECT_TRUE(c.closed_within(std::chrono::seconds(5)));
    EXPECT_FALSE(fs::exists(server.storage_dir() / "admin" / "stalled.bin"));
    EXPECT_TRUE(scratch_clean(server.storage_dir()));
  }
  // And the server still serves.
  EXPECT_TRUE(server.connect_admin());
}

TEST(ProtocolTimeouts, AHandlerThatNeverAnswersGetsTimeoutAndTheConnectionLivesOn) {
  TempDir plugins;
  ServerProcess server(
      ServerOptions{ops_with_test_plugin(plugins.path() / "p", R"(, "timeout_ms": 300)"), ""});
  RawConnection c(server.port());
  ASSERT_TRUE(c.authenticate("admin", server.admin_key()));
  auto start = std::chrono::steady_clock::now();
  c.send(frame_of(request_json(1, "sleep", R"({"ms":1500})")));
  auto reply = c.read_frame();
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->find(R"({"id":1,"ok":false,"error":{"code":"timeout")"), std::string::npos)
      << *reply;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1200));
  c.send(frame_of(request_json(2, "describe")));
  reply = c.read_frame();
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->find(R"("id":2,"ok":true)"), std::string::npos);
  // A fast call of the same operation still answers normally.
  c.send(frame_of(request_json(3, "sleep", R"({"ms":1})")));
  EXPECT_NE(c.read_frame().value_or("").find(R"("slept":true)"), std::string::npos);
}

TEST(ProtocolShutdown, SigtermLetsTheRequestInFlightFinish) {
  TempDir plugins;
  ServerProcess server(ServerOptions{ops_with_test_plugin(plugins.path() / "p"), ""});
  RawConnection c(server.port());
  ASSERT_TRUE(c.authenticate("admin", server.admin_key()));
  c.send(frame_of(request_json(1, "sleep", R"({"ms":700})")));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the handler start
  int status = -2;
  std::thread stopper([&] { status = server.stop(); });
  auto reply = c.read_frame(std::chrono::seconds(5));
  stopper.join();
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->find(R"("slept":true)"), std::string::npos);
  EXPECT_EQ(status, 0);
}

}  // namespace
}  // namespace ops::test
