// The §10 file operations racing `upload` (OPS/1 §5, §7, §10): a remove of the file being
// uploaded or replaced, a recursive remove of the directory being uploaded into, and a
// move onto the path being uploaded. Every round ends in one of the legal states (absent,
// or present with exactly the uploaded bytes), every answer is ok or a documented code,
// no temporary file is left, and `usage` equals what is on disk.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <latch>
#include <string>
#include <thread>

#include "fault_util.hpp"
#include "file_ops_util.hpp"
#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/proof.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;
using namespace fileops;

constexpr int kRounds = 40;

class FileRaces : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerOptions options;
    options.ops_json = file_ops_json(OPS_PLUGIN_DIR);
    server_ = new ServerProcess(options);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    static std::atomic<int> counter{0};
    user_ = "race" + std::to_string(counter++);
    key_ = server_->add_user(user_);
    ASSERT_FALSE(key_.empty());
    a_ = server_->connect(user_, key_);
    b_ = server_->connect(user_, key_);
    ASSERT_TRUE(a_ && b_);
  }
  void TearDown() override { EXPECT_TRUE(server_->running()) << server_->log(); }

  fs::path home() const { return server_->storage_dir() / user_; }

  // Runs `first` on a thread of its own and `second` here, released together.
  static void race(const std::function<void()>& first, const std::function<void()>& second) {
    std::latch go(2);
    std::thread t([&] {
      go.arrive_and_wait();
      first();
    });
    go.arrive_and_wait();
    second();
    t.join();
  }

  // No server-private file shows in the user's tree, the scratch directory empties, and
  // the reported usage is what the disk holds.
  void expect_clean_and_counted() {
    for (const std::string& rel : tree(home())) {
      EXPECT_EQ(rel.find("upload-"), std::string::npos) << "temporary file visible: " << rel;
      EXPECT_EQ(rel.find(".ops"), std::string::npos) << "server file visible: " << rel;
    }
    EXPECT_TRUE(eventually([&] { return scratch_empty(*server_); }, 2s)) << "scratch not empty";
    EXPECT_EQ(usage_reported(*a_), usage_on_disk(home()));
  }

  static ServerProcess* server_;
  std::string user_, key_;
  std::unique_ptr<client::Client> a_, b_;
};
ServerProcess* FileRaces::server_ = nullptr;

// Checks the upload's answer against the bytes it sent.
void expect_upload_result(const Outcome& up, const std::string& body) {
  if (!up.ok) return;
  auto r = up.result();
  EXPECT_EQ(r["size"].GetUint64(), body.size());
  EXPECT_EQ(std::string(r["sha256"].GetString()), proof::sha256_hex(body));
}

// remove of a file while another client replaces it (overwrite) or creates it. Even
// rounds start with an old file in place; odd rounds start with none.
TEST_F(FileRaces, RemoveRacingUploadOfOneFile) {
  int absent = 0, present = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const bool had_old = round % 2 == 0;
    const bool overwrite = had_old || round % 4 == 1;
    const std::string path = "r/f.bin";
    if (had_old) {
      ASSERT_TRUE(upload(*a_, path, round_body(-round, 3000 + round), ",\"overwrite\":true").ok);
    }
    const std::string body = round_body(round, 20000 + 997 * round);
    Outcome up, rm;
    race([&] { up = upload(*a_, path, body, overwrite ? ",\"overwrite\":true" : ""); },
         [&] { rm = remove_op(*b_, path); });
    ASSERT_FALSE(up.transport_failed) << up.message;
    ASSERT_FALSE(rm.transport_failed) << rm.message;
    EXPECT_TRUE(up.ok) << up.code << ": " << up.message;  // nothing may stop it here
    expect_upload_result(up, body);
    EXPECT_TRUE(rm.ok || rm.code == "not_found") << rm.code << ": " << rm.message;
    // Without an old file, remove finds nothing unless the upload came first.
    const fs::path p = home() / path;
    if (fs::exists(fs::symlink_status(p))) {
      ++present;
      EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(p)));
      EXPECT_TRUE(read_file(p) == body) << "neither absent nor the uploaded bytes";
      // The remove took the old file, or found none.
      if (!had_old) {
        EXPECT_EQ(rm.code, "not_found");
      }
    } else {
      ++absent;
      EXPECT_TRUE(rm.ok) << "the file is gone but remove said " << rm.code;
    }
    expect_clean_and_counted();
    auto rest = remove_op(*a_, path);  // the next round starts from a known state
    EXPECT_TRUE(rest.ok || rest.code == "not_found") << rest.message;
    EXPECT_EQ(usage_reported(*a_), usage_on_disk(home()));
  }
  std::printf("[ figures  ] remove vs upload of one file: %d absent, %d present\n", absent,
              present);
}

// A recursive remove of a directory while another client uploads into a subdirectory of
// it (creating the parents). The tree ends absent, or holding only the uploaded file.
TEST_F(FileRaces, RecursiveRemoveRacingUploadIntoTheTree) {
  int absent = 0, present = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(
          upload(*a_, "d/old/" + std::to_string(i), round_body(i, 100 + 10 * i + round)).ok);
    }
    const std::string path = round % 2 ? "d/sub/new.bin" : "d/old/new.bin";
    const std::string body = round_body(round, 30000 + 1013 * round);
    Outcome up, rm;
    race([&] { up = upload(*a_, path, body); }, [&] { rm = remove_op(*b_, "d", true); });
    ASSERT_FALSE(up.transport_failed) << up.message;
    ASSERT_FALSE(rm.transport_failed) << rm.message;
    // The upload may lose its freshly made parent to the remove (§5 upload: not_found,
    // "a retry fixes it"); the remove may meet entries that keep arriving (conflict).
    EXPECT_TRUE(up.ok || up.code == "not_found") << up.code << ": " << up.message;
    expect_upload_result(up, body);
    EXPECT_TRUE(rm.ok || rm.code == "conflict") << rm.code << ": " << rm.message;
    const fs::path d = home() / "d";
    if (rm.ok) {
      if (fs::exists(fs::symlink_status(d))) {
        ++present;
        EXPECT_TRUE(up.ok) << "the tree survived a successful remove without a new upload";
        // Only the path to the uploaded file is left.
        const std::string leaf_dir = path.substr(2, path.rfind('/') - 2);
        EXPECT_EQ(tree(d), (std::vector<std::string>{leaf_dir, path.substr(2)}));
        EXPECT_TRUE(read_file(home() / path) == body) << "not the uploaded bytes";
      } else {
        ++absent;
      }
    } else if (fs::exists(home() / path)) {
      EXPECT_TRUE(read_file(home() / path) == body) << "not the uploaded bytes";
    }
    if (!up.ok) {
      EXPECT_FALSE(fs::exists(home() / path)) << "a failed upload left its file";
    }
    expect_clean_and_counted();
    auto rest = remove_op(*a_, "d", true);
    EXPECT_TRUE(rest.ok || rest.code == "not_found") << rest.message;
    ASSERT_FALSE(fs::exists(d));
  }
  std::printf("[ figures  ] recursive remove vs upload into it: %d absent, %d present\n", absent,
              present);
}

// A move and an upload both creating one new path (no overwrite): exactly one wins, the
// other is already_exists, and the path holds the winner's bytes.
TEST_F(FileRaces, MoveRacingUploadOntoOneNewPathExactlyOneWins) {
  int move_wins = 0, upload_wins = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string src = "src/" + std::to_string(round);
    const std::string dst = round % 2 ? "dst/" + std::to_string(round) : std::to_string(round);
    const std::string moved = round_body(-round - 1, 5000 + round);
    const std::string body = round_body(round, 12000 + 331 * round);
    ASSERT_TRUE(upload(*a_, src, moved).ok);
    Outcome up, mv;
    race([&] { up = upload(*a_, dst, body); }, [&] { mv = move_op(*b_, src, dst); });
    ASSERT_FALSE(up.transport_failed) << up.message;
    ASSERT_FALSE(mv.transport_failed) << mv.message;
    EXPECT_NE(up.ok, mv.ok) << "upload " << (up.ok ? "ok" : up.code) << ", move "
                            << (mv.ok ? "ok" : mv.code);
    if (!up.ok) {
      EXPECT_EQ(up.code, "already_exists") << up.message;
    }
    if (!mv.ok) {
      EXPECT_EQ(mv.code, "already_exists") << mv.message;
    }
    expect_upload_result(up, body);
    if (mv.ok) {
      ++move_wins;
      EXPECT_TRUE(read_file(home() / dst) == moved);
      EXPECT_FALSE(fs::exists(home() / src));
    } else if (up.ok) {
      ++upload_wins;
      EXPECT_TRUE(read_file(home() / dst) == body);
      EXPECT_TRUE(read_file(home() / src) == moved) << "the losing move changed its source";
    }
    expect_clean_and_counted();
  }
  std::printf("[ figures  ] move vs upload onto one path: move won %d, upload won %d\n", move_wins,
              upload_wins);
}

// A move with overwrite replacing the file an upload also replaces, while a third client
// removes it: every answer is ok or not_found, the file ends absent or holding one of the
// two contents, and usage equals the disk.
TEST_F(FileRaces, MoveOverwriteUploadOverwriteAndRemoveKeepUsageExact) {
  auto c = server_->connect(user_, key_);
  ASSERT_TRUE(c);
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string moved = round_body(-round - 1, 4000 + 17 * round);
    const std::string body = round_body(round, 9000 + 101 * round);
    ASSERT_TRUE(upload(*a_, "t", round_body(round + 1000, 777), ",\"overwrite\":true").ok);
    ASSERT_TRUE(upload(*a_, "m", moved, ",\"overwrite\":true").ok);
    Outcome up, mv, rm;
    std::latch go(3);
    std::thread t1([&] {
      go.arrive_and_wait();
      up = upload(*a_, "t", body, ",\"overwrite\":true");
    });
    std::thread t2([&] {
      go.arrive_and_wait();
      mv = move_op(*b_, "m", "t", true);
    });
    go.arrive_and_wait();
    rm = remove_op(*c, "t");
    t1.join();
    t2.join();
    EXPECT_TRUE(up.ok) << up.code << ": " << up.message;
    expect_upload_result(up, body);
    EXPECT_TRUE(mv.ok) << mv.code << ": " << mv.message;
    EXPECT_TRUE(rm.ok || rm.code == "not_found") << rm.code << ": " << rm.message;
    if (fs::exists(home() / "t")) {
      const std::string now = read_file(home() / "t");
      EXPECT_TRUE(now == body || now == moved) << "t holds neither content";
    }
    expect_clean_and_counted();
  }
}

}  // namespace
}  // namespace ops::test
