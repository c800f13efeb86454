// One client connection's byte stream: a read buffer, an output buffer and the socket.
//
// Two sides use it, never at once:
//  - the session coroutine, on the connection's strand, through the awaitable methods;
//  - a worker thread running a plugin handler, through the blocking methods, while the
//    session coroutine is suspended waiting for that handler. The hand-over is a post to
//    the worker pool and a post back, which orders every access.
// shutdown_both() alone may be called from any thread, at any time.
//
// The bytes themselves come from a Transport (transport.hpp): plain TCP, TLS or an
// in-memory pipe. When the transport offers a native fd (plain TCP) the blocking side uses
// it directly (recv/send/sendfile with poll); otherwise each blocking call is posted to
// the connection's strand as an async transport call and the worker waits for it, reading
// straight into (or writing from) the handler's own buffer, so no extra copy is made and at
// most one handler buffer is in flight.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "net/pace.hpp"
#include "net/transport.hpp"
#include "opserver/error.hpp"

namespace ops::core {

class Connection {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Connection(std::unique_ptr<Transport> transport);

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
  // When the bytes up to buffered offset `n` (from data()) had all arrived: the time of the
  // read that completed them (§12 counts a deadline from the whole header's arrival).
  Clock::time_point arrival_of(std::size_t n) const noexcept;
  // Waits until the socket is readable with no buffer held, then frees the buffers:
  // an idle connection costs its socket and little else.
  boost::asio::awaitable<Status> wait_idle();

  void append(std::string_view bytes) { out_.append(bytes); }
  std::size_t pending_output() const noexcept { return out_.size(); }

  // --- worker side (blocking, within the limits of `pace`, which each byte credits) ---
  // Up to `cap` bytes: buffered ones first, then the socket. Returns the count, 0 on
  // orderly close, -1 on error or when `pace` runs out before a byte arrives.
  // Also -1 when `give_up` passes before a byte arrives (a §12 deadline); no byte is then
  // lost, so the stream stays usable.
  std::int64_t read_blocking(void* buf, std::size_t cap, Pace& pace,
                             Clock::time_point give_up = Clock::time_point::max());
  bool write_blocking(const void* buf, std::size_t len, Pace& pace);
  // Sends the output buffer.
  bool flush_blocking(Pace& pace);
  // `len` bytes of `fd` from `offset` with sendfile(2). False if the file ended early.
  bool sendfile_blocking(int fd, std::uint64_t offset, std::uint64_t len, Pace& pace);

  // Any thread: wakes every blocked read or write on this connection, which then fails.
  void shutdown_both() noexcept;
  // Session side: closes the socket (cancels pending async operations).
  void close() noexcept;
  bool is_open() const noexcept { return transport_->is_open(); }
  boost::asio::any_io_executor executor() const { return transport_->executor(); }
  Transport& transport() noexcept { return *transport_; }
  std::string peer() const { return transport_->peer(); }

 private:
  bool wait_fd(short events, const Pace& pace,
               Clock::time_point give_up = Clock::time_point::max());
  void make_room(std::size_t n);
  void note_arrival(std::size_t bytes);
  // The blocking side over the strand, for transports without a native fd.
  std::int64_t read_via_strand(void* buf, std::size_t cap, Pace& pace, Clock::time_point give_up);
  bool write_via_strand(const void* buf, std::size_t len, Pace& pace);
  bool sendfile_via_strand(int fd, std::uint64_t offset, std::uint64_t len, Pace& pace);

  std::unique_ptr<Transport> transport_;
  int fd_;  // transport_->native_fd(), or -1
  // Not a std::vector: resize() would zero-fill 64 KiB after every idle wait.
  std::unique_ptr<unsigned char[]> buf_;
  std::size_t capacity_ = 0;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::string out_;
  // Arrival times of recent reads: (bytes received in all, when). Bounded; when full, the
  // oldest two merge (a frame then counts as arrived a little later, never earlier).
  struct Arrival {
    std::uint64_t received;
    Clock::time_point when;
  };
  std::vector<Arrival> arrivals_;
  std::uint64_t received_ = 0;  // bytes ever read into buf_
  std::uint64_t consumed_ = 0;  // bytes ever consumed from buf_
};

}  // namespace ops::core
