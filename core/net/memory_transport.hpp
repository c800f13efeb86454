// An in-memory byte pipe under the transport seam, for tests and fuzzing: a whole session
// runs over it without a listening socket. The server's end is a Transport on a strand;
// the other end, MemoryPeer, is driven from any thread (a test, a fuzzer).
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "net/transport.hpp"

namespace ops::core {

struct MemoryPipeState;

class MemoryTransport final : public Transport {
 public:
  MemoryTransport(boost::asio::any_io_executor strand, std::shared_ptr<MemoryPipeState> state);
  ~MemoryTransport() override;

  boost::asio::any_io_executor executor() const override { return strand_; }
  boost::asio::awaitable<boost::system::error_code> handshake() override;
  boost::asio::awaitable<IoResult> read_some(boost::asio::mutable_buffer buffer) override;
  boost::asio::awaitable<IoResult> write_some(boost::asio::const_buffer buffer) override;
  boost::asio::awaitable<boost::system::error_code> wait_readable() override;
  void cancel() noexcept override;
  void close() noexcept override;
  void shutdown_both() noexcept override;
  bool is_open() const noexcept override;
  std::string peer() const override { return "memory"; }

 private:
  // Sleeps until the peer writes, reads or closes (or close() is called). False when
  // cancel() ended the wait.
  boost::asio::awaitable<bool> wait_for_peer();

  boost::asio::any_io_executor strand_;
  std::shared_ptr<MemoryPipeState> state_;
  std::shared_ptr<boost::asio::steady_timer> wake_;
  bool cancelled_ = false;  // strand only: the pending wait ends with operation_aborted
};

// The client's end. Thread-safe.
class MemoryPeer {
 public:
  explicit MemoryPeer(std::shared_ptr<MemoryPipeState> state) : state_(std::move(state)) {}

  void write(std::string_view bytes);
  // Like a TCP half-close: the server reads the rest, then end of stream.
  void close_write();
  // Up to `max` bytes the server wrote, waiting at most `timeout` for the first one.
  // Empty when none came in time or the server's end is closed and drained.
  std::string read_some(std::size_t max, std::chrono::milliseconds timeout);
  // Exactly `n` bytes, or fewer if the server closed or `timeout` passed.
  std::string read_exact(std::size_t n, std::chrono::milliseconds timeout);
  // True once the server closed its end and every byte it wrote has been read.
  bool server_closed() const;
  // Wait until the server's end is closed (or the timeout passes).
  bool wait_server_closed(std::chrono::milliseconds timeout) const;

 private:
  std::shared_ptr<MemoryPipeState> state_;
};

// A connected pair. `max_unread` bounds the bytes the server may write before the peer
// reads them (backpressure, as a socket buffer would).
std::pair<std::unique_ptr<MemoryTransport>, MemoryPeer> make_memory_pipe(
    boost::asio::any_io_executor strand, std::size_t max_unread = 1u << 20);

}  // namespace ops::core
