// The threads that do the CPU work of TLS handshakes, apart from the I/O threads.
//
// A full TLS handshake costs the server about a millisecond of CPU (the key exchange and
// the certificate signature), a thousand times what a `describe` costs. Run on the I/O
// threads, a flood of handshakes (anyone can open TCP connections) fills their queue, and
// every authenticated connection's next request waits behind it. So a TLS transport runs
// its handshake as a coroutine on a strand of this io_context instead: the I/O threads
// only move the bytes (the socket stays registered with their reactor), while OpenSSL's
// work for the handshake runs here. A flood can then take at most these threads' CPUs
// and makes new TLS clients wait their turn in the handshake queue, which the
// max_unauthenticated cap bounds; authenticated sessions keep the I/O threads. Like nginx
// keeping expensive work off its event loops, or HAProxy's per-thread handshake budget.
//
// The threads run at a lower scheduling priority (nice +5 by default): when the machine
// is saturated, the kernel prefers the I/O threads.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <thread>
#include <vector>

namespace ops::core {

class HandshakeThreads {
 public:
  // Starts `threads` threads (at least 1), each lowered by `nice` (0: not at all).
  explicit HandshakeThreads(unsigned threads, int nice = 5);
  // Stops the threads; handshakes still queued are dropped (the server has stopped).
  ~HandshakeThreads();
  HandshakeThreads(const HandshakeThreads&) = delete;
  HandshakeThreads& operator=(const HandshakeThreads&) = delete;

  // A new strand for one connection's handshake.
  boost::asio::any_io_executor strand();
  unsigned size() const noexcept { return static_cast<unsigned>(threads_.size()); }

  // The default count: a quarter of the CPUs the process may use, at least 1, so that
  // a flood leaves most cores to the I/O threads.
  static unsigned default_count();

 private:
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::vector<std::thread> threads_;
};

}  // namespace ops::core
