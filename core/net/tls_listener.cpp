#include "net/tls_listener.hpp"

#include "tls/server_context.hpp"

namespace ops::core {
namespace asio = boost::asio;
using asio::ip::tcp;

Result<TlsListener> open_tls_listener(asio::io_context& accept_io, const TlsSettings& settings) {
  auto context = make_server_tls_context(settings);
  if (!context) return std::move(context).error();

  const std::string where = settings.listen_host + ":" + std::to_string(settings.listen_port);
  boost::system::error_code ec;
  tcp::endpoint endpoint;
  auto address = asio::ip::make_address(settings.listen_host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, settings.listen_port);
  } else {
    tcp::resolver resolver(accept_io);
    auto results = resolver.resolve(settings.listen_host, std::to_string(settings.listen_port),
                                    tcp::resolver::passive, ec);
    if (ec || results.empty()) {
      return Error{ErrorCode::internal, "cannot resolve the TLS listen address " +
                                            settings.listen_host + ": " + ec.message()};
    }
    endpoint = results.begin()->endpoint();
  }
  auto acceptor = std::make_unique<tcp::acceptor>(accept_io);
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return Error{ErrorCode::internal, "cannot listen for TLS on " + where + ": " + ec.message()};
  const unsigned threads = settings.handshake_threads != 0 ? settings.handshake_threads
                                                           : HandshakeThreads::default_count();
  return TlsListener{settings, std::move(*context), std::move(acceptor),
                     std::make_shared<HandshakeThreads>(threads)};
}

std::unique_ptr<Transport> make_tls_transport(tcp::socket socket, const TlsListener& listener) {
  return make_tls_transport(std::move(socket), listener, listener.context);
}

std::unique_ptr<Transport> make_tls_transport(tcp::socket socket, const TlsListener& listener,
                                              std::shared_ptr<asio::ssl::context> context) {
  TlsTransportOptions options;
  options.proxy_protocol = listener.settings.proxy_protocol;
  options.channel_binding = listener.settings.channel_binding;
  if (listener.handshakes) options.handshake_executor = listener.handshakes->strand();
  return std::make_unique<TlsTransport>(std::move(socket), std::move(context), options);
}

std::string tls_listening_line(const TlsListener& listener) {
  boost::system::error_code ec;
  auto local = listener.acceptor->local_endpoint(ec);
  std::string address = ec ? listener.settings.listen_host : local.address().to_string();
  std::uint16_t port = ec ? listener.settings.listen_port : local.port();
  const TlsSettings& s = listener.settings;
  std::string line = "opserver listening for TLS on " + address + ":" + std::to_string(port) +
                     " (TLS " + (s.min_version == TlsMinVersion::tls1_2 ? "1.2+" : "1.3") +
                     ", channel binding " + (s.channel_binding ? "required" : "off");
  if (s.client_ca) line += ", client certificates required";
  if (s.proxy_protocol) line += ", PROXY v2 header expected";
  if (listener.handshakes) {
    const unsigned n = listener.handshakes->size();
    line += ", handshakes on " + std::to_string(n) + (n == 1 ? " thread" : " threads");
  }
  return line + ")";
}

}  // namespace ops::core
