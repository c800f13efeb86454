// The parse result must not depend on how bytes are split (Beast's parsegrind, Chromium's
// 1-32 byte re-chunking): one recorded request stream, replayed after the handshake split
// at every byte offset and in random small chunks, gives byte-identical responses.
#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <thread>

#include "harness/server_process.hpp"

namespace ops::test {
namespace {

class ReplayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess();
    auto admin = server_->connect_admin();
    ASSERT_TRUE(admin);
    ASSERT_TRUE(admin->call("upload", R"({"path":"fixed/a.txt"})", "alpha"));
  }
  static void TearDownTestSuite() { delete server_; }

  // Deterministic requests only: no timestamps change between replays.
  static std::string recorded() {
    std::string s;
    s += frame_of(request_json(1, "describe"));
    s += frame_of(request_json(2, "upload", R"({"path":"replay/data.bin","overwrite":true})", 11)) +
         "hello world";
    s += frame_of(request_json(3, "download", R"({"path":"replay/data.bin","offset":6})"));
    s += frame_of(request_json(4, "nosuchop", "", 3)) + "xyz";
    s += frame_of(R"({"id":5})");
    s += frame_of(request_json(6, "download", R"({"path":"fixed/a.txt"})"));
    s += frame_of(request_json(7, "upload", R"({"path":"../escape"})", 2)) + "no";
    return s;
  }

  // Sends `chunks` in order with a short pause between them, so the server sees them as
  // separate reads; returns every byte the server answered until the 7th response.
  std::string replay(const std::vector<std::string>& chunks) {
    RawConnection c(server_->port());
    EXPECT_TRUE(c.authenticate("admin", server_->admin_key()));
    for (const std::string& chunk : chunks) {
      c.send(chunk);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    std::string out;
    for (int i = 0; i < 7; ++i) {
      auto frame = c.read_frame_bytes();
      if (!frame) return out + "<closed>";
      out += *frame;
      // The server writes a top-level payload member last.
      static const std::regex kPayload(R"(,"payload":(\d+)\}$)");
      std::smatch m;
      std::string header = frame->substr(4);
      if (std::regex_search(header, m, kPayload)) {
        out += c.read_exact(std::stoull(m[1])).value_or("<short>");
      }
    }
    return out;
  }
  static ServerProcess* server_;
};
ServerProcess* ReplayTest::server_ = nullptr;

TEST_F(ReplayTest, EverySplitPointGivesTheSameBytes) {
  std::string bytes = recorded();
  std::string reference = replay({bytes});
  ASSERT_NE(reference.find("\"id\":7"), std::string::npos) << reference;
  for (std::size_t at = 1; at < bytes.size(); ++at) {
    ASSERT_EQ(replay({bytes.substr(0, at), bytes.substr(at)}), reference) << "split at " << at;
  }
}

TEST_F(ReplayTest, RandomChunksOfOneToThirtyTwoBytesGiveTheSameBytes) {
  std::string bytes = recorded();
  std::string reference = replay({bytes});
  std::mt19937 rng(20261125);  // fixed seed: failures reproduce
  std::uniform_int_distribution<std::size_t> size(1, 32);
  for (int round = 0; round < 20; ++round) {
    std::vector<std::string> chunks;
    for (std::size_t at = 0; at < bytes.size();) {
      std::size_t n = std::min(size(rng), bytes.size() - at);
      chunks.push_back(bytes.substr(at, n));
      at += n;
    }
    ASSERT_EQ(replay(chunks), reference) << "round " << round;
  }
}

}  // namespace
}  // namespace ops::test
