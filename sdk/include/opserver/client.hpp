// The OPS/1 client library: connect, mutual handshake (§2, the server's proof checked in
// constant time), requests with payloads streamed from and to file descriptors, and
// pipelining (send several requests, then read their responses in order, §3).
// Blocking POSIX sockets, no Asio; optionally TLS (§8) through OpenSSL over the same socket,
// with the tls-exporter channel binding in the handshake (hmac-sha256-plus). Under TLS
// every byte, payloads included, goes through OpenSSL. A Client is used from one thread at
// a time; it owns its socket and closes it on destruction. File descriptors passed in stay
// the caller's.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "opserver/error.hpp"
#include "opserver/proof.hpp"

// OpenSSL's handles, without its headers.
struct ssl_st;
struct ssl_ctx_st;

namespace ops::client {

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 9000;
  std::string user;
  std::string key;
  // Applies to connect and to every read or write that makes no progress.
  std::chrono::milliseconds timeout{60000};

  // --- TLS (§8) ---
  bool tls = false;
  // PEM file of CAs to trust for the server's certificate; empty: the system's store.
  std::string ca_file;
  // A client certificate (chain, PEM) and its key, for servers that require one.
  std::string cert_file;
  std::string key_file;
  // The name the server's certificate must carry; empty: `host` (a DNS name or an IP).
  std::string server_name;
  // TLS 1.3 only unless this is set (then TLS 1.2 with the extended master secret too).
  bool allow_tls12 = false;
  // Go on with plain hmac-sha256 when a TLS server does not offer hmac-sha256-plus (its
  // operator turned channel binding off). Without the binding, a relay that holds a
  // certificate we trust could pass our login on.
  bool insecure_no_binding = false;

  // Called with every frame header sent (`sent` true) or received, as JSON text, before
  // any payload; for tracing (opclient -v). Headers carry the login's proofs and may
  // carry keys in results: a tracer must redact them before showing them.
  std::function<void(bool sent, std::string_view header_json)> on_frame;
};

// Parses "HOST:PORT", "[v6]:PORT", "HOST" or "[v6]" (port stays as given). A bare IPv6
// address with several colons and no brackets is taken as a host without a port.
Status parse_endpoint(std::string_view text, std::string& host, std::uint16_t& port);

// Why a Client call failed, beyond an OPS/1 error answered by the server.
enum class Failure : std::uint8_t {
  none,          // no client-side failure: the server answered with an OPS/1 error
  connect,       // could not reach the server (resolve, refuse, connect timeout)
  auth,          // the server refused the login (auth_failed)
  server_proof,  // the server's proof was wrong: it does not know the key
  protocol,      // the server broke OPS/1
  io,            // the connection broke (short read, reset, timeout)
  local,         // a local file or pipe failed mid-payload; the connection is unusable
};

// A stable, lowercase name for messages ("connect", "server_proof", ...).
std::string_view failure_name(Failure failure) noexcept;

struct Response {
  std::uint64_t id = 0;
  bool has_id = true;  // false when the server answered "id": null
  bool ok = false;
  std::string result_json = "{}";  // the "result" object as JSON text (ok only)
  Error error;  // code, message and §9 details (JSON text, "" if none); not ok only
  std::uint64_t payload_size = 0;  // bytes that follow this response
  std::string header_json;         // the whole response header, as received
};

// Called as payload bytes move: (bytes done, bytes total).
using Progress = std::function<void(std::uint64_t, std::uint64_t)>;

// Checks that `json` is one JSON object that a strict OPS/1 peer accepts (§7: valid UTF-8,
// no duplicate member names, nesting at most `max_depth`, nothing after it).
Status validate_object(std::string_view json, int max_depth = 31);

// SHA-256 of everything readable from `fd` (up to EOF), lowercase hex.
// `total` is only passed to `progress`.
Result<std::string> sha256_fd(int fd, std::uint64_t total = 0, const Progress& progress = {});

class Client {
 public:
  // Connects and completes the handshake. On failure `why` (if given) says which step.
  static Result<std::unique_ptr<Client>> connect(const Options& options, Failure* why = nullptr);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& server_version() const noexcept { return server_; }
  const std::string& user() const noexcept { return user_; }
  Failure last_failure() const noexcept { return failure_; }
  // The socket. Under TLS, bytes must not be written to or read from it directly.
  int native_handle() const noexcept { return fd_; }
  // True on a TLS connection; then tls_version() is e.g. "TLSv1.3", and channel_bound()
  // tells whether the login used hmac-sha256-plus.
  bool tls() const noexcept { return ssl_ != nullptr; }
  std::string tls_version() const;
  bool channel_bound() const noexcept { return channel_bound_; }
  // True once an io, protocol or local failure made the connection unusable; every later
  // call fails at once with the same failure.
  bool broken() const noexcept { return broken_; }
  // Response payload bytes not yet read (read_response() skips them first).
  std::uint64_t payload_pending() const noexcept { return in_pending_; }

  // --- low level: pipelining ---
  // Sends one request header; `args_json` must be an object ("" means none).
  // Returns the id used (ids count up from 1).
  Result<std::uint64_t> send_request(std::string_view operate, std::string_view args_json,
                                     std::uint64_t payload_size = 0);
  Status send_payload(const void* data, std::size_t size);
  // Sends exactly `size` bytes read from `fd` (a file, a pipe, stdin).
  Status send_payload_from_fd(int fd, std::uint64_t size, const Progress& progress = {});
  // Reads the next response header. An unread payload of the previous response is
  // skipped first. Responses to pipelined requests arrive in order (§3) and are checked
  // against the ids sent.
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
  // Like call(), with the request payload streamed from `in_fd` (`in_size` bytes; no fd
  // when `in_size` is 0). If the server answers early and closes while the payload is
  // still going out (e.g. payload_too_large), that answer is returned.
  Result<Response> call_fd(std::string_view operate, std::string_view args_json, int in_fd,
                           std::uint64_t in_size, const Progress& progress = {});

  // Raw bytes, for tests that must send what a well-behaved client never would.
  Status send_raw(std::string_view bytes);

 private:
  Client(int fd, Options options);
  Status start_tls();
  Status handshake();
  // One send or receive through TLS or the socket. Returns bytes moved (receive: 0 at
  // end of stream), or -1 with `wait` set to the poll events to wait for before retrying
  // (0 for a hard error, described in `error`).
  long transfer_out(const void* data, std::size_t size, short& wait, std::string& error);
  long transfer_in(void* data, std::size_t size, short& wait, std::string& error);
  // Decrypted bytes already inside OpenSSL (poll would not show them).
  bool tls_pending() const;
  Status write_all(const void* data, std::size_t size);
  Status read_exact(void* data, std::size_t size);
  Result<std::size_t> read_some(void* data, std::size_t size);
  Status wait_readable();
  // A frame header of at most `max_len` bytes (a challenge is far below the default).
  Result<std::string> read_frame_header(std::uint32_t max_len = 0);
  Result<std::string> read_challenge();
  Error failed(Failure failure, ErrorCode code, std::string message);
  Error refuse_broken() const;
  char* buffer();
  Result<Response> after_send_failure(Error send_error);

  int fd_ = -1;
  ssl_ctx_st* ssl_ctx_ = nullptr;
  ssl_st* ssl_ = nullptr;
  std::optional<proof::ChannelBinding> binding_;  // set once the TLS handshake is done
  bool channel_bound_ = false;
  Options options_;
  std::string user_;
  std::string server_;
  std::uint64_t next_id_ = 1;
  Failure failure_ = Failure::none;
  bool broken_ = false;
  Error broken_error_;
  std::deque<std::uint64_t> pending_ids_;  // sent, not yet answered
  std::uint64_t out_pending_ = 0;          // request payload bytes still to send
  std::uint64_t in_pending_ = 0;           // response payload bytes still to read
  // Bytes received while a write was blocked (an early answer); read before the socket.
  std::string rbuf_;
  std::size_t rpos_ = 0;
  std::unique_ptr<char[]> buffer_;  // kChunk bytes for payload streaming
};

}  // namespace ops::client
