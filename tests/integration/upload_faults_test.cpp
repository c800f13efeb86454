// Uploads that do not complete (OPS/1 §5: "otherwise nothing is left behind"): a client
// that vanishes at 0 bytes, halfway, one byte short, with a reset, or that stalls past the
// payload timeout leaves no file, no temporary file and no new directory, and an old file
// stays as it was. One that disconnects after the last byte, before reading the answer,
// leaves the complete file.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <chrono>
#include <functional>
#include <thread>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/proof.hpp"
#include "scratch_util.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;

// Polls `done` until it holds or `limit` passes (the server works asynchronously; each
// wait has a positive condition to reach, never a bare sleep).
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

class UploadFaults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess(ServerOptions{"", R"("payload_timeout_ms": 1000)"});
    key_ = new std::string(server_->add_user("frank"));
  }
  static void TearDownTestSuite() {
    delete server_;
    delete key_;
  }
  void TearDown() override { EXPECT_TRUE(server_->running()) << server_->log(); }

  fs::path home() const { return server_->storage_dir() / "frank"; }
  // Size of the one temporary upload file (in the server's node-<id>/), or -1 if none.
  std::int64_t temp_size() const {
    for (const std::string& name : scratch_temporaries(server_->storage_dir())) {
      struct stat st {};
      if (::stat((server_->storage_dir() / ".ops-tmp" / name).c_str(), &st) == 0) {
        return st.st_size;
      }
    }
    return -1;
  }
  bool scratch_empty() const { return scratch_clean(server_->storage_dir()); }

  // Starts an upload of `body` to `path`, sends its first `sent` bytes, waits until the
  // server has stored them in its temporary file, and returns the open client.
  std::unique_ptr<client::Client> start_upload(const std::string& path, const std::string& body,
                                               std::size_t sent, const std::string& extra = "") {
    auto c = server_->connect("frank", *key_);
    if (!c) return nullptr;
    auto id = c->send_request("upload", "{\"path\":" + jstr(path) + extra + "}", body.size());
    EXPECT_TRUE(id.ok());
    if (sent > 0) {
      EXPECT_TRUE(c->send_payload(body.data(), sent).ok());
    }
    EXPECT_TRUE(eventually([&] { return temp_size() == static_cast<std::int64_t>(sent); }))
        << "the server never stored " << sent << " bytes; temp size " << temp_size();
    return c;
  }

  static ServerProcess* server_;
  static std::string* key_;
};
ServerProcess* UploadFaults::server_ = nullptr;
std::string* UploadFaults::key_ = nullptr;

const std::string kBody = [] {
  std::string s(3 * 1024 * 1024 + 17, '\0');
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>(i * 131 + (i >> 9));
  return s;
}();

TEST_F(UploadFaults, VanishingClientLeavesNothing) {
  struct Case {
    const char* name;
    std::size_t sent;
  };
  for (const Case& k : {Case{"at zero bytes", 0}, Case{"halfway", kBody.size() / 2},
                        Case{"one byte short", kBody.size() - 1}}) {
    SCOPED_TRACE(k.name);
    auto c = start_upload("vanish/file.bin", kBody, k.sent);
    ASSERT_TRUE(c);
    c.reset();  // close the socket mid-payload
    EXPECT_TRUE(eventually([&] { return scratch_empty(); })) << "temporary file left behind";
    EXPECT_FALSE(fs::exists(home() / "vanish")) << "a directory was left behind";
  }
}

TEST_F(UploadFaults, ResetMidUploadLeavesNothing) {
  auto c = start_upload("reset.bin", kBody, kBody.size() / 3);
  ASSERT_TRUE(c);
  linger hard{1, 0};  // close() sends RST
  ASSERT_EQ(::setsockopt(c->native_handle(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard), 0);
  c.reset();
  EXPECT_TRUE(eventually([&] { return scratch_empty(); }));
  EXPECT_FALSE(fs::exists(home() / "reset.bin"));
}

TEST_F(UploadFaults, VanishingOverwriteLeavesTheOldFile) {
  auto first = server_->connect("frank", *key_);
  ASSERT_TRUE(first);
  ASSERT_TRUE(upload(*first, "keep.bin", "old content").ok);
  auto c = start_upload("keep.bin", kBody, kBody.size() - 1, ",\"overwrite\":true");
  ASSERT_TRUE(c);
  c.reset();
  EXPECT_TRUE(eventually([&] { return scratch_empty(); }));
  EXPECT_EQ(read_file(home() / "keep.bin"), "old content");
}

TEST_F(UploadFaults, StalledClientIsTimedOutAndLeavesNothing) {
  auto c = start_upload("stall.bin", kBody, kBody.size() / 2);
  ASSERT_TRUE(c);
  // No more bytes: the server gives up after payload_timeout_ms (1 s here, §7: 60 s by
  // default), removes the temporary file and closes the connection.
  EXPECT_TRUE(eventually([&] { return scratch_empty(); }, 15s));
  EXPECT_FALSE(fs::exists(home() / "stall.bin"));
  auto r = c->read_response();
  EXPECT_FALSE(r.ok() && r->ok) << "a stalled upload must not succeed";
}

TEST_F(UploadFaults, DisconnectAfterTheLastByteKeepsTheCompleteFile) {
  auto c = start_upload("complete.bin", kBody, 0);
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->send_payload(kBody.data(), kBody.size()).ok());
  c.reset();  // never reads the answer
  EXPECT_TRUE(eventually([&] {
    std::error_code ec;
    return fs::file_size(home() / "complete.bin", ec) == kBody.size() && !ec;
  }));
  EXPECT_TRUE(read_file(home() / "complete.bin") == kBody);
  EXPECT_TRUE(eventually([&] { return scratch_empty(); }));
}

TEST_F(UploadFaults, WrongChecksumLeavesNothingAndTheConnectionWorks) {
  auto c = server_->connect("frank", *key_);
  ASSERT_TRUE(c);
  auto bad = upload(*c, "sum/bad.bin", kBody, ",\"sha256\":" + jstr(std::string(64, 'a')));
  EXPECT_OP_ERR(bad, "checksum_mismatch");
  EXPECT_TRUE(scratch_empty());
  EXPECT_FALSE(fs::exists(home() / "sum"));
  auto good = upload(*c, "sum/good.bin", kBody, ",\"sha256\":" + jstr(proof::sha256_hex(kBody)));
  EXPECT_OP_OK(good);
}

// Refusals that need no payload come before any byte is stored: the payload is discarded
// and the connection stays usable (§3).
TEST_F(UploadFaults, EarlyRefusalsStoreNothing) {
  auto c = server_->connect("frank", *key_);
  ASSERT_TRUE(c);
  ASSERT_TRUE(upload(*c, "exists.bin", "x").ok);
  ASSERT_TRUE(upload(*c, "adir/f", "x").ok);
  EXPECT_OP_ERR(upload(*c, "exists.bin", kBody), "already_exists");
  EXPECT_OP_ERR(upload(*c, "adir", kBody, ",\"overwrite\":true"), "conflict");
  EXPECT_OP_ERR(upload(*c, "exists.bin/below", kBody), "conflict");
  EXPECT_TRUE(scratch_empty());
  EXPECT_EQ(read_file(home() / "exists.bin"), "x");
  EXPECT_OP_OK(upload(*c, "after.bin", "still usable"));
}

}  // namespace
}  // namespace ops::test
