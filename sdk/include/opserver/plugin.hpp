// The header a plugin author includes: a C++ view of the C ABI (plugin_abi.h), the
// handler shim that keeps exceptions from crossing the .so boundary, and the export
// macro. A plugin is one .cpp:
//
//   ops::Status handle_echo(ops::sdk::Call& call, const rapidjson::Value& args) {
//     return call.send_result(R"({"echo":true})");
//   }
//   OPS_EXPORT_PLUGIN("echo", "1.0.0",
//       OPS_OPERATION("echo", "Echoes", "1.0.0", OPS_PAYLOAD_NONE, R"({"type":"object"})",
//                     handle_echo));
//
// OPS_OPERATION_HOOKS (below) adds a settings schema and the lifecycle hooks (init,
// shutdown, health; docs/PLUGINS.md "Lifecycle hooks").
//
// A Call is used only on the thread running the handler, and only until it returns.
#pragma once

#include <rapidjson/document.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "opserver/error.hpp"
#include "opserver/plugin_abi.h"

namespace ops::sdk {

class Call {
 public:
  Call(const ops_host_v1* host, ops_call* call) noexcept : host_(host), call_(call) {}

  std::string_view user() const { return host_->user(call_); }
  // The user's storage directory (host-owned fd: do not close).
  int user_dir() const { return host_->user_dir(call_); }
  // Server-private directory on the user directories' filesystem (host-owned fd), shared by
  // every server using the same storage: for state any of them may continue.
  int scratch_dir() const { return host_->scratch_dir(call_); }
  // This server's own directory inside scratch_dir(), for temporary files (host-owned fd);
  // scratch_dir() on a server older than ABI minor 2.
  int node_scratch_dir() const;
  // This operation's "settings" object from ops.json.
  const rapidjson::Value& settings();
  // settings()[name] as an unsigned integer, or `fallback` when absent.
  std::uint64_t setting_u64(const char* name, std::uint64_t fallback);

  std::uint64_t payload_size() const { return host_->payload_size(call_); }
  // > 0 bytes read, 0 at the end of the payload, -1 when it can no longer arrive.
  std::int64_t read_payload(void* buf, std::size_t cap) {
    return host_->read_payload(call_, buf, cap);
  }

  // Sends the ok response; for an "out" operation `payload_size` bytes must follow.
  Status send_result(std::string_view result_json, std::uint64_t payload_size = 0);
  Status write_payload(const void* buf, std::size_t len);
  Status send_file(int fd, std::uint64_t offset, std::uint64_t len);
  bool result_sent() const noexcept { return result_sent_; }

  void log(ops_log_level level, const std::string& message) {
    host_->log(call_, level, message.c_str());
  }
  // See ops_host_v1::create_user.
  Status create_user(const std::string& name, const std::string& key);

  // ---- Quotas and users (ops_host_v1, after create_user). A server older than these
  // members has no quotas: reservations then always succeed and the user functions
  // answer `unavailable`.

  // A limit argument: a count, or one of these.
  static constexpr std::int64_t kLimitNone = OPS_LIMIT_NONE;
  static constexpr std::int64_t kLimitDefault = OPS_LIMIT_DEFAULT;
  static constexpr std::int64_t kLimitKeep = OPS_LIMIT_KEEP;

  // Records a change already made (a removal, a truncation); never refused.
  void usage_adjust(std::int64_t bytes_delta, std::int64_t files_delta);
  // Room held beyond a call under `tag` (QuotaReservation::hold): turned into usage by the
  // actual change, or given back. Unknown tags (a restart forgets held room) only record
  // the change.
  void quota_commit_held(const std::string& tag, std::int64_t bytes_delta,
                         std::int64_t files_delta);
  void quota_release_held(const std::string& tag);
  bool user_exists(const std::string& name);
  Status create_user(const std::string& name, const std::string& key, std::int64_t quota_bytes,
                     std::int64_t quota_files);
  Status remove_user(const std::string& name);
  Status rekey_user(const std::string& name, const std::string& key);
  Status set_quota(const std::string& name, std::int64_t quota_bytes, std::int64_t quota_files);
  // The user's usage as JSON (see ops_host_v1::get_usage); empty name: the caller.
  Result<std::string> usage(const std::string& name = {});
  // Closes the user's connections (but this one, if asked); returns how many.
  std::int64_t close_user_connections(const std::string& name, bool except_this_connection);

  // True when the host's vtable reaches the member at `offset` (offsetof(ops_host_v1, m));
  // the member itself may still be null in a test host.
  bool host_has(std::size_t offset) const noexcept {
    return host_->struct_size >= offset + sizeof(void*);
  }

  const ops_host_v1* host() const noexcept { return host_; }
  ops_call* raw() const noexcept { return call_; }

 private:
  const ops_host_v1* host_;
  ops_call* call_;
  bool result_sent_ = false;
  bool settings_parsed_ = false;
  rapidjson::Document settings_;
};

// Room reserved in the caller's quota (ops_host_v1::quota_reserve), given back when
// this object dies unless committed or held. Reserve before reading any payload byte:
//
//   auto room = QuotaReservation::reserve(call, declared_size, 1);
//   if (!room) return std::move(room).error();        // quota_exceeded, nothing read
//   ... write and publish ...
//   room->commit(static_cast<std::int64_t>(declared_size), 1);
class QuotaReservation {
 public:
  static Result<QuotaReservation> reserve(Call& call, std::uint64_t bytes, std::uint64_t files);
  QuotaReservation(QuotaReservation&& other) noexcept
      : call_(other.call_), token_(std::exchange(other.token_, 0)) {}
  QuotaReservation& operator=(QuotaReservation&& other) noexcept {
    if (this != &other) {
      release();
      call_ = other.call_;
      token_ = std::exchange(other.token_, 0);
    }
    return *this;
  }
  QuotaReservation(const QuotaReservation&) = delete;
  QuotaReservation& operator=(const QuotaReservation&) = delete;
  ~QuotaReservation() { release(); }

  // Ends the reservation, recording what the operation actually added (a negative delta
  // for a smaller replacement).
  void commit(std::int64_t bytes_delta, std::int64_t files_delta);
  // Keeps the room beyond this call under `tag` (ops_host_v1::quota_hold).
  Status hold(const std::string& tag);
  void release() noexcept;

 private:
  QuotaReservation(Call* call, std::uint64_t token) : call_(call), token_(token) {}
  Call* call_;
  std::uint64_t token_;  // 0: nothing held (or a host without quotas)
};

using Handler = Status (*)(Call&, const rapidjson::Value& args);

// True when the server offers ops_host_v1::fail_details (§9), i.e. it is new enough. A
// handler need not check: return ops::fail_with_details(...) and the shim below sends the
// details where the host can, and the code and message alone where it cannot.
bool host_has_fail_details(const ops_host_v1* host) noexcept;

// The lifecycle hooks (plugin_abi.h, ABI minor 1; docs/PLUGINS.md "Lifecycle hooks"), in
// C++. Each runs outside any request: no Call. An exception never crosses into the server:
// from init it refuses the operation with its what(); from health it reports unhealthy; from
// shutdown it is swallowed.
//   init:     the operation's settings (already checked against its settings schema);
//             an Error refuses the operation with its message.
//   shutdown: the deadline the server waits; return before it.
//   health:   nullopt when healthy, else the reason. Must be quick.
using InitHook = Status (*)(const rapidjson::Value& settings);
using ShutdownHook = void (*)(std::chrono::milliseconds deadline);
using HealthHook = std::optional<std::string> (*)();

namespace detail {
int run_handler(Handler handler, const ops_host_v1* host, ops_call* call, const char* args,
                std::size_t args_len) noexcept;
int run_init(InitHook hook, const char* settings, std::size_t len, char* error,
             std::size_t error_cap) noexcept;
void run_shutdown(ShutdownHook hook, std::uint32_t deadline_ms) noexcept;
int run_health(HealthHook hook, char* reason, std::size_t cap) noexcept;

template <InitHook F>
int init_shim(const char* settings, std::size_t len, char* error, std::size_t cap) noexcept {
  return run_init(F, settings, len, error, cap);
}
template <ShutdownHook F>
void shutdown_shim(std::uint32_t deadline_ms) noexcept {
  run_shutdown(F, deadline_ms);
}
template <HealthHook F>
int health_shim(char* reason, std::size_t cap) noexcept {
  return run_health(F, reason, cap);
}
}  // namespace detail

// The C entry points of the hooks, or NULL for a hook given as nullptr.
template <InitHook F>
constexpr int (*init_hook() noexcept)(const char*, std::size_t, char*, std::size_t) {
  if constexpr (F == nullptr) {
    return nullptr;
  } else {
    return &detail::init_shim<F>;
  }
}
template <ShutdownHook F>
constexpr void (*shutdown_hook() noexcept)(std::uint32_t) {
  if constexpr (F == nullptr) {
    return nullptr;
  } else {
    return &detail::shutdown_shim<F>;
  }
}
template <HealthHook F>
constexpr int (*health_hook() noexcept)(char*, std::size_t) {
  if constexpr (F == nullptr) {
    return nullptr;
  } else {
    return &detail::health_shim<F>;
  }
}

// The C entry point for a C++ handler. Parses args, runs the handler, turns an Error
// into host->fail (host->fail_details when it carries §9 details) and any exception
// into `internal` (details logged, never sent).
template <Handler H>
int call_shim(const ops_host_v1* host, ops_call* call, const char* args,
              std::size_t args_len) noexcept {
  return detail::run_handler(H, host, call, args, args_len);
}

}  // namespace ops::sdk

#define OPS_OPERATION(name, summary, version, payload, schema, handler)                         \
  ops_op_v1 {                                                                                   \
    sizeof(ops_op_v1), name, summary, version, payload, schema, &::ops::sdk::call_shim<handler> \
  }

// An operation with lifecycle hooks: `settings_schema` (JSON Schema text of its ops.json
// "settings", or nullptr), then an InitHook, a ShutdownHook and a HealthHook, each a
// function or nullptr:
//   OPS_OPERATION_HOOKS("list", "...", "1.0.0", OPS_PAYLOAD_NONE, kArgs, handle_list,
//                       kSettingsSchema, init_list, nullptr, nullptr)
#define OPS_OPERATION_HOOKS(name, summary, version, payload, schema, handler, settings_schema,   \
                            init, shutdown, health)                                              \
  ops_op_v1 {                                                                                    \
    sizeof(ops_op_v1), name, summary, version, payload, schema, &::ops::sdk::call_shim<handler>, \
        settings_schema, ::ops::sdk::init_hook<init>(), ::ops::sdk::shutdown_hook<shutdown>(),   \
        ::ops::sdk::health_hook<health>()                                                        \
  }

// Defines the two exported symbols of plugin_abi.h for the operations listed.
#define OPS_EXPORT_PLUGIN(plugin_name, plugin_version, ...)                     \
  extern "C" OPS_EXPORT const ops_plugin_stamp_v1 ops_plugin_stamp = {          \
      OPS_PLUGIN_ABI_VERSION, sizeof(ops_plugin_stamp_v1), OPS_BUILD_SIGNATURE, \
      OPS_PLUGIN_ABI_MINOR};                                                    \
  namespace {                                                                   \
  const ops_op_v1 ops_plugin_ops_[] = {__VA_ARGS__};                            \
  const ops_plugin_v1 ops_plugin_descriptor_ = {                                \
      OPS_PLUGIN_ABI_VERSION,                                                   \
      sizeof(ops_plugin_v1),                                                    \
      plugin_name,                                                              \
      plugin_version,                                                           \
      sizeof(ops_plugin_ops_) / sizeof(ops_plugin_ops_[0]),                     \
      ops_plugin_ops_};                                                         \
  }                                                                             \
  extern "C" OPS_EXPORT const ops_plugin_v1* ops_plugin_entry(void) {           \
    return &ops_plugin_descriptor_;                                             \
  }
