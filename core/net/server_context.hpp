// What every session shares: immutable configuration and registry, the user store and
// authenticator (thread-safe), the handler threads, and a few atomic counters.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace ops::core {

struct Config;
class Registry;
class UserStore;
class Authenticator;
class Session;
class HandlerPool;

struct ServerContext {
  const Config& config;
  const Registry& registry;
  UserStore& users;
  Authenticator& authenticator;
  HandlerPool& workers;
  int storage_fd = -1;  // the storage root, opened once
  int scratch_fd = -1;  // <storage>/.ops-tmp: server-private, never reachable by a path

  std::atomic<std::size_t> connections{0};
  std::atomic<std::size_t> unauthenticated{0};
  std::atomic<bool> stopping{false};

  // Live sessions, for a graceful stop.
  std::mutex sessions_mutex;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;
};

}  // namespace ops::core
