// The threads plugin handlers run on. A handler holds its thread for as long as its
// client takes to send or read the payload, so a fixed pool would let as many slow
// clients as it has threads stall every other request (reliability catalogue 79, 81).
// This pool keeps `kept` threads ready and starts another whenever work arrives with
// none idle, up to `max`; a thread above `kept` ends after `linger` without work.
//
// Threads are woken one at a time, in a chain: the woken thread takes a job and, if more
// are queued, wakes (or starts) the next before running its own. A burst of quick calls
// is then run by one or two threads without a context switch per call, and a call that
// blocks never holds up the next.
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

  // Read-only, for metrics: threads running, those running a job, jobs waiting for one.
  struct Load {
    unsigned threads = 0;
    unsigned busy = 0;
    std::size_t queued = 0;
  };
  Load load() const;

 private:
  // With mutex_ held. `for_queued_job`: the thread is one wake_for_queue_locked() counts
  // in waking_ until it runs.
  void start_thread(bool for_queued_job);
  // With mutex_ held: true if the caller must notify one idle thread for the queue.
  bool wake_for_queue_locked();
  void work(bool started_for_queued_job);

  const unsigned kept_;
  const unsigned max_;
  const std::chrono::milliseconds linger_;

  mutable std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable all_ended_;
  std::deque<std::function<void()>> queue_;
  unsigned threads_ = 0;
  unsigned idle_ = 0;
  unsigned waking_ = 0;  // threads woken or started for queued jobs, not yet running
  bool stopping_ = false;
};

}  // namespace ops::core
