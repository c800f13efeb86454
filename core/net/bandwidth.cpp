#include "net/bandwidth.hpp"

#include <algorithm>
#include <thread>

namespace ops::core {

TokenBucket::TokenBucket(std::uint64_t rate, std::uint64_t burst)
    : rate_(std::max<std::uint64_t>(rate, 1)),
      burst_(static_cast<double>(burst ? burst : std::max<std::uint64_t>(rate_ / 10, 4096))),
      tokens_(burst_),
      last_(Clock::now()) {}

std::uint64_t TokenBucket::chunk() const noexcept {
  return std::clamp<std::uint64_t>(rate_ / 20, 4096, 1 << 20);
}

std::chrono::nanoseconds TokenBucket::take(std::uint64_t n, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (now > last_) {
    double seconds = std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min(burst_, tokens_ + seconds * static_cast<double>(rate_));
    last_ = now;
  }
  tokens_ -= static_cast<double>(n);
  if (tokens_ >= 0) return std::chrono::nanoseconds(0);
  return std::chrono::nanoseconds(
      static_cast<std::int64_t>(-tokens_ / static_cast<double>(rate_) * 1e9));
}

void throttle(TokenBucket* bucket, std::uint64_t n) {
  if (bucket == nullptr || n == 0) return;
  auto wait = bucket->take(n);
  if (wait.count() > 0) std::this_thread::sleep_for(wait);
}

std::shared_ptr<TokenBucket> BandwidthLimits::bucket(const std::string& user, Direction direction,
                                                     std::optional<std::uint64_t> rate) {
  if (!rate || *rate == 0) return nullptr;
  std::lock_guard lock(mutex_);
  auto key = std::make_pair(user, static_cast<int>(direction));
  if (auto it = buckets_.find(key); it != buckets_.end()) {
    if (auto b = it->second.lock(); b && b->rate() == *rate) return b;
  }
  // Drop the entries nobody holds any more, so the map stays as small as the users
  // transferring right now.
  std::erase_if(buckets_, [](const auto& entry) { return entry.second.expired(); });
  auto b = std::make_shared<TokenBucket>(*rate);
  buckets_[key] = b;
  return b;
}

}  // namespace ops::core
