// One end of the socket between the server and a worker process (docs/PLUGINS.md, "The
// worker protocol"): messages are JSON objects on one line each, a message with "bytes": N
// is followed by N raw bytes, and descriptors ride as SCM_RIGHTS on a message's first byte.
// Used by both sides (the server's ProcessBackend and opserver-plugin-host), blocking, on
// one thread at a time; every wait is bounded by a deadline.
#pragma once

#include <rapidjson/document.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "opserver/fd.hpp"

namespace ops::isolation {

using Clock = std::chrono::steady_clock;

// A line longer than this ends the conversation: neither side ever needs one (results and
// schemas are far smaller), and it bounds what a broken peer can make the other allocate.
inline constexpr std::size_t kMaxLine = 1u << 20;
// A read_payload or write_payload chunk is at most this many bytes.
inline constexpr std::size_t kMaxChunk = 1u << 20;

struct WorkerMessage {
  rapidjson::Document json;  // one object
  std::uint64_t bytes = 0;   // raw bytes that follow it, not yet read (read_bytes)
};

enum class ChannelStatus { ok, closed, timeout, malformed };

class WorkerChannel {
 public:
  WorkerChannel() = default;
  explicit WorkerChannel(Fd socket) : socket_(std::move(socket)) {}

  int fd() const noexcept { return socket_.get(); }
  bool valid() const noexcept { return socket_.valid(); }
  // Gives up the socket (to retire a worker); the channel is empty afterwards.
  Fd release() { return std::move(socket_); }

  // Sends `line` (one JSON object, no newline) and "\n", then `data`, with `fds` attached.
  // False when the peer is gone (EPIPE) or the deadline passed.
  // `before` (whole lines, each ending in "\n") goes first, in the same write: messages a
  // worker holds back so that several reach the server at one wake-up.
  bool send(std::string_view line, std::span<const std::byte> data = {},
            std::span<const int> fds = {}, Clock::time_point deadline = Clock::time_point::max(),
            std::string_view before = {});

  // The next message, waiting until `deadline`. Its raw bytes (message.bytes) must be read
  // with read_bytes or skip_bytes before the next receive.
  ChannelStatus receive(WorkerMessage& message, Clock::time_point deadline);
  // The next message if one is here already, without waiting: `timeout` when the socket
  // has nothing more for now (the server's I/O thread then waits for it with Asio).
  ChannelStatus receive_now(WorkerMessage& message);
  // Sends `line` and "\n" without waiting; returns how many bytes went (all of them
  // unless the worker's socket buffer is full), or -1 when the peer is gone.
  std::ptrdiff_t send_now(std::string_view line);

  // Bytes received and not yet taken (read_bytes takes from these first, without waiting).
  std::size_t buffered() const noexcept { return end_ - begin_; }

  // Reads exactly `len` bytes that follow the last message.
  ChannelStatus read_bytes(void* out, std::size_t len, Clock::time_point deadline);

  // Descriptors received so far, oldest first (each owned by the caller once taken).
  std::size_t pending_fds() const noexcept { return fds_.size(); }
  Fd take_fd();
  void drop_fds() { fds_.clear(); }

 private:
  // Reads more from the socket into the buffer; waits until `deadline`.
  ChannelStatus fill(Clock::time_point deadline, bool now = false);
  // The next complete line's message from the buffer; `timeout` when none is whole yet.
  ChannelStatus take_line(WorkerMessage& message, std::size_t& scanned);
  bool wait(short events, Clock::time_point deadline);

  Fd socket_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0;  // unread bytes are buffer_[begin_, end_)
  std::size_t end_ = 0;
  std::deque<Fd> fds_;
};

}  // namespace ops::isolation
