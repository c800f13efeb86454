// What every session shares: the start-up settings, the store of configuration snapshots
// (run-time settings and operations, swapped whole), the user store and authenticator
// (thread-safe), the handler threads, and a few atomic counters.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "dispatch/snapshot.hpp"
#include "net/log_throttle.hpp"

namespace ops::core {

class UserStore;
class Authenticator;
class Session;
class HandlerPool;
class UserServices;
class Metrics;
class Defender;
class AuditLog;

struct ServerContext {
  const StartupSettings& startup;
  SnapshotStore& snapshots;
  UserStore& users;
  Authenticator& authenticator;
  HandlerPool& workers;
  int storage_fd = -1;  // the storage root, opened once
  int scratch_fd = -1;  // <storage>/.ops-tmp: server-private, never reachable by a path

  std::atomic<std::size_t> connections{0};
  // The most connections open at once since the last housekeeping tick.
  std::atomic<std::size_t> connections_peak{0};
  std::atomic<std::size_t> unauthenticated{0};
  std::atomic<bool> stopping{false};

  // What clients that never log in can make the server write: 20 lines a second each.
  LogThrottle preauth_log{"failed or abandoned handshakes", 200, std::chrono::seconds(10)};
  LogThrottle refused_log{"refused connections", 200, std::chrono::seconds(10)};

  // Live sessions, for a graceful stop.
  std::mutex sessions_mutex;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;

  // Users beyond keys: quotas and usage, sessions by user, bandwidth (set by Server).
  UserServices* services = nullptr;
  // Issue 15 (set by Server; null in some tests): counters for /metrics, bans per source
  // address, the audit log (null when audit_log is not configured).
  Metrics* metrics = nullptr;
  Defender* defender = nullptr;
  AuditLog* audit = nullptr;
  std::atomic<std::uint64_t> next_connection_id{1};
  // <storage>/.ops-tmp/node-<id>: this server's own temporaries (storage/node_scratch.hpp).
  int node_scratch_fd = -1;
};

}  // namespace ops::core
