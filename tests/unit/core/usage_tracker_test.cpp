// UsageTracker: the count from disk (regular files only, symlinks not followed), quota
// checks on reservations (zero always passes, reservations count), commit and release,
// held reservations, adjust (in any order), forget, and concurrent reservations against one quota.
// Also the token bucket's arithmetic (with explicit times; no sleeping).
#include "quota/usage_tracker.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "net/bandwidth.hpp"

namespace ops::core {
namespace {

namespace fs = std::filesystem;

class UsageTrackerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ops-usage-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    fd_ = ::open(root_.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(fd_, 0);
  }
  void TearDown() override {
    ::close(fd_);
    fs::remove_all(root_);
  }
  void write(const fs::path& rel, std::size_t size) {
    fs::create_directories((root_ / rel).parent_path());
    std::ofstream(root_ / rel) << std::string(size, 'x');
  }
  fs::path root_;
  int fd_ = -1;
};

// What an I/O thread may ask (an isolated call's get_usage): never a count, never a wait.
TEST_F(UsageTrackerTest, UsageIfCountedNeverCountsAndFollowsTheCount) {
  write("alice/a", 10);
  UsageTracker t(fd_);
  EXPECT_FALSE(t.usage_if_counted("alice"));  // not counted yet: only usage() counts
  EXPECT_FALSE(t.usage_if_counted("alice"));  // and asking did not count it either
  EXPECT_EQ(t.usage("alice").bytes, 10u);
  auto known = t.usage_if_counted("alice");
  ASSERT_TRUE(known);
  EXPECT_EQ(known->bytes, 10u);
  EXPECT_EQ(known->files, 1u);
  auto id = t.reserve("alice", 5, 1, {});
  ASSERT_TRUE(id);
  ASSERT_TRUE(t.commit("alice", *id, 5, 1));
  known = t.usage_if_counted("alice");
  ASSERT_TRUE(known);
  EXPECT_EQ(known->bytes, 15u);
  EXPECT_EQ(known->files, 2u);
  t.forget("alice");
  EXPECT_FALSE(t.usage_if_counted("alice"));
}

TEST_F(UsageTrackerTest, CountsRegularFilesOnlyAndNeverFollowsSymlinks) {
  write("alice/a", 10);
  write("alice/d/e/b", 20);
  write("alice/empty", 0);
  fs::create_directories(root_ / "alice" / "emptydir");
  write("outside/big", 1000);
  fs::create_symlink(root_ / "outside", root_ / "alice" / "link-dir");
  fs::create_symlink(root_ / "outside" / "big", root_ / "alice" / "link-file");
  UsageTracker t(fd_);
  Usage u = t.usage("alice");
  EXPECT_EQ(u.files, 3u);
  EXPECT_EQ(u.bytes, 30u);
  EXPECT_EQ(t.usage("nobody").files, 0u);  // no directory: nothing used
}

TEST_F(UsageTrackerTest, ReservationsCountAgainstTheQuota) {
  write("alice/a", 600);
  UsageTracker t(fd_);
  QuotaLimits limits{1000, 5};
  auto first = t.reserve("alice", 300, 1, limits);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(t.usage("alice").reserved_bytes, 300u);
  auto second = t.reserve("alice", 101, 1, limits);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, ErrorCode::quota_exceeded);
  auto exact = t.reserve("alice", 100, 1, limits);
  ASSERT_TRUE(exact.ok());
  EXPECT_TRUE(t.release("alice", *exact));
  EXPECT_FALSE(t.release("alice", *exact));  // already ended
  EXPECT_TRUE(t.commit("alice", *first, 250, 1));
  Usage u = t.usage("alice");
  EXPECT_EQ(u.bytes, 850u);
  EXPECT_EQ(u.files, 2u);
  EXPECT_EQ(u.reserved_bytes, 0u);
  EXPECT_EQ(u.reserved_files, 0u);
}

TEST_F(UsageTrackerTest, ZeroAlwaysPassesEvenOverQuota) {
  write("alice/a", 600);
  UsageTracker t(fd_);
  QuotaLimits tight{100, 0};
  auto shrink = t.reserve("alice", 0, 0, tight);
  ASSERT_TRUE(shrink.ok());
  EXPECT_TRUE(t.commit("alice", *shrink, -500, 0));
  EXPECT_EQ(t.usage("alice").bytes, 100u);
  EXPECT_FALSE(t.reserve("alice", 1, 0, tight).ok());
  EXPECT_FALSE(t.reserve("alice", 0, 1, tight).ok());         // the file quota is 0
  EXPECT_TRUE(t.reserve("alice", 5, 0, QuotaLimits{}).ok());  // no limits
  // Huge declared sizes do not overflow the comparison.
  EXPECT_FALSE(t.reserve("alice", ~std::uint64_t{0}, 0, tight).ok());
}

TEST_F(UsageTrackerTest, HeldReservationsOutliveTheirIdUntilCommitted) {
  UsageTracker t(fd_);
  QuotaLimits limits{1000, 2};
  auto id = t.reserve("alice", 700, 1, limits);
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(t.hold("alice", *id, "upload-1"));
  EXPECT_FALSE(t.release("alice", *id));  // now held by tag, not by id
  EXPECT_EQ(t.usage("alice").reserved_bytes, 700u);
  EXPECT_FALSE(t.reserve("alice", 301, 0, limits).ok());
  auto more = t.reserve("alice", 100, 0, limits);
  ASSERT_TRUE(more.ok());
  EXPECT_TRUE(t.hold("alice", *more, "upload-1"));  // a tag grows
  EXPECT_EQ(t.usage("alice").reserved_bytes, 800u);
  EXPECT_TRUE(t.commit_held("alice", "upload-1", 750, 1));
  EXPECT_FALSE(t.release_held("alice", "upload-1"));
  Usage u = t.usage("alice");
  EXPECT_EQ(u.bytes, 750u);
  EXPECT_EQ(u.files, 1u);
  EXPECT_EQ(u.reserved_bytes, 0u);
}

TEST_F(UsageTrackerTest, AdjustAndForget) {
  write("alice/a", 100);
  UsageTracker t(fd_);
  t.adjust("alice", -50, -1);  // not counted yet: left for the count
  EXPECT_EQ(t.usage("alice").bytes, 100u);
  t.adjust("alice", -40, -1);
  EXPECT_EQ(t.usage("alice").bytes, 60u);
  EXPECT_EQ(t.usage("alice").files, 0u);
  t.adjust("alice", -1000, -5);  // never below zero
  EXPECT_EQ(t.usage("alice").bytes, 0u);
  auto id = t.reserve("alice", 10, 1, QuotaLimits{});
  ASSERT_TRUE(id.ok());
  t.forget("alice");
  EXPECT_FALSE(t.commit("alice", *id, 10, 1));  // a late commit of a forgotten user
  EXPECT_EQ(t.usage("alice").bytes, 100u);      // counted afresh
}

// A removal counted before the commit of the upload that created the file (a remove
// racing an upload) ends where the other order ends: the deltas add up in any order, and
// usage never shows below zero meanwhile.
TEST_F(UsageTrackerTest, DeltasAddUpInAnyOrder) {
  write("bob/a", 100);
  UsageTracker t(fd_);
  ASSERT_EQ(t.usage("bob").bytes, 100u);
  auto id = t.reserve("bob", 5000, 1, QuotaLimits{});
  ASSERT_TRUE(id.ok());
  t.adjust("bob", -5000, -1);  // the new file removed before its upload commits
  EXPECT_EQ(t.usage("bob").bytes, 0u);
  EXPECT_EQ(t.usage("bob").files, 0u);
  EXPECT_TRUE(t.commit("bob", *id, 5000, 1));
  EXPECT_EQ(t.usage("bob").bytes, 100u);
  EXPECT_EQ(t.usage("bob").files, 1u);
  t.adjust("bob", 7, 1);  // a later growth is not swallowed
  EXPECT_EQ(t.usage("bob").bytes, 107u);
  EXPECT_EQ(t.usage("bob").files, 2u);
}

TEST_F(UsageTrackerTest, ConcurrentReservationsNeverPassTheQuotaTogether) {
  UsageTracker t(fd_);
  QuotaLimits limits{1000, std::nullopt};
  std::atomic<int> granted{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < 100; ++j) {
        if (t.reserve("alice", 7, 0, limits).ok()) ++granted;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(granted.load(), 1000 / 7);
  EXPECT_EQ(t.usage("alice").reserved_bytes, (1000 / 7) * 7u);
}

TEST(TokenBucket, BorrowsAndReportsTheWait) {
  using namespace std::chrono;
  TokenBucket b(1000, 100);
  auto t0 = TokenBucket::Clock::now();
  EXPECT_EQ(b.take(100, t0).count(), 0);                    // the burst
  EXPECT_EQ(b.take(500, t0), milliseconds(500));            // 500 bytes in debt at 1000/s
  EXPECT_EQ(b.take(0, t0 + milliseconds(500)).count(), 0);  // paid back
  EXPECT_EQ(b.take(100, t0 + seconds(10)).count(), 0);      // refilled, up to the burst only
  EXPECT_EQ(b.take(100, t0 + seconds(10)), milliseconds(100));
  EXPECT_EQ(TokenBucket(8u << 20).chunk(), (8u << 20) / 20);
  EXPECT_EQ(TokenBucket(1000).chunk(), 4096u);
}

TEST(BandwidthLimits, OneBucketPerUserAndDirectionWhileInUse) {
  BandwidthLimits limits;
  using D = BandwidthLimits::Direction;
  EXPECT_EQ(limits.bucket("alice", D::upload, std::nullopt), nullptr);
  EXPECT_EQ(limits.bucket("alice", D::upload, 0), nullptr);
  auto a = limits.bucket("alice", D::upload, 1000);
  EXPECT_EQ(limits.bucket("alice", D::upload, 1000), a);    // shared by connections
  EXPECT_NE(limits.bucket("alice", D::download, 1000), a);  // per direction
  EXPECT_NE(limits.bucket("bob", D::upload, 1000), a);      // per user
  auto changed = limits.bucket("alice", D::upload, 2000);
  EXPECT_NE(changed, a);
  EXPECT_EQ(changed->rate(), 2000u);
}

}  // namespace
}  // namespace ops::core
