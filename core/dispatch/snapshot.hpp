// What a request runs against: the run-time settings and the operations (with the plugins
// that provide them), as one immutable snapshot. A session takes the current snapshot once
// per request and holds it until the request ends, so a reload that publishes a new one
// never changes a request half-way, and a plugin stays loaded while any call that started
// on it runs (the registry's operations keep their .so loaded).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "config/config.hpp"

namespace ops::core {

class Registry;

struct Snapshot {
  RuntimeSettings settings;
  std::shared_ptr<const Registry> registry;
  std::uint64_t generation = 0;
};

class SnapshotStore {
 public:
  explicit SnapshotStore(std::shared_ptr<const Snapshot> first) : current_(std::move(first)) {}

  // Any thread: the snapshot in force now.
  std::shared_ptr<const Snapshot> current() const {
    return current_.load(std::memory_order_acquire);
  }
  // Any thread: later current() calls return `next`; holders of the old one keep it.
  void publish(std::shared_ptr<const Snapshot> next) {
    current_.store(std::move(next), std::memory_order_release);
  }

 private:
  std::atomic<std::shared_ptr<const Snapshot>> current_;
};

}  // namespace ops::core
