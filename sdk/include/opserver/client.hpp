// The OPS/1 client library: connect, mutual handshake (§2, the server's proof checked in
// constant time), requests with payloads streamed from and to file descriptors, and
// pipelining (send several requests, then read their responses in order, §3).
// Blocking POSIX sockets, no Asio. A Client is used from one thread at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "opserver/error.hpp"

namespace ops::client {

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 9000;
  std::string user;
  std::string key;
  // Applies to connect and to every read or write that makes no progress.
  std::chrono::milliseconds timeout{60000};
};

// Parses "HOST:PORT", "[v6]:PORT" or "HOST" (port stays as given).
Status parse_endpoint(std::string_view text, std::string& host, std::uint16_t& port);

// Why a Client call failed, beyond an OPS/1 error answered by the server.
enum class Failure : std::uint8_t {
  none,
  connect,       // could not reach the server
  auth,          // the server refused the login (auth_failed)
  server_proof,  // the server's proof was wrong: it does not know the key
  protocol,      // the server broke OPS/1
  io,            // the connection broke (short read, reset, timeout)
};

struct Response {
  std::uint64_t id = 0;
  bool ok = false;
  std::string result_json = "{}";  // the "result" object as JSON text (ok only)
  Error error;                      // code and message (not ok only)
  std::uint64_t payload_size = 0;   // bytes that follow this response
  std::string header_json;          // the whole response header, as received
};

// Called as payload bytes move: (bytes done, bytes total).
using Progress = std::function<void(std::uint64_t, std::uint64_t)>;

class Client {
 public:
  // Connects and completes the handshake. On failure `why` (if given) says which step.
  static Result<std::unique_ptr<Client>> connect(const Options& options,
                                                 Failure* why = nullptr);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& server_version() const noexcept { return server_; }
  const std::string& user() const noexcept { return user_; }
  Failure last_failure() const noexcept { return failure_; }
  int native_handle() const noexcept { return fd_; }

  // --- low level: pipelining ---
  // Sends one request header; `args_json` must be an object ("" means none).
  // Returns the id used (ids count up from 1).
  Result<std::uint64_t> send_request(std::string_view operate, std::string_view args_json,
                                     std::uint64_t payload_size = 0);
  Status send_payload(const void* data, std::size_t size);
  // Sends exactly `size` bytes read from `fd` (a file, a pipe, stdin).
  Status send_payload_from_fd(int fd, std::uint64_t size, const Progress& progress = {});
  Result<Response> read_response();
  Status read_payload(void* data, std::size_t size);
  Status read_payload_to_fd(int fd, std::uint64_t size, const Progress& progress = {});
  Status skip_payload(std::uint64_t size);

  // --- high level ---
  // One request and its response. A response payload is left unread (read it next).
  Result<Response> call(std::string_view operate, std::string_view args_json = "",
                        std::string_view payload = {});
  // Like call(), and reads the response payload into `payload_out`.
  Result<Response> call_collect(std::string_view operate, std::string_view args_json,
                                std::string& payload_out, std::string_view payload = {});

  // Raw bytes, for tests that must send what a well-behaved client never would.
  Status send_raw(std::string_view bytes);

 private:
  Client(int fd, Options options);
  Status handshake();
  Status write_all(const void* data, std::size_t size);
  Status read_exact(void* data, std::size_t size);
  Result<std::string> read_frame_header();
  Error failed(Failure failure, ErrorCode code, std::string message);

  int fd_ = -1;
  Options options_;
  std::string user_;
  std::string server_;
  std::uint64_t next_id_ = 1;
  Failure failure_ = Failure::none;
};

}  // namespace ops::client
