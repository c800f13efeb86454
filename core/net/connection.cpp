#include "net/connection.hpp"

#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>

namespace ops::core {
namespace asio = boost::asio;

namespace {
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr auto kAwaitTuple = asio::as_tuple(asio::use_awaitable);
}  // namespace

Connection::Connection(asio::ip::tcp::socket socket)
    : socket_(std::move(socket)), fd_(socket_.native_handle()) {
  boost::system::error_code ec;
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  // The worker side uses the fd directly with poll(); it must never block in a syscall.
  socket_.native_non_blocking(true, ec);
}

std::string Connection::peer() const {
  boost::system::error_code ec;
  auto endpoint = socket_.remote_endpoint(ec);
  if (ec) return "?";
  return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
}

void Connection::consume(std::size_t n) noexcept {
  begin_ += n;
  if (begin_ == end_) begin_ = end_ = 0;
}

asio::awaitable<Status> Connection::wait_idle() {
  if (buffered() > 0) co_return ok_status();
  buf_.reset();
  capacity_ = 0;
  begin_ = end_ = 0;
  if (out_.empty()) std::string().swap(out_);
  auto [ec] = co_await socket_.async_wait(asio::socket_base::wait_read, kAwaitTuple);
  if (ec) co_return fail(ErrorCode::unavailable, ec.message());
  co_return ok_status();
}

void Connection::make_room(std::size_t n) {
  if (capacity_ - end_ >= n) return;
  if (begin_ > 0) {  // compact first
    std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (capacity_ - end_ < n) {
    std::size_t capacity = end_ + n;
    std::unique_ptr<unsigned char[]> bigger(new unsigned char[capacity]);  // not zeroed
    if (end_ > 0) std::memcpy(bigger.get(), buf_.get(), end_);
    buf_ = std::move(bigger);
    capacity_ = capacity;
  }
}

asio::awaitable<Status> Connection::fill(std::size_t n) {
  while (buffered() < n) {
    // Read ahead up to a chunk: later frames and payload bytes come with it.
    make_room(std::max(n - buffered(), kReadChunk));
    auto [ec, got] = co_await socket_.async_read_some(
        asio::buffer(buf_.get() + end_, capacity_ - end_), kAwaitTuple);
    if (ec) {
      co_return fail(ErrorCode::unavailable,
                     ec == asio::error::eof ? "closed by peer" : ec.message());
    }
    end_ += got;
  }
  co_return ok_status();
}

asio::awaitable<Status> Connection::flush_some() {
  if (out_.empty()) co_return ok_status();
  auto [ec, n] = co_await socket_.async_write_some(asio::buffer(out_), kAwaitTuple);
  if (ec) {
    out_.clear();
    co_return fail(ErrorCode::unavailable, ec.message());
  }
  out_.erase(0, n);
  if (out_.empty() && out_.capacity() > 1u << 20) std::string().swap(out_);
  co_return ok_status();
}

bool Connection::wait_fd(short events, const Pace& pace) {
  pollfd p{fd_, events, 0};
  for (;;) {
    int rc = ::poll(&p, 1, pace.wait_ms());
    if (rc > 0) return (p.revents & (events | POLLHUP | POLLERR)) != 0;
    if (rc == 0) return false;  // no progress within the stall limit
    if (errno != EINTR) return false;
  }
}

std::int64_t Connection::read_blocking(void* buf, std::size_t cap, Pace& pace) {
  if (cap == 0) return 0;
  pace.start();
  if (buffered() > 0) {
    std::size_t n = std::min(cap, buffered());
    std::memcpy(buf, data(), n);
    consume(n);
    pace.credit(n);
    return static_cast<std::int64_t>(n);
  }
  for (;;) {
    ssize_t n = ::recv(fd_, buf, cap, MSG_DONTWAIT);
    if (n >= 0) {
      pace.credit(static_cast<std::uint64_t>(n));
      return n;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    if (!wait_fd(POLLIN, pace)) return -1;
  }
}

bool Connection::write_blocking(const void* buf, std::size_t len, Pace& pace) {
  pace.start();
  const auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::send(fd_, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      pace.credit(static_cast<std::uint64_t>(n));
      p += n;
      len -= static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_fd(POLLOUT, pace)) return false;
      continue;
    }
    return false;
  }
  return true;
}

bool Connection::flush_blocking(Pace& pace) {
  bool ok = write_blocking(out_.data(), out_.size(), pace);
  out_.clear();
  return ok;
}

bool Connection::sendfile_blocking(int fd, std::uint64_t offset, std::uint64_t len, Pace& pace) {
  pace.start();
  auto off = static_cast<off_t>(offset);
  while (len > 0) {
    std::size_t chunk = static_cast<std::size_t>(std::min<std::uint64_t>(len, 1u << 30));
    ssize_t n = ::sendfile(fd_, fd, &off, chunk);
    if (n > 0) {
      len -= static_cast<std::uint64_t>(n);
      pace.credit(static_cast<std::uint64_t>(n));
      continue;
    }
    if (n == 0) return false;  // the file is shorter than promised: never send filler
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!wait_fd(POLLOUT, pace)) return false;
      continue;
    }
    return false;
  }
  return true;
}

void Connection::shutdown_both() noexcept {
  // Under the lock, so a closed (and perhaps reused) descriptor number is never touched.
  std::lock_guard lock(close_mutex_);
  if (!closed_) ::shutdown(fd_, SHUT_RDWR);
}

void Connection::close() noexcept {
  std::lock_guard lock(close_mutex_);
  closed_ = true;
  boost::system::error_code ec;
  socket_.close(ec);
}

}  // namespace ops::core
