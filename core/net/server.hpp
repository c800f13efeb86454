// The running server: storage preparation, the user store, plugins, the registry, the
// listener, the I/O threads and the worker pool; and the graceful stop on SIGINT/SIGTERM.
// Created and run from main; run() returns once the server has stopped.
#pragma once

#include <functional>
#include <memory>
#include <optional>

#include "config/config.hpp"
#include "net/memory_transport.hpp"
#include "net/reload.hpp"
#include "opserver/error.hpp"

namespace ops::core {

inline constexpr const char* kServerVersion = "opserver/0.1.0";

class Server {
 public:
  // Everything that can fail before serving fails here, naming the cause.
  static Result<std::unique_ptr<Server>> create(Config config);
  ~Server();

  // Serves until SIGINT or SIGTERM, then stops gracefully. Returns the exit status.
  int run();

  // Any thread, while run() runs: a new connection over an in-memory pipe instead of a
  // socket, counted and capped like an accepted one (tests and fuzzers drive whole
  // sessions this way). Nullopt when the caps refuse it.
  std::optional<MemoryPeer> connect_in_memory();
  // Any thread: the graceful stop SIGTERM starts; run() returns once it is done.
  void stop();

  // Before run(): lets SIGHUP reload the configuration (net/reload.hpp), read again with
  // `load_config` (main: the same files and command-line overrides). Without it, SIGHUP
  // only logs that reloading is off.
  void enable_reload(std::function<Result<Config>()> load_config);
  // Before run(): where packaging (sd_notify) and metrics attach to reloads.
  ReloadHooks& reload_hooks();
  // While run() runs, with reload enabled: asks for a reload as SIGHUP does; and the
  // reloads applied and refused so far (null when reload is off or run() has not started).
  void request_reload();
  const ReloadCounters* reload_counters() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// --check-config: validates both files, loads every plugin and binds every enabled
// operation, without touching the storage or the user store.
Status check_config(const Config& config);

}  // namespace ops::core
