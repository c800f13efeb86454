// Test harness: runs the real opserver binary on an ephemeral loopback port with the real
// plugin .so files, a temporary storage root and state directory, and short deadlines
// where a test asks for them. Also a raw OPS/1 connection for malformed input.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "opserver/client.hpp"

namespace ops::test {

namespace fs = std::filesystem;

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// The default ops.json body: the four standard operations, register for admin only.
std::string default_ops_json(const std::string& plugin_dir);
// The §5 operations and the §10 file operations (remove, move, mkdir, stat), as the shipped
// config enables them. `upload_extra` and `list_extra` are spliced into those operations'
// objects, e.g. R"(, "max_payload": 1024)".
std::string file_ops_json(const std::string& plugin_dir, const std::string& upload_extra = "",
                          const std::string& list_extra = "");
// `ops_json` (one of the above) with the §11 resumable upload operations added for every
// user; `open_extra` is spliced into upload_open's object, e.g. R"(, "settings": {…})".
std::string with_resumable_ops(std::string ops_json, const std::string& open_extra = "");

struct ServerOptions {
  // Full ops.json text; empty means default_ops_json(plugin_dir).
  std::string ops_json;
  // Extra members spliced into server.json, e.g. R"("idle_timeout_ms": 500)".
  std::string settings;
  std::string plugin_dir = OPS_PLUGIN_DIR;
  // Extra environment for the server process, e.g. {"LD_PRELOAD", shim} (fault tests).
  std::vector<std::pair<std::string, std::string>> env;
  // RLIMIT_NOFILE (soft and hard) for the server process; 0 keeps the inherited limit.
  unsigned long nofile_limit = 0;
  // RLIMIT_FSIZE in bytes for the server process (prlimit --fsize); 0 keeps the inherited.
  unsigned long fsize_limit = 0;
  // Called with the server's root directory after the config is written and before the
  // first start, e.g. to mount a small filesystem on <root>/storage.
  std::function<void(const fs::path&)> prepare;
  // Extra command-line arguments after --config, e.g. {"--tls-listen", "127.0.0.1:0"}.
  std::vector<std::string> args;
};

class ServerProcess {
 public:
  // Starts the server and waits until it listens; throws std::runtime_error (with the
  // server's log) if it exits first.
  explicit ServerProcess(ServerOptions options = {});
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  std::uint16_t port() const { return port_; }
  // The TLS listener's port from the log ("opserver listening for TLS on HOST:PORT"),
  // waiting up to `wait` for the line; 0 if the server logs no TLS listener.
  std::uint16_t tls_port(std::chrono::milliseconds wait = std::chrono::seconds(2)) const;
  pid_t pid() const { return pid_; }
  const fs::path& root() const { return dir_.path(); }
  fs::path storage_dir() const { return root() / "storage"; }
  fs::path state_dir() const { return root() / "state"; }
  fs::path config_path() const { return root() / "server.json"; }
  std::string admin_key() const;

  client::Options options(const std::string& user, const std::string& key) const;
  // Connects and authenticates; fails the current test (ADD_FAILURE) and returns null
  // if that does not work.
  std::unique_ptr<client::Client> connect(const std::string& user, const std::string& key) const;
  std::unique_ptr<client::Client> connect_admin() const;
  // Registers `name` through the register operation as admin; returns its key.
  std::string add_user(const std::string& name) const;

  std::string log() const;
  bool running();
  // SIGTERM, then waits up to `limit`; returns the exit status (-1 if it had to SIGKILL).
  int stop(std::chrono::milliseconds limit = std::chrono::seconds(15));
  // SIGKILL, then reap.
  void kill();
  // Waits up to `limit` for the server to exit by itself; returns its raw wait status
  // (WIFSIGNALED/WTERMSIG apply), or nullopt if it is still running.
  std::optional<int> wait_exit(std::chrono::milliseconds limit);
  // Starts the server again once it has exited (crash, kill or stop): the same storage,
  // state, configuration and options, a new port. The previous log is kept as
  // server.log.<n>; log() reads the new one. Throws like the constructor.
  void restart();
  // How long the last (re)start took until the server listened.
  std::chrono::milliseconds startup_time() const { return startup_time_; }

  // Resident set size and open descriptors of the server, from /proc.
  std::uint64_t rss_bytes() const;
  std::size_t open_fds() const;
  // User plus system CPU time of the server so far, in clock ticks (/proc/PID/stat).
  std::uint64_t cpu_ticks() const;

 private:
  void launch();

  ServerOptions options_;
  TempDir dir_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  bool reaped_ = false;
  int status_ = 0;  // raw wait status, once reaped
  int launches_ = 0;
  std::chrono::milliseconds startup_time_{0};
};

struct RunResult {
  int status = -1;
  std::string output;  // stdout and stderr together
};
// Runs a program to completion (argv[0] is the binary), in `cwd` if given.
RunResult run_program(const std::vector<std::string>& argv, const fs::path& cwd = {},
                      const std::string& stdin_data = {});

// A raw TCP connection for bytes no well-behaved client sends.
class RawConnection {
 public:
  explicit RawConnection(std::uint16_t port);
  ~RawConnection();
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool send(std::string_view bytes);
  // Reads one frame; returns its header text, or nullopt on close or timeout.
  std::optional<std::string> read_frame(
      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // The raw bytes of the next frame (length prefix included), or nullopt.
  std::optional<std::string> read_frame_bytes(
      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Reads exactly n payload bytes.
  std::optional<std::string> read_exact(
      std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // True if the server closes the connection within `timeout` (any bytes are discarded).
  bool closed_within(std::chrono::milliseconds timeout);
  // Reads the challenge and authenticates; returns true on welcome.
  bool authenticate(const std::string& user, const std::string& key);
  // The challenge's nonce, once read (by authenticate or read_challenge).
  std::string read_challenge();
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// A request header as JSON text.
std::string request_json(std::uint64_t id, const std::string& operate,
                         const std::string& args_json = "", std::uint64_t payload = 0);
// Frame helper: length prefix + header.
std::string frame_of(std::string_view header);
// Sends one request header (and payload bytes) and returns the reply header text, or
// "<closed>" if the server closed instead.
std::string exchange_frame(RawConnection& c, const std::string& header,
                           const std::string& payload = "");

}  // namespace ops::test
