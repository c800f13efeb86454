// TLS over TCP (§8) behind the Transport seam: boost::asio::ssl::stream on the
// connection's strand.
//
// handshake(): the PROXY v2 header first where the listener expects one (read from the
// raw socket, exactly its bytes), then the server side of the TLS handshake; then, under
// TLS 1.2, the connection is refused without the extended master secret (RFC 7627), and
// the RFC 9266 tls-exporter channel binding is computed. The session's handshake
// deadline bounds all of it (close() cancels).
//
// With a handshake executor (TlsTransportOptions), all of that runs as a coroutine of its
// own on that executor (a strand of the handshake threads, net/handshake_threads.hpp),
// so OpenSSL's handshake CPU never runs on the I/O threads; the socket stays with the
// connection's strand and its reactor. Meanwhile the socket object belongs to the
// handshake: a close() from the strand (the watchdog's deadline, a stop) only shuts the
// socket down, which ends the handshake's pending read or write at once, and the close
// itself happens when handshake() returns.
//
// Payload bytes cannot bypass TLS: native_fd() is -1, so Connection moves them through
// the strand. shutdown_both() may be called from any thread.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <memory>
#include <mutex>

#include "net/transport.hpp"

namespace ops::core {

struct TlsTransportOptions {
  bool proxy_protocol = false;  // a PROXY v2 header precedes the TLS handshake
  // false where the operator turned channel binding off: channel_binding() is then
  // nullopt, so the session offers plain hmac-sha256 as on a plain listener (§8).
  bool channel_binding = true;
  // Where the handshake's CPU work runs: empty means on the connection's strand.
  boost::asio::any_io_executor handshake_executor;
};

class TlsTransport final : public Transport {
 public:
  // `socket` is on the connection's strand; `context` is the listener's (shared).
  TlsTransport(boost::asio::ip::tcp::socket socket,
               std::shared_ptr<boost::asio::ssl::context> context, TlsTransportOptions options);
  ~TlsTransport() override;

  boost::asio::any_io_executor executor() const override;
  boost::asio::awaitable<boost::system::error_code> handshake() override;
  boost::asio::awaitable<IoResult> read_some(boost::asio::mutable_buffer buffer) override;
  boost::asio::awaitable<IoResult> write_some(boost::asio::const_buffer buffer) override;
  boost::asio::awaitable<IoResult> write_all(boost::asio::const_buffer buffer,
                                             std::atomic<std::uint64_t>& progress) override;
  bool read_ready() override;
  boost::asio::awaitable<boost::system::error_code> wait_readable() override;
  void close() noexcept override;
  void shutdown_both() noexcept override;
  bool is_open() const noexcept override;
  std::string peer() const override { return peer_; }
  int native_fd() const noexcept override { return -1; }
  std::optional<ChannelBinding> channel_binding() const override { return binding_; }

  // Why handshake() failed, for the log (empty when it did not).
  const std::string& failure() const noexcept { return failure_; }

 private:
  // The handshake itself, on whichever executor the caller runs it.
  boost::asio::awaitable<boost::system::error_code> run_handshake();

  std::shared_ptr<boost::asio::ssl::context> context_;  // outlives stream_
  boost::asio::ssl::stream<boost::asio::ip::tcp::socket> stream_;
  TlsTransportOptions options_;
  int fd_;
  std::string peer_;
  std::string failure_;
  boost::asio::any_io_executor executor_;
  std::optional<ChannelBinding> binding_;
  // wait_readable() must read to know (see tls_transport.cpp): the byte it read, or the
  // error it met, is handed to the next read_some().
  unsigned char peeked_ = 0;
  bool has_peeked_ = false;
  boost::system::error_code peeked_error_;
  std::mutex close_mutex_;
  bool closed_ = false;
  bool in_handshake_ = false;     // the handshake executor owns the socket object now
  bool close_requested_ = false;  // close() came during it: close once it returns
};

}  // namespace ops::core
