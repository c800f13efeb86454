#include "dispatch/handler_pool.hpp"

#include <spdlog/spdlog.h>

#include <system_error>
#include <thread>

namespace ops::core {

HandlerPool::HandlerPool(unsigned kept, unsigned max, std::chrono::milliseconds linger)
    : kept_(kept), max_(max < kept ? kept : max), linger_(linger) {
  std::lock_guard lock(mutex_);
  for (unsigned i = 0; i < kept_; ++i) start_thread(false);
}

HandlerPool::~HandlerPool() {
  stop();
  std::unique_lock lock(mutex_);
  all_ended_.wait(lock, [this] { return threads_ == 0; });
}

void HandlerPool::start_thread(bool for_queued_job) {
  try {
    // Detached: a thread ends by itself (linger, stop) and says so through threads_,
    // which join_for() waits on, so a handler that never returns cannot block a join.
    std::thread([this, for_queued_job] { work(for_queued_job); }).detach();
    ++threads_;
    if (for_queued_job) ++waking_;
  } catch (const std::system_error& e) {
    // Out of threads (RLIMIT_NPROC, memory): the job waits for a running thread.
    spdlog::warn("cannot start another handler thread ({} running): {}", threads_, e.what());
  }
}

bool HandlerPool::wake_for_queue_locked() {
  // A thread is already on its way: it will take a job and wake the next (chain).
  if (queue_.empty() || waking_ > 0) return false;
  if (idle_ > 0) {
    ++waking_;
    return true;
  }
  if (threads_ < max_) start_thread(true);
  return false;
}

void HandlerPool::submit(std::function<void()> job) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(job));
    wake = wake_for_queue_locked();
  }
  // Outside the lock, so the woken thread does not wake only to block on it.
  if (wake) work_ready_.notify_one();
}

void HandlerPool::work(bool started_for_queued_job) {
  std::unique_lock lock(mutex_);
  if (started_for_queued_job && waking_ > 0) --waking_;
  for (;;) {
    if (queue_.empty() && !stopping_) {
      ++idle_;
      // No predicate: every return, notified or not, must be counted below, or a wake
      // meant for a job another thread took first would leave waking_ stuck.
      const bool timed_out = work_ready_.wait_for(lock, linger_) == std::cv_status::timeout;
      --idle_;
      if (waking_ > 0) --waking_;  // a miscount only costs one extra wake-up
      if (timed_out && queue_.empty() && !stopping_ && threads_ > kept_) break;  // lingered
      continue;
    }
    if (queue_.empty()) break;  // stopping, and nothing left to run
    std::function<void()> job = std::move(queue_.front());
    queue_.pop_front();
    // Before running this job (which may block for as long as its client is slow),
    // make sure the next queued one gets a thread too.
    const bool wake = wake_for_queue_locked();
    lock.unlock();
    if (wake) work_ready_.notify_one();
    job();
    job = nullptr;  // whatever the job captured is released outside the lock
    lock.lock();
  }
  --threads_;
  // Notified under the lock: once a waiter sees threads_ == 0 this thread touches
  // nothing of the pool again.
  all_ended_.notify_all();
}

void HandlerPool::stop() {
  std::lock_guard lock(mutex_);
  stopping_ = true;
  work_ready_.notify_all();
}

bool HandlerPool::join_for(std::chrono::milliseconds limit) {
  std::unique_lock lock(mutex_);
  return all_ended_.wait_for(lock, limit, [this] { return threads_ == 0; });
}

unsigned HandlerPool::threads() const {
  std::lock_guard lock(mutex_);
  return threads_;
}

HandlerPool::Load HandlerPool::load() const {
  std::lock_guard lock(mutex_);
  // A thread started for a queued job counts as busy from its start: it is about to run it.
  return Load{threads_, threads_ - idle_, queue_.size()};
}

}  // namespace ops::core
