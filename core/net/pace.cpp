#include "net/pace.hpp"

#include <algorithm>

namespace ops::core {

Pace::Pace(std::chrono::milliseconds stall, std::uint64_t min_rate, std::chrono::milliseconds grace)
    : stall_(stall), grace_(grace) {
  if (min_rate > 0) per_byte_ = std::chrono::nanoseconds(1'000'000'000 / min_rate + 1);
}

void Pace::start() {
  if (started_) return;
  started_ = true;
  if (per_byte_.count() > 0) rate_deadline_ = Clock::now() + grace_;
}

void Pace::credit(std::uint64_t bytes) {
  if (per_byte_.count() == 0 || !started_) return;
  // Saturating: a long fast transfer must not overflow the clock.
  const auto room = Clock::time_point::max() - rate_deadline_;
  const auto limit = static_cast<std::uint64_t>(room / per_byte_);
  if (bytes >= limit) {
    rate_deadline_ = Clock::time_point::max();
  } else {
    rate_deadline_ += per_byte_ * static_cast<std::int64_t>(bytes);
  }
}

Pace::Clock::time_point Pace::deadline(Clock::time_point now) const {
  return std::min(now + stall_, rate_deadline_);
}

int Pace::wait_ms(Clock::time_point now) const {
  if (now >= rate_deadline_) return 0;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline(now) - now);
  return static_cast<int>(std::min<std::int64_t>(left.count(), 1 << 30));
}

}  // namespace ops::core
