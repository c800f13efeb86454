// The worker processes of one isolated operation: started on demand up to max_concurrent,
// reused between calls (up to max_calls each), replaced when one fails, and marked down
// when starting fails again and again (so describe leaves the operation out and calls are
// answered `unavailable` at once, instead of the server restarting a broken plugin in a
// busy loop). Thread-safe: handler threads acquire and give back workers concurrently.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "isolation/worker_channel.hpp"
#include "opserver/error.hpp"

namespace ops::isolation {

// What a worker said it serves (its "ready" message).
struct WorkerReady {
  std::string summary;
  std::string version;
  std::string payload = "none";  // "none", "in" or "out"
  std::string args_schema;       // JSON text of an object
};

struct PoolSpec {
  std::string operation;
  std::vector<std::string> argv;  // the worker host and its arguments
  std::string settings_json = "{}";
  unsigned max_concurrent = 4;
  std::uint64_t max_calls = 0;
  std::chrono::milliseconds ready_timeout{10000};
  std::chrono::milliseconds retire_grace{2000};
  unsigned down_after = 5;  // start-up failures in a row that mark the operation down
  bool asks_health = true;  // a .so worker answers {"health": {}} with its plugin's hook
  // A .so worker (our worker host) keeps the scratch descriptors from its first call; an
  // exec program is promised all of them with every call (docs/PLUGINS.md).
  bool keeps_scratch = true;
};

struct Worker {
  pid_t pid = -1;
  WorkerChannel channel;
  std::uint64_t calls = 0;
  // The worker has the scratch directories (sent with its first call): later calls send
  // only the user's directory, one descriptor instead of three.
  bool has_scratch = false;
};

// A call's place in the queue for a worker while all are busy (an I/O thread's, from
// acquire_now, or a handler thread's in acquire()): a worker coming back is handed to the
// first slot still waiting, and `wake` tells its thread.
struct WorkerSlot {
  std::mutex mutex;
  std::condition_variable delivered_cv;  // a handler thread's wait
  std::unique_ptr<Worker> worker;
  bool delivered = false;      // `worker` is set, or null: room to start one (acquire() it)
  bool gone = false;           // the waiter stopped waiting: give the worker to someone else
  std::function<void()> wake;  // called once, after delivery, on the delivering thread
};

// Counts for metrics and tests, monotonic.
struct PoolCounts {
  std::uint64_t started = 0;
  std::uint64_t start_failures = 0;
  std::uint64_t crashed = 0;  // failed during a call (crash, exit, hang, broken protocol)
  unsigned live = 0;          // processes alive now (idle, busy or starting)
};

class WorkerPool {
 public:
  explicit WorkerPool(PoolSpec spec);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Starts the first worker (retrying with backoff) and returns what it serves; marks the
  // pool down and returns why when it cannot start.
  Result<WorkerReady> start();

  // A worker for one call, started if none is idle and fewer than max_concurrent run; waits
  // for one to come back until `deadline` (then `timeout`). `unavailable` while down or
  // backing off after failed starts.
  Result<std::unique_ptr<Worker>> acquire(Clock::time_point deadline);
  // A worker for one call without blocking (on an I/O thread): an idle one; or, when all
  // max_concurrent are busy, `slot` queued for the next one back; or `use_acquire` when
  // acquire() must do the rest (start a worker, down, backing off).
  // With `slot` null, `busy` instead of queueing.
  enum class Now { worker, queued, busy, use_acquire };
  Now acquire_now(std::unique_ptr<Worker>& worker, const std::shared_ptr<WorkerSlot>& slot);
  // A worker taken but not used for a call (its caller gave up before sending one).
  void give_back_unused(std::unique_ptr<Worker> worker);
  // After a call that ended with "done": kept for the next call, or retired (max_calls).
  void give_back(std::unique_ptr<Worker> worker);
  // After a call the worker failed: killed and reaped now. Returns how it ended.
  std::string discard(std::unique_ptr<Worker> worker);

  // The plugin's health hook, asked through an idle (or new) worker within `wait`; nullopt
  // when healthy or when no worker was free to ask. Down: the reason it is down.
  std::optional<std::string> health(std::chrono::milliseconds wait);

  bool down() const noexcept { return down_.load(std::memory_order_relaxed); }
  std::string down_reason() const;
  PoolCounts counts() const;
  const PoolSpec& spec() const noexcept { return spec_; }

 private:
  Result<std::unique_ptr<Worker>> start_worker(WorkerReady* ready);
  void note_start_failure(const std::string& why);
  // Hands `worker` to the first slot still waiting; false (worker kept) when none is.
  // `worker` null: tells that slot there is room to start one. mutex_ held.
  bool hand_to_slot(std::unique_ptr<Worker>& worker);

  PoolSpec spec_;
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Worker>> idle_;
  unsigned live_ = 0;                              // idle + lent out + starting
  std::deque<std::shared_ptr<WorkerSlot>> slots_;  // calls waiting for a worker, in order
  unsigned failed_starts_in_row_ = 0;
  Clock::time_point next_start_ = Clock::time_point::min();
  std::atomic<bool> down_{false};
  std::string down_reason_;
  PoolCounts counts_;
};

}  // namespace ops::isolation
