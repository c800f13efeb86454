#include "isolation/worker_pool.hpp"

#include <poll.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "isolation/json_text.hpp"
#include "isolation/supervisor.hpp"
#include "opserver/strict_json.hpp"

namespace ops::isolation {
namespace {

const char* status_name(ChannelStatus st) {
  switch (st) {
    case ChannelStatus::closed:
      return "closed its socket";
    case ChannelStatus::timeout:
      return "did not answer in time";
    case ChannelStatus::malformed:
      return "sent a malformed message";
    default:
      return "ok";
  }
}

// Backoff between failed starts: 100 ms, 200 ms, 400 ms ... at most 10 s.
std::chrono::milliseconds backoff(unsigned failures) {
  const unsigned shift = std::min(failures == 0 ? 0u : failures - 1, 7u);
  return std::min(std::chrono::milliseconds(100 << shift), std::chrono::milliseconds(10000));
}

// Parses a "ready" message's object into `ready`; false with `why` if it is not one.
bool read_ready(const rapidjson::Value& r, WorkerReady& ready, std::string& why) {
  if (!r.IsObject()) {
    why = "\"ready\" is not an object";
    return false;
  }
  auto text = [&](const char* key, std::string& out) {
    auto it = r.FindMember(key);
    if (it == r.MemberEnd()) return true;
    if (!it->value.IsString()) return false;
    out.assign(it->value.GetString(), it->value.GetStringLength());
    return true;
  };
  if (!text("summary", ready.summary) || !text("version", ready.version) ||
      !text("payload", ready.payload)) {
    why = "\"ready\" has a member of the wrong type";
    return false;
  }
  if (ready.payload != "none" && ready.payload != "in" && ready.payload != "out") {
    why = "\"ready\".payload must be \"none\", \"in\" or \"out\"";
    return false;
  }
  auto schema = r.FindMember("args_schema");
  if (schema == r.MemberEnd() || !schema->value.IsObject()) {
    why = "\"ready\" needs \"args_schema\", a JSON Schema object";
    return false;
  }
  ready.args_schema = json_text(schema->value);
  return true;
}

}  // namespace

WorkerPool::WorkerPool(PoolSpec spec) : spec_(std::move(spec)) {}

WorkerPool::~WorkerPool() {
  std::lock_guard lock(mutex_);
  for (auto& worker : idle_) {
    retire_worker(worker->pid, worker->channel.release(), spec_.retire_grace);
  }
  idle_.clear();
}

Result<std::unique_ptr<Worker>> WorkerPool::start_worker(WorkerReady* ready_out) {
  auto spawned = spawn_worker(spec_.argv);
  if (!spawned) return spawned.error();
  auto worker = std::make_unique<Worker>();
  worker->pid = spawned->pid;
  worker->channel = WorkerChannel(std::move(spawned->socket));
  const auto deadline = Clock::now() + spec_.ready_timeout;
  const std::string init = "{\"init\":{\"operation\":" + json_quote(spec_.operation) +
                           ",\"settings\":" + spec_.settings_json + "}}";
  WorkerMessage message;
  ChannelStatus st = worker->channel.send(init, {}, {}, deadline)
                         ? worker->channel.receive(message, deadline)
                         : ChannelStatus::closed;
  std::string why;
  if (st != ChannelStatus::ok) {
    why = std::string("the worker ") + status_name(st) + " before it was ready";
  } else if (auto err = message.json.FindMember("error");
             err != message.json.MemberEnd() && err->value.IsString()) {
    why = std::string("the worker refused to start: ") +
          std::string(err->value.GetString(),
                      std::min<std::size_t>(err->value.GetStringLength(), 512));
  } else if (auto r = message.json.FindMember("ready"); r == message.json.MemberEnd()) {
    why = "the worker's first message is not \"ready\"";
  } else {
    WorkerReady ready;
    if (read_ready(r->value, ready, why)) {
      if (ready_out != nullptr) *ready_out = std::move(ready);
      worker->channel.drop_fds();
      return worker;
    }
  }
  const std::string ended = kill_worker(worker->pid);
  return Error{ErrorCode::unavailable, why + " (" + ended + ")"};
}

void WorkerPool::note_start_failure(const std::string& why) {
  // mutex_ held
  ++counts_.start_failures;
  ++failed_starts_in_row_;
  next_start_ = Clock::now() + backoff(failed_starts_in_row_);
  if (failed_starts_in_row_ >= spec_.down_after && !down_) {
    down_reason_ = why;
    down_.store(true);
    spdlog::error(
        "operation {} is down: its worker failed to start {} times in a row; last: {}. "
        "A reload tries again.",
        spec_.operation, failed_starts_in_row_, why);
  } else {
    spdlog::warn("operation {}: worker failed to start ({}); next try in {} ms", spec_.operation,
                 why, backoff(failed_starts_in_row_).count());
  }
}

Result<WorkerReady> WorkerPool::start() {
  for (;;) {
    WorkerReady ready;
    auto worker = start_worker(&ready);
    std::unique_lock lock(mutex_);
    if (worker) {
      ++counts_.started;
      failed_starts_in_row_ = 0;
      ++live_;
      idle_.push_back(std::move(*worker));
      return ready;
    }
    note_start_failure(worker.error().message);
    if (down_) return Error{ErrorCode::unavailable, worker.error().message};
    const auto wait = next_start_ - Clock::now();
    lock.unlock();
    std::this_thread::sleep_for(wait);
  }
}

Result<std::unique_ptr<Worker>> WorkerPool::acquire(Clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (down_) {
      return Error{ErrorCode::unavailable, spec_.operation + " is down: " + down_reason_};
    }
    while (!idle_.empty()) {
      std::unique_ptr<Worker> worker = std::move(idle_.back());
      idle_.pop_back();
      // An idle worker has nothing to say; readable means it died (EOF) or misbehaves.
      pollfd p{worker->channel.fd(), POLLIN, 0};
      if (::poll(&p, 1, 0) == 0) return worker;
      ++counts_.crashed;
      --live_;
      lock.unlock();
      const std::string ended = kill_worker(worker->pid);
      spdlog::warn("operation {}: idle worker {} {}", spec_.operation, worker->pid, ended);
      lock.lock();
    }
    if (live_ < spec_.max_concurrent) {
      if (Clock::now() < next_start_) {
        const auto ms = std::chrono::ceil<std::chrono::milliseconds>(next_start_ - Clock::now());
        return Error{ErrorCode::unavailable, spec_.operation +
                                                 " is restarting after its worker failed to "
                                                 "start; try again in " +
                                                 std::to_string(ms.count()) + " ms"};
      }
      ++live_;
      lock.unlock();
      auto worker = start_worker(nullptr);
      lock.lock();
      if (worker) {
        ++counts_.started;
        failed_starts_in_row_ = 0;
        return worker;
      }
      --live_;
      note_start_failure(worker.error().message);
      std::unique_ptr<Worker> room;
      hand_to_slot(room);
      return Error{ErrorCode::unavailable,
                   spec_.operation + " is not available: " + worker.error().message};
    }
    // In the one queue with the I/O threads' waits (acquire_now), so whoever waited
    // longest gets the next worker back, or the room to start one.
    auto slot = std::make_shared<WorkerSlot>();
    slot->wake = [raw = slot.get()] { raw->delivered_cv.notify_one(); };
    slots_.push_back(slot);
    lock.unlock();
    std::unique_ptr<Worker> delivered;
    bool got = false;
    {
      std::unique_lock slot_lock(slot->mutex);
      slot->delivered_cv.wait_until(slot_lock, deadline, [&] { return slot->delivered; });
      slot->gone = true;
      got = slot->delivered;
      delivered = std::move(slot->worker);
    }
    if (delivered) return delivered;
    lock.lock();
    if (!got) {
      return Error{ErrorCode::timeout, "all " + std::to_string(spec_.max_concurrent) +
                                           " workers of " + spec_.operation +
                                           " stayed busy until the deadline"};
    }
    // Room to start one: the loop does.
  }
}

WorkerPool::Now WorkerPool::acquire_now(std::unique_ptr<Worker>& worker,
                                        const std::shared_ptr<WorkerSlot>& slot) {
  std::lock_guard lock(mutex_);
  // (Anyone already waiting gets each worker back before it is idle: see hand_to_slot.)
  if (down_) return Now::use_acquire;
  if (!idle_.empty()) {
    // As in acquire(): readable means it died or misbehaves. Left for acquire(), which
    // kills and reaps it (a wait this thread must not do) and finds or starts another.
    pollfd p{idle_.back()->channel.fd(), POLLIN, 0};
    if (::poll(&p, 1, 0) != 0) return Now::use_acquire;
    worker = std::move(idle_.back());
    idle_.pop_back();
    return Now::worker;
  }
  if (live_ < spec_.max_concurrent) return Now::use_acquire;  // it starts one
  if (!slot) return Now::busy;
  slots_.push_back(slot);
  return Now::queued;
}

bool WorkerPool::hand_to_slot(std::unique_ptr<Worker>& worker) {
  while (!slots_.empty()) {
    std::shared_ptr<WorkerSlot> slot = std::move(slots_.front());
    slots_.pop_front();
    std::unique_lock slot_lock(slot->mutex);
    if (slot->gone) continue;
    slot->worker = std::move(worker);
    slot->delivered = true;
    slot_lock.unlock();
    slot->wake();
    return true;
  }
  return false;
}

void WorkerPool::give_back(std::unique_ptr<Worker> worker) {
  ++worker->calls;
  give_back_unused(std::move(worker));
}

void WorkerPool::give_back_unused(std::unique_ptr<Worker> worker) {
  std::unique_lock lock(mutex_);
  if (spec_.max_calls > 0 && worker->calls >= spec_.max_calls) {
    --live_;
    std::unique_ptr<Worker> room;
    hand_to_slot(room);  // a waiting call may start one now
    lock.unlock();
    retire_worker(worker->pid, worker->channel.release(), spec_.retire_grace);
    return;
  }
  if (hand_to_slot(worker)) return;
  idle_.push_back(std::move(worker));
}

std::string WorkerPool::discard(std::unique_ptr<Worker> worker) {
  worker->channel = WorkerChannel();  // closes our end first: a live worker sees EOF
  const std::string ended = kill_worker(worker->pid);
  {
    std::lock_guard lock(mutex_);
    ++counts_.crashed;
    --live_;
    std::unique_ptr<Worker> room;
    hand_to_slot(room);  // a waiting call may start one now
  }
  return ended;
}

std::optional<std::string> WorkerPool::health(std::chrono::milliseconds wait) {
  if (down()) return "down: " + down_reason();
  if (!spec_.asks_health) return std::nullopt;
  auto worker = acquire(Clock::now() + wait);
  if (!worker) return std::nullopt;  // all busy: cannot tell, and busy is not unhealthy
  WorkerMessage reply;
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  if (!(*worker)->channel.send("{\"health\":{}}", {}, {}, deadline) ||
      (*worker)->channel.receive(reply, deadline) != ChannelStatus::ok ||
      !reply.json.HasMember("ret") || !reply.json["ret"].IsInt()) {
    discard(std::move(*worker));
    return "its worker did not answer the health check";
  }
  std::optional<std::string> reason;
  if (reply.json["ret"].GetInt() != 0) {
    auto r = reply.json.FindMember("reason");
    reason =
        (r != reply.json.MemberEnd() && r->value.IsString()) ? r->value.GetString() : "unhealthy";
  }
  give_back_unused(std::move(*worker));
  return reason;
}

std::string WorkerPool::down_reason() const {
  std::lock_guard lock(mutex_);
  return down_reason_;
}

PoolCounts WorkerPool::counts() const {
  std::lock_guard lock(mutex_);
  PoolCounts counts = counts_;
  counts.live = live_;
  return counts;
}

}  // namespace ops::isolation
