// TlsTransport (§8) end to end over loopback, before the server's wiring: a small OPS/1
// responder written against the Transport interface (challenge, auth with the
// connection's channel binding, then an echo of each request's payload) serves the SDK's
// Client over TLS. Covers the -plus login, big payloads both ways, channel binding off,
// certificate checks, mutual TLS, TLS 1.2 with and without the extended master secret,
// and a PROXY v2 header before the TLS handshake.
#include "net/tls_transport.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "auth/file_user_store.hpp"
#include "auth/handshake.hpp"
#include "net/tls_listener.hpp"
#include "opserver/client.hpp"
#include "opserver/frame.hpp"
#include "proto/header.hpp"
#include "proto/messages.hpp"
#include "test_pki.hpp"

namespace ops::core {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kKey = "alice's key";

// What the responder saw, for the test to check.
struct Seen {
  std::mutex mutex;
  std::vector<std::string> handshake_failures;
  std::vector<std::string> peers;
  std::vector<bool> bound;
  int logins = 0;

  std::size_t failures() {
    std::lock_guard lock(mutex);
    return handshake_failures.size();
  }
};

asio::awaitable<bool> write_all(Transport& t, std::string_view bytes) {
  while (!bytes.empty()) {
    IoResult r = co_await t.write_some(asio::buffer(bytes.data(), bytes.size()));
    if (r.ec) co_return false;
    bytes.remove_prefix(r.bytes);
  }
  co_return true;
}

asio::awaitable<bool> read_exact(Transport& t, char* data, std::size_t n) {
  while (n > 0) {
    // Exercise wait_readable() as the session does between frames.
    if (co_await t.wait_readable()) co_return false;
    IoResult r = co_await t.read_some(asio::buffer(data, n));
    if (r.ec || r.bytes == 0) co_return false;
    data += r.bytes;
    n -= r.bytes;
  }
  co_return true;
}

asio::awaitable<std::optional<Header>> read_frame(Transport& t) {
  unsigned char prefix[4];
  if (!co_await read_exact(t, reinterpret_cast<char*>(prefix), 4)) co_return std::nullopt;
  std::uint32_t len = frame::decode_length(prefix);
  if (len < 2 || len > (1u << 20)) co_return std::nullopt;
  std::string text(len, '\0');
  if (!co_await read_exact(t, text.data(), len)) co_return std::nullopt;
  auto header = parse_header(text);
  if (!header) co_return std::nullopt;
  co_return std::move(*header);
}

asio::awaitable<void> respond(std::unique_ptr<Transport> t, Authenticator& auth, Seen& seen) {
  if (boost::system::error_code ec = co_await t->handshake()) {
    auto* tls = dynamic_cast<TlsTransport*>(t.get());
    std::lock_guard lock(seen.mutex);
    seen.handshake_failures.push_back(tls ? tls->failure() : ec.message());
    t->close();
    co_return;
  }
  const std::optional<ChannelBinding> cb = t->channel_binding();
  {
    std::lock_guard lock(seen.mutex);
    seen.peers.push_back(t->peer());
    seen.bound.push_back(cb.has_value());
  }
  proof::Nonce nonce = proof::random_nonce();
  if (!co_await write_all(*t, challenge_frame(proof::to_hex(nonce), cb.has_value()))) co_return;
  auto auth_frame = co_await read_frame(*t);
  if (!auth_frame) co_return;
  auto success = auth.verify(auth_frame->doc, nonce, cb);
  if (!success) {
    co_await write_all(*t, auth_failed_frame());
    t->close();
    co_return;
  }
  {
    std::lock_guard lock(seen.mutex);
    ++seen.logins;
  }
  if (!co_await write_all(*t, success->welcome_frame)) co_return;
  // Echo: each request is answered with its own payload.
  for (;;) {
    auto request = co_await read_frame(*t);
    if (!request) break;
    std::uint64_t id = request->doc["id"].GetUint64();
    if (std::string_view(request->doc["operate"].GetString()) == "close") break;  // at once
    std::string payload(request->payload, '\0');
    if (!co_await read_exact(*t, payload.data(), payload.size())) break;
    if (!co_await write_all(*t, ok_response_frame(id, "{}", payload.size()) + payload)) break;
  }
  t->close();
}

class TlsTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ops-tls-transport-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "storage");
    pki_ = std::make_unique<test::TestPki>(dir_ / "pki");
    server_files_ = pki_->issue("server");
    users_ = std::make_unique<FileUserStore>(dir_ / "state", dir_ / "storage");
    ASSERT_TRUE(users_->open(false));
    ASSERT_TRUE(users_->add("alice", kKey));
    auth_ = std::make_unique<Authenticator>(*users_, "opserver/test");
  }

  void TearDown() override {
    if (listener_) {
      asio::post(io_, [this] { listener_->acceptor->close(); });
    }
    io_.stop();
    if (thread_.joinable()) thread_.join();
    fs::remove_all(dir_);
  }

  TlsSettings settings() {
    TlsSettings s;
    s.listen_host = "127.0.0.1";
    s.listen_port = 0;
    s.cert = server_files_.cert;
    s.key = server_files_.key;
    return s;
  }

  void start(const TlsSettings& s) {
    auto listener = open_tls_listener(io_, s);
    ASSERT_TRUE(listener) << listener.error().message;
    listener_ = std::make_unique<TlsListener>(std::move(*listener));
    port_ = listener_->acceptor->local_endpoint().port();
    EXPECT_NE(tls_listening_line(*listener_)
                  .find("opserver listening for TLS on 127.0.0.1:" + std::to_string(port_)),
              std::string::npos);
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await listener_->acceptor->async_accept(
          asio::make_strand(io_), asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      auto executor = socket.get_executor();
      auto transport = make_tls_transport(std::move(socket), *listener_);
      asio::co_spawn(executor, respond(std::move(transport), *auth_, seen_), asio::detached);
    }
  }

  client::Options options() {
    client::Options o;
    o.host = "127.0.0.1";
    o.port = port_;
    o.user = "alice";
    o.key = kKey;
    o.timeout = 10s;
    o.tls = true;
    o.ca_file = pki_->ca_file().string();
    return o;
  }

  // Waits for the responder to record a failed handshake.
  bool wait_for_failure(std::size_t count = 1) {
    for (int i = 0; i < 200 && seen_.failures() < count; ++i) std::this_thread::sleep_for(10ms);
    return seen_.failures() >= count;
  }

  // A raw TCP connection to the listener.
  int raw_connect() {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      return -1;
    }
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
  }

  fs::path dir_;
  std::unique_ptr<test::TestPki> pki_;
  test::CertFiles server_files_;
  std::unique_ptr<FileUserStore> users_;
  std::unique_ptr<Authenticator> auth_;
  // Before io_: coroutines still suspended when the test ends (a client that never
  // finished its handshake) are destroyed with io_ and may record into seen_ then.
  Seen seen_;
  asio::io_context io_;
  std::unique_ptr<TlsListener> listener_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

TEST_F(TlsTransportTest, PlusLoginAndPayloadsBothWays) {
  start(settings());
  client::Failure why{};
  auto c = client::Client::connect(options(), &why);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE((*c)->tls());
  EXPECT_TRUE((*c)->channel_bound());
  EXPECT_EQ((*c)->tls_version(), "TLSv1.3");
  EXPECT_EQ((*c)->native_handle() >= 0, true);

  std::string big(3u << 20, '\0');
  std::mt19937 rng(7);
  for (char& ch : big) ch = static_cast<char>(rng());
  std::string back;
  auto r = (*c)->call_collect("echo", "", back, big);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(back.size(), big.size());
  EXPECT_TRUE(back == big);

  // Pipelined: several requests out, then their answers in order.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE((*c)->send_request("echo", "", 0));
  for (int i = 0; i < 20; ++i) {
    auto resp = (*c)->read_response();
    ASSERT_TRUE(resp) << resp.error().message;
    EXPECT_TRUE(resp->ok);
  }
  std::lock_guard lock(seen_.mutex);
  ASSERT_EQ(seen_.bound.size(), 1u);
  EXPECT_TRUE(seen_.bound[0]);
  EXPECT_EQ(seen_.logins, 1);
}

TEST_F(TlsTransportTest, PayloadFromAndToFileDescriptorsGoesThroughTls) {
  start(settings());
  auto c = client::Client::connect(options());
  ASSERT_TRUE(c) << c.error().message;
  int in[2], out[2];
  ASSERT_EQ(::pipe(in), 0);
  ASSERT_EQ(::pipe(out), 0);
  const std::string data(200000, 'z');
  std::thread writer([&] {
    std::size_t off = 0;
    while (off < data.size())
      off += static_cast<std::size_t>(::write(in[1], data.data() + off, data.size() - off));
    ::close(in[1]);
  });
  auto r = (*c)->call_fd("echo", "", in[0], data.size());
  writer.join();
  ::close(in[0]);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->payload_size, data.size());
  std::string got;
  std::thread reader([&] {
    char buf[65536];
    ssize_t n;
    while ((n = ::read(out[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<std::size_t>(n));
  });
  auto s = (*c)->read_payload_to_fd(out[1], r->payload_size);
  ::close(out[1]);
  reader.join();
  ::close(out[0]);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(got, data);
}

TEST_F(TlsTransportTest, AServerThatVanishesMidPayloadIsAnErrorNotSigpipe) {
  // OpenSSL writes with write(2): without the client's guard, SIGPIPE would end this
  // test program (gtest leaves SIGPIPE at its default).
  start(settings());
  auto c = client::Client::connect(options());
  ASSERT_TRUE(c) << c.error().message;
  const std::string big(16u << 20, 'x');
  auto r = (*c)->call("close", "", big);
  EXPECT_FALSE(r && r->ok);
  EXPECT_TRUE((*c)->broken());
  EXPECT_EQ((*c)->last_failure(), client::Failure::io);
}

TEST_F(TlsTransportTest, BindingOffOffersPlainOnlyAndTheClientRefusesUnlessAllowed) {
  TlsSettings s = settings();
  s.channel_binding = false;
  start(s);
  client::Failure why{};
  auto refused = client::Client::connect(options(), &why);
  ASSERT_FALSE(refused);
  EXPECT_EQ(why, client::Failure::auth);
  EXPECT_NE(refused.error().message.find("hmac-sha256-plus"), std::string::npos);

  client::Options o = options();
  o.insecure_no_binding = true;
  auto c = client::Client::connect(o);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE((*c)->tls());
  EXPECT_FALSE((*c)->channel_bound());
}

TEST_F(TlsTransportTest, UntrustedCertificateIsRefusedByTheClient) {
  start(settings());
  client::Options o = options();
  o.ca_file.clear();  // the system's store does not know the test CA
  client::Failure why{};
  auto c = client::Client::connect(o, &why);
  ASSERT_FALSE(c);
  EXPECT_EQ(why, client::Failure::connect);
  EXPECT_NE(c.error().message.find("not trusted"), std::string::npos) << c.error().message;
  EXPECT_TRUE(wait_for_failure());
}

TEST_F(TlsTransportTest, WrongHostNameIsRefusedByTheClient) {
  start(settings());
  client::Options o = options();
  o.server_name = "files.example.org";
  auto c = client::Client::connect(o);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("files.example.org"), std::string::npos) << c.error().message;
  // "localhost" is in the certificate.
  o.server_name = "localhost";
  auto ok = client::Client::connect(o);
  EXPECT_TRUE(ok) << ok.error().message;
}

TEST_F(TlsTransportTest, MutualTlsNeedsAClientCertificateFromTheCa) {
  TlsSettings s = settings();
  s.client_ca = pki_->ca_file();
  start(s);
  client::Failure why{};
  auto without = client::Client::connect(options(), &why);
  ASSERT_FALSE(without);
  EXPECT_EQ(why, client::Failure::connect);
  EXPECT_TRUE(wait_for_failure());

  test::TestPki other(dir_ / "other", "other");
  test::CertSpec client_spec;
  client_spec.client = true;
  auto foreign = other.issue("foreign-client", client_spec);
  client::Options o = options();
  o.cert_file = foreign.cert.string();
  o.key_file = foreign.key.string();
  EXPECT_FALSE(client::Client::connect(o));
  EXPECT_TRUE(wait_for_failure(2));

  auto mine = pki_->issue("client", client_spec);
  o.cert_file = mine.cert.string();
  o.key_file = mine.key.string();
  auto c = client::Client::connect(o);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE((*c)->channel_bound());
}

// A raw OpenSSL client capped at TLS 1.2, with or without the extended master secret.
struct Tls12Client {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = nullptr;
  int fd = -1;
  ~Tls12Client() {
    if (ssl) SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0) ::close(fd);
  }
  bool connect(int socket_fd, bool ems) {
    fd = socket_fd;
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    if (!ems) SSL_CTX_set_options(ctx, SSL_OP_NO_EXTENDED_MASTER_SECRET);
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    return SSL_connect(ssl) == 1;
  }
};

TEST_F(TlsTransportTest, Tls12IsRefusedByDefault) {
  start(settings());
  Tls12Client c;
  EXPECT_FALSE(c.connect(raw_connect(), true));
  EXPECT_TRUE(wait_for_failure());
}

TEST_F(TlsTransportTest, Tls12NeedsTheExtendedMasterSecret) {
  TlsSettings s = settings();
  s.min_version = TlsMinVersion::tls1_2;
  start(s);
  {
    Tls12Client with;
    ASSERT_TRUE(with.connect(raw_connect(), true));
    EXPECT_EQ(SSL_version(with.ssl), TLS1_2_VERSION);
    EXPECT_EQ(SSL_get_extms_support(with.ssl), 1);
    // The responder sends its challenge: the handshake was accepted.
    char prefix[4];
    EXPECT_EQ(SSL_read(with.ssl, prefix, 4), 4);
  }
  {
    Tls12Client without;
    without.connect(raw_connect(), false);  // completes on our side; the server then refuses
    EXPECT_TRUE(wait_for_failure());
    std::lock_guard lock(seen_.mutex);
    EXPECT_NE(seen_.handshake_failures.back().find("extended master secret"), std::string::npos)
        << seen_.handshake_failures.back();
    char prefix[4];
    EXPECT_LE(SSL_read(without.ssl, prefix, 4), 0);
  }
  // The SDK client may allow TLS 1.2, but the server picks TLS 1.3 when both can.
  client::Options o = options();
  o.allow_tls12 = true;
  auto c = client::Client::connect(o);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ((*c)->tls_version(), "TLSv1.3");
}

std::string proxy_header_tcp4() {
  const unsigned char h[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
                             0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C, 203,  0,    113,  9,
                             127,  0,    0,    1,    0x30, 0x39, 0x24, 0x01};
  return std::string(reinterpret_cast<const char*>(h), sizeof h);
}

TEST_F(TlsTransportTest, ProxyHeaderBeforeTlsGivesThePeer) {
  TlsSettings s = settings();
  s.proxy_protocol = true;
  start(s);
  int fd = raw_connect();
  ASSERT_GE(fd, 0);
  const std::string header = proxy_header_tcp4();
  ASSERT_EQ(::send(fd, header.data(), header.size(), 0), static_cast<ssize_t>(header.size()));
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  EXPECT_EQ(SSL_connect(ssl), 1);
  char prefix[4];
  EXPECT_EQ(SSL_read(ssl, prefix, 4), 4);  // the challenge's length
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
  std::lock_guard lock(seen_.mutex);
  ASSERT_EQ(seen_.peers.size(), 1u);
  EXPECT_EQ(seen_.peers[0], "203.0.113.9:12345");
}

TEST_F(TlsTransportTest, ProxyListenerClosesWithoutAValidHeader) {
  TlsSettings s = settings();
  s.proxy_protocol = true;
  start(s);
  // A TLS client that sends no PROXY header: its ClientHello is not one.
  client::Options o = options();
  o.timeout = 3s;
  auto c = client::Client::connect(o);
  EXPECT_FALSE(c);
  EXPECT_TRUE(wait_for_failure());
  std::lock_guard lock(seen_.mutex);
  EXPECT_NE(seen_.handshake_failures[0].find("PROXY"), std::string::npos)
      << seen_.handshake_failures[0];
}

TEST_F(TlsTransportTest, PlainClientOnTheTlsListenerGetsNoChallenge) {
  start(settings());
  client::Options o = options();
  o.tls = false;
  o.timeout = 2s;
  client::Failure why{};
  auto c = client::Client::connect(o, &why);
  EXPECT_FALSE(c);
  EXPECT_NE(why, client::Failure::none);
}

}  // namespace
}  // namespace ops::core
