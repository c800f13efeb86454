#include "net/connection.hpp"

#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>

namespace ops::core {
namespace asio = boost::asio;

namespace {
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kMaxArrivals = 32;
// sendfile over a transport without an fd: read the file in pieces this big.
constexpr std::size_t kFileChunk = 256 * 1024;

// Read buffers of kReadChunk bytes, kept between requests. A connection gives its buffer
// back whenever it goes idle (so 10,000 idle connections hold none) and takes one when
// bytes arrive. Without the cache every ping-pong request paid a 64 KiB malloc and free,
// and glibc trimmed and regrew its heap (brk) around them: two brk calls per request and
// 13 % of the server's CPU for TLS describe ping-pong (perf). One cache for the process,
// not one per thread: a session often goes idle on one I/O thread and wakes on another.
class ReadBufferCache {
 public:
  std::unique_ptr<unsigned char[]> take() {
    {
      std::lock_guard lock(mutex_);
      if (!free_.empty()) {
        auto buffer = std::move(free_.back());
        free_.pop_back();
        return buffer;
      }
    }
    return std::unique_ptr<unsigned char[]>(new unsigned char[kReadChunk]);  // not zeroed
  }
  void give(std::unique_ptr<unsigned char[]> buffer) {
    std::lock_guard lock(mutex_);
    if (free_.size() < kKept) free_.push_back(std::move(buffer));
  }

 private:
  static constexpr std::size_t kKept = 32;  // 2 MiB at most
  std::mutex mutex_;
  std::vector<std::unique_ptr<unsigned char[]>> free_;
};
ReadBufferCache read_buffers;

// One blocking call carried out on the strand: the worker waits for `done`, crediting
// `progress` to its Pace as it grows, and gives up (breaking the transport) when no byte
// moved within the stall limit. It always waits for the strand side to finish, so the
// handler's buffer is never touched after the call returns.
//
// The strand side publishes `progress` without notifying: the worker is woken once, by
// finish(), and otherwise looks at the progress only when its Pace's wait runs out (the
// stall limit, or the minimum rate's deadline), which is exactly when it matters. A
// notification per piece would cost two context switches per TLS record.
struct StrandCall {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  std::atomic<std::uint64_t> progress{0};
  std::uint64_t credited = 0;  // bytes the worker credited to its Pace so far
  IoResult result;

  void finish(IoResult r) {
    std::lock_guard lock(mutex);
    result = r;
    if (!r.ec) progress.store(r.bytes);
    done = true;
    cv.notify_one();
  }
  enum class Wait { done, stalled, gave_up };
  // Waits for the strand side, crediting progress to `pace`. `stalled`: no byte moved
  // within its limits; `gave_up`: `give_up` passed first. Either way the caller stops the
  // strand side and calls wait_done().
  Wait wait(Pace& pace, std::chrono::steady_clock::time_point give_up) {
    std::unique_lock lock(mutex);
    while (!done) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= give_up) return Wait::gave_up;
      const int ms = pace.wait_ms(now);
      if (ms == 0) return Wait::stalled;
      const auto until = std::min(now + std::chrono::milliseconds(ms), give_up);
      const bool woke = cv.wait_until(lock, until, [&] { return done; });
      const std::uint64_t moved = progress.load();
      if (moved > credited) {
        pace.credit(moved - credited);
        credited = moved;
      } else if (!woke && std::chrono::steady_clock::now() < give_up) {
        return Wait::stalled;  // no byte moved within the stall limit
      }
    }
    const std::uint64_t moved = progress.load();
    if (moved > credited) {
      pace.credit(moved - credited);
      credited = moved;
    }
    return Wait::done;
  }
  void wait_done() {
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return done; });
  }
};

}  // namespace

Connection::Connection(std::unique_ptr<Transport> transport)
    : transport_(std::move(transport)), fd_(transport_->native_fd()) {}

void Connection::consume(std::size_t n) noexcept {
  begin_ += n;
  consumed_ += n;
  if (begin_ == end_) begin_ = end_ = 0;
  // Arrivals wholly consumed are of no more use.
  std::size_t drop = 0;
  while (drop < arrivals_.size() && arrivals_[drop].received <= consumed_) ++drop;
  if (drop > 0 && drop == arrivals_.size()) {
    arrivals_.clear();
  } else if (drop > 0) {
    arrivals_.erase(arrivals_.begin(), arrivals_.begin() + static_cast<std::ptrdiff_t>(drop));
  }
}

void Connection::note_arrival(std::size_t bytes) {
  received_ += bytes;
  if (arrivals_.size() == kMaxArrivals) {
    arrivals_[1].received = std::max(arrivals_[0].received, arrivals_[1].received);
    arrivals_.erase(arrivals_.begin());
  }
  arrivals_.push_back({received_, transport_->last_arrival().value_or(Clock::now())});
}

Connection::Clock::time_point Connection::arrival_of(std::size_t n) const noexcept {
  const std::uint64_t position = consumed_ + n;
  for (const Arrival& a : arrivals_) {
    if (a.received >= position) return a.when;
  }
  return Clock::now();
}

asio::awaitable<Status> Connection::wait_idle() {
  if (buffered() > 0) co_return ok_status();
  if (capacity_ == kReadChunk) read_buffers.give(std::move(buf_));
  buf_.reset();
  capacity_ = 0;
  begin_ = end_ = 0;
  if (out_.empty()) std::string().swap(out_);
  if (auto ec = co_await transport_->wait_readable(); ec) {
    co_return fail(ErrorCode::unavailable, ec.message());
  }
  co_return ok_status();
}

void Connection::make_room(std::size_t n) {
  if (capacity_ - end_ >= n) return;
  if (!buf_ && n <= kReadChunk) {
    buf_ = read_buffers.take();
    capacity_ = kReadChunk;
    begin_ = end_ = 0;
    return;
  }
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
    // Read ahead up to a chunk: later frames and payload bytes come with it. What fits in
    // one chunk with the bytes already here stays in one chunk's buffer (a TLS session's
    // first read after idle brings one byte: asking for a whole chunk more than that made
    // every request grow, copy and free its buffer).
    make_room(n <= kReadChunk ? kReadChunk - buffered() : std::max(n - buffered(), kReadChunk));
    auto [ec, got] =
        co_await transport_->read_some(asio::buffer(buf_.get() + end_, capacity_ - end_));
    if (ec) {
      co_return fail(ErrorCode::unavailable,
                     ec == asio::error::eof ? "closed by peer" : ec.message());
    }
    end_ += got;
    note_arrival(got);
  }
  co_return ok_status();
}

asio::awaitable<Status> Connection::flush_some() {
  if (out_.empty()) co_return ok_status();
  auto [ec, n] = co_await transport_->write_some(asio::buffer(out_));
  if (ec) {
    out_.clear();
    co_return fail(ErrorCode::unavailable, ec.message());
  }
  out_.erase(0, n);
  if (out_.empty() && out_.capacity() > 1u << 20) std::string().swap(out_);
  co_return ok_status();
}

// --- worker side ---

bool Connection::wait_fd(short events, const Pace& pace, Clock::time_point give_up) {
  pollfd p{fd_, events, 0};
  for (;;) {
    const auto now = Clock::now();
    int ms = pace.wait_ms(now);
    if (give_up != Clock::time_point::max()) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(give_up - now).count();
      ms = static_cast<int>(std::clamp<std::int64_t>(left, 0, ms));
    }
    int rc = ::poll(&p, 1, ms);
    if (rc > 0) return (p.revents & (events | POLLHUP | POLLERR)) != 0;
    if (rc == 0) return false;  // no progress within the stall limit
    if (errno != EINTR) return false;
  }
}

std::int64_t Connection::read_blocking(void* buf, std::size_t cap, Pace& pace,
                                       Clock::time_point give_up) {
  if (cap == 0) return 0;
  pace.start();
  if (buffered() > 0) {
    std::size_t n = std::min(cap, buffered());
    std::memcpy(buf, data(), n);
    consume(n);
    pace.credit(n);
    return static_cast<std::int64_t>(n);
  }
  if (Clock::now() >= give_up) return -1;
  if (fd_ < 0) return read_via_strand(buf, cap, pace, give_up);
  for (;;) {
    ssize_t n = ::recv(fd_, buf, cap, MSG_DONTWAIT);
    if (n >= 0) {
      pace.credit(static_cast<std::uint64_t>(n));
      return n;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    if (!wait_fd(POLLIN, pace, give_up)) return -1;
  }
}

bool Connection::write_blocking(const void* buf, std::size_t len, Pace& pace) {
  pace.start();
  if (fd_ < 0) return write_via_strand(buf, len, pace);
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
  if (fd_ < 0) return sendfile_via_strand(fd, offset, len, pace);
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

// One hand-off per handler buffer, not per TLS record: after the first bytes, the strand
// keeps reading while the transport already has more (read_ready), so the worker is woken
// once with as much of `cap` as had arrived. Progress is published without waking it.
std::int64_t Connection::read_via_strand(void* buf, std::size_t cap, Pace& pace,
                                         Clock::time_point give_up) {
  auto call = std::make_shared<StrandCall>();
  asio::co_spawn(
      transport_->executor(),
      [this, call, buf, cap]() -> asio::awaitable<void> {
        auto* p = static_cast<unsigned char*>(buf);
        IoResult r = co_await transport_->read_some(asio::buffer(p, cap));
        std::size_t got = r.ec ? 0 : r.bytes;
        while (!r.ec && got < cap && transport_->read_ready()) {
          call->progress.store(got, std::memory_order_relaxed);
          r = co_await transport_->read_some(asio::buffer(p + got, cap - got));
          if (!r.ec) got += r.bytes;
        }
        // An error after some bytes (the peer closed, a deadline's cancel) is met again by
        // the next read: these bytes count first.
        if (got > 0) r = IoResult{{}, got};
        call->finish(r);
      },
      asio::detached);
  switch (call->wait(pace, give_up)) {
    case StrandCall::Wait::done:
      break;
    case StrandCall::Wait::stalled:
      transport_->shutdown_both();  // the pending read fails; wait for it to let go of buf
      call->wait_done();
      return -1;
    case StrandCall::Wait::gave_up:
      // A deadline, not a fault: take the read back without losing a byte. If it had
      // already completed, its bytes count.
      asio::post(transport_->executor(), [this] { transport_->cancel(); });
      call->wait_done();
      break;
  }
  if (call->result.ec) return call->result.ec == asio::error::eof ? 0 : -1;
  pace.credit(call->result.bytes - std::min(call->result.bytes, call->credited));
  return static_cast<std::int64_t>(call->result.bytes);
}

// The whole buffer in one hand-off (a download chunk is many TLS records): the worker
// is woken when it is all sent, or by its Pace's limits to credit the progress so far.
bool Connection::write_via_strand(const void* buf, std::size_t len, Pace& pace) {
  if (len == 0) return true;
  auto call = std::make_shared<StrandCall>();
  asio::co_spawn(
      transport_->executor(),
      [this, call, buf, len]() -> asio::awaitable<void> {
        call->finish(co_await transport_->write_all(asio::buffer(buf, len), call->progress));
      },
      asio::detached);
  if (call->wait(pace, Clock::time_point::max()) != StrandCall::Wait::done) {
    transport_->shutdown_both();
    call->wait_done();
    return false;
  }
  return !call->result.ec && call->result.bytes == len;
}

bool Connection::sendfile_via_strand(int fd, std::uint64_t offset, std::uint64_t len, Pace& pace) {
  std::unique_ptr<unsigned char[]> chunk(new unsigned char[kFileChunk]);
  while (len > 0) {
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(len, kFileChunk));
    ssize_t n = ::pread(fd, chunk.get(), want, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;  // a read error, or the file ended early: never send filler
    if (!write_via_strand(chunk.get(), static_cast<std::size_t>(n), pace)) return false;
    offset += static_cast<std::uint64_t>(n);
    len -= static_cast<std::uint64_t>(n);
  }
  return true;
}

void Connection::shutdown_both() noexcept {
  transport_->shutdown_both();
}

void Connection::close() noexcept {
  transport_->close();
}

}  // namespace ops::core
