#include "net/tcp_transport.hpp"

#include "net/await_tuple.hpp"
#include "net/proxy_v2.hpp"

#include <sys/socket.h>
#include <time.h>

#include <cstring>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace ops::core {
namespace asio = boost::asio;

namespace {
// A CLOCK_REALTIME stamp as a steady_clock time (never later than now).
std::chrono::steady_clock::time_point steady_from_realtime(const timespec& ts) {
  timespec now_real;
  ::clock_gettime(CLOCK_REALTIME, &now_real);
  const auto steady_now = std::chrono::steady_clock::now();
  const auto age = std::chrono::seconds(now_real.tv_sec - ts.tv_sec) +
                   std::chrono::nanoseconds(now_real.tv_nsec - ts.tv_nsec);
  if (age.count() < 0) return steady_now;
  return steady_now - std::chrono::duration_cast<std::chrono::steady_clock::duration>(age);
}

}  // namespace

std::string endpoint_text(const asio::ip::tcp::socket& socket) {
  boost::system::error_code ec;
  auto endpoint = socket.remote_endpoint(ec);
  if (ec) return "?";
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

TcpTransport::TcpTransport(asio::ip::tcp::socket socket, bool expect_proxy_v2)
    : socket_(std::move(socket)),
      executor_(socket_.get_executor()),
      fd_(socket_.native_handle()),
      peer_(endpoint_text(socket_)),
      expect_proxy_v2_(expect_proxy_v2) {
  boost::system::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  // The worker side uses the fd directly with poll(); it must never block in a syscall.
  socket_.native_non_blocking(true, ec);
  // SO_TIMESTAMPNS comes from the listener (server.cpp): every recvmsg then carries the
  // kernel's receive time of its bytes (tcp_recv_timestamp).
}

asio::awaitable<boost::system::error_code> TcpTransport::handshake() {
  if (!expect_proxy_v2_) co_return boost::system::error_code{};
  // §8: a listener that expects PROXY v2 closes a connection that does not start with one.
  auto source = co_await proxy_v2::read_proxy_v2(socket_);
  if (!source) co_return make_error_code(boost::system::errc::protocol_error);
  if (*source) peer_ = **source;
  co_return boost::system::error_code{};
}

asio::awaitable<IoResult> TcpTransport::read_some(asio::mutable_buffer buffer) {
  // recvmsg rather than Asio's read: only it carries the arrival timestamp.
  for (;;) {
    iovec iov{buffer.data(), buffer.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT);
    if (n > 0) {
      last_arrival_.reset();
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
          timespec ts;
          std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
          last_arrival_ = steady_from_realtime(ts);
        }
      }
      co_return IoResult{{}, static_cast<std::size_t>(n)};
    }
    if (n == 0) co_return IoResult{asio::error::eof, 0};
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      co_return IoResult{boost::system::error_code(errno, boost::system::system_category()), 0};
    }
    auto [ec] = co_await socket_.async_wait(asio::socket_base::wait_read, kAwaitTuple);
    if (ec) co_return IoResult{ec, 0};
  }
}

asio::awaitable<IoResult> TcpTransport::write_some(asio::const_buffer buffer) {
  auto [ec, n] = co_await socket_.async_write_some(buffer, kAwaitTuple);
  co_return IoResult{ec, n};
}

asio::awaitable<boost::system::error_code> TcpTransport::wait_readable() {
  auto [ec] = co_await socket_.async_wait(asio::socket_base::wait_read, kAwaitTuple);
  co_return ec;
}

void TcpTransport::cancel() noexcept {
  boost::system::error_code ec;
  socket_.cancel(ec);
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
