// A bound on how fast one kind of event can grow the log. Failed logins, abandoned
// handshakes and refused connections are what an attacker produces by the thousand:
// the first `burst` of each window are logged one by one, the rest only counted, and
// the count is logged once the window has ended (catalogue case 15: the log stays
// bounded under 10,000 failed logins a minute).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace ops::core {

class LogThrottle {
 public:
  using Clock = std::chrono::steady_clock;

  LogThrottle(std::string what, unsigned burst, Clock::duration window);

  // True if this event may be logged; false if it was only counted. Thread-safe.
  bool admit(Clock::time_point now = Clock::now());
  // Logs the count of events left out of windows that have ended. Called by
  // admit() and by the server's housekeeping tick, so a count is not held back until
  // the next event.
  void report(Clock::time_point now = Clock::now());

 private:
  void roll_locked(Clock::time_point now);

  const std::string what_;
  const unsigned burst_;
  const Clock::duration window_;

  std::mutex mutex_;
  Clock::time_point window_start_{};
  unsigned logged_ = 0;
  std::uint64_t suppressed_ = 0;  // in the current window
};

}  // namespace ops::core
