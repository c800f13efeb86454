// The lifecycle hooks of an operation (ABI minor 1, docs/PLUGINS.md "Lifecycle hooks"):
// its settings checked against the schema it declares, init, shutdown and health. The free
// functions hold no server state, so both the server and a worker process hosting a plugin
// use them. OpLifecycle ties init and shutdown to the life of a loaded library.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "opserver/error.hpp"
#include "opserver/plugin_abi.h"

namespace ops::core {

// Checks `settings_json` (the operation's "settings" object from ops.json) against the
// operation's settings_schema. No schema: any object passes. Errors name the operation and
// the field: `operation "list": settings.max_list_entries: must be >= 1`. A schema that is
// not a JSON object is an error naming the operation too.
Status check_settings(const std::string& op_name, const ops_op_v1* op,
                      std::string_view settings_json);

// Calls the operation's init with its settings, if it has one. A refusal becomes an error
// with the plugin's reason (cleaned of control bytes, truncated).
Status run_init(const std::string& op_name, const ops_op_v1* op, std::string_view settings_json);

// Calls the operation's shutdown(deadline) on a thread of its own, if it has one, and waits
// for it at most `deadline`. Returns false (and logs a warning) if it was still running
// then: it is left behind, holding `keep_alive` (the library, so that its code stays mapped)
// until it returns.
bool run_shutdown(const ops_op_v1* op, std::chrono::milliseconds deadline,
                  std::shared_ptr<const void> keep_alive = {});

// Asks the operation's health hook. nullopt: healthy, or no hook. Otherwise the reason
// (cleaned, truncated).
std::optional<std::string> run_health(const ops_op_v1* op);

// One operation of one loaded library. Shared by every LoadedOperation copy (a reload that
// reuses the library reuses it). prepare() runs init for each generation that enables the
// operation; once any init succeeded (or the operation has no init), shutdown runs exactly
// once: when the last holder lets go (its library is about to be unloaded; the shutdown
// then runs on a thread of its own so the holder never waits), or at server stop through
// shutdown_all(), whichever comes first.
class OpLifecycle {
 public:
  OpLifecycle(const ops_op_v1* op, std::shared_ptr<const void> library);
  ~OpLifecycle();
  OpLifecycle(const OpLifecycle&) = delete;
  OpLifecycle& operator=(const OpLifecycle&) = delete;

  // run_init for one generation (the settings already passed check_settings); on success
  // the operation counts as initialised. `shutdown_deadline` bounds the
  // shutdown hook when the library later goes (the server's shutdown_grace).
  Status prepare(const std::string& op_name, std::string_view settings_json,
                 std::chrono::milliseconds shutdown_deadline);
  bool prepared() const;

  // Server stop: runs the shutdown hook of every prepared operation of this process not yet
  // shut down, in parallel, and waits for them (and for shutdowns already started when a
  // library went) until `deadline` from now. Returns false if any was still running then.
  static bool shutdown_all(std::chrono::milliseconds deadline);

 private:
  const ops_op_v1* op_;
  std::shared_ptr<const void> library_;
  mutable std::mutex mutex_;
  bool prepared_ = false;
  bool shut_down_ = false;
  std::chrono::milliseconds deadline_{5000};
};

}  // namespace ops::core
