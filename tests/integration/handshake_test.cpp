// §2 and §7 handshake behaviour against the real server over TCP.
#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <thread>

#include "harness/server_process.hpp"
#include "opserver/proof.hpp"

namespace ops::test {
namespace {

std::string auth_json(const std::string& user, const std::string& cnonce_hex,
                      const std::string& proof_hex, const std::string& mechanism = "hmac-sha256",
                      const std::string& type = "auth") {
  return R"({"type":")" + type + R"(","mechanism":")" + mechanism + R"(","user":")" + user +
         R"(","cnonce":")" + cnonce_hex + R"(","proof":")" + proof_hex + "\"}";
}

const std::string kAuthFailed = frame_of(
    R"({"type":"error","error":{"code":"auth_failed","message":"authentication failed"}})");

class HandshakeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess(ServerOptions{"", R"("handshake_timeout_ms": 1500)"});
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  // Sends one auth frame built by `make` from the nonce and returns the raw reply frame.
  template <class Make>
  std::string attempt(Make make) {
    RawConnection c(server_->port());
    std::string nonce_hex = c.read_challenge();
    EXPECT_EQ(nonce_hex.size(), 64u);
    c.send(frame_of(make(*proof::from_hex<32>(nonce_hex))));
    auto reply = c.read_frame_bytes();
    EXPECT_TRUE(c.closed_within(std::chrono::seconds(3))) << "auth failure must close";
    return reply.value_or("<none>");
  }
  static ServerProcess* server_;
};
ServerProcess* HandshakeTest::server_ = nullptr;

TEST_F(HandshakeTest, ChallengeArrivesUnpromptedWithAFreshNonce) {
  std::set<std::string> nonces;
  for (int i = 0; i < 20; ++i) {
    RawConnection c(server_->port());
    auto challenge = c.read_frame(std::chrono::milliseconds(1000));
    ASSERT_TRUE(challenge);
    std::regex shape(
        R"(\{"type":"challenge","protocol":"ops/1","nonce":"[0-9a-f]{64}","mechanisms":\["hmac-sha256"\]\})");
    EXPECT_TRUE(std::regex_match(*challenge, shape)) << *challenge;
    nonces.insert(*challenge);
  }
  EXPECT_EQ(nonces.size(), 20u);
}

TEST_F(HandshakeTest, WelcomeCarriesAServerProofTheClientCanCheck) {
  RawConnection c(server_->port());
  std::string key = server_->admin_key();
  auto nonce = *proof::from_hex<32>(c.read_challenge());
  auto cnonce = proof::random_nonce();
  c.send(frame_of(auth_json("admin", proof::to_hex(cnonce),
                            proof::to_hex(proof::client_proof(key, nonce, cnonce, "admin")))));
  auto welcome = c.read_frame();
  ASSERT_TRUE(welcome);
  std::string expected = proof::to_hex(proof::server_proof(key, nonce, cnonce, "admin"));
  EXPECT_NE(welcome->find(R"("type":"welcome")"), std::string::npos);
  EXPECT_NE(welcome->find(R"("user":"admin")"), std::string::npos);
  EXPECT_NE(welcome->find("\"proof\":\"" + expected + "\""), std::string::npos) << *welcome;
  EXPECT_NE(welcome->find(R"("server":"opserver/)"), std::string::npos);
}

TEST_F(HandshakeTest, EveryFailureGetsTheSameBytes) {
  std::string key = server_->admin_key();
  auto good = [&](const proof::Nonce& nonce, const std::string& user, const std::string& k) {
    auto cn = proof::random_nonce();
    return auth_json(user, proof::to_hex(cn),
                     proof::to_hex(proof::client_proof(k, nonce, cn, user)));
  };
  std::vector<std::function<std::string(const proof::Nonce&)>> cases = {
      [&](auto& n) { return good(n, "nobody", key); },       // unknown user
      [&](auto& n) { return good(n, "admin", key + "x"); },  // wrong key
      [&](auto& n) { return good(n, "Admin", key); },        // case matters
      [&](auto& n) {                                         // proof for admin, user bob
        auto cn = proof::random_nonce();
        return auth_json("bob", proof::to_hex(cn),
                         proof::to_hex(proof::client_proof(key, n, cn, "admin")));
      },
      [&](auto& n) {  // reflection: the server label
        auto cn = proof::random_nonce();
        return auth_json("admin", proof::to_hex(cn),
                         proof::to_hex(proof::server_proof(key, n, cn, "admin")));
      },
      [&](auto& n) {  // cnonce equal to nonce
        return auth_json("admin", proof::to_hex(n),
                         proof::to_hex(proof::client_proof(key, n, n, "admin")));
      },
      [&](auto& n) {  // uppercase proof
        auto cn = proof::random_nonce();
        std::string p = proof::to_hex(proof::client_proof(key, n, cn, "admin"));
        for (char& ch : p) ch = static_cast<char>(std::toupper(ch));
        return auth_json("admin", proof::to_hex(cn), p);
      },
      [&](auto& n) {  // wrong mechanism
        auto cn = proof::random_nonce();
        return auth_json("admin", proof::to_hex(cn),
                         proof::to_hex(proof::client_proof(key, n, cn, "admin")), "hmac-sha1");
      },
      [&](auto& n) {  // wrong type spelling
        auto cn = proof::random_nonce();
        return auth_json("admin", proof::to_hex(cn),
                         proof::to_hex(proof::client_proof(key, n, cn, "admin")), "hmac-sha256",
                         "Auth");
      },
      [&](auto&) { return auth_json("admin", std::string(62, 'a'), std::string(64, 'b')); },
      [&](auto&) { return auth_json("admin", std::string(64, 'a'), std::string(63, 'b')); },
      [&](auto&) { return auth_json("admin", std::string(64, 'a'), std::string(64, 'g')); },
      [&](auto&) { return std::string(R"({"type":"auth","user":7})"); },
      [&](auto&) { return std::string(R"({"id":1,"operate":"describe"})"); },
      [&](auto&) { return std::string("[1,2]"); },
      [&](auto&) { return std::string("{not json"); },
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(attempt(cases[i]), kAuthFailed) << "case " << i;
  }
}

TEST_F(HandshakeTest, AnAuthFrameOverFourKibIsRefused) {
  RawConnection c(server_->port());
  c.read_challenge();
  std::string big = R"({"type":"auth","pad":")" + std::string(5000, 'x') + "\"}";
  c.send(frame_of(big));
  EXPECT_EQ(c.read_frame_bytes().value_or(""), kAuthFailed);
  EXPECT_TRUE(c.closed_within(std::chrono::seconds(3)));
}

TEST_F(HandshakeTest, ReplayedAuthFailsOnAnotherConnection) {
  std::string key = server_->admin_key();
  RawConnection first(server_->port());
  auto nonce = *proof::from_hex<32>(first.read_challenge());
  auto cn = proof::random_nonce();
  std::string auth = auth_json("admin", proof::to_hex(cn),
                               proof::to_hex(proof::client_proof(key, nonce, cn, "admin")));
  first.send(frame_of(auth));
  ASSERT_TRUE(first.read_frame());
  RawConnection second(server_->port());
  second.read_challenge();
  second.send(frame_of(auth));
  EXPECT_EQ(second.read_frame_bytes().value_or(""), kAuthFailed);
}

TEST_F(HandshakeTest, SilentClientIsClosedAtTheHandshakeDeadline) {
  RawConnection c(server_->port());
  ASSERT_TRUE(c.read_frame());
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.closed_within(std::chrono::seconds(5)));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GT(took, std::chrono::milliseconds(1000));
  EXPECT_LT(took, std::chrono::milliseconds(3500));
}

TEST_F(HandshakeTest, TrickledBytesDoNotExtendTheDeadline) {
  RawConnection c(server_->port());
  c.read_challenge();
  std::string auth = frame_of(auth_json("admin", std::string(64, 'a'), std::string(64, 'b')));
  auto start = std::chrono::steady_clock::now();
  bool closed = false;
  for (std::size_t i = 0; i < auth.size() - 1 && !closed; ++i) {
    if (!c.send(auth.substr(i, 1))) break;
    closed = c.closed_within(std::chrono::milliseconds(100));
  }
  if (!closed) closed = c.closed_within(std::chrono::seconds(3));
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(3500));
}

TEST_F(HandshakeTest, SecondAuthAfterWelcomeIsBadRequestAndConnectionStaysUsable) {
  RawConnection c(server_->port());
  ASSERT_TRUE(c.authenticate("admin", server_->admin_key()));
  c.send(frame_of(auth_json("admin", std::string(64, 'a'), std::string(64, 'b'))));
  auto reply = c.read_frame();
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->find(R"("code":"bad_request")"), std::string::npos) << *reply;
  c.send(frame_of(request_json(2, "describe")));
  auto describe = c.read_frame();
  ASSERT_TRUE(describe);
  EXPECT_NE(describe->find(R"("id":2,"ok":true)"), std::string::npos) << *describe;
}

TEST(HandshakeCap, UnauthenticatedConnectionsBeyondTheCapAreClosedAtOnce) {
  ServerProcess server(ServerOptions{"", R"("max_unauthenticated": 4)"});
  std::vector<std::unique_ptr<RawConnection>> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(std::make_unique<RawConnection>(server.port()));
    ASSERT_TRUE(held.back()->read_frame());
  }
  RawConnection extra(server.port());
  EXPECT_TRUE(extra.closed_within(std::chrono::seconds(2)));
  held.clear();
  // Once they are gone (the server notices the closes asynchronously), a client gets in.
  bool in = false;
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (!in && std::chrono::steady_clock::now() < give_up) {
    in = client::Client::connect(server.options("admin", server.admin_key())).ok();
  }
  EXPECT_TRUE(in);
}

}  // namespace
}  // namespace ops::test
