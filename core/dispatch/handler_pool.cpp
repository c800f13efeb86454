#include "dispatch/handler_pool.hpp"

#include <spdlog/spdlog.h>

#include <system_error>
#include <thread>

namespace ops::core {

HandlerPool::HandlerPool(unsigned kept, unsigned max, std::chrono::milliseconds linger)
    : kept_(kept), max_(max < kept ? kept : max), linger_(linger) {
  std::lock_guard lock(mutex_);
  for (unsigned i = 0; i < kept_; ++i) start_thread();
}

HandlerPool::~HandlerPool() {
  stop();
  std::unique_lock lock(mutex_);
  all_ended_.wait(lock, [this] { return threads_ == 0; });
}

void HandlerPool::start_thread() {
  try {
    // Detached: a thread ends by itself (linger, stop) and says so through threads_,
    // which join_for() waits on, so a handler that never returns cannot block a join.
    std::thread([this] { work(); }).detach();
    ++threads_;
  } catch (const std::system_error& e) {
    // Out of threads (RLIMIT_NPROC, memory): the job waits for a running thread.
    spdlog::warn("cannot start another handler thread ({} running): {}", threads_, e.what());
  }
}

void HandlerPool::submit(std::function<void()> job) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(job));
    // Jobs already queued will take the idle threads first.
    if (idle_ >= queue_.size()) {
      wake = true;
    } else if (threads_ < max_) {
      start_thread();
    }
  }
  // Outside the lock, so the woken thread does not wake only to block on it.
  if (wake) work_ready_.notify_one();
}

void HandlerPool::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    ++idle_;
    bool woke =
        work_ready_.wait_for(lock, linger_, [this] { return !queue_.empty() || stopping_; });
    --idle_;
    if (queue_.empty() && (stopping_ || (!woke && threads_ > kept_))) break;
    if (queue_.empty()) continue;  // lingering, but one of the kept threads
    std::function<void()> job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
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

}  // namespace ops::core
