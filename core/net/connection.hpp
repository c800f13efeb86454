// One client connection's byte stream: a read buffer, an output buffer and the socket.
//
// Two sides use it, never at once:
//  - the session coroutine, on the connection's strand, through the awaitable methods;
//  - a worker thread running a plugin handler, through the blocking methods, while the
//    session coroutine is suspended waiting for that handler. The hand-over is a post to
//    the worker pool and a post back, which orders every access.
// shutdown_both() alone may be called from any thread, at any time.
//
// This class is the transport seam: a TLS stream would implement the same methods, and
// nothing above it (session, host API, plugins) would change.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "net/pace.hpp"
#include "opserver/error.hpp"

namespace ops::core {

class Connection {
 public:
  explicit Connection(boost::asio::ip::tcp::socket socket);

  // --- session side (strand) ---
  // Reads until at least `n` bytes are buffered. Errors: unavailable (peer closed or
  // reset, or the socket was closed by a deadline).
  boost::asio::awaitable<Status> fill(std::size_t n);
  // Writes some of the output buffer (at least one byte unless it fails); callers loop
  // so that a deadline can be re-armed on every bit of progress.
  boost::asio::awaitable<Status> flush_some();

  std::size_t buffered() const noexcept { return end_ - begin_; }
  const unsigned char* data() const noexcept { return buf_.get() + begin_; }
  void consume(std::size_t n) noexcept;
  // Waits until the socket is readable with no buffer held, then frees the buffers:
  // an idle connection costs its socket and little else.
  boost::asio::awaitable<Status> wait_idle();

  void append(std::string_view bytes) { out_.append(bytes); }
  std::size_t pending_output() const noexcept { return out_.size(); }

  // --- worker side (blocking, within the limits of `pace`, which each byte credits) ---
  // Up to `cap` bytes: buffered ones first, then the socket. Returns the count, 0 on
  // orderly close, -1 on error or when `pace` runs out before a byte arrives.
  std::int64_t read_blocking(void* buf, std::size_t cap, Pace& pace);
  bool write_blocking(const void* buf, std::size_t len, Pace& pace);
  // Sends the output buffer.
  bool flush_blocking(Pace& pace);
  // `len` bytes of `fd` from `offset` with sendfile(2). False if the file ended early.
  bool sendfile_blocking(int fd, std::uint64_t offset, std::uint64_t len, Pace& pace);

  // Any thread: wakes every blocked read or write on this connection, which then fails.
  void shutdown_both() noexcept;
  // Session side: closes the socket (cancels pending async operations).
  void close() noexcept;
  bool is_open() const noexcept { return socket_.is_open(); }
  boost::asio::ip::tcp::socket& socket() noexcept { return socket_; }
  std::string peer() const;

 private:
  bool wait_fd(short events, const Pace& pace);
  void make_room(std::size_t n);

  boost::asio::ip::tcp::socket socket_;
  int fd_;
  // Not a std::vector: resize() would zero-fill 64 KiB after every idle wait.
  std::unique_ptr<unsigned char[]> buf_;
  std::size_t capacity_ = 0;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::string out_;
  std::mutex close_mutex_;
  bool closed_ = false;
};

}  // namespace ops::core
