// The optional admin listener (admin_listen): plain HTTP/1.1 through Boost.Beast, serving
//   GET /metrics   the Prometheus text exposition (Metrics::scrape)
//   GET /healthz   200 while the process serves at all
//   GET /readyz    200 once plugins are loaded and the listeners are bound, 503 while
//                  starting or stopping, or while an operation's health hook reports
//                  it unhealthy (the body names it)
// It runs on the accept thread's io_context: scrapes are rare and small, and never take an
// I/O thread from the sessions. Few connections at once, short timeouts, GET/HEAD only.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <string>
#include <vector>

#include "metrics/metrics.hpp"
#include "opserver/error.hpp"

namespace ops::core {

class AdminServer {
 public:
  // Binds host:port (port 0: any free one). `ready` is asked at every /readyz.
  static Result<std::unique_ptr<AdminServer>> open(boost::asio::io_context& io,
                                                   const std::string& host, std::uint16_t port,
                                                   Metrics& metrics, std::function<bool()> ready);

  // Operations that report themselves unhealthy ("name: reason" each, metrics/
  // operation_health.hpp): a ready server with any answers /readyz 503 naming them. Set
  // before start().
  void set_unhealthy(std::function<std::vector<std::string>()> unhealthy) {
    unhealthy_ = std::move(unhealthy);
  }
  // Starts accepting (on the io_context given to open).
  void start();
  // Any thread: closes the listener; open connections end with their request.
  void stop();
  boost::asio::ip::tcp::endpoint local_endpoint() const;

  AdminServer(boost::asio::io_context& io, Metrics& metrics, std::function<bool()> ready);

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket);

  boost::asio::io_context& io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  Metrics& metrics_;
  std::function<bool()> ready_;
  std::function<std::vector<std::string>()> unhealthy_;
  unsigned open_ = 0;  // connections being served (on the io_context's one thread)
};

}  // namespace ops::core
