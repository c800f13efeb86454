// The TLS listener's own parts (§8), for the server's accept thread to use beside the
// plain listener: the bound acceptor, the shared TLS context, and the transport made for
// each accepted socket. The accept loop itself (caps, counting, the session) is the same
// for both listeners.
//
// Hook (core/net/server.cpp):
//   at create():  if (cfg.tls) { auto l = open_tls_listener(impl->accept_io, *cfg.tls);
//                                if (!l) return l.error(); impl->tls = std::move(*l); }
//   at run():     spdlog::info("{}", tls_listening_line(*impl->tls));   // once bound
//                 and a second accept loop on impl->tls->acceptor
//   per accept:   (on the socket's strand, after the caps and counters as for plain)
//                 std::unique_ptr<Transport> t = make_tls_transport(std::move(socket), *impl->tls);
//                 std::make_shared<Session>(*context, std::move(t))->start();
//   at stop:      impl->tls->acceptor.close() with the plain acceptor.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "config/tls_config.hpp"
#include "net/handshake_threads.hpp"
#include "net/tls_transport.hpp"
#include "opserver/error.hpp"

namespace ops::core {

struct TlsListener {
  TlsSettings settings;
  std::shared_ptr<boost::asio::ssl::context> context;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor;
  // Where every connection's TLS handshake runs, off the I/O threads (a handshake flood
  // must not starve authenticated sessions; net/handshake_threads.hpp). Shared: the
  // listener is moved into the server.
  std::shared_ptr<HandshakeThreads> handshakes;
};

// Builds the TLS context (every file checked, see tls/server_context.hpp), then binds and
// listens on settings.listen_host:listen_port (port 0: any free port), and starts the
// handshake threads (settings.handshake_threads; 0: HandshakeThreads::default_count()).
// Errors name the file or the address.
Result<TlsListener> open_tls_listener(boost::asio::io_context& accept_io,
                                      const TlsSettings& settings);

// The transport for one accepted socket (already on its connection's strand).
std::unique_ptr<Transport> make_tls_transport(boost::asio::ip::tcp::socket socket,
                                              const TlsListener& listener);
// The same with another context than the listener's (a reload's new certificates).
std::unique_ptr<Transport> make_tls_transport(boost::asio::ip::tcp::socket socket,
                                              const TlsListener& listener,
                                              std::shared_ptr<boost::asio::ssl::context> context);

// "opserver listening for TLS on 127.0.0.1:9443 (TLS 1.3, channel binding required, ...)"
// The tests find the port in this line.
std::string tls_listening_line(const TlsListener& listener);

}  // namespace ops::core
