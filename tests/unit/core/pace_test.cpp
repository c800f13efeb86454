// Pace: the stall limit alone when no minimum rate is set; with one, a grace from the
// first transfer that every byte extends, saturating instead of overflowing the clock.
#include "net/pace.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>

namespace ops::core {
namespace {

using namespace std::chrono_literals;
using Clock = Pace::Clock;

TEST(Pace, WithoutAMinimumRateOnlyTheStallLimitApplies) {
  Pace pace(1500ms, 0, 100ms);
  pace.start();
  pace.credit(1);
  const auto later = Clock::now() + 24h;
  EXPECT_FALSE(pace.below_min_rate(later));
  EXPECT_EQ(pace.wait_ms(later), 1500);
  EXPECT_EQ(pace.deadline(later), later + 1500ms);
}

TEST(Pace, TheGraceStartsAtTheFirstTransferAndBytesExtendIt) {
  Pace pace(60s, 1000, 2s);  // 1,000 B/s: each byte buys ~1 ms
  EXPECT_FALSE(pace.below_min_rate(Clock::now() + 24h)) << "not started: no rate clock";
  const auto before = Clock::now();
  pace.start();
  EXPECT_TRUE(pace.below_min_rate(before + 2s + 100ms));
  EXPECT_LE(pace.wait_ms(before), 2000 + 5);  // the grace, not the 60 s stall
  pace.credit(3000);                          // ~3 s more
  EXPECT_FALSE(pace.below_min_rate(before + 4900ms));
  EXPECT_TRUE(pace.below_min_rate(before + 5100ms));
  EXPECT_EQ(pace.wait_ms(before + 6s), 0) << "past the rate deadline: no more waiting";
}

TEST(Pace, AHugeCreditSaturatesInsteadOfOverflowing) {
  Pace pace(60s, 1, 1s);  // one byte per second: the largest credit per byte
  pace.start();
  pace.credit(std::numeric_limits<std::uint64_t>::max());
  pace.credit(1);
  EXPECT_FALSE(pace.below_min_rate(Clock::now() + 24h * 365 * 100));
  EXPECT_EQ(pace.wait_ms(), 60000);
}

}  // namespace
}  // namespace ops::core
