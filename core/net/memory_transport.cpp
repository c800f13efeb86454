#include "net/memory_transport.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstring>
#include <utility>

#include "net/await_tuple.hpp"

namespace ops::core {
namespace asio = boost::asio;

struct MemoryPipeState {
  mutable std::mutex mutex;
  mutable std::condition_variable peer_cv;  // the peer waits here
  std::string to_server;
  std::string to_peer;
  std::size_t max_unread = 1u << 20;
  bool peer_closed_write = false;
  bool server_broken = false;  // shutdown_both or close: every server read/write fails
  bool server_closed = false;  // close(): is_open() is false
  asio::any_io_executor strand;
  std::weak_ptr<asio::steady_timer> server_wake;

  // Caller holds `mutex`.
  void wake_server() {
    asio::post(strand, [weak = server_wake] {
      if (auto timer = weak.lock()) timer->cancel();
    });
  }
};

MemoryTransport::MemoryTransport(asio::any_io_executor strand,
                                 std::shared_ptr<MemoryPipeState> state)
    : strand_(std::move(strand)),
      state_(std::move(state)),
      wake_(std::make_shared<asio::steady_timer>(strand_)) {
  std::lock_guard lock(state_->mutex);
  state_->strand = strand_;
  state_->server_wake = wake_;
}

MemoryTransport::~MemoryTransport() {
  // Maybe not on the strand: flags only; the timer goes with this object.
  std::lock_guard lock(state_->mutex);
  state_->server_broken = true;
  state_->server_closed = true;
  state_->peer_cv.notify_all();
}

asio::awaitable<boost::system::error_code> MemoryTransport::handshake() {
  co_return boost::system::error_code{};
}

asio::awaitable<bool> MemoryTransport::wait_for_peer() {
  // The peer's wake-up is posted to this strand, so it cannot slip in between the check
  // the caller made and this wait.
  cancelled_ = false;
  wake_->expires_at(asio::steady_timer::time_point::max());
  co_await wake_->async_wait(kAwaitTuple);
  co_return !std::exchange(cancelled_, false);
}

void MemoryTransport::cancel() noexcept {
  cancelled_ = true;
  wake_->cancel();
}

asio::awaitable<IoResult> MemoryTransport::read_some(asio::mutable_buffer buffer) {
  for (;;) {
    {
      std::lock_guard lock(state_->mutex);
      if (state_->server_broken) co_return IoResult{asio::error::operation_aborted, 0};
      if (!state_->to_server.empty()) {
        std::size_t n = std::min(buffer.size(), state_->to_server.size());
        std::memcpy(buffer.data(), state_->to_server.data(), n);
        state_->to_server.erase(0, n);
        co_return IoResult{{}, n};
      }
      if (state_->peer_closed_write) co_return IoResult{asio::error::eof, 0};
    }
    if (!co_await wait_for_peer()) co_return IoResult{asio::error::operation_aborted, 0};
  }
}

asio::awaitable<IoResult> MemoryTransport::write_some(asio::const_buffer buffer) {
  for (;;) {
    {
      std::lock_guard lock(state_->mutex);
      if (state_->server_broken) co_return IoResult{asio::error::operation_aborted, 0};
      std::size_t room = state_->max_unread > state_->to_peer.size()
                             ? state_->max_unread - state_->to_peer.size()
                             : 0;
      if (room > 0) {
        std::size_t n = std::min(room, buffer.size());
        state_->to_peer.append(static_cast<const char*>(buffer.data()), n);
        state_->peer_cv.notify_all();
        co_return IoResult{{}, n};
      }
    }
    if (!co_await wait_for_peer()) co_return IoResult{asio::error::operation_aborted, 0};
  }
}

asio::awaitable<boost::system::error_code> MemoryTransport::wait_readable() {
  for (;;) {
    {
      std::lock_guard lock(state_->mutex);
      if (state_->server_broken) co_return asio::error::operation_aborted;
      if (!state_->to_server.empty() || state_->peer_closed_write)
        co_return boost::system::error_code{};
    }
    co_await wait_for_peer();
  }
}

void MemoryTransport::shutdown_both() noexcept {
  std::lock_guard lock(state_->mutex);
  state_->server_broken = true;
  state_->peer_cv.notify_all();
  state_->wake_server();
}

void MemoryTransport::close() noexcept {
  std::lock_guard lock(state_->mutex);
  state_->server_broken = true;
  state_->server_closed = true;
  state_->peer_cv.notify_all();
  // On the strand (close() is strand-only): cancel directly, no post needed.
  wake_->cancel();
}

bool MemoryTransport::is_open() const noexcept {
  std::lock_guard lock(state_->mutex);
  return !state_->server_closed;
}

void MemoryPeer::write(std::string_view bytes) {
  std::lock_guard lock(state_->mutex);
  if (state_->peer_closed_write) return;
  state_->to_server.append(bytes);
  state_->wake_server();
}

void MemoryPeer::close_write() {
  std::lock_guard lock(state_->mutex);
  state_->peer_closed_write = true;
  state_->wake_server();
}

std::string MemoryPeer::read_some(std::size_t max, std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mutex);
  state_->peer_cv.wait_for(lock, timeout,
                           [&] { return !state_->to_peer.empty() || state_->server_broken; });
  std::size_t n = std::min(max, state_->to_peer.size());
  std::string out = state_->to_peer.substr(0, n);
  state_->to_peer.erase(0, n);
  if (n > 0) state_->wake_server();  // room for a writer waiting on backpressure
  return out;
}

std::string MemoryPeer::read_exact(std::size_t n, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  std::string out;
  while (out.size() < n) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    std::string got = read_some(n - out.size(), left);
    if (got.empty() && server_closed()) break;
    out += got;
  }
  return out;
}

bool MemoryPeer::server_closed() const {
  std::lock_guard lock(state_->mutex);
  return state_->server_broken && state_->to_peer.empty();
}

bool MemoryPeer::wait_server_closed(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(state_->mutex);
  return state_->peer_cv.wait_for(lock, timeout, [&] { return state_->server_broken; });
}

std::pair<std::unique_ptr<MemoryTransport>, MemoryPeer> make_memory_pipe(
    asio::any_io_executor strand, std::size_t max_unread) {
  auto state = std::make_shared<MemoryPipeState>();
  state->max_unread = max_unread;
  auto transport = std::make_unique<MemoryTransport>(std::move(strand), state);
  return {std::move(transport), MemoryPeer(std::move(state))};
}

}  // namespace ops::core
