// NodeScratch (storage/node_scratch.hpp): servers sharing one storage directory each empty
// only their own node-<id>/ at start, never delete another running server's temporaries,
// and the directory of a server that is gone is claimed (renamed) by exactly one other and
// deleted there. Real directories under /tmp, real flock; two NodeScratch objects in one
// process lock like two servers would (flock is per open file description).
#include "storage/node_scratch.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

namespace ops::core {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class NodeScratchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ops-node-scratch-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = fs::path(tmpl) / ".ops-tmp";
    fs::create_directories(root_);
    fd_ = ::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(fd_, 0);
  }
  void TearDown() override {
    ::close(fd_);
    fs::remove_all(root_.parent_path());
  }
  static void write(const fs::path& p, const std::string& text = "x") {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  static void make_old(const fs::path& p) {
    const auto old = fs::file_time_type::clock::now() - std::chrono::hours(2);
    fs::last_write_time(p, old);
  }
  std::unique_ptr<NodeScratch> open(const std::string& id, ScratchTiming timing = {}) {
    auto node = NodeScratch::open(fd_, id, timing);
    EXPECT_TRUE(node) << (node ? "" : node.error().message);
    return node ? std::move(*node) : nullptr;
  }

  fs::path root_;
  int fd_ = -1;
};

TEST_F(NodeScratchTest, OpeningEmptiesOnlyItsOwnDirectory) {
  write(root_ / "node-a" / "upload-1", "crash leftover of a");
  write(root_ / "node-a" / "unregistered-x-1" / "deep" / "file");
  write(root_ / "node-b" / "upload-2", "in flight on b");
  write(root_ / "uploads" / "alice" / "0123.part", "shared partial");
  auto a = open("a");
  ASSERT_TRUE(a);
  EXPECT_TRUE(fs::exists(root_ / "node-a" / ".owner"));
  EXPECT_FALSE(fs::exists(root_ / "node-a" / "upload-1"));  // its own file: removed at once
  EXPECT_TRUE(fs::exists(root_ / "node-b" / "upload-2"));   // another node's: untouched
  EXPECT_TRUE(fs::exists(root_ / "uploads" / "alice" / "0123.part"));
  // Its own leftover tree goes in the background.
  a->start_janitor();
  for (int i = 0; i < 200 && fs::exists(root_ / "node-a" / "unregistered-x-1"); ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_FALSE(fs::exists(root_ / "node-a" / "unregistered-x-1"));
  EXPECT_TRUE(fs::exists(root_ / "node-b" / "upload-2"));
}

TEST_F(NodeScratchTest, TheSameIdTwiceIsRefused) {
  auto a = open("a");
  ASSERT_TRUE(a);
  ScratchTiming quick;
  quick.lock_wait = 300ms;
  auto again = NodeScratch::open(fd_, "a", quick);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message.find("node_id"), std::string::npos) << again.error().message;
  // Once the first is gone, the id is free again.
  a.reset();
  EXPECT_TRUE(open("a", quick));
}

TEST_F(NodeScratchTest, BadIdsAreRefused) {
  EXPECT_FALSE(valid_node_id(""));
  EXPECT_FALSE(valid_node_id(".hidden"));
  EXPECT_FALSE(valid_node_id("a/b"));
  EXPECT_FALSE(valid_node_id(std::string(65, 'a')));
  EXPECT_TRUE(valid_node_id("web-1.example_com"));
  EXPECT_FALSE(NodeScratch::open(fd_, "../x"));
}

TEST_F(NodeScratchTest, DefaultIdIsStableAndDiffersByStateDirectory) {
  const std::string one = default_node_id("/var/lib/opserver/a");
  EXPECT_EQ(one, default_node_id("/var/lib/opserver/a"));
  EXPECT_NE(one, default_node_id("/var/lib/opserver/b"));
  EXPECT_TRUE(valid_node_id(one)) << one;
}

TEST_F(NodeScratchTest, ALiveNodeIsNeverClaimedEvenWithAnOldHeartbeat) {
  auto a = open("a");
  ASSERT_TRUE(a);
  write(root_ / "node-a" / "upload-live", "in flight");
  make_old(root_ / "node-a" / ".owner");  // as if its heartbeat were late: the lock still holds
  ScratchTiming eager;
  eager.stale = 0ms;
  auto b = open("b", eager);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->collect_stale(), 0u);
  EXPECT_TRUE(fs::exists(root_ / "node-a" / "upload-live"));
}

TEST_F(NodeScratchTest, AGoneNodesDirectoryIsClaimedOnceItsHeartbeatIsStale) {
  auto a = open("a");
  ASSERT_TRUE(a);
  write(root_ / "node-a" / "upload-dead", "cut short");
  write(root_ / "node-a" / "unregistered-y-2" / "f");
  a.reset();           // a stops: its lock is free, its heartbeat fresh
  auto b = open("b");  // default: stale after 10 minutes
  ASSERT_TRUE(b);
  EXPECT_EQ(b->collect_stale(), 0u);
  EXPECT_TRUE(fs::exists(root_ / "node-a" / "upload-dead"));

  make_old(root_ / "node-a" / ".owner");
  EXPECT_EQ(b->collect_stale(), 1u);
  EXPECT_FALSE(fs::exists(root_ / "node-a"));
  // Deleted in b's own directory: nothing claimed is left behind.
  for (const auto& e : fs::directory_iterator(root_ / "node-b")) {
    EXPECT_EQ(e.path().filename(), ".owner");
  }
  // a may come back later: it simply starts a fresh directory.
  EXPECT_TRUE(open("a"));
}

TEST_F(NodeScratchTest, TwoClaimersNeverBothTakeOneDirectory) {
  write(root_ / "node-gone" / "upload-1");
  write(root_ / "node-gone" / ".owner");
  make_old(root_ / "node-gone" / ".owner");
  ScratchTiming eager;
  eager.stale = 0ms;
  auto b = open("b", eager);
  auto c = open("c", eager);
  ASSERT_TRUE(b && c);
  std::size_t by_b = 0, by_c = 0;
  std::thread tb([&] { by_b = b->collect_stale(); });
  std::thread tc([&] { by_c = c->collect_stale(); });
  tb.join();
  tc.join();
  // Each also sees the other alive (locked) and leaves it; node-gone went to exactly one.
  EXPECT_EQ(by_b + by_c, 1u);
  EXPECT_FALSE(fs::exists(root_ / "node-gone"));
  EXPECT_TRUE(fs::exists(root_ / "node-b" / ".owner"));
  EXPECT_TRUE(fs::exists(root_ / "node-c" / ".owner"));
}

TEST_F(NodeScratchTest, LegacyLeftoversInTheSharedDirectoryAreCollectedWhenOld) {
  write(root_ / "upload-old", "an older server's temporary");
  write(root_ / "upload-new", "maybe still being written");
  write(root_ / "unregistered-z-3" / "f");
  make_old(root_ / "upload-old");
  auto b = open("b");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->collect_stale(), 1u);  // the old file only; the tree's ctime is fresh
  EXPECT_FALSE(fs::exists(root_ / "upload-old"));
  EXPECT_TRUE(fs::exists(root_ / "upload-new"));
  EXPECT_TRUE(fs::exists(root_ / "unregistered-z-3"));
  ScratchTiming eager;
  eager.stale = 0ms;
  b.reset();
  auto again = open("b", eager);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->collect_stale(), 2u);
  EXPECT_FALSE(fs::exists(root_ / "unregistered-z-3"));
  EXPECT_FALSE(fs::exists(root_ / "upload-new"));
}

}  // namespace
}  // namespace ops::core
