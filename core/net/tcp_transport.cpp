#include "net/tcp_transport.hpp"

#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace ops::core {
namespace asio = boost::asio;

namespace {
constexpr auto kAwaitTuple = asio::as_tuple(asio::use_awaitable);
}  // namespace

std::string endpoint_text(const asio::ip::tcp::socket& socket) {
  boost::system::error_code ec;
  auto endpoint = socket.remote_endpoint(ec);
  if (ec) return "?";
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

TcpTransport::TcpTransport(asio::ip::tcp::socket socket)
    : socket_(std::move(socket)),
      executor_(socket_.get_executor()),
      fd_(socket_.native_handle()),
      peer_(endpoint_text(socket_)) {
  boost::system::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  // The worker side uses the fd directly with poll(); it must never block in a syscall.
  socket_.native_non_blocking(true, ec);
}

asio::awaitable<boost::system::error_code> TcpTransport::handshake() {
  co_return boost::system::error_code{};
}

asio::awaitable<IoResult> TcpTransport::read_some(asio::mutable_buffer buffer) {
  auto [ec, n] = co_await socket_.async_read_some(buffer, kAwaitTuple);
  co_return IoResult{ec, n};
}

asio::awaitable<IoResult> TcpTransport::write_some(asio::const_buffer buffer) {
  auto [ec, n] = co_await socket_.async_write_some(buffer, kAwaitTuple);
  co_return IoResult{ec, n};
}

asio::awaitable<boost::system::error_code> TcpTransport::wait_readable() {
  auto [ec] = co_await socket_.async_wait(asio::socket_base::wait_read, kAwaitTuple);
  co_return ec;
}

void TcpTransport::shutdown_both() noexcept {
  std::lock_guard lock(close_mutex_);
  if (!closed_) ::shutdown(fd_, SHUT_RDWR);
}

void TcpTransport::close() noexcept {
  std::lock_guard lock(close_mutex_);
  closed_ = true;
  boost::system::error_code ec;
  socket_.close(ec);
}

}  // namespace ops::core
