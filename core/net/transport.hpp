// The byte stream under one client connection: the transport seam.
//
// Everything above it (Connection's buffers, the session, the host API, plugins) is
// written once against this interface, as Boost.Beast's flex server writes its session
// once for plain and TLS streams. Implementations: plain TCP (tcp_transport.hpp), TLS
// over TCP (tls_transport.hpp), and an in-memory pipe for tests and fuzzing
// (memory_transport.hpp). Nothing outside core/net sees a socket.
//
// Threading: every call but shutdown_both() is made on executor(), the connection's
// strand. Payload bytes of a handler (a worker thread) reach the transport in one of two
// ways, chosen by Connection: straight through native_fd() with blocking syscalls
// (plain TCP, where sendfile(2) is the fast path), or as async calls posted to the strand
// while the worker waits on a bounded buffer (every other transport). On the strand path
// one hand-off moves a whole handler buffer (write_all, read_some while read_ready), not
// one TLS record: a context switch per 16 KiB record costs more than the cipher.
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace ops::core {

struct IoResult {
  boost::system::error_code ec;
  std::size_t bytes = 0;
};

// RFC 9266 tls-exporter channel binding: 32 bytes.
using ChannelBinding = std::array<unsigned char, 32>;

class Transport {
 public:
  virtual ~Transport() = default;

  // The strand every call below (but shutdown_both) must be made on.
  virtual boost::asio::any_io_executor executor() const = 0;

  // What must happen before the first OPS/1 byte: a PROXY protocol v2 header where the
  // listener expects one, then the TLS handshake where there is TLS. Plain TCP without
  // PROXY returns at once. The session's handshake deadline bounds it (close() cancels).
  virtual boost::asio::awaitable<boost::system::error_code> handshake() = 0;

  // At least one byte unless it fails; eof when the peer closed.
  virtual boost::asio::awaitable<IoResult> read_some(boost::asio::mutable_buffer buffer) = 0;
  // At least one byte unless it fails.
  virtual boost::asio::awaitable<IoResult> write_some(boost::asio::const_buffer buffer) = 0;
  // The whole buffer unless it fails (bytes: how many went). `progress` holds the running
  // total after every piece, so a waiting worker can credit its Pace without being woken
  // for each piece. A transport with a composed write (TLS: many records) overrides it.
  virtual boost::asio::awaitable<IoResult> write_all(boost::asio::const_buffer buffer,
                                                     std::atomic<std::uint64_t>& progress) {
    const auto* p = static_cast<const unsigned char*>(buffer.data());
    IoResult r;
    std::size_t sent = 0;
    while (sent < buffer.size()) {
      r = co_await write_some(boost::asio::buffer(p + sent, buffer.size() - sent));
      if (r.ec) break;
      sent += r.bytes;
      progress.store(sent, std::memory_order_relaxed);
    }
    r.bytes = sent;
    co_return r;
  }
  // After a read_some: whether another read_some would find bytes already here (inside
  // the transport, or on its socket) rather than wait for the peer. A hint, allowed to
  // say false (the default): a TLS record may still be arriving, but a peer that sent part
  // of one owes the rest. It lets one worker read take many TLS records.
  virtual bool read_ready() { return false; }
  // Completes when read_some would return bytes (or an error) without waiting, holding
  // no buffer meanwhile. A TLS stream also completes when its engine already holds
  // decrypted bytes that the socket's readability would not show.
  virtual boost::asio::awaitable<boost::system::error_code> wait_readable() = 0;

  // Strand only: pending reads and writes complete with operation_aborted, and no byte is
  // lost, so the stream stays usable (a §12 deadline stops a payload read this way).
  // Where a transport cannot do that, the default does nothing and the read ends by the
  // stall limit instead.
  virtual void cancel() noexcept {}
  // Strand only: cancels pending operations and closes. Idempotent.
  virtual void close() noexcept = 0;
  // Any thread: every pending and later read or write fails soon after.
  virtual void shutdown_both() noexcept = 0;
  virtual bool is_open() const noexcept = 0;

  // The client's address for logs: the one a PROXY header carried, else the peer's.
  virtual std::string peer() const = 0;

  // When the bytes of the last read_some arrived at this host, where the transport can
  // tell (the kernel's receive timestamp on TCP); else nullopt and the read's completion
  // counts. §12 deadlines start from a header's arrival, which may be long before the
  // session reads it (pipelined behind a slow request).
  virtual std::optional<std::chrono::steady_clock::time_point> last_arrival() const {
    return std::nullopt;
  }

  // A socket that a worker thread may use directly with non-blocking recv/send/sendfile
  // and poll (plain TCP), or -1: then payload bytes go through the strand.
  virtual int native_fd() const noexcept { return -1; }

  // The tls-exporter value of this connection (RFC 9266) once handshake() succeeded on
  // TLS; nullopt on a plain transport.
  virtual std::optional<ChannelBinding> channel_binding() const { return std::nullopt; }
};

}  // namespace ops::core
