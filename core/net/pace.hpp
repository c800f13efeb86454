// Time limits of a blocking payload transfer, shared by the host API and the session.
#pragma once

#include <chrono>
#include <cstdint>

namespace ops::core {

// How long a blocking payload transfer may wait. Two limits, whichever comes first:
//  - `stall`: no byte moved for that long (§7's payload timeout);
//  - a minimum average rate: the transfer starts with `grace`, and every byte moved adds
//    1/min_rate seconds (Apache mod_reqtimeout's MinRate), so one byte every 59 s
//    cannot hold a connection, and a handler thread, for ever (catalogue 79, 81).
class Pace {
 public:
  using Clock = std::chrono::steady_clock;

  Pace() = default;
  Pace(std::chrono::milliseconds stall, std::uint64_t min_rate, std::chrono::milliseconds grace);

  // Starts the rate clock at the first transfer; a no-op once started (called on every
  // read and write, so it reads the clock only the first time).
  void start();
  void credit(std::uint64_t bytes);
  // Milliseconds the next wait may last (0: the rate deadline has passed).
  int wait_ms(Clock::time_point now = Clock::now()) const;
  // The earlier of now + stall and the rate deadline.
  Clock::time_point deadline(Clock::time_point now = Clock::now()) const;
  bool below_min_rate(Clock::time_point now = Clock::now()) const { return now >= rate_deadline_; }

 private:
  std::chrono::milliseconds stall_{60000};
  std::chrono::nanoseconds per_byte_{0};  // 0: no minimum rate
  std::chrono::milliseconds grace_{0};
  bool started_ = false;
  Clock::time_point rate_deadline_ = Clock::time_point::max();
};

}  // namespace ops::core
