// One client connection from accept to close, as a coroutine on its own strand:
// the transport's own handshake (PROXY header, TLS), the OPS/1 handshake (§2), then
// requests answered strictly in order (§3). Each request takes the current configuration
// snapshot and keeps it until it ends; dispatch (dispatcher.hpp) decides what to do with
// it and a plugin call (plugin_call.hpp) runs it on the handler threads while this
// coroutine waits, so the connection's bytes are only ever touched by one side at a time.
// A watchdog coroutine enforces the §7 deadlines.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "dispatch/snapshot.hpp"
#include "net/connection.hpp"
#include "net/server_context.hpp"
#include "proto/header.hpp"

namespace ops::core {

struct CallOutcome;
struct RequestRecord;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(ServerContext& context, std::unique_ptr<Transport> transport);
  ~Session();

  // Spawns the session and its watchdog on the socket's strand.
  void start();
  // Any thread: finish the request in flight, then close (graceful stop).
  void request_stop();
  // Any thread: break every blocked read and write now (end of the grace period).
  void force_close() noexcept { connection_.shutdown_both(); }

 private:
  using Clock = std::chrono::steady_clock;

  boost::asio::awaitable<void> run();
  boost::asio::awaitable<void> watchdog();
  boost::asio::awaitable<bool> handshake();
  boost::asio::awaitable<Result<Header>> read_frame(std::uint32_t max_len);
  // Returns false when the connection must close.
  boost::asio::awaitable<bool> serve(Header& header, Clock::time_point arrived,
                                     const Snapshot& snapshot);
  boost::asio::awaitable<bool> discard(std::uint64_t n, const RuntimeSettings& settings);
  boost::asio::awaitable<bool> flush(const RuntimeSettings& settings);
  bool complete_frame_buffered() const;
  void answer_error(std::optional<std::uint64_t> id, const Error& error);
  void set_deadline(Clock::time_point deadline);
  // Logs a finished request and counts it in the metrics and the audit log.
  void log_request(const RequestRecord& record, Clock::time_point started) const;
  // Issue 15: the defender's verdict once the peer's address is known; a failed login.
  bool banned_peer() const;
  void login_failed(const Header* auth_frame);

  ServerContext& ctx_;
  Connection connection_;
  boost::asio::steady_timer timer_;
  Clock::time_point header_arrived_;  // when the last frame read had wholly arrived
  Clock::time_point deadline_ = Clock::time_point::max();
  std::string peer_;
  std::string user_;
  bool authenticated_ = false;
  bool idle_ = false;
  bool stop_requested_ = false;
  bool timed_out_ = false;
  std::uint64_t id_ = 0;  // this connection's number, for the audit log
};

}  // namespace ops::core
