// Live reload (SIGHUP, `opserver reload`): server.json's run-time settings, ops.json, the
// plugin directory, the user store and the TLS certificates, validated whole before anything
// changes. A valid configuration becomes a new Snapshot (generation + 1); an invalid one is
// refused with one log line and the old one stays in force. Requests already running finish
// on the snapshot they started with, and an old .so goes when its last call ends (the
// registry's shared_ptrs). Start-up settings (listen address, directories, threads) are
// never changed here: a difference is logged as needing a restart.
//
// Reloads run on a thread of their own (plugin loading blocks), one at a time; requests
// arriving during a reload are coalesced into one more reload after it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "dispatch/snapshot.hpp"
#include "opserver/error.hpp"
#include "plugin_host/plugin_loader.hpp"

namespace boost::asio::ssl {
class context;
}

namespace ops::core {

class UserStore;

// Where other parts attach to reloads. Set them before Server::run (Server::reload_hooks);
// each is optional and is called on the reload thread.
struct ReloadHooks {
  // Packaging (systemd Type=notify): sd_notify "RELOADING=1" before a reload starts and
  // "READY=1" once it has ended, applied or refused.
  std::function<void()> notify_reloading;
  std::function<void()> notify_ready;
  // Metrics and audit: once per reload, whether it was applied, the generation in force
  // afterwards, and the reason when refused (empty when applied).
  std::function<void(bool applied, std::uint64_t generation, const std::string& reason)> finished;
};

// Reloads so far (Server::reload_counters); readable from any thread.
struct ReloadCounters {
  std::atomic<std::uint64_t> applied{0};
  std::atomic<std::uint64_t> refused{0};
};

// What a reload changes, supplied by the Server.
struct ReloadTarget {
  // Reads server.json and ops.json again, with the command line's overrides (main.cpp).
  std::function<Result<Config>()> load_config;
  // The configuration the server started with: its start-up settings stay in force.
  const Config* running = nullptr;
  SnapshotStore* snapshots = nullptr;
  UserStore* users = nullptr;  // re-read after a reload; may be null (tests)
  // With a TLS listener: builds a context from new settings (nothing changes yet), and puts
  // one in force for new connections. Null without a TLS listener.
  std::function<Result<std::shared_ptr<boost::asio::ssl::context>>(const TlsSettings&)>
      build_tls_context;
  std::function<void(std::shared_ptr<boost::asio::ssl::context>)> install_tls_context;
};

// The start-up settings of `next` that differ from `running`, by their server.json names
// ("listen", "storage_dir", ...): a reload keeps the running ones.
std::vector<std::string> settings_needing_restart(const Config& running, const Config& next);

class Reloader {
 public:
  // `plugins`: what the server loaded at start (a reload reuses the unchanged ones).
  Reloader(ReloadTarget target, std::vector<LoadedOperation> plugins, ReloadHooks hooks);
  ~Reloader();  // waits for a reload under way, then ends the thread
  Reloader(const Reloader&) = delete;
  Reloader& operator=(const Reloader&) = delete;

  // Any thread (not a signal handler): asks for a reload on the reload thread. Returns at
  // once; a request while one runs gives one more reload after it.
  void request();
  // Runs one reload on the calling thread (tests), one at a time with the thread's.
  Status reload_now();

  const ReloadCounters& counters() const noexcept { return counters_; }

 private:
  void thread_main();
  Status reload_once();

  ReloadTarget target_;
  std::vector<LoadedOperation> plugins_;  // the last load that went into force
  ReloadHooks hooks_;
  ReloadCounters counters_;

  std::mutex run_mutex_;  // one reload at a time
  std::mutex mutex_;      // guards pending_ and stopping_
  std::condition_variable wake_;
  bool pending_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace ops::core
