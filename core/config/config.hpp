// The server's configuration: config/server.json (settings) and the ops.json it names
// (§6), validated strictly into one immutable Config. Its RuntimeSettings and operations
// reach sessions through a Snapshot (dispatch/snapshot.hpp); its StartupSettings are read
// once by the Server.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/isolation_config.hpp"
#include "config/operating_config.hpp"
#include "config/tls_config.hpp"
#include "config/user_store_config.hpp"
#include "opserver/error.hpp"

namespace ops::core {

struct OperationPolicy {
  std::vector<std::string> allow;            // user names; "*" means everyone
  std::optional<std::uint64_t> max_payload;  // request payload limit for this operation
  std::string settings_json = "{}";          // the plugin's own "settings" object
  // How long a handler may run before it has touched the connection; then the request
  // is answered `timeout`. Unset: the server's operation_timeout.
  std::optional<std::chrono::milliseconds> timeout;
  // Set when the operation runs in worker processes instead of in the server.
  std::optional<IsolationSpec> isolation;

  bool allows(std::string_view user) const;
};

// Settings read once at start-up: changing them needs a restart (sockets, directories,
// thread counts).
struct StartupSettings {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 9000;
  std::filesystem::path storage_dir = "var/storage";
  std::filesystem::path state_dir = "var/state";
  std::filesystem::path plugin_dir = "build/plugins";

  unsigned io_threads = 0;  // 0: the hardware threads
  // Plugin calls run on handler threads, never on an I/O thread: `worker_threads` are kept
  // ready, and more start while every one is busy, up to `max_worker_threads`.
  unsigned worker_threads = 64;
  unsigned max_worker_threads = 1024;
  std::chrono::milliseconds shutdown_grace{10000};
  std::string log_level = "info";
  // Where the running server writes its pid (`opserver reload` signals it); empty: nowhere.
  std::filesystem::path pid_file;
  // This server's name among those sharing storage_dir: its temporaries live in
  // <storage>/.ops-tmp/node-<node_id>/. Empty: default_node_id() (host name + state dir).
  std::string node_id;
};

// Settings that may change while the server runs. Sessions read them from the current
// Snapshot (dispatch/snapshot.hpp), taken once per request, never from Config.
struct RuntimeSettings {
  std::uint32_t max_frame = 1u << 20;     // §1
  std::uint32_t max_auth_frame = 4096;    // §7
  std::size_t max_unauthenticated = 256;  // §7
  std::size_t max_connections = 100000;
  std::uint64_t discard_limit = 64u << 20;  // unread request payload skipped, not closed
  std::size_t output_buffer = 256u << 10;   // buffered responses before a flush is forced

  std::chrono::milliseconds handshake_timeout{10000};  // §7
  std::chrono::milliseconds idle_timeout{300000};      // §7
  std::chrono::milliseconds payload_timeout{60000};    // §7
  // Past `payload_rate_grace`, a payload must average `payload_min_rate` bytes/s (0: off).
  std::uint64_t payload_min_rate = 1024;
  std::chrono::milliseconds payload_rate_grace{120000};
  std::chrono::milliseconds operation_timeout{300000};
};

// server.json and ops.json as loaded: both kinds of settings and the enabled operations.
struct Config : StartupSettings, RuntimeSettings {
  std::filesystem::path server_config_path;
  std::filesystem::path ops_config_path;

  std::map<std::string, OperationPolicy> operations;  // enabled operations, by name

  // §8: a TLS listener besides the plain one (tls_config.hpp), and whether the plain
  // listener expects a PROXY v2 header first.
  std::optional<TlsSettings> tls;
  bool proxy_protocol = false;
  // Limits of a user without its own in users.json (nullopt: none). OPS/1 §10.
  std::optional<std::uint64_t> default_quota_bytes;
  std::optional<std::uint64_t> default_quota_files;
  // Payload bytes per second per user and direction (nullopt: unlimited).
  std::optional<std::uint64_t> default_upload_bytes_per_second;
  std::optional<std::uint64_t> default_download_bytes_per_second;
  // Running in production (operating_config.hpp): the admin listener (/metrics, /healthz,
  // /readyz; none when absent), the defender, the audit log file (none when absent).
  std::optional<AdminListen> admin_listen;
  DefenderSettings defender;
  std::optional<std::filesystem::path> audit_log;
  // Where users and keys live: users.json (the default) or PostgreSQL (issue 17).
  UserStoreSettings user_store;
};

// Command-line overrides, applied after the files are read.
struct ConfigOverrides {
  std::optional<std::string> listen;
  std::optional<std::filesystem::path> storage_dir;
  std::optional<std::filesystem::path> state_dir;
  std::optional<std::filesystem::path> plugin_dir;
  TlsOverrides tls;                    // --tls-listen, --tls-cert, --tls-key, --tls-client-ca
  std::optional<bool> proxy_protocol;  // --proxy-protocol (the plain listener)
  std::optional<std::filesystem::path> pid_file;   // --pid-file
  std::optional<std::string> admin_listen;         // --admin-listen
  std::optional<std::filesystem::path> audit_log;  // --audit-log
};

// Reads and validates both files. A relative path inside a file is taken from the directory
// of the file that names it (server.json's for ops_config, storage_dir, state_dir, pid_file
// and the TLS files; ops.json's for plugin_dir), so the server finds its files from any
// working directory; a default (an absent key) is resolved the same way. Overrides keep the
// path as given on the command line (relative to the working directory). Errors read
// "file:line:col: reason", and a file that cannot be opened is named by its absolute path.
Result<Config> load_config(const std::filesystem::path& server_json,
                           const ConfigOverrides& overrides = {});

// The file names in plugin_dir of plugins that run isolated: the server must not load
// them into its own process (plugin_loader.hpp's `skip`).
std::set<std::string> isolated_plugin_files(const Config& config);

// "HOST:PORT" or "[V6]:PORT".
Status parse_listen(std::string_view text, std::string& host, std::uint16_t& port);

}  // namespace ops::core
