// HandlerPool: threads grow while every one is busy, never past the maximum, shrink back
// to the kept number after the linger time, and a hung job makes join_for give up.
#include "dispatch/handler_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace ops::core {
namespace {

using namespace std::chrono_literals;

// A gate jobs wait on until the test opens it.
class Gate {
 public:
  void wait() {
    std::unique_lock lock(m_);
    cv_.wait(lock, [this] { return open_; });
  }
  void open() {
    std::lock_guard lock(m_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool open_ = false;
};

template <class F>
bool eventually(F condition, std::chrono::milliseconds limit = 5s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (condition()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return condition();
}

TEST(HandlerPool, BlockedJobsDoNotDelayANewOneWhileUnderTheMaximum) {
  HandlerPool pool(2, 8, 200ms);
  EXPECT_EQ(pool.threads(), 2u);
  Gate gate;
  std::atomic<int> started{0};
  for (int i = 0; i < 4; ++i) {
    pool.submit([&] {
      ++started;
      gate.wait();
    });
  }
  EXPECT_TRUE(eventually([&] { return started == 4; })) << started << " of 4 blocked jobs started";
  std::atomic<bool> ran{false};
  pool.submit([&] { ran = true; });
  EXPECT_TRUE(eventually([&] { return ran.load(); })) << "a fifth job waited behind four blocked";
  // At least one per blocked job (a thread still starting up does not count as idle, so
  // there may be one or two more).
  EXPECT_GE(pool.threads(), 5u);
  EXPECT_LE(pool.threads(), 8u);
  gate.open();
  // Threads above the kept two end after the linger time.
  EXPECT_TRUE(eventually([&] { return pool.threads() == 2; })) << pool.threads();
}

TEST(HandlerPool, NeverMoreThreadsThanTheMaximumAndQueuedJobsStillRun) {
  HandlerPool pool(1, 3, 100ms);
  Gate gate;
  std::atomic<int> done{0};
  for (int i = 0; i < 10; ++i) {
    pool.submit([&] {
      gate.wait();
      ++done;
    });
  }
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(pool.threads(), 3u);
  gate.open();
  EXPECT_TRUE(eventually([&] { return done == 10; })) << done;
}

TEST(HandlerPool, JoinForGivesUpOnAJobThatNeverReturns) {
  auto pool = std::make_unique<HandlerPool>(1, 2, 100ms);
  Gate gate;
  pool->submit([&] { gate.wait(); });
  std::this_thread::sleep_for(20ms);
  pool->stop();
  EXPECT_FALSE(pool->join_for(100ms));
  gate.open();
  EXPECT_TRUE(pool->join_for(2s));
}

}  // namespace
}  // namespace ops::core

namespace ops::core {
namespace {

// One call at a time, as a ping-pong client makes them: every call must run, with no
// wake-up lost between a thread going idle and the next submit.
TEST(HandlerPool, OneCallAtATimeNeverStalls) {
  HandlerPool pool(8, 64, 30s);
  for (int i = 0; i < 20000; ++i) {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    pool.submit([&] {
      std::lock_guard lock(m);
      done = true;
      cv.notify_one();
    });
    std::unique_lock lock(m);
    ASSERT_TRUE(cv.wait_for(lock, 2s, [&] { return done; })) << "call " << i << " never ran";
  }
}

// Bursts from several submitters at once, as pipelining connections make them.
TEST(HandlerPool, BurstsFromManySubmittersAllRun) {
  HandlerPool pool(4, 64, 30s);
  std::atomic<int> done{0};
  std::vector<std::thread> submitters;
  for (int t = 0; t < 4; ++t) {
    submitters.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) pool.submit([&] { ++done; });
    });
  }
  for (auto& t : submitters) t.join();
  EXPECT_TRUE(eventually([&] { return done == 20000; }, 10s)) << done << " of 20000 ran";
}

}  // namespace
}  // namespace ops::core
