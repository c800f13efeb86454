// Symlinks planted inside a user's directory (OPS/1 §5: "nothing outside the caller's
// directory is ever read or written, symlinks included"): every operation through or
// onto them fails and nothing outside is read or written, also while a thread swaps a
// directory and a symlink to the outside thousands of times a second (Samba
// CVE-2017-2619).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/proof.hpp"
#include "scratch_util.hpp"

namespace ops::test {
namespace {

constexpr const char* kCanary = "outside canary: must never be read or changed";

class Symlinks : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>();
    key_ = server_->add_user("eve");
    ASSERT_FALSE(key_.empty());
    client_ = server_->connect("eve", key_);
    ASSERT_TRUE(client_);
    home_ = server_->storage_dir() / "eve";
    write_file(outside_.path() / "secret", kCanary);
    fs::create_directories(outside_.path() / "dir");
    write_file(outside_.path() / "dir" / "x", kCanary);
    write_file(outside_.path() / "dir" / "outside_only", kCanary);
    outside_before_ = snapshot();
  }
  // Names and contents of everything outside, to compare after the test.
  std::vector<std::string> snapshot() const {
    std::vector<std::string> out;
    for (const auto& rel : tree(outside_.path())) {
      fs::path p = outside_.path() / rel;
      out.push_back(rel + "=" + (fs::is_regular_file(p) ? read_file(p) : "<dir>"));
    }
    return out;
  }
  client::Client& c() { return *client_; }

  TempDir outside_;
  std::unique_ptr<ServerProcess> server_;
  std::string key_;
  std::unique_ptr<client::Client> client_;
  fs::path home_;
  std::vector<std::string> outside_before_;
};

TEST_F(Symlinks, PlantedLinksToTheOutsideAreNeverFollowed) {
  fs::create_directory_symlink(outside_.path(), home_ / "to_dir");
  fs::create_symlink(outside_.path() / "secret", home_ / "to_file");
  fs::create_symlink("/nonexistent/target", home_ / "dangling");
  fs::create_directories(home_ / "real");
  fs::create_directory_symlink("..", home_ / "real" / "up");  // inside, still refused
  const auto home_before = tree(home_);

  // download through or onto them
  for (const char* p :
       {"to_file", "to_dir/secret", "to_dir/dir/x", "real/up/to_file", "dangling"}) {
    SCOPED_TRACE(p);
    auto d = download(c(), p);
    EXPECT_OP_ERR(d, "forbidden");
    EXPECT_EQ(d.payload.find("canary"), std::string::npos);
  }
  // upload through or onto them, with and without overwrite
  for (const char* p : {"to_file", "to_dir/new", "to_dir/secret", "to_dir/dir/x",
                        "to_dir/made/deep/new", "real/up/new", "dangling"}) {
    SCOPED_TRACE(p);
    EXPECT_OP_ERR(upload(c(), p, "evil"), "forbidden");
    EXPECT_OP_ERR(upload(c(), p, "evil", ",\"overwrite\":true"), "forbidden");
  }
  // list through them
  for (const char* p : {"to_dir", "to_dir/dir", "real/up"}) {
    SCOPED_TRACE(p);
    EXPECT_OP_ERR(call_op(c(), "list", jobj({{"path", jstr(p)}})), "forbidden");
  }
  // and they are not shown by list (decision: only regular files and directories)
  auto listed = call_op(c(), "list", R"({"recursive":true})");
  ASSERT_TRUE(listed.ok) << listed.message;
  EXPECT_EQ(names_of(listed), std::vector<std::string>{"real"});

  EXPECT_EQ(snapshot(), outside_before_);
  EXPECT_EQ(tree(home_), home_before);
  EXPECT_TRUE(fs::is_symlink(home_ / "to_file"));
}

// A hard link to an outside file is replaced by upload --overwrite, never written through
// (the temp-file-and-rename publish).
TEST_F(Symlinks, HardLinkToAnOutsideFileIsReplacedNotWrittenThrough) {
  std::error_code ec;
  fs::create_hard_link(outside_.path() / "secret", home_ / "hard", ec);
  if (ec) GTEST_SKIP() << "no hard links across these directories: " << ec.message();
  auto d = download(c(), "hard");  // a hard link is a regular file of the user's: readable
  EXPECT_OP_OK(d);
  EXPECT_OP_ERR(upload(c(), "hard", "new"), "already_exists");
  EXPECT_OP_OK(upload(c(), "hard", "new", ",\"overwrite\":true"));
  EXPECT_EQ(read_file(home_ / "hard"), "new");
  EXPECT_EQ(read_file(outside_.path() / "secret"), kCanary);
  EXPECT_EQ(snapshot(), outside_before_);
}

// §5 with a tree that changes under the server: "d" flips between a real directory and a
// symlink to the outside (RENAME_EXCHANGE, atomic) while the client uploads and downloads
// "d/x" over and over. Every request either works on the real directory or is refused
// (forbidden when it met the symlink; not_found or conflict when the tree changed between
// two steps); nothing outside is ever created, changed, listed or sent.
TEST_F(Symlinks, SwapRaceNeverReachesOutside) {
  fs::create_directories(home_ / "d");
  write_file(home_ / "d" / "x", "inside");
  fs::create_directory_symlink(outside_.path() / "dir", home_ / "swap");

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> flips{0};
  std::thread flipper([&] {
    int dir = ::open(home_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    while (!stop.load(std::memory_order_relaxed)) {
      if (::renameat2(dir, "d", dir, "swap", RENAME_EXCHANGE) == 0) flips.fetch_add(1);
    }
    ::close(dir);
  });

  auto refusal = [](const Outcome& o) {
    return o.code == "forbidden" || o.code == "not_found" || o.code == "conflict";
  };
  int ok_up = 0, ok_down = 0, refused = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  for (int i = 0; std::chrono::steady_clock::now() < until || i < 200; ++i) {
    const std::string body = "inside " + std::to_string(i);
    auto up = upload(c(), "d/x", body, ",\"overwrite\":true");
    ASSERT_FALSE(up.transport_failed) << up.message;
    if (up.ok) {
      ++ok_up;
    } else {
      ++refused;
      EXPECT_TRUE(refusal(up)) << up.code << ": " << up.message;
    }
    auto down = download(c(), "d/x");
    ASSERT_FALSE(down.transport_failed) << down.message;
    if (down.ok) {
      ++ok_down;
      EXPECT_EQ(down.payload.rfind("inside", 0), 0u) << down.payload;
    } else {
      ++refused;
      EXPECT_TRUE(refusal(down)) << down.code << ": " << down.message;
    }
    auto listed = call_op(c(), "list", R"({"path":"d"})");
    ASSERT_FALSE(listed.transport_failed);
    if (listed.ok) {
      for (const auto& name : names_of(listed)) EXPECT_NE(name, "outside_only");
    } else {
      EXPECT_TRUE(refusal(listed)) << listed.code << ": " << listed.message;
    }
    // A new name each time: creating through the symlink would leave it outside.
    auto fresh = upload(c(), "d/new" + std::to_string(i), "n");
    if (!fresh.ok) {
      EXPECT_TRUE(refusal(fresh)) << fresh.code << ": " << fresh.message;
    }
  }
  stop = true;
  flipper.join();

  std::cout << "[ race ] flips=" << flips.load() << " ok uploads=" << ok_up
            << " ok downloads=" << ok_down << " refused=" << refused << "\n";
  EXPECT_GT(flips.load(), 1000u);
  EXPECT_GT(ok_up + ok_down, 0);
  EXPECT_GT(refused, 0);  // the race was real: some requests met the symlink
  EXPECT_EQ(snapshot(), outside_before_);
  EXPECT_TRUE(scratch_clean(server_->storage_dir()));
}

}  // namespace
}  // namespace ops::test
