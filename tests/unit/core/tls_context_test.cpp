// §8: the server's TLS context refuses unusable files with a clear message, and the
// "tls" block of server.json is parsed strictly.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "config/config.hpp"
#include "test_pki.hpp"
#include "tls/server_context.hpp"

namespace ops::core {
namespace {

namespace fs = std::filesystem;

class TlsContextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ops-tls-ctx-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    pki_ = std::make_unique<test::TestPki>(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  TlsSettings settings(const test::CertFiles& files) {
    TlsSettings s;
    s.listen_host = "127.0.0.1";
    s.cert = files.cert;
    s.key = files.key;
    return s;
  }
  std::string error_of(const TlsSettings& s) {
    auto ctx = make_server_tls_context(s);
    if (ctx) return "";
    return ctx.error().message;
  }

  fs::path dir_;
  std::unique_ptr<test::TestPki> pki_;
};

TEST_F(TlsContextTest, ValidCertificateAndKeyAreAccepted) {
  auto files = pki_->issue("server");
  auto ctx = make_server_tls_context(settings(files));
  ASSERT_TRUE(ctx) << ctx.error().message;
  SSL_CTX* native = (*ctx)->native_handle();
  EXPECT_EQ(SSL_CTX_get_min_proto_version(native), TLS1_3_VERSION);
  const auto options = SSL_CTX_get_options(native);
  EXPECT_TRUE(options & SSL_OP_NO_COMPRESSION);
  EXPECT_TRUE(options & SSL_OP_NO_RENEGOTIATION);
  EXPECT_TRUE(options & SSL_OP_NO_TICKET);
  EXPECT_FALSE(options & SSL_OP_NO_EXTENDED_MASTER_SECRET);
  EXPECT_EQ(SSL_CTX_get_max_early_data(native), 0u);
  EXPECT_EQ(SSL_CTX_get_verify_mode(native), SSL_VERIFY_NONE);
}

TEST_F(TlsContextTest, Tls12IsOnlyAllowedWhenAskedAndThenOnlyEcdheAead) {
  auto files = pki_->issue("server", {}, /*chain=*/true);
  TlsSettings s = settings(files);
  s.min_version = TlsMinVersion::tls1_2;
  auto ctx = make_server_tls_context(s);
  ASSERT_TRUE(ctx) << ctx.error().message;
  SSL_CTX* native = (*ctx)->native_handle();
  EXPECT_EQ(SSL_CTX_get_min_proto_version(native), TLS1_2_VERSION);
  SSL* ssl = SSL_new(native);
  ASSERT_NE(ssl, nullptr);
  STACK_OF(SSL_CIPHER)* ciphers = SSL_get_ciphers(ssl);
  ASSERT_GT(sk_SSL_CIPHER_num(ciphers), 0);
  for (int i = 0; i < sk_SSL_CIPHER_num(ciphers); ++i) {
    const SSL_CIPHER* c = sk_SSL_CIPHER_value(ciphers, i);
    SCOPED_TRACE(SSL_CIPHER_get_name(c));
    if (SSL_CIPHER_get_kx_nid(c) == NID_kx_any) continue;  // TLS 1.3 suites: all AEAD
    EXPECT_EQ(SSL_CIPHER_get_kx_nid(c), NID_kx_ecdhe);
    EXPECT_TRUE(SSL_CIPHER_is_aead(c));
  }
  SSL_free(ssl);
}

TEST_F(TlsContextTest, MissingFilesAreNamed) {
  auto files = pki_->issue("server");
  TlsSettings s = settings(files);
  s.cert = dir_ / "nope.crt";
  std::string e = error_of(s);
  EXPECT_NE(e.find("nope.crt"), std::string::npos) << e;
  EXPECT_NE(e.find("no such file"), std::string::npos) << e;
  s = settings(files);
  s.key = dir_ / "nope.key";
  e = error_of(s);
  EXPECT_NE(e.find("nope.key"), std::string::npos) << e;
  s = settings(files);
  s.client_ca = dir_ / "nope-ca.pem";
  e = error_of(s);
  EXPECT_NE(e.find("nope-ca.pem"), std::string::npos) << e;
}

TEST_F(TlsContextTest, UnreadableFileIsNamed) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads any file";
  auto files = pki_->issue("server");
  ::chmod(files.cert.c_str(), 0);
  std::string e = error_of(settings(files));
  EXPECT_NE(e.find(files.cert.string()), std::string::npos) << e;
  EXPECT_NE(e.find("cannot read"), std::string::npos) << e;
}

TEST_F(TlsContextTest, KeyReadableByOthersIsRefused) {
  auto files = pki_->issue("server");
  for (mode_t mode : {0644, 0640, 0604, 0660}) {
    SCOPED_TRACE(mode);
    ASSERT_EQ(::chmod(files.key.c_str(), mode), 0);
    std::string e = error_of(settings(files));
    EXPECT_NE(e.find("chmod 600"), std::string::npos) << e;
    EXPECT_NE(e.find(files.key.string()), std::string::npos) << e;
  }
  ASSERT_EQ(::chmod(files.key.c_str(), 0400), 0);
  EXPECT_EQ(error_of(settings(files)), "");
}

TEST_F(TlsContextTest, KeyThatDoesNotMatchIsRefused) {
  auto files = pki_->issue("server");
  TlsSettings s = settings(files);
  s.key = pki_->stray_key("other");
  std::string e = error_of(s);
  EXPECT_NE(e.find("does not match"), std::string::npos) << e;
}

TEST_F(TlsContextTest, ExpiredAndNotYetValidCertificatesAreRefused) {
  test::CertSpec expired;
  expired.not_before_seconds = -10 * 86400;
  expired.not_after_seconds = -86400;
  std::string e = error_of(settings(pki_->issue("expired", expired)));
  EXPECT_NE(e.find("has expired"), std::string::npos) << e;

  test::CertSpec future;
  future.not_before_seconds = 86400;
  future.not_after_seconds = 10 * 86400;
  e = error_of(settings(pki_->issue("future", future)));
  EXPECT_NE(e.find("not valid yet"), std::string::npos) << e;
}

TEST_F(TlsContextTest, NotPemIsRefused) {
  auto files = pki_->issue("server");
  std::ofstream(files.cert) << "not a certificate\n";
  std::string e = error_of(settings(files));
  EXPECT_NE(e.find(files.cert.string()), std::string::npos) << e;
}

TEST_F(TlsContextTest, ClientCaRequiresClientCertificates) {
  auto files = pki_->issue("server");
  TlsSettings s = settings(files);
  s.client_ca = pki_->ca_file();
  auto ctx = make_server_tls_context(s);
  ASSERT_TRUE(ctx) << ctx.error().message;
  EXPECT_EQ(SSL_CTX_get_verify_mode((*ctx)->native_handle()),
            SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
}

// --- the "tls" block of server.json ---

class TlsConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ops-tls-cfg-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    std::ofstream(dir_ / "ops.json") << R"({"plugin_dir": "p", "operations": {}})";
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result<Config> load(const std::string& members, const ConfigOverrides& o = {}) {
    std::ofstream(dir_ / "server.json")
        << "{\"ops_config\": \"" << (dir_ / "ops.json").string() << "\"" << members << "}\n";
    return load_config(dir_ / "server.json", o);
  }

  fs::path dir_;
};

TEST_F(TlsConfigTest, FullBlockIsParsed) {
  auto c = load(R"(, "proxy_protocol": true, "tls": {"listen": "0.0.0.0:9443", "cert": "a.crt",
      "key": "a.key", "client_ca": "ca.pem", "min_version": "1.2", "channel_binding": "off",
      "proxy_protocol": true, "handshake_threads": 3})");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->tls);
  EXPECT_TRUE(c->proxy_protocol);
  EXPECT_EQ(c->tls->listen_host, "0.0.0.0");
  EXPECT_EQ(c->tls->listen_port, 9443);
  // Relative paths in server.json are taken from its directory.
  EXPECT_EQ(c->tls->cert, dir_ / "a.crt");
  EXPECT_EQ(c->tls->key, dir_ / "a.key");
  EXPECT_EQ(c->tls->client_ca, dir_ / "ca.pem");
  EXPECT_EQ(c->tls->min_version, TlsMinVersion::tls1_2);
  EXPECT_FALSE(c->tls->channel_binding);
  EXPECT_TRUE(c->tls->proxy_protocol);
  EXPECT_EQ(c->tls->handshake_threads, 3u);
}

TEST_F(TlsConfigTest, DefaultsAreStrict) {
  auto c = load(R"(, "tls": {"listen": "127.0.0.1:0", "cert": "a.crt", "key": "a.key"})");
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->tls);
  EXPECT_EQ(c->tls->min_version, TlsMinVersion::tls1_3);
  EXPECT_TRUE(c->tls->channel_binding);
  EXPECT_FALSE(c->tls->proxy_protocol);
  EXPECT_FALSE(c->tls->client_ca);
  EXPECT_EQ(c->tls->handshake_threads, 0u);  // automatic
  EXPECT_FALSE(c->proxy_protocol);
  auto none = load("");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->tls);
}

TEST_F(TlsConfigTest, BadBlocksAreRefusedWithThePlace) {
  struct Case {
    const char* members;
    const char* expect;
  } cases[] = {
      {R"(, "tls": {"listen": "127.0.0.1:1", "cert": "a", "key": "b", "ciphers": "x"})",
       "unknown setting \"ciphers\""},
      {R"(, "tls": {"cert": "a", "key": "b"})", "needs \"listen\""},
      {R"(, "tls": {"listen": "127.0.0.1:1", "key": "b"})", "needs \"cert\""},
      {R"(, "tls": {"listen": "127.0.0.1:1", "cert": "a"})", "needs \"key\""},
      {R"(, "tls": {"listen": "nope", "cert": "a", "key": "b"})", "HOST:PORT"},
      {R"(, "tls": {"listen": "127.0.0.1:1", "cert": "a", "key": "b", "min_version": "1.1"})",
       "\"1.3\" or \"1.2\""},
      {R"(, "tls": {"listen": "127.0.0.1:1", "cert": "a", "key": "b", "channel_binding": true})",
       "non-empty string"},
      {R"(, "tls": {"listen": "127.0.0.1:1", "cert": "a", "key": "b", "channel_binding": "opt"})",
       "\"required\" or \"off\""},
      {R"(, "tls": {"listen": "127.0.0.1:1", "cert": "a", "key": "b", "proxy_protocol": 1})",
       "true or false"},
      {R"(, "tls": {"listen": "127.0.0.1:1", "cert": "a", "key": "b", "handshake_threads": -1})",
       "from 0 (automatic) to 256"},
      {R"(, "tls": {"listen": "127.0.0.1:1", "cert": "a", "key": "b", "handshake_threads": "2"})",
       "from 0 (automatic) to 256"},
      {R"(, "tls": {"listen": "127.0.0.1:1", "cert": "a", "key": "b", "handshake_threads": 257})",
       "from 0 (automatic) to 256"},
      {R"(, "tls": [])", "must be an object"},
      {R"(, "proxy_protocol": "yes")", "true or false"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.members);
    auto r = load(c.members);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find(c.expect), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("server.json:"), std::string::npos) << r.error().message;
  }
}

TEST_F(TlsConfigTest, FlagsOverrideOrCreateTheBlock) {
  ConfigOverrides o;
  o.tls.listen = "127.0.0.1:7443";
  o.tls.cert = "c.crt";
  o.tls.key = "c.key";
  o.tls.client_ca = "ca.pem";
  o.proxy_protocol = true;
  auto c = load("", o);
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(c->tls);
  EXPECT_EQ(c->tls->listen_port, 7443);
  EXPECT_EQ(c->tls->cert, "c.crt");
  EXPECT_EQ(c->tls->client_ca, fs::path("ca.pem"));
  EXPECT_TRUE(c->proxy_protocol);

  ConfigOverrides partial;
  partial.tls.listen = "127.0.0.1:7443";
  auto p = load("", partial);
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message.find("--tls-cert"), std::string::npos);

  ConfigOverrides only_cert;
  only_cert.tls.cert = "d.crt";
  auto d =
      load(R"(, "tls": {"listen": "127.0.0.1:1", "cert": "a.crt", "key": "a.key"})", only_cert);
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->tls->cert, "d.crt");  // a flag: as given (the working directory's)
  EXPECT_EQ(d->tls->key, dir_ / "a.key");
}

}  // namespace
}  // namespace ops::core
