// Whole sessions over the in-memory transport: the real session, dispatcher, plugins and
// payload paths (over the strand, as for any transport without a native fd), fed byte by
// byte and in random chunks. The answers must not depend on how the bytes were cut.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "in_process_server.hpp"
#include "opserver/frame.hpp"
#include "opserver/proof.hpp"

namespace ops::test {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

std::string request(const std::string& header, const std::string& payload = "") {
  return frame::encode(header) + payload;
}

// A pipelined batch touching every path: describe, an upload with a payload, a download
// with a payload back, list, an error that leaves the connection usable, a deadline.
std::string batch(const std::string& body) {
  return request(R"({"id":1,"operate":"describe"})") +
         request(R"({"id":2,"operate":"upload","args":{"path":"d/f.bin"},"payload":)" +
                     std::to_string(body.size()) + "}",
                 body) +
         request(R"({"id":3,"operate":"download","args":{"path":"d/f.bin"}})") +
         request(R"({"id":4,"operate":"list","args":{"path":"d"}})") +
         request(R"({"id":5,"operate":"nope","payload":3})", "xyz") +
         request(R"({"id":6,"operate":"describe","deadline_ms":0})") +
         request(R"({"id":7,"operate":"describe","deadline_ms":60000})");
}

struct Answer {
  std::string header;
  std::string payload;
};

// Reads `n` answers; a download's payload is read by its announced size.
std::vector<Answer> read_answers(core::MemoryPeer& peer, int n) {
  std::vector<Answer> out;
  for (int i = 0; i < n; ++i) {
    Answer a;
    a.header = InProcessServer::read_header(peer);
    if (a.header.empty()) break;
    rapidjson::Document doc;
    doc.Parse(a.header.data(), a.header.size());
    if (doc.IsObject() && doc.HasMember("payload") && doc["payload"].IsUint64()) {
      a.payload = peer.read_exact(doc["payload"].GetUint64(), std::chrono::seconds(5));
    }
    out.push_back(std::move(a));
  }
  return out;
}

std::string ids_and_codes(const std::vector<Answer>& answers) {
  std::string out;
  for (const Answer& a : answers) {
    auto id = a.header.substr(0, a.header.find(','));
    auto code = a.header.find("\"code\":\"");
    out += id;
    out += code == std::string::npos ? std::string(" ok") : std::string(" ");
    if (code != std::string::npos) {
      out += a.header.substr(code + 8, a.header.find('"', code + 8) - code - 8);
    }
    out += "\n";
  }
  return out;
}

std::string sample_body(std::size_t n) {
  std::string body(n, '\0');
  std::mt19937 rng(7);
  for (char& c : body) c = static_cast<char>(rng());
  return body;
}

void check_batch(const std::vector<Answer>& answers, const std::string& body) {
  ASSERT_EQ(answers.size(), 7u) << ids_and_codes(answers);
  EXPECT_EQ(ids_and_codes(answers),
            "{\"id\":1 ok\n{\"id\":2 ok\n{\"id\":3 ok\n{\"id\":4 ok\n"
            "{\"id\":5 unknown_operation\n{\"id\":6 bad_request\n{\"id\":7 ok\n");
  EXPECT_EQ(answers[2].payload, body);
  EXPECT_NE(answers[3].header.find("\"f.bin\""), std::string::npos);
}

TEST(SessionOverMemory, OneWriteServesThePipelinedBatch) {
  InProcessServer server;
  auto peer = server.connect();
  ASSERT_EQ(InProcessServer::login(peer), "");
  const std::string body = sample_body(300000);
  peer.write(batch(body));
  check_batch(read_answers(peer, 7), body);
  std::ifstream stored(server.user_dir() / "d" / "f.bin", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(stored), {}), body);
}

TEST(SessionOverMemory, ByteByByteGivesTheSameAnswers) {
  InProcessServer server;
  auto peer = server.connect();
  ASSERT_EQ(InProcessServer::login(peer), "");
  const std::string body = sample_body(3000);
  for (char c : batch(body)) peer.write(std::string_view(&c, 1));
  check_batch(read_answers(peer, 7), body);
}

TEST(SessionOverMemory, RandomChunksGiveTheSameAnswers) {
  InProcessServer server;
  const std::string body = sample_body(200000);
  const std::string bytes = batch(body);
  for (unsigned seed : {1u, 2u, 3u}) {
    auto peer = server.connect();
    ASSERT_EQ(InProcessServer::login(peer), "");
    std::mt19937 rng(seed);
    std::size_t at = 0;
    while (at < bytes.size()) {
      std::size_t n = std::min<std::size_t>(bytes.size() - at, 1 + rng() % 9000);
      peer.write(std::string_view(bytes).substr(at, n));
      at += n;
    }
    // The second upload of the same path without overwrite: already_exists, so re-create.
    auto answers = read_answers(peer, 7);
    ASSERT_EQ(answers.size(), 7u) << "seed " << seed;
    if (seed == 1) {
      check_batch(answers, body);
    } else {
      EXPECT_NE(answers[1].header.find("already_exists"), std::string::npos);
    }
  }
}

TEST(SessionOverMemory, AHalfClosedClientIsAnsweredThenClosed) {
  InProcessServer server;
  auto peer = server.connect();
  ASSERT_EQ(InProcessServer::login(peer), "");
  peer.write(request(R"({"id":9,"operate":"describe"})"));
  peer.close_write();
  EXPECT_NE(InProcessServer::read_header(peer).find("\"id\":9"), std::string::npos);
  EXPECT_TRUE(peer.wait_server_closed(std::chrono::seconds(5)));
}

TEST(SessionOverMemory, AStalledUploadOverTheStrandEndsAtThePayloadTimeout) {
  InProcessServer server(R"("payload_timeout_ms": 300, "payload_min_rate": 0)");
  auto peer = server.connect();
  ASSERT_EQ(InProcessServer::login(peer), "");
  peer.write(request(R"({"id":1,"operate":"upload","args":{"path":"s.bin"},"payload":100})",
                     "only ten.."));
  EXPECT_TRUE(peer.wait_server_closed(std::chrono::seconds(5)));
  EXPECT_FALSE(fs::exists(server.user_dir() / "s.bin"));
}

TEST(SessionOverMemory, AnUploadPastItsDeadlineIsTimeoutAndStoresNothing) {
  InProcessServer server;
  auto peer = server.connect();
  ASSERT_EQ(InProcessServer::login(peer), "");
  // Over the strand the deadline is checked before each read: the second half arrives
  // after it.
  peer.write(request(
      R"({"id":1,"operate":"upload","args":{"path":"late.bin"},"payload":20,"deadline_ms":200})",
      "0123456789"));
  std::this_thread::sleep_for(milliseconds(400));
  peer.write("0123456789");
  std::string answer = InProcessServer::read_header(peer);
  EXPECT_NE(answer.find("\"timeout\""), std::string::npos) << answer;
  EXPECT_FALSE(fs::exists(server.user_dir() / "late.bin"));
  peer.write(request(R"({"id":2,"operate":"describe"})"));
  EXPECT_NE(InProcessServer::read_header(peer).find("\"id\":2,\"ok\":true"), std::string::npos);
}

}  // namespace
}  // namespace ops::test
