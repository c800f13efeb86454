#include "net/log_throttle.hpp"

#include <spdlog/spdlog.h>

namespace ops::core {

LogThrottle::LogThrottle(std::string what, unsigned burst, Clock::duration window)
    : what_(std::move(what)), burst_(burst), window_(window) {}

void LogThrottle::roll_locked(Clock::time_point now) {
  if (now - window_start_ < window_) return;
  if (suppressed_ > 0) {
    auto seconds = std::chrono::duration_cast<std::chrono::seconds>(now - window_start_).count();
    spdlog::warn("{} more {} in the last {} s, not logged one by one", suppressed_, what_, seconds);
  }
  window_start_ = now;
  logged_ = 0;
  suppressed_ = 0;
}

bool LogThrottle::admit(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  roll_locked(now);
  if (logged_ < burst_) {
    ++logged_;
    return true;
  }
  ++suppressed_;
  return false;
}

void LogThrottle::report(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  roll_locked(now);
}

}  // namespace ops::core
