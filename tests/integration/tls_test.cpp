// §8 against the real server: a TLS listener beside the plain one (--tls-listen ...).
//
// Every case that needs the TLS listener skips, with the reason, while the server does
// not log one ("opserver listening for TLS on HOST:PORT"): the listener's parts are in
// core/net/tls_listener.hpp and are wired into server.cpp separately. Cases about the
// plain listener run regardless.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "harness/server_process.hpp"
#include "opserver/frame.hpp"
#include "opserver/proof.hpp"
#include "test_pki.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kNotWired =
    "the server does not log a TLS listener yet ('opserver listening for TLS on ...'): "
    "core/net/tls_listener.hpp is not wired into core/net/server.cpp";

// A server with a TLS listener on a free port, certificates from a test CA.
class TlsServerTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> extra = {}, std::string settings = {}) {
    pki_ = std::make_unique<TestPki>(pki_dir_.path());
    server_files_ = pki_->issue("server");
    ServerOptions options;
    options.settings = std::move(settings);
    options.args = {"--tls-listen", "127.0.0.1:0",
                    "--tls-cert",   server_files_.cert.string(),
                    "--tls-key",    server_files_.key.string()};
    options.args.insert(options.args.end(), extra.begin(), extra.end());
    server_ = std::make_unique<ServerProcess>(options);
    tls_port_ = server_->tls_port();
  }
  bool wired() const { return tls_port_ != 0; }

  client::Options tls_options(const std::string& user, const std::string& key) const {
    client::Options o = server_->options(user, key);
    o.port = tls_port_;
    o.tls = true;
    o.ca_file = pki_->ca_file().string();
    o.timeout = 10s;
    return o;
  }

  int raw_connect(std::uint16_t port) const {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

  TempDir pki_dir_;
  std::unique_ptr<TestPki> pki_;
  CertFiles server_files_;
  std::unique_ptr<ServerProcess> server_;
  std::uint16_t tls_port_ = 0;
};

// True if the peer closes `fd` within `limit` (bytes that arrive first are discarded).
bool closed_within(int fd, std::chrono::milliseconds limit) {
  auto give_up = std::chrono::steady_clock::now() + limit;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        give_up - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return true;
  }
}

TEST_F(TlsServerTest, LoginWithChannelBindingWorks) {
  start();
  if (!wired()) GTEST_SKIP() << kNotWired;
  EXPECT_NE(server_->log().find("channel binding required"), std::string::npos);
  client::Failure why{};
  auto c = client::Client::connect(tls_options("admin", server_->admin_key()), &why);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_TRUE((*c)->tls());
  EXPECT_TRUE((*c)->channel_bound());
  EXPECT_EQ((*c)->tls_version(), "TLSv1.3");
  // The plain listener keeps serving plain hmac-sha256.
  auto plain = server_->connect_admin();
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->tls());
}

// A reload reads the certificate and key again: new connections get the new ones, an open
// connection keeps its session.
TEST_F(TlsServerTest, AReloadPutsNewCertificatesInForceForNewConnections) {
  start();
  if (!wired()) GTEST_SKIP() << kNotWired;
  const std::string key = server_->admin_key();
  auto before = client::Client::connect(tls_options("admin", key));
  ASSERT_TRUE(before) << before.error().message;

  // A certificate from another CA, renamed over the files the server was started with.
  TempDir other_dir;
  TestPki other(other_dir.path(), "other");
  CertFiles renewed = other.issue("server");
  std::filesystem::path cert_new = server_files_.cert, key_new = server_files_.key;
  cert_new += ".new";
  key_new += ".new";
  std::filesystem::copy_file(renewed.cert, cert_new);
  std::filesystem::copy_file(renewed.key, key_new);
  std::filesystem::permissions(
      key_new, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  std::filesystem::rename(cert_new, server_files_.cert);
  std::filesystem::rename(key_new, server_files_.key);
  ASSERT_EQ(::kill(server_->pid(), SIGHUP), 0);
  auto give_up = std::chrono::steady_clock::now() + 10s;
  while (server_->log().find("reload: generation 2 in force") == std::string::npos &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_NE(server_->log().find("reload: generation 2 in force"), std::string::npos)
      << server_->log();

  client::Options renewed_trust = tls_options("admin", key);
  renewed_trust.ca_file = other.ca_file().string();
  auto after = client::Client::connect(renewed_trust);
  EXPECT_TRUE(after) << (after ? "" : after.error().message);
  auto old_trust = client::Client::connect(tls_options("admin", key));
  EXPECT_FALSE(old_trust) << "a new connection still got the old certificate";
  auto still = (*before)->call("describe");
  ASSERT_TRUE(still) << still.error().message;
  EXPECT_TRUE(still->ok);
}

TEST_F(TlsServerTest, ChallengeOffersOnlyThePlusMechanism) {
  start();
  if (!wired()) GTEST_SKIP() << kNotWired;
  int fd = raw_connect(tls_port_);
  ASSERT_GE(fd, 0);
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(ctx, pki_->ca_file().c_str(), nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  ASSERT_EQ(SSL_connect(ssl), 1);
  unsigned char prefix[4];
  ASSERT_EQ(SSL_read(ssl, prefix, 4), 4);
  std::string header(frame::decode_length(prefix), '\0');
  int got = 0;
  while (got < static_cast<int>(header.size())) {
    int n = SSL_read(ssl, header.data() + got, static_cast<int>(header.size()) - got);
    ASSERT_GT(n, 0);
    got += n;
  }
  EXPECT_NE(header.find(R"("mechanisms":["hmac-sha256-plus"])"), std::string::npos) << header;
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ::close(fd);
}

TEST_F(TlsServerTest, UploadDownloadListOverTls) {
  start();
  if (!wired()) GTEST_SKIP() << kNotWired;
  auto c = client::Client::connect(tls_options("admin", server_->admin_key()));
  ASSERT_TRUE(c) << c.error().message;
  std::string data(5u << 20, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + i / 7);
  auto up = (*c)->call("upload", R"({"path":"tls/a.bin"})", data);
  ASSERT_TRUE(up && up->ok) << (up ? up->error.message : up.error().message);
  EXPECT_NE(up->result_json.find(proof::sha256_hex(data)), std::string::npos);
  std::string back;
  auto down = (*c)->call_collect("download", R"({"path":"tls/a.bin"})", back);
  ASSERT_TRUE(down && down->ok);
  EXPECT_TRUE(back == data);
  auto part =
      (*c)->call_collect("download", R"({"path":"tls/a.bin","offset":1000,"length":10})", back);
  ASSERT_TRUE(part && part->ok);
  EXPECT_EQ(back, data.substr(1000, 10));
  auto list = (*c)->call("list", R"({"path":"tls"})");
  ASSERT_TRUE(list && list->ok);
  EXPECT_NE(list->result_json.find(R"("name":"a.bin")"), std::string::npos);
  // Pipelined over TLS.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*c)->send_request("list", R"({"path":"tls"})"));
  for (int i = 0; i < 10; ++i) {
    auto r = (*c)->read_response();
    ASSERT_TRUE(r && r->ok);
  }
}

// Terminates TLS with a certificate the client trusts and re-originates TLS to the
// server, forwarding bytes both ways: a man in the middle. One connection.
class TlsRelay {
 public:
  TlsRelay(const CertFiles& cert, const std::filesystem::path& server_ca, std::uint16_t target)
      : target_(target) {
    front_ctx_ = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate_chain_file(front_ctx_, cert.cert.c_str());
    SSL_CTX_use_PrivateKey_file(front_ctx_, cert.key.c_str(), SSL_FILETYPE_PEM);
    back_ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(back_ctx_, server_ca.c_str(), nullptr);
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(listen_fd_, 1);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~TlsRelay() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
    SSL_CTX_free(front_ctx_);
    SSL_CTX_free(back_ctx_);
  }
  std::uint16_t port() const { return port_; }
  bool forwarded() const { return forwarded_; }

 private:
  void run() {
    int front_fd = ::accept(listen_fd_, nullptr, nullptr);
    if (front_fd < 0) return;
    SSL* front = SSL_new(front_ctx_);
    SSL_set_fd(front, front_fd);
    int back_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(target_);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    SSL* back = SSL_new(back_ctx_);
    SSL_set_fd(back, back_fd);
    if (SSL_accept(front) == 1 &&
        ::connect(back_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        SSL_connect(back) == 1) {
      pump(front, front_fd, back, back_fd);
    }
    SSL_free(front);
    SSL_free(back);
    ::close(front_fd);
    ::close(back_fd);
  }
  // One thread, poll-driven: an SSL object is never used from two threads.
  void pump(SSL* a, int a_fd, SSL* b, int b_fd) {
    char buf[16384];
    for (;;) {
      pollfd p[2] = {{a_fd, POLLIN, 0}, {b_fd, POLLIN, 0}};
      if (SSL_pending(a) == 0 && SSL_pending(b) == 0 && ::poll(p, 2, 10000) <= 0) return;
      for (auto [from, from_fd, to] : {std::tuple{a, a_fd, b}, std::tuple{b, b_fd, a}}) {
        pollfd q{from_fd, POLLIN, 0};
        if (SSL_pending(from) == 0 && ::poll(&q, 1, 0) <= 0) continue;
        int n = SSL_read(from, buf, sizeof buf);
        if (n <= 0) return;
        if (SSL_write(to, buf, n) != n) return;
        forwarded_ = true;
      }
    }
  }

  std::uint16_t target_;
  SSL_CTX* front_ctx_ = nullptr;
  SSL_CTX* back_ctx_ = nullptr;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> forwarded_{false};
  std::thread thread_;
};

TEST_F(TlsServerTest, RelayWithATrustedCertificateGetsAuthFailed) {
  start();
  if (!wired()) GTEST_SKIP() << kNotWired;
  // The relay's certificate comes from the same CA: the client trusts it.
  auto relay_files = pki_->issue("relay");
  TlsRelay relay(relay_files, pki_->ca_file(), tls_port_);
  client::Options o = tls_options("admin", server_->admin_key());
  o.port = relay.port();
  client::Failure why{};
  auto c = client::Client::connect(o, &why);
  ASSERT_FALSE(c);
  EXPECT_EQ(why, client::Failure::auth) << c.error().message;
  EXPECT_EQ(c.error().code, ErrorCode::auth_failed);
  EXPECT_TRUE(relay.forwarded());  // the server's answer came through the relay
  // The server logs the refusal after sending it: wait for the line.
  bool logged = false;
  for (int i = 0; i < 200 && !logged; ++i) {
    logged = server_->log().find("auth_failed") != std::string::npos;
    if (!logged) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(logged) << server_->log();
}

TEST_F(TlsServerTest, PlusNamedOnThePlainListenerIsAuthFailed) {
  start();  // runs without the TLS wiring: it is about the plain listener
  const std::string key = server_->admin_key();
  auto login = [&](std::string_view mechanism, bool with_cb) -> std::optional<std::string> {
    RawConnection conn(server_->port());
    auto nonce = proof::from_hex<32>(conn.read_challenge());
    if (!nonce) return std::nullopt;
    const proof::Nonce cnonce = proof::random_nonce();
    proof::ChannelBinding cb{};
    cb.fill(0x42);
    const auto p = with_cb ? proof::client_proof(key, *nonce, cnonce, "admin", cb)
                           : proof::client_proof(key, *nonce, cnonce, "admin");
    const std::string auth = R"({"type":"auth","mechanism":")" + std::string(mechanism) +
                             R"(","user":"admin","cnonce":")" + proof::to_hex(cnonce) +
                             R"(","proof":")" + proof::to_hex(p) + R"("})";
    if (!conn.send(frame_of(auth))) return std::nullopt;
    return conn.read_frame();
  };
  const std::string auth_failed =
      R"({"type":"error","error":{"code":"auth_failed","message":"authentication failed"}})";
  for (bool with_cb : {true, false}) {
    SCOPED_TRACE(with_cb);
    auto reply = login(proof::kMechanismPlus, with_cb);
    ASSERT_TRUE(reply);
    EXPECT_EQ(*reply, auth_failed);
  }
  // The same login with the mechanism the plain listener offers succeeds.
  auto welcome = login(proof::kMechanism, false);
  ASSERT_TRUE(welcome);
  EXPECT_NE(welcome->find(R"("type":"welcome")"), std::string::npos) << *welcome;
}

TEST_F(TlsServerTest, MutualTlsWithoutAClientCertificateFailsTheTlsHandshake) {
  TempDir ca_dir;
  TestPki client_ca(ca_dir.path(), "clients");
  start({"--tls-client-ca", client_ca.ca_file().string()});
  if (!wired()) GTEST_SKIP() << kNotWired;
  EXPECT_NE(server_->log().find("client certificates required"), std::string::npos);
  client::Failure why{};
  auto without = client::Client::connect(tls_options("admin", server_->admin_key()), &why);
  ASSERT_FALSE(without);
  EXPECT_EQ(why, client::Failure::connect) << without.error().message;

  CertSpec spec;
  spec.client = true;
  auto mine = client_ca.issue("alice-client", spec);
  client::Options o = tls_options("admin", server_->admin_key());
  o.cert_file = mine.cert.string();
  o.key_file = mine.key.string();
  auto with = client::Client::connect(o);
  ASSERT_TRUE(with) << with.error().message;
  EXPECT_TRUE((*with)->channel_bound());  // in addition to, never instead of, the HMAC
  o.key = "wrong key";
  auto wrong = client::Client::connect(o, &why);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(why, client::Failure::auth);
}

TEST_F(TlsServerTest, HandshakeDeadlineCoversAStalledTlsHandshake) {
  start({}, R"("handshake_timeout_ms": 700)");
  if (!wired()) GTEST_SKIP() << kNotWired;
  // Connected, and not a byte of TLS: the server must still close at the deadline.
  int idle = raw_connect(tls_port_);
  // Half a ClientHello: the TLS engine waits for the rest.
  int half = raw_connect(tls_port_);
  ASSERT_GE(idle, 0);
  ASSERT_GE(half, 0);
  const unsigned char partial[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03};
  ASSERT_EQ(::send(half, partial, sizeof partial, 0), static_cast<ssize_t>(sizeof partial));
  auto started = std::chrono::steady_clock::now();
  EXPECT_TRUE(closed_within(idle, 5s));
  EXPECT_TRUE(closed_within(half, 5s));
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_GE(took, 400ms);
  ::close(idle);
  ::close(half);
}

TEST_F(TlsServerTest, ConnectionsInTheTlsHandshakeCountAsUnauthenticated) {
  start({}, R"("max_unauthenticated": 2, "handshake_timeout_ms": 5000)");
  if (!wired()) GTEST_SKIP() << kNotWired;
  int a = raw_connect(tls_port_);
  int b = raw_connect(tls_port_);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  std::this_thread::sleep_for(200ms);  // both accepted and counted
  // A third, on either listener, is closed at once.
  int c = raw_connect(server_->port());
  ASSERT_GE(c, 0);
  EXPECT_TRUE(closed_within(c, 2s));
  ::close(a);
  ::close(b);
  ::close(c);
}

TEST_F(TlsServerTest, OpclientOverTls) {
  start();
  if (!wired()) GTEST_SKIP() << kNotWired;
  TempDir work;
  std::ofstream(work.path() / "admin.key") << server_->admin_key() << "\n";
  std::filesystem::permissions(work.path() / "admin.key", std::filesystem::perms::owner_read |
                                                              std::filesystem::perms::owner_write);
  std::ofstream(work.path() / "hello.txt") << "hello over TLS\n";
  const std::string server = "tls://127.0.0.1:" + std::to_string(tls_port_);
  const std::string key = (work.path() / "admin.key").string();
  const std::string ca = pki_->ca_file().string();
  auto up = run_program({OPS_CLIENT_BIN, "--server", server, "--user", "admin", "--key-file", key,
                         "--ca", ca, "upload", "hello.txt", "greetings/hello.txt"},
                        work.path());
  EXPECT_EQ(up.status, 0) << up.output;
  auto ls =
      run_program({OPS_CLIENT_BIN, "--server", "127.0.0.1:" + std::to_string(tls_port_), "--tls",
                   "--ca", ca, "--user", "admin", "--key-file", key, "ls", "greetings"},
                  work.path());
  EXPECT_EQ(ls.status, 0) << ls.output;
  EXPECT_NE(ls.output.find("hello.txt"), std::string::npos) << ls.output;
  // Without the CA the system's store does not trust the test CA: cannot connect (3).
  auto untrusted =
      run_program({OPS_CLIENT_BIN, "--server", server, "--user", "admin", "--key-file", key, "ls"},
                  work.path());
  EXPECT_EQ(untrusted.status, 3) << untrusted.output;
}

TEST(TlsStartup, BadTlsFilesStopTheServerWithTheReason) {
  TempDir dir;
  TestPki pki(dir.path());
  auto files = pki.issue("server");
  std::filesystem::permissions(
      files.key, std::filesystem::perms::group_read | std::filesystem::perms::others_read,
      std::filesystem::perm_options::add);
  ServerOptions options;
  options.args = {"--tls-listen",      "127.0.0.1:0", "--tls-cert",
                  files.cert.string(), "--tls-key",   files.key.string()};
  try {
    ServerProcess server(options);
    FAIL() << "the server started with a world-readable TLS key";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("chmod 600"), std::string::npos) << e.what();
  }
  // --check-config reports the same.
  TempDir cfg;
  std::ofstream(cfg.path() / "ops.json") << default_ops_json(OPS_PLUGIN_DIR);
  std::ofstream(cfg.path() / "server.json")
      << R"({"ops_config": ")" << (cfg.path() / "ops.json").string() << R"("})";
  auto check = run_program({OPS_SERVER_BIN, "--config", (cfg.path() / "server.json").string(),
                            "--check-config", "--tls-listen", "127.0.0.1:0", "--tls-cert",
                            files.cert.string(), "--tls-key", files.key.string()});
  EXPECT_EQ(check.status, 1);
  EXPECT_NE(check.output.find("chmod 600"), std::string::npos) << check.output;
  auto expired_spec = CertSpec{};
  expired_spec.not_before_seconds = -3 * 86400;
  expired_spec.not_after_seconds = -60;
  auto expired = pki.issue("expired", expired_spec);
  auto check2 = run_program({OPS_SERVER_BIN, "--config", (cfg.path() / "server.json").string(),
                             "--check-config", "--tls-listen", "127.0.0.1:0", "--tls-cert",
                             expired.cert.string(), "--tls-key", expired.key.string()});
  EXPECT_EQ(check2.status, 1);
  EXPECT_NE(check2.output.find("has expired"), std::string::npos) << check2.output;
}

}  // namespace
}  // namespace ops::test

namespace ops::test {
namespace {

TEST(TlsOpclient, TlsOptionsWithoutTlsAreAUsageError) {
  TempDir work;
  std::ofstream(work.path() / "k") << "key\n";
  const std::string key = (work.path() / "k").string();
  auto no_tls = run_program({OPS_CLIENT_BIN, "--server", "127.0.0.1:1", "--user", "u", "--key-file",
                             key, "--ca", "ca.pem", "ls"});
  EXPECT_EQ(no_tls.status, 2) << no_tls.output;
  EXPECT_NE(no_tls.output.find("need --tls"), std::string::npos) << no_tls.output;
  auto half = run_program({OPS_CLIENT_BIN, "--server", "tls://127.0.0.1:1", "--user", "u",
                           "--key-file", key, "--cert", "c.pem", "ls"});
  EXPECT_EQ(half.status, 2) << half.output;
  EXPECT_NE(half.output.find("--cert and --key go together"), std::string::npos) << half.output;
}

TEST(TlsOpclient, TlsSchemeOnAPlainServerFailsToConnect) {
  ServerOptions options;
  ServerProcess server(options);
  TempDir work;
  std::ofstream(work.path() / "admin.key") << server.admin_key() << "\n";
  const std::string key = (work.path() / "admin.key").string();
  // tls:// speaks TLS to the plain listener: no TLS handshake, cannot connect (3).
  auto r =
      run_program({OPS_CLIENT_BIN, "--server", "tls://127.0.0.1:" + std::to_string(server.port()),
                   "--user", "admin", "--key-file", key, "--timeout", "5", "ls"});
  EXPECT_EQ(r.status, 3) << r.output;
  // tcp:// is the plain listener, as without a scheme.
  auto plain =
      run_program({OPS_CLIENT_BIN, "--server", "tcp://127.0.0.1:" + std::to_string(server.port()),
                   "--user", "admin", "--key-file", key, "ls"});
  EXPECT_EQ(plain.status, 0) << plain.output;
}

}  // namespace
}  // namespace ops::test
