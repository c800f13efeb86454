#include "net/tls_transport.hpp"

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <exception>

#include "net/await_tuple.hpp"
#include "net/proxy_v2.hpp"
#include "net/tcp_transport.hpp"
#include "opserver/proof.hpp"

namespace ops::core {
namespace asio = boost::asio;

namespace {
boost::system::error_code protocol_error() {
  return boost::system::errc::make_error_code(boost::system::errc::protocol_error);
}
}  // namespace

TlsTransport::TlsTransport(asio::ip::tcp::socket socket,
                           std::shared_ptr<asio::ssl::context> context, TlsTransportOptions options)
    : context_(std::move(context)),
      stream_(std::move(socket), *context_),
      options_(options),
      fd_(stream_.next_layer().native_handle()),
      peer_(endpoint_text(stream_.next_layer())),
      executor_(stream_.get_executor()) {
  boost::system::error_code ec;
  stream_.next_layer().set_option(asio::ip::tcp::no_delay(true), ec);
}

TlsTransport::~TlsTransport() = default;

asio::any_io_executor TlsTransport::executor() const {
  return executor_;
}

asio::awaitable<boost::system::error_code> TlsTransport::handshake() {
  if (!options_.handshake_executor) co_return co_await run_handshake();
  {
    std::lock_guard lock(close_mutex_);
    if (closed_ || close_requested_) co_return asio::error::operation_aborted;
    in_handshake_ = true;
  }
  // The session's coroutine waits here, on its strand, holding no I/O thread.
  auto [thrown, ec] = co_await asio::co_spawn(options_.handshake_executor, run_handshake(),
                                              asio::as_tuple(asio::use_awaitable));
  bool close_now = false;
  {
    std::lock_guard lock(close_mutex_);
    in_handshake_ = false;
    close_now = close_requested_;
  }
  if (close_now) close();
  if (thrown) std::rethrow_exception(thrown);
  co_return ec;
}

asio::awaitable<boost::system::error_code> TlsTransport::run_handshake() {
  if (options_.proxy_protocol) {
    auto source = co_await proxy_v2::read_proxy_v2(stream_.next_layer());
    if (!source) {
      failure_ = source.error().message;
      co_return protocol_error();
    }
    if (source->has_value()) peer_ = **source;
  }
  auto [ec] = co_await stream_.async_handshake(asio::ssl::stream_base::server, kAwaitTuple);
  if (ec) {
    failure_ = "TLS handshake failed: " + ec.message();
    co_return ec;
  }
  SSL* ssl = stream_.native_handle();
  // RFC 7627 / RFC 9266: under TLS 1.2 the exporter is only safe with the extended master
  // secret. TLS 1.3 always has its equivalent.
  if (SSL_version(ssl) < TLS1_3_VERSION && SSL_get_extms_support(ssl) != 1) {
    failure_ = "TLS 1.2 without the extended master secret (RFC 7627): refused";
    co_return protocol_error();
  }
  if (options_.channel_binding) {
    ChannelBinding cb{};
    if (SSL_export_keying_material(ssl, cb.data(), cb.size(), proof::kExporterLabel.data(),
                                   proof::kExporterLabel.size(), nullptr, 0, 1) != 1) {
      failure_ = "cannot export the TLS channel binding";
      co_return protocol_error();
    }
    binding_ = cb;
  }
  co_return boost::system::error_code{};
}

asio::awaitable<IoResult> TlsTransport::read_some(asio::mutable_buffer buffer) {
  if (buffer.size() == 0) co_return IoResult{};
  if (has_peeked_) {
    has_peeked_ = false;
    *static_cast<unsigned char*>(buffer.data()) = peeked_;
    co_return IoResult{{}, 1};
  }
  if (peeked_error_) co_return IoResult{peeked_error_, 0};
  auto [ec, n] = co_await stream_.async_read_some(buffer, kAwaitTuple);
  co_return IoResult{ec, n};
}

asio::awaitable<IoResult> TlsTransport::write_some(asio::const_buffer buffer) {
  if (buffer.size() == 0) co_return IoResult{};
  auto [ec, n] = co_await stream_.async_write_some(buffer, kAwaitTuple);
  co_return IoResult{ec, n};
}

// asio::async_write over the stream: one TLS record per write_some, all on this strand,
// with no coroutine resumed between records; the completion condition (called before
// every piece) reports the running total.
asio::awaitable<IoResult> TlsTransport::write_all(asio::const_buffer buffer,
                                                  std::atomic<std::uint64_t>& progress) {
  if (buffer.size() == 0) co_return IoResult{};
  auto [ec, n] = co_await asio::async_write(
      stream_, buffer,
      [&progress](const boost::system::error_code& error, std::size_t sent) -> std::size_t {
        progress.store(sent, std::memory_order_relaxed);
        return error ? 0 : asio::detail::default_max_transfer_size;
      },
      kAwaitTuple);
  co_return IoResult{ec, n};
}

// Plaintext OpenSSL already decrypted, ciphertext it holds but has not decrypted yet
// (records Asio's engine handed over in the last read), or bytes on the socket.
bool TlsTransport::read_ready() {
  if (has_peeked_ || peeked_error_) return true;
  SSL* ssl = stream_.native_handle();
  if (SSL_pending(ssl) > 0 || SSL_has_pending(ssl) == 1) return true;
  if (BIO* in = SSL_get_rbio(ssl); in != nullptr && BIO_ctrl_pending(in) > 0) return true;
  boost::system::error_code ec;
  return stream_.next_layer().available(ec) > 0 && !ec;
}

// The socket's readability alone would be wrong both ways: decrypted bytes may already
// wait inside OpenSSL (SSL_pending) or whole records inside Asio's engine, with nothing
// more to come on the socket; and a readable socket may carry only a TLS record with no
// application data (a KeyUpdate). So, unless OpenSSL already holds plaintext, this reads
// one byte and keeps it for the next read_some(): one byte held instead of a buffer.
asio::awaitable<boost::system::error_code> TlsTransport::wait_readable() {
  if (has_peeked_ || peeked_error_) co_return boost::system::error_code{};
  if (SSL_pending(stream_.native_handle()) > 0) co_return boost::system::error_code{};
  auto [ec, n] = co_await stream_.async_read_some(asio::buffer(&peeked_, 1), kAwaitTuple);
  if (ec) {
    peeked_error_ = ec;
  } else if (n == 1) {
    has_peeked_ = true;
  }
  co_return ec;
}

void TlsTransport::close() noexcept {
  std::lock_guard lock(close_mutex_);
  if (in_handshake_) {
    // The handshake thread may be inside the socket object right now: leave it alone,
    // make its pending read or write fail, and let handshake() close on its return.
    close_requested_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    return;
  }
  closed_ = true;
  boost::system::error_code ec;
  stream_.next_layer().close(ec);
}

void TlsTransport::shutdown_both() noexcept {
  // Under the lock, so a closed (and perhaps reused) descriptor number is never touched.
  std::lock_guard lock(close_mutex_);
  if (!closed_) ::shutdown(fd_, SHUT_RDWR);
}

bool TlsTransport::is_open() const noexcept {
  return stream_.next_layer().is_open();
}

}  // namespace ops::core
