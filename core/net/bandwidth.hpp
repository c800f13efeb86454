// Per-user bandwidth limits: one token bucket per user and direction, shared by all of
// that user's connections, applied by the host API to request payload reads and to
// response payload writes and send_file (which it cuts into chunks for this).
//
// The bucket lets a transfer borrow: take(n) always succeeds at once and returns how long
// the caller must then sleep so that the average stays at the rate. Sleeping after the
// bytes moved (rather than before) keeps the accounting exact when a read returns fewer
// bytes than asked. Chunks are kept small (chunk_for) so each sleep is short and a
// connection closed by unregister or rekey notices within a fraction of a second.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace ops::core {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  // `rate` bytes per second (> 0); up to `burst` bytes may go at once after a pause.
  explicit TokenBucket(std::uint64_t rate, std::uint64_t burst = 0);

  // Takes `n` bytes; returns how long to wait before the next transfer (zero if none).
  std::chrono::nanoseconds take(std::uint64_t n, Clock::time_point now = Clock::now());
  std::uint64_t rate() const noexcept { return rate_; }
  // The largest piece of one transfer: about 1/20 s of the rate, from 4 KiB to 1 MiB.
  std::uint64_t chunk() const noexcept;

 private:
  std::mutex mutex_;
  std::uint64_t rate_;
  double burst_;
  double tokens_;  // may go below zero: that debt is the wait
  Clock::time_point last_;
};

// Sleeps for take(n)'s answer.
void throttle(TokenBucket* bucket, std::uint64_t n);

class BandwidthLimits {
 public:
  enum class Direction { upload, download };

  // The user's bucket for `direction` at `rate` bytes/s, shared with the user's other
  // connections; null for no limit (`rate` nullopt or 0). A changed rate gets a new
  // bucket; transfers holding the old one finish at the old rate.
  std::shared_ptr<TokenBucket> bucket(const std::string& user, Direction direction,
                                      std::optional<std::uint64_t> rate);

 private:
  std::mutex mutex_;
  std::map<std::pair<std::string, int>, std::weak_ptr<TokenBucket>> buckets_;
};

}  // namespace ops::core
