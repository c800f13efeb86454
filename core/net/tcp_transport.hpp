// Plain TCP under the transport seam. The worker side may use the socket directly
// (native_fd): blocking payload I/O and sendfile(2) stay syscalls on the handler thread.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <mutex>

#include "net/transport.hpp"

namespace ops::core {

class TcpTransport final : public Transport {
 public:
  // With `expect_proxy_v2`, handshake() first reads a PROXY protocol v2 header (§8) and
  // peer() becomes the client address it carries.
  explicit TcpTransport(boost::asio::ip::tcp::socket socket, bool expect_proxy_v2 = false);

  boost::asio::any_io_executor executor() const override { return executor_; }
  boost::asio::awaitable<boost::system::error_code> handshake() override;
  boost::asio::awaitable<IoResult> read_some(boost::asio::mutable_buffer buffer) override;
  boost::asio::awaitable<IoResult> write_some(boost::asio::const_buffer buffer) override;
  boost::asio::awaitable<boost::system::error_code> wait_readable() override;
  void cancel() noexcept override;
  void close() noexcept override;
  void shutdown_both() noexcept override;
  bool is_open() const noexcept override { return socket_.is_open(); }
  std::string peer() const override { return peer_; }
  int native_fd() const noexcept override { return fd_; }
  std::optional<std::chrono::steady_clock::time_point> last_arrival() const override {
    return last_arrival_;
  }

 private:
  boost::asio::ip::tcp::socket socket_;
  boost::asio::any_io_executor executor_;
  int fd_;
  std::string peer_;
  bool expect_proxy_v2_;
  std::optional<std::chrono::steady_clock::time_point> last_arrival_;
  // shutdown_both() may come from any thread: never on a descriptor already closed (and
  // perhaps reused).
  std::mutex close_mutex_;
  bool closed_ = false;
};

// "address:port" of a connected socket, "?" when unknown.
std::string endpoint_text(const boost::asio::ip::tcp::socket& socket);

}  // namespace ops::core
