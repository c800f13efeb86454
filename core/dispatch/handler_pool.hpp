// The threads plugin handlers run on. A handler holds its thread for as long as its
// client takes to send or read the payload, so a fixed pool would let as many slow
// clients as it has threads stall every other request (reliability catalogue 79, 81).
// This pool keeps `kept` threads ready and starts another whenever work arrives with
// none idle, up to `max`; a thread above `kept` ends after `linger` without work.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>

namespace ops::core {

class HandlerPool {
 public:
  HandlerPool(unsigned kept, unsigned max, std::chrono::milliseconds linger);
  HandlerPool(const HandlerPool&) = delete;
  HandlerPool& operator=(const HandlerPool&) = delete;
  // Stops and waits for every thread (see join_for for a bounded wait).
  ~HandlerPool();

  // Runs `job` on a pool thread: an idle one, a new one while under `max`, or the next
  // to finish. Never blocks.
  void submit(std::function<void()> job);

  // No new work; threads end once the queue is empty.
  void stop();
  // After stop(): waits up to `limit` for every thread to end. False if one is still
  // running a handler (which the caller may then abandon).
  bool join_for(std::chrono::milliseconds limit);

  unsigned threads() const;

 private:
  void start_thread();  // with mutex_ held
  void work();

  const unsigned kept_;
  const unsigned max_;
  const std::chrono::milliseconds linger_;

  mutable std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable all_ended_;
  std::deque<std::function<void()>> queue_;
  unsigned threads_ = 0;
  unsigned idle_ = 0;
  bool stopping_ = false;
};

}  // namespace ops::core
