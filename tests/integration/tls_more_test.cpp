// §8 against the real server, the cases tls_test.cpp does not cover: every standard
// operation through the SDK client over TLS, proofs without or with a foreign channel
// binding, old TLS versions refused, mutual TLS with a wrong client certificate, garbage
// in the TLS handshake, TLS records split at every byte boundary, and a large transfer
// over TLS with bounded server memory.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/frame.hpp"
#include "opserver/proof.hpp"
#include "test_pki.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;

// §2's auth_failed frame header, byte for byte.
constexpr std::string_view kAuthFailed =
    R"({"type":"error","error":{"code":"auth_failed","message":"authentication failed"}})";

int tcp_connect(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

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

// A TLS client whose OpenSSL engine talks to a BIO pair, not to the socket: the test moves
// the ciphertext itself, so it decides how the TLS records reach the server. With
// `one_byte`, every byte of every record (handshake and application data) goes out in
// its own send() with TCP_NODELAY and a short pause, so the server reads the records in
// pieces at every byte boundary.
class SplitTlsClient {
 public:
  struct Config {
    std::filesystem::path ca;
    bool one_byte = false;
    int max_version = 0;  // 0: OpenSSL's newest
    int min_version = 0;
    std::filesystem::path cert, key;  // a client certificate, if any
  };

  SplitTlsClient(std::uint16_t port, const Config& config) : config_(config) {
    fd_ = tcp_connect(port);
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (!config.ca.empty()) SSL_CTX_load_verify_locations(ctx_, config.ca.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (config.min_version != 0) SSL_CTX_set_min_proto_version(ctx_, config.min_version);
    if (config.max_version != 0) SSL_CTX_set_max_proto_version(ctx_, config.max_version);
    // TLS 1.0 needs security level 0 in OpenSSL 3; the server must refuse it, not us.
    if (config.max_version != 0 && config.max_version < TLS1_2_VERSION) {
      SSL_CTX_set_security_level(ctx_, 0);
      SSL_CTX_set_cipher_list(ctx_, "DEFAULT:@SECLEVEL=0");
    }
    if (!config.cert.empty()) {
      SSL_CTX_use_certificate_chain_file(ctx_, config.cert.c_str());
      SSL_CTX_use_PrivateKey_file(ctx_, config.key.c_str(), SSL_FILETYPE_PEM);
    }
    ssl_ = SSL_new(ctx_);
    BIO* inside = nullptr;
    BIO_new_bio_pair(&inside, 0, &network_, 0);
    SSL_set_bio(ssl_, inside, inside);
    SSL_set_connect_state(ssl_);
  }
  ~SplitTlsClient() {
    SSL_free(ssl_);
    BIO_free(network_);
    SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }
  SplitTlsClient(const SplitTlsClient&) = delete;
  SplitTlsClient& operator=(const SplitTlsClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  SSL* ssl() const { return ssl_; }
  // Ciphertext bytes received from the server, and send() calls made, so far.
  std::size_t received() const { return received_; }
  std::size_t sends() const { return sends_; }

  bool handshake() {
    for (;;) {
      ERR_clear_error();
      int r = SSL_do_handshake(ssl_);
      if (!flush()) return false;
      if (r == 1) return true;
      int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_WANT_READ) {
        if (!feed()) return false;
      } else if (e != SSL_ERROR_WANT_WRITE) {
        return false;
      }
    }
  }

  // The first handshake step only: the ClientHello goes out, nothing more ever follows.
  bool send_client_hello() {
    ERR_clear_error();
    SSL_do_handshake(ssl_);
    return flush();
  }

  bool write(std::string_view data) {
    while (!data.empty()) {
      int n =
          SSL_write(ssl_, data.data(), static_cast<int>(std::min<std::size_t>(data.size(), 4096)));
      if (n <= 0) {
        if (SSL_get_error(ssl_, n) != SSL_ERROR_WANT_WRITE || !flush()) return false;
        continue;
      }
      data.remove_prefix(static_cast<std::size_t>(n));
      if (!flush()) return false;
    }
    return true;
  }

  std::optional<std::string> read_exact(std::size_t size) {
    std::string out(size, '\0');
    std::size_t got = 0;
    while (got < size) {
      int n = SSL_read(ssl_, out.data() + got, static_cast<int>(size - got));
      if (n > 0) {
        got += static_cast<std::size_t>(n);
        continue;
      }
      int e = SSL_get_error(ssl_, n);
      if (e != SSL_ERROR_WANT_READ || !flush() || !feed()) return std::nullopt;
    }
    return out;
  }

  // One whole frame: its raw bytes (length prefix and header) followed by `payload` bytes
  // when the header announces them through read_payload.
  std::optional<std::string> read_frame_bytes() {
    auto prefix = read_exact(4);
    if (!prefix) return std::nullopt;
    auto header =
        read_exact(frame::decode_length(reinterpret_cast<const unsigned char*>(prefix->data())));
    if (!header) return std::nullopt;
    return *prefix + *header;
  }

  // The 32-byte channel binding of this connection (§8).
  proof::ChannelBinding binding() const {
    proof::ChannelBinding cb{};
    static constexpr char kLabel[] = "EXPORTER-Channel-Binding";
    SSL_export_keying_material(ssl_, cb.data(), cb.size(), kLabel, sizeof kLabel - 1, nullptr, 0,
                               1);
    return cb;
  }

 private:
  // Sends whatever the engine produced.
  bool flush() {
    char buf[16384];
    for (;;) {
      int n = BIO_read(network_, buf, sizeof buf);
      if (n <= 0) return true;
      if (config_.one_byte) {
        for (int i = 0; i < n; ++i) {
          if (::send(fd_, buf + i, 1, MSG_NOSIGNAL) != 1) return false;
          ++sends_;
          std::this_thread::sleep_for(200us);
        }
      } else if (!send_all(buf, static_cast<std::size_t>(n))) {
        return false;
      }
    }
  }
  bool send_all(const char* p, std::size_t n) {
    while (n > 0) {
      ssize_t s = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (s <= 0) return false;
      ++sends_;
      p += s;
      n -= static_cast<std::size_t>(s);
    }
    return true;
  }
  // Reads what the server sent (waiting up to 10 s) into the engine.
  bool feed() {
    char buf[16384];
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) return false;
    ssize_t n = ::recv(
        fd_, buf, std::min<std::size_t>(sizeof buf, BIO_ctrl_get_write_guarantee(network_)), 0);
    if (n <= 0) return false;
    received_ += static_cast<std::size_t>(n);
    return BIO_write(network_, buf, static_cast<int>(n)) == n;
  }

  Config config_;
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  BIO* network_ = nullptr;
  std::size_t received_ = 0;
  std::size_t sends_ = 0;
};

// The auth frame of the -plus mechanism with the proof made for `cb` (or §2's proof with
// no binding when `cb` is null).
std::string plus_auth(const std::string& key, const std::string& nonce_hex,
                      const proof::ChannelBinding* cb, std::string_view mechanism) {
  auto nonce = proof::from_hex<32>(nonce_hex);
  const proof::Nonce cnonce = proof::random_nonce();
  const auto p = cb != nullptr ? proof::client_proof(key, *nonce, cnonce, "admin", *cb)
                               : proof::client_proof(key, *nonce, cnonce, "admin");
  return frame_of(R"({"type":"auth","mechanism":")" + std::string(mechanism) +
                  R"(","user":"admin","cnonce":")" + proof::to_hex(cnonce) + R"(","proof":")" +
                  proof::to_hex(p) + R"("})");
}

// The nonce of a challenge header.
std::string nonce_of(const std::string& challenge) {
  auto at = challenge.find(R"("nonce":")");
  if (at == std::string::npos) return {};
  return challenge.substr(at + 9, 64);
}

class TlsMoreTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> extra = {}, std::string settings = {},
             std::string ops_json = {}) {
    pki_ = std::make_unique<TestPki>(pki_dir_.path());
    server_files_ = pki_->issue("server");
    ServerOptions options;
    options.settings = std::move(settings);
    options.ops_json = std::move(ops_json);
    options.args = {"--tls-listen", "127.0.0.1:0",
                    "--tls-cert",   server_files_.cert.string(),
                    "--tls-key",    server_files_.key.string()};
    options.args.insert(options.args.end(), extra.begin(), extra.end());
    server_ = std::make_unique<ServerProcess>(options);
    tls_port_ = server_->tls_port();
    ASSERT_NE(tls_port_, 0) << "no TLS listener in the log:\n" << server_->log();
  }

  client::Options tls_options(const std::string& user, const std::string& key) const {
    client::Options o = server_->options(user, key);
    o.port = tls_port_;
    o.tls = true;
    o.ca_file = pki_->ca_file().string();
    o.timeout = 30s;
    return o;
  }

  SplitTlsClient::Config split_config(bool one_byte = false) const {
    SplitTlsClient::Config c;
    c.ca = pki_->ca_file();
    c.one_byte = one_byte;
    return c;
  }

  TempDir pki_dir_;
  std::unique_ptr<TestPki> pki_;
  CertFiles server_files_;
  std::unique_ptr<ServerProcess> server_;
  std::uint16_t tls_port_ = 0;
};

std::string ok_result(const Result<client::Response>& r) {
  if (!r) return "transport: " + r.error().message;
  if (!r->ok) return "error: " + r->error.message;
  return r->result_json;
}

TEST_F(TlsMoreTest, EveryStandardOperationOverTls) {
  start({}, {}, file_ops_json(OPS_PLUGIN_DIR));
  auto admin = client::Client::connect(tls_options("admin", server_->admin_key()));
  ASSERT_TRUE(admin) << admin.error().message;
  client::Client& a = **admin;
  ASSERT_TRUE(a.channel_bound());

  // register: a new user, who then logs in over TLS with the key it returned.
  auto reg = a.call("register", R"({"user":"tina"})");
  ASSERT_TRUE(reg && reg->ok) << ok_result(reg);
  auto key_at = reg->result_json.find(R"("key":")");
  ASSERT_NE(key_at, std::string::npos) << reg->result_json;
  const std::string tina_key =
      reg->result_json.substr(key_at + 7, reg->result_json.find('"', key_at + 7) - key_at - 7);
  auto tina = client::Client::connect(tls_options("tina", tina_key));
  ASSERT_TRUE(tina) << tina.error().message;
  client::Client& t = **tina;
  EXPECT_TRUE(t.channel_bound());

  auto mk = t.call("mkdir", R"({"path":"docs"})");
  ASSERT_TRUE(mk && mk->ok) << ok_result(mk);
  const std::string data(100000, 'x');
  auto up = t.call("upload", R"({"path":"docs/a.txt"})", data);
  ASSERT_TRUE(up && up->ok) << ok_result(up);
  EXPECT_NE(up->result_json.find(proof::sha256_hex(data)), std::string::npos);
  auto st = t.call("stat", R"({"path":"docs/a.txt","sha256":true})");
  ASSERT_TRUE(st && st->ok) << ok_result(st);
  EXPECT_NE(st->result_json.find(R"("size":100000)"), std::string::npos) << st->result_json;
  EXPECT_NE(st->result_json.find(proof::sha256_hex(data)), std::string::npos) << st->result_json;
  auto mv = t.call("move", R"({"from":"docs/a.txt","to":"docs/b.txt"})");
  ASSERT_TRUE(mv && mv->ok) << ok_result(mv);
  auto ls = t.call("list", R"({"path":"docs"})");
  ASSERT_TRUE(ls && ls->ok) << ok_result(ls);
  EXPECT_NE(ls->result_json.find(R"("name":"b.txt")"), std::string::npos) << ls->result_json;
  EXPECT_EQ(ls->result_json.find(R"("name":"a.txt")"), std::string::npos) << ls->result_json;
  std::string back;
  auto down = t.call_collect("download", R"({"path":"docs/b.txt"})", back);
  ASSERT_TRUE(down && down->ok) << ok_result(down);
  EXPECT_TRUE(back == data);
  auto use = t.call("usage", "{}");
  ASSERT_TRUE(use && use->ok) << ok_result(use);
  EXPECT_NE(use->result_json.find("100000"), std::string::npos) << use->result_json;
  auto rm = t.call("remove", R"({"path":"docs","recursive":true})");
  ASSERT_TRUE(rm && rm->ok) << ok_result(rm);
  EXPECT_FALSE(fs::exists(server_->storage_dir() / "tina/docs"));
  // An operation error over TLS is an ordinary response; the connection stays usable.
  auto gone = t.call("stat", R"({"path":"docs"})");
  ASSERT_TRUE(gone);
  EXPECT_FALSE(gone->ok);
  EXPECT_EQ(gone->error.code, ErrorCode::not_found);
  auto use2 = t.call("usage", "{}");
  ASSERT_TRUE(use2 && use2->ok) << ok_result(use2);
}

// The challenge on TLS, read through the split client: exactly one mechanism, the -plus one.
TEST_F(TlsMoreTest, ChallengeOffersExactlyThePlusMechanism) {
  start();
  SplitTlsClient c(tls_port_, split_config());
  ASSERT_TRUE(c.handshake());
  auto challenge = c.read_frame_bytes();
  ASSERT_TRUE(challenge);
  const std::string header = challenge->substr(4);
  auto at = header.find(R"("mechanisms":)");
  ASSERT_NE(at, std::string::npos) << header;
  EXPECT_EQ(header.substr(at, header.find(']', at) - at + 1),
            R"("mechanisms":["hmac-sha256-plus"])")
      << header;
}

// -plus with §2's proof (no binding), -plus with another TLS connection's binding, and plain
// hmac-sha256 on the TLS listener: each gets §2's auth_failed frame, byte for byte, and
// the connection closes. The binding of this very connection logs in.
TEST_F(TlsMoreTest, ProofWithoutOrWithAnotherBindingIsAuthFailed) {
  start();
  const std::string key = server_->admin_key();
  const std::string want = frame_of(kAuthFailed);
  SplitTlsClient other(tls_port_, split_config());
  ASSERT_TRUE(other.handshake());
  const proof::ChannelBinding foreign = other.binding();

  enum class Kind { none, foreign, plain_mechanism, own };
  for (Kind kind : {Kind::none, Kind::foreign, Kind::plain_mechanism, Kind::own}) {
    SCOPED_TRACE(static_cast<int>(kind));
    SplitTlsClient c(tls_port_, split_config());
    ASSERT_TRUE(c.handshake());
    auto challenge = c.read_frame_bytes();
    ASSERT_TRUE(challenge);
    const std::string nonce = nonce_of(challenge->substr(4));
    ASSERT_EQ(nonce.size(), 64u);
    const proof::ChannelBinding own = c.binding();
    EXPECT_NE(own, foreign);
    std::string auth;
    switch (kind) {
      case Kind::none:
        auth = plus_auth(key, nonce, nullptr, proof::kMechanismPlus);
        break;
      case Kind::foreign:
        auth = plus_auth(key, nonce, &foreign, proof::kMechanismPlus);
        break;
      case Kind::plain_mechanism:
        auth = plus_auth(key, nonce, nullptr, proof::kMechanism);
        break;
      case Kind::own:
        auth = plus_auth(key, nonce, &own, proof::kMechanismPlus);
        break;
    }
    ASSERT_TRUE(c.write(auth));
    auto reply = c.read_frame_bytes();
    ASSERT_TRUE(reply);
    if (kind == Kind::own) {
      EXPECT_NE(reply->find(R"("type":"welcome")"), std::string::npos) << *reply;
    } else {
      EXPECT_EQ(*reply, want);
      EXPECT_FALSE(c.read_exact(1)) << "the connection stays open after auth_failed";
    }
  }
}

// Default min_version is 1.3: a client that offers at most TLS 1.2, or TLS 1.0, fails the TLS
// handshake and never sees a challenge.
TEST_F(TlsMoreTest, OldTlsVersionsAreRefusedByDefault) {
  start();
  for (int version : {TLS1_2_VERSION, TLS1_VERSION}) {
    SCOPED_TRACE(version);
    auto config = split_config();
    config.max_version = version;
    config.min_version = version;
    SplitTlsClient c(tls_port_, config);
    ASSERT_TRUE(c.connected());
    EXPECT_FALSE(c.handshake());
    EXPECT_FALSE(c.read_exact(1));
  }
  // The same client without the cap gets TLS 1.3.
  SplitTlsClient modern(tls_port_, split_config());
  ASSERT_TRUE(modern.handshake());
  EXPECT_EQ(SSL_version(modern.ssl()), TLS1_3_VERSION);
  auto challenge = modern.read_frame_bytes();
  ASSERT_TRUE(challenge);
  EXPECT_NE(challenge->find(R"("type":"challenge")"), std::string::npos);
}

// With client_ca: no certificate, or one signed by another CA, fails in the TLS handshake;
// the server sends no OPS/1 byte (no challenge ever decrypts).
TEST_F(TlsMoreTest, MutualTlsWithoutOrWithAWrongCertificateFailsBeforeOps) {
  TempDir ca_dir;
  TestPki client_ca(ca_dir.path(), "clients");
  TestPki stranger_ca(ca_dir.path() / "stranger", "stranger");
  start({"--tls-client-ca", client_ca.ca_file().string()});
  CertSpec spec;
  spec.client = true;
  auto good = client_ca.issue("good-client", spec);
  auto wrong = stranger_ca.issue("wrong-client", spec);

  {
    SplitTlsClient none(tls_port_, split_config());
    // TLS 1.3: the client may believe its handshake done before the server's alert arrives;
    // in any case no challenge can be read.
    none.handshake();
    EXPECT_FALSE(none.read_exact(4)) << "a challenge without a client certificate";
  }
  {
    auto config = split_config();
    config.cert = wrong.cert;
    config.key = wrong.key;
    SplitTlsClient c(tls_port_, config);
    c.handshake();
    EXPECT_FALSE(c.read_exact(4)) << "a challenge with another CA's client certificate";
  }
  {
    auto config = split_config();
    config.cert = good.cert;
    config.key = good.key;
    SplitTlsClient c(tls_port_, config);
    ASSERT_TRUE(c.handshake());
    auto challenge = c.read_frame_bytes();
    ASSERT_TRUE(challenge);
    EXPECT_NE(challenge->find(R"("type":"challenge")"), std::string::npos);
  }
  // The SDK client with the wrong certificate cannot connect either.
  client::Options o = tls_options("admin", server_->admin_key());
  o.cert_file = wrong.cert.string();
  o.key_file = wrong.key.string();
  client::Failure why{};
  auto c = client::Client::connect(o, &why);
  ASSERT_FALSE(c);
  EXPECT_EQ(why, client::Failure::connect) << c.error().message;
}

// Garbage instead of a ClientHello, and a client that stops after its ClientHello (in the
// middle of the TLS handshake): both closed at the handshake deadline, not later.
TEST_F(TlsMoreTest, GarbageOrAStoppedTlsHandshakeIsClosedAtTheDeadline) {
  start({}, R"("handshake_timeout_ms": 800)");
  const auto t0 = std::chrono::steady_clock::now();
  // Garbage that looks like the start of a record: the engine waits for more.
  int garbage = tcp_connect(tls_port_);
  ASSERT_GE(garbage, 0);
  const unsigned char junk[] = {0x16, 0x03, 0x01, 0x40, 0x00, 'G', 'E', 'T', ' ', '/'};
  ASSERT_EQ(::send(garbage, junk, sizeof junk, 0), static_cast<ssize_t>(sizeof junk));
  // A whole ClientHello, then silence: the server has answered and waits for Finished.
  SplitTlsClient stalled(tls_port_, split_config());
  ASSERT_TRUE(stalled.connected());
  ASSERT_TRUE(stalled.send_client_hello());
  EXPECT_TRUE(closed_within(garbage, 5s));
  EXPECT_TRUE(closed_within(stalled.fd(), 5s));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 600ms);
  EXPECT_LT(took, 4s);
  ::close(garbage);
}

// Garbage that is not TLS at all (an OPS/1 frame on the TLS port) is refused at once
// with a failed TLS handshake, not held until the deadline.
TEST_F(TlsMoreTest, PlainOps1OnTheTlsPortIsClosedAtOnce) {
  start({}, R"("handshake_timeout_ms": 20000)");
  int fd = tcp_connect(tls_port_);
  ASSERT_GE(fd, 0);
  const std::string auth = frame_of(R"({"type":"auth"})");
  ASSERT_EQ(::send(fd, auth.data(), auth.size(), 0), static_cast<ssize_t>(auth.size()));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(closed_within(fd, 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  ::close(fd);
}

// The same login and requests, once with whole records and once with every TLS byte in its
// own send(): the response bytes are identical.
TEST_F(TlsMoreTest, RecordsSplitAtEveryByteGiveIdenticalResponses) {
  start({}, {}, file_ops_json(OPS_PLUGIN_DIR));
  const std::string key = server_->admin_key();
  {
    auto c = client::Client::connect(tls_options("admin", key));
    ASSERT_TRUE(c) << c.error().message;
    auto up = (*c)->call("upload", R"({"path":"s/one.txt"})", std::string(3000, 'q'));
    ASSERT_TRUE(up && up->ok);
  }
  // Requests: describe, list, download (with payload), upload of a payload that spans
  // records, and a request error.
  const std::string payload(700, 'p');
  const std::string requests =
      frame_of(R"({"id":1,"operate":"describe"})") +
      frame_of(R"({"id":2,"operate":"list","args":{"path":"s"}})") +
      frame_of(R"({"id":3,"operate":"download","args":{"path":"s/one.txt"}})") +
      frame_of(R"({"id":4,"operate":"upload","args":{"path":"s/two.txt"},"payload":700})") +
      payload + frame_of(R"({"id":5,"operate":"download","args":{"path":"s/missing"}})");

  std::size_t sends = 0;
  auto run = [&](bool one_byte) -> std::string {
    SplitTlsClient c(tls_port_, split_config(one_byte));
    struct Count {
      SplitTlsClient& c;
      std::size_t& out;
      ~Count() { out = c.sends(); }
    } count{c, sends};
    if (!c.handshake()) return "handshake failed";
    auto challenge = c.read_frame_bytes();
    if (!challenge) return "no challenge";
    const proof::ChannelBinding cb = c.binding();
    if (!c.write(plus_auth(key, nonce_of(challenge->substr(4)), &cb, proof::kMechanismPlus))) {
      return "auth not sent";
    }
    auto welcome = c.read_frame_bytes();
    if (!welcome || welcome->find(R"("type":"welcome")") == std::string::npos) return "no welcome";
    if (!c.write(requests)) return "requests not sent";
    std::string out;
    for (int i = 0; i < 5; ++i) {
      auto f = c.read_frame_bytes();
      if (!f) return out + "<closed>";
      out += *f;
      // The response's own payload member comes last (describe's result also names
      // "payload" for each operation, as a string).
      auto p = f->rfind(R"("payload":)");
      if (p != std::string::npos && std::isdigit(static_cast<unsigned char>((*f)[p + 10]))) {
        auto body = c.read_exact(std::stoull(f->substr(p + 10)));
        if (!body) return out + "<short payload>";
        out += *body;
      }
    }
    return out;
  };
  const std::string whole = run(false);
  ASSERT_NE(whole.find(R"("id":5)"), std::string::npos) << whole;
  ASSERT_NE(whole.find(std::string(3000, 'q')), std::string::npos);
  // The second run uploads s/two.txt again: remove the first run's copy so the upload's
  // response is the same.
  {
    auto c = client::Client::connect(tls_options("admin", key));
    ASSERT_TRUE(c) << c.error().message;
    auto rm = (*c)->call("remove", R"({"path":"s/two.txt"})");
    ASSERT_TRUE(rm && rm->ok) << ok_result(rm);
  }
  const std::size_t whole_sends = sends;
  const std::string split = run(true);
  // Every ciphertext byte in its own send(): well over a thousand of them (ClientHello,
  // Finished, the auth frame and about 1 KiB of requests, sealed).
  EXPECT_GT(sends, 1000u);
  EXPECT_LT(whole_sends, 20u);
  EXPECT_EQ(split.size(), whole.size());
  EXPECT_TRUE(split == whole) << "whole:\n" << whole << "\nsplit:\n" << split;
}

// VmRSS of a process in bytes, from /proc/<pid>/status (VmRSS or VmHWM).
std::uint64_t proc_status_bytes(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1)) * 1024;
  }
  return 0;
}

// A large upload and download over TLS: intact (SHA-256 both ways) with the server's
// memory bounded (RSS growth < 64 MiB). 256 MiB in ctest; OPS_TLS_LARGE_TEST_MIB=1024 for
// the 1 GiB run (scripts/tls-large).
TEST_F(TlsMoreTest, LargeTransferOverTlsWithBoundedServerMemory) {
  std::uint64_t mib = 256;
  if (const char* env = std::getenv("OPS_TLS_LARGE_TEST_MIB")) {
    mib = std::strtoull(env, nullptr, 10);
  }
  const std::uint64_t size = mib << 20;
  start();
  TempDir local;
  const fs::path source = local.path() / "source.bin";
  std::string want_sum;
  {
    int fd = ::open(source.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    EVP_MD_CTX* sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(sha, EVP_sha256(), nullptr);
    std::vector<std::uint64_t> block(1 << 17);  // 1 MiB, xorshift: incompressible
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    for (std::uint64_t done = 0; done < size; done += 1 << 20) {
      for (auto& w : block) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w = x;
      }
      ASSERT_EQ(::write(fd, block.data(), 1 << 20), 1 << 20);
      EVP_DigestUpdate(sha, block.data(), 1 << 20);
    }
    ::close(fd);
    unsigned char d[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(sha, d, &n);
    EVP_MD_CTX_free(sha);
    want_sum = proof::to_hex(d, n);
  }
  auto conn = client::Client::connect(tls_options("admin", server_->admin_key()));
  ASSERT_TRUE(conn) << conn.error().message;
  client::Client& c = **conn;
  ASSERT_TRUE(c.call("upload", R"({"path":"warm"})", std::string(4 << 20, 'w'))->ok);
  std::string warm;
  ASSERT_TRUE(c.call_collect("download", R"({"path":"warm"})", warm)->ok);
  const std::uint64_t baseline = proc_status_bytes(server_->pid(), "VmRSS");
  ASSERT_GT(baseline, 0u);

  int in = ::open(source.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(in, 0);
  auto t0 = std::chrono::steady_clock::now();
  auto up =
      c.call_fd("upload", R"({"path":"big/one.bin","sha256":")" + want_sum + R"("})", in, size);
  auto t1 = std::chrono::steady_clock::now();
  ::close(in);
  ASSERT_TRUE(up && up->ok) << ok_result(up);
  std::uint64_t peak = proc_status_bytes(server_->pid(), "VmRSS");

  auto down = c.call("download", R"({"path":"big/one.bin"})");
  ASSERT_TRUE(down && down->ok) << ok_result(down);
  ASSERT_EQ(down->payload_size, size);
  EVP_MD_CTX* sha = EVP_MD_CTX_new();
  EVP_DigestInit_ex(sha, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  int samples = 0;
  for (std::uint64_t left = size; left > 0;) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), left));
    ASSERT_TRUE(c.read_payload(buf.data(), n).ok());
    EVP_DigestUpdate(sha, buf.data(), n);
    left -= n;
    if (++samples % 16 == 0) peak = std::max(peak, proc_status_bytes(server_->pid(), "VmRSS"));
  }
  auto t2 = std::chrono::steady_clock::now();
  unsigned char d[32];
  unsigned int n = 0;
  EVP_DigestFinal_ex(sha, d, &n);
  EVP_MD_CTX_free(sha);
  EXPECT_EQ(proof::to_hex(d, n), want_sum);
  peak = std::max(peak, proc_status_bytes(server_->pid(), "VmRSS"));
  const std::uint64_t hwm = proc_status_bytes(server_->pid(), "VmHWM");

  auto rate = [&](auto d) {
    return static_cast<double>(size) / (1 << 20) / std::chrono::duration<double>(d).count();
  };
  std::cout << "[ tls large ] " << mib << " MiB over TLS: upload " << rate(t1 - t0)
            << " MiB/s, download " << rate(t2 - t1) << " MiB/s; server VmRSS baseline "
            << baseline / 1024 << " KiB, peak sampled " << peak / 1024 << " KiB, VmHWM "
            << hwm / 1024 << " KiB\n";
  constexpr std::uint64_t kLimit = 64ull << 20;
  EXPECT_LT(peak - std::min(peak, baseline), kLimit)
      << "server memory grew by " << (peak - baseline) / (1 << 20) << " MiB";
  EXPECT_LT(hwm - std::min(hwm, baseline), kLimit)
      << "server peak grew by " << (hwm - baseline) / (1 << 20) << " MiB";
  EXPECT_EQ(fs::file_size(server_->storage_dir() / "admin/big/one.bin"), size);
}

}  // namespace
}  // namespace ops::test
