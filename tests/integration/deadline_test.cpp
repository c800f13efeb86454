// §12 deadlines over real sockets, with the real plugins (and the misbehave test plugin's
// `sleep`): passed while queued, passed while running, malformed, and met.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "harness/server_process.hpp"

namespace ops::test {
namespace {

using std::chrono::milliseconds;

std::string ops_json(const fs::path& dir) {
  fs::create_directories(dir);
  for (const char* name : {"libupload.so", "libdownload.so", "liblist.so", "libregister.so"}) {
    fs::copy_file(fs::path(OPS_PLUGIN_DIR) / name, dir / name,
                  fs::copy_options::overwrite_existing);
  }
  fs::copy_file(fs::path(OPS_TEST_PLUGIN_DIR) / "libmisbehave.so", dir / "libmisbehave.so",
                fs::copy_options::overwrite_existing);
  return R"({"plugin_dir": ")" + dir.string() + R"(", "operations": {
    "upload": {"allow": ["*"]}, "download": {"allow": ["*"]}, "list": {"allow": ["*"]},
    "register": {"allow": ["admin"]}, "sleep": {"allow": ["*"]}}})";
}

class Deadlines : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    plugins_ = new TempDir();
    server_ = new ServerProcess(ServerOptions{ops_json(plugins_->path() / "p")});
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
  static fs::path stored(const std::string& name) {
    return server_->storage_dir() / "admin" / name;
  }
  void expect_usable(RawConnection& c, std::uint64_t id) {
    std::string reply = exchange_frame(c, request_json(id, "describe"));
    EXPECT_NE(reply.find("\"id\":" + std::to_string(id) + ",\"ok\":true"), std::string::npos)
        << reply;
  }
  static TempDir* plugins_;
  static ServerProcess* server_;
};
TempDir* Deadlines::plugins_ = nullptr;
ServerProcess* Deadlines::server_ = nullptr;

std::string with_deadline(std::string header, std::uint32_t ms) {
  header.pop_back();
  return header + ",\"deadline_ms\":" + std::to_string(ms) + "}";
}

TEST_F(Deadlines, PassedWhileQueuedBehindASlowRequestIsTimeoutWithoutRunning) {
  // A download the client does not read yet holds the connection; the request behind it,
  // sent separately, waits in the socket past its deadline.
  std::string big(48u << 20, 'b');
  std::ofstream(stored("big.bin"), std::ios::binary) << big;
  auto c = admin();
  ASSERT_TRUE(c->send(frame_of(request_json(1, "download", R"({"path":"big.bin"})"))));
  std::this_thread::sleep_for(milliseconds(100));
  ASSERT_TRUE(c->send(
      frame_of(with_deadline(request_json(2, "upload", R"({"path":"queued.bin"})", 4), 200)) +
      "abcd"));
  std::this_thread::sleep_for(milliseconds(800));
  auto first = c->read_frame();
  ASSERT_TRUE(first);
  EXPECT_NE(first->find("\"ok\":true"), std::string::npos) << *first;
  auto body = c->read_exact(big.size(), std::chrono::seconds(20));
  ASSERT_TRUE(body);
  auto second = c->read_frame();
  ASSERT_TRUE(second) << server_->log();
  EXPECT_NE(second->find("\"id\":2"), std::string::npos) << *second;
  EXPECT_NE(second->find("\"code\":\"timeout\""), std::string::npos) << *second;
  EXPECT_FALSE(fs::exists(stored("queued.bin")));
  expect_usable(*c, 3);
  fs::remove(stored("big.bin"));
}

TEST_F(Deadlines, PassedWhileAnUploadRunsIsTimeoutAndNothingIsStored) {
  auto c = admin();
  ASSERT_TRUE(c->send(
      frame_of(with_deadline(request_json(1, "upload", R"({"path":"late.bin"})", 20), 300)) +
      "0123456789"));
  std::this_thread::sleep_for(milliseconds(700));
  ASSERT_TRUE(c->send("0123456789"));  // the rest arrives late: it is discarded
  auto reply = c->read_frame();
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->find("\"code\":\"timeout\""), std::string::npos) << *reply;
  EXPECT_FALSE(fs::exists(stored("late.bin")));
  expect_usable(*c, 2);
}

TEST_F(Deadlines, PassedWhileAHandlerComputesIsTimeoutAtTheDeadline) {
  auto c = admin();
  const auto start = std::chrono::steady_clock::now();
  std::string reply =
      exchange_frame(*c, with_deadline(request_json(1, "sleep", R"({"ms":1500})"), 200));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_NE(reply.find("\"code\":\"timeout\""), std::string::npos) << reply;
  EXPECT_LT(took, milliseconds(1200)) << "answered at the operation's end, not its deadline";
  expect_usable(*c, 2);
}

TEST_F(Deadlines, MetDeadlinesChangeNothing) {
  auto c = admin();
  std::string reply = exchange_frame(
      *c, with_deadline(request_json(1, "upload", R"({"path":"met.bin"})", 3), 60000), "xyz");
  EXPECT_NE(reply.find("\"ok\":true"), std::string::npos) << reply;
  EXPECT_TRUE(fs::exists(stored("met.bin")));
  reply = exchange_frame(*c, with_deadline(request_json(2, "list"), 2147483647));
  EXPECT_NE(reply.find("\"ok\":true"), std::string::npos) << reply;
}

TEST_F(Deadlines, AMalformedDeadlineIsBadRequestAndTheConnectionStays) {
  auto c = admin();
  std::uint64_t id = 1;
  for (const char* bad : {"0", "2147483648", "\"100\"", "null", "true", "{}"}) {
    std::string header = request_json(id, "list");
    header.pop_back();
    header += std::string(",\"deadline_ms\":") + bad + "}";
    std::string reply = exchange_frame(*c, header);
    EXPECT_NE(reply.find("\"code\":\"bad_request\""), std::string::npos) << bad << ": " << reply;
    EXPECT_NE(reply.find("\"id\":" + std::to_string(id)), std::string::npos) << reply;
    ++id;
  }
  // A malformed deadline on a request with a payload: answered, payload discarded.
  std::string header = request_json(id, "upload", R"({"path":"x.bin"})", 5);
  header.pop_back();
  std::string reply = exchange_frame(*c, header + ",\"deadline_ms\":-5}", "12345");
  EXPECT_NE(reply.find("\"code\":\"bad_request\""), std::string::npos) << reply;
  EXPECT_FALSE(fs::exists(stored("x.bin")));
  expect_usable(*c, id + 1);
}

}  // namespace
}  // namespace ops::test
