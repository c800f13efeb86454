#include "metrics/admin_server.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "net/await_tuple.hpp"

namespace ops::core {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {
// A scraper holds at most this many connections, each for at most this long per request.
constexpr unsigned kMaxConnections = 8;
constexpr std::chrono::seconds kRequestTimeout{10};
constexpr std::chrono::seconds kIdleTimeout{30};

http::response<http::string_body> respond(const http::request<http::empty_body>& req,
                                          http::status status, std::string body,
                                          std::string_view content_type) {
  const std::size_t size = body.size();
  http::response<http::string_body> res{status, req.version()};
  res.set(http::field::server, "opserver-admin");
  res.set(http::field::content_type, content_type);
  res.set(http::field::cache_control, "no-store");
  res.keep_alive(req.keep_alive());
  if (req.method() != http::verb::head) res.body() = std::move(body);
  res.prepare_payload();
  if (req.method() == http::verb::head) res.content_length(size);
  return res;
}

}  // namespace

AdminServer::AdminServer(asio::io_context& io, Metrics& metrics, std::function<bool()> ready)
    : io_(io), acceptor_(io), metrics_(metrics), ready_(std::move(ready)) {}

Result<std::unique_ptr<AdminServer>> AdminServer::open(asio::io_context& io,
                                                       const std::string& host, std::uint16_t port,
                                                       Metrics& metrics,
                                                       std::function<bool()> ready) {
  auto server = std::make_unique<AdminServer>(io, metrics, std::move(ready));
  boost::system::error_code ec;
  tcp::endpoint endpoint;
  auto address = asio::ip::make_address(host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, port);
  } else {
    tcp::resolver resolver(io);
    auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
    if (ec || results.empty()) {
      return Error{ErrorCode::internal,
                   "cannot resolve admin_listen address " + host + ": " + ec.message()};
    }
    endpoint = results.begin()->endpoint();
  }
  server->acceptor_.open(endpoint.protocol(), ec);
  if (!ec) server->acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) server->acceptor_.bind(endpoint, ec);
  if (!ec) server->acceptor_.listen(16, ec);
  if (ec) {
    return Error{ErrorCode::internal, "cannot listen on admin_listen " + host + ":" +
                                          std::to_string(port) + ": " + ec.message()};
  }
  if (!endpoint.address().is_loopback()) {
    spdlog::warn(
        "admin_listen {}:{} is not a loopback address: /metrics is readable by anyone "
        "who can reach it",
        host, port);
  }
  return server;
}

tcp::endpoint AdminServer::local_endpoint() const {
  boost::system::error_code ec;
  return acceptor_.local_endpoint(ec);
}

void AdminServer::start() {
  asio::co_spawn(io_, accept_loop(), asio::detached);
}

void AdminServer::stop() {
  asio::post(io_, [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  });
}

asio::awaitable<void> AdminServer::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(kAwaitTuple);
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
    if (ec) continue;
    if (open_ >= kMaxConnections) {
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    ++open_;
    asio::co_spawn(io_, serve(std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> AdminServer::serve(tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer(8192);
  for (bool first = true;; first = false) {
    http::request_parser<http::empty_body> parser;
    parser.header_limit(8192);
    parser.body_limit(0);
    stream.expires_after(first ? kRequestTimeout : kIdleTimeout);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, kAwaitTuple);
    if (ec) break;
    const auto& req = parser.get();
    http::response<http::string_body> res;
    const std::string_view target(req.target().data(), req.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      res = respond(req, http::status::method_not_allowed, "GET only\n", "text/plain");
      res.set(http::field::allow, "GET, HEAD");
    } else if (path == "/metrics") {
      res = respond(req, http::status::ok, metrics_.scrape(),
                    "text/plain; version=0.0.4; charset=utf-8");
    } else if (path == "/healthz") {
      res = respond(req, http::status::ok, "ok\n", "text/plain");
    } else if (path == "/readyz") {
      const bool ready = ready_();
      std::vector<std::string> sick;
      if (ready && unhealthy_) sick = unhealthy_();
      if (!ready) {
        res = respond(req, http::status::service_unavailable, "not ready\n", "text/plain");
      } else if (!sick.empty()) {
        std::string body = "unhealthy operations:\n";
        for (const std::string& line : sick) body += line + "\n";
        res = respond(req, http::status::service_unavailable, std::move(body), "text/plain");
      } else {
        res = respond(req, http::status::ok, "ready\n", "text/plain");
      }
    } else {
      res = respond(req, http::status::not_found, "not found\n", "text/plain");
    }
    stream.expires_after(kRequestTimeout);
    auto [wec, written] = co_await http::async_write(stream, res, kAwaitTuple);
    if (wec || !res.keep_alive()) break;
  }
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  --open_;
}

}  // namespace ops::core
