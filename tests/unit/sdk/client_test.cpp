// The client library against a scripted fake server on 127.0.0.1:0: handshake outcomes
// (§2), request encoding, pipelining order (§3), payloads, failures and their classes.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "opserver/client.hpp"
#include "opserver/frame.hpp"
#include "opserver/proof.hpp"

namespace {

using ops::ErrorCode;
using ops::client::Client;
using ops::client::Failure;
using ops::client::Options;

constexpr const char* kKey = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

bool read_n(int fd, void* data, std::size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

void write_n(int fd, const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t w = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (w <= 0) return;
    off += static_cast<std::size_t>(w);
  }
}

std::string read_frame(int fd) {
  unsigned char len[4];
  if (!read_n(fd, len, 4)) return {};
  std::string body(ops::frame::decode_length(len), '\0');
  if (!read_n(fd, body.data(), body.size())) return {};
  return body;
}

void write_frame(int fd, const std::string& json) {
  write_n(fd, ops::frame::encode(json));
}

rapidjson::Document parse(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  return d;
}

// One listening socket; the script runs on the first accepted connection in a thread.
class FakeServer {
 public:
  explicit FakeServer(std::function<void(int)> script) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listen_fd_, 4), 0);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, script = std::move(script)] {
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      script(fd);
      ::close(fd);
    });
  }
  ~FakeServer() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }
  std::uint16_t port() const { return port_; }

 private:
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

ops::proof::Nonce fixed_nonce() {
  ops::proof::Nonce n{};
  for (std::size_t i = 0; i < n.size(); ++i) n[i] = static_cast<std::uint8_t>(i * 7 + 1);
  return n;
}

std::string challenge_json(const ops::proof::Nonce& nonce) {
  return R"({"type":"challenge","protocol":"ops/1","nonce":")" + ops::proof::to_hex(nonce) +
         R"(","mechanisms":["hmac-sha256"]})";
}

// The server side of §2. `proof_key` is the key the server believes in; returns false if
// the client's proof did not verify (then it answered auth_failed).
bool serve_handshake(int fd, const std::string& proof_key = kKey,
                     const std::string& server_key = kKey) {
  const auto nonce = fixed_nonce();
  write_frame(fd, challenge_json(nonce));
  auto auth = parse(read_frame(fd));
  if (!auth.IsObject() || !auth.HasMember("cnonce")) return false;
  EXPECT_STREQ(auth["type"].GetString(), "auth");
  EXPECT_STREQ(auth["mechanism"].GetString(), "hmac-sha256");
  const std::string user = auth["user"].GetString();
  auto cnonce = ops::proof::from_hex<32>(auth["cnonce"].GetString());
  auto proof = ops::proof::from_hex<32>(auth["proof"].GetString());
  EXPECT_TRUE(cnonce && proof);
  EXPECT_NE(*cnonce, nonce);
  if (!ops::proof::equal(*proof, ops::proof::client_proof(proof_key, nonce, *cnonce, user))) {
    write_frame(
        fd, R"({"type":"error","error":{"code":"auth_failed","message":"authentication failed"}})");
    return false;
  }
  auto server = ops::proof::server_proof(server_key, nonce, *cnonce, user);
  write_frame(fd, R"({"type":"welcome","user":")" + user + R"(","proof":")" +
                      ops::proof::to_hex(server) + R"(","server":"opserver/test"})");
  return true;
}

Options options_for(const FakeServer& server) {
  Options o;
  o.port = server.port();
  o.user = "alice";
  o.key = kKey;
  o.timeout = std::chrono::milliseconds(3000);
  return o;
}

TEST(ParseEndpoint, Forms) {
  struct Case {
    const char* text;
    bool ok;
    const char* host;
    std::uint16_t port;
  } cases[] = {
      {"example.org:9000", true, "example.org", 9000},
      {"example.org", true, "example.org", 1234},
      {"[::1]:9001", true, "::1", 9001},
      {"[::1]", true, "::1", 1234},
      {"::1", true, "::1", 1234},
      {"127.0.0.1:1", true, "127.0.0.1", 1},
      {"host:0", false, "", 0},
      {"host:65536", false, "", 0},
      {"host:", false, "", 0},
      {":9000", false, "", 0},
      {"host:9x", false, "", 0},
      {"[::1", false, "", 0},
      {"[::1]x", false, "", 0},
      {"", false, "", 0},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    std::string host;
    std::uint16_t port = 1234;
    auto s = ops::client::parse_endpoint(c.text, host, port);
    EXPECT_EQ(s.ok(), c.ok);
    if (c.ok) {
      EXPECT_EQ(host, c.host);
      EXPECT_EQ(port, c.port);
    }
  }
}

TEST(ValidateObject, StrictLikeTheServer) {
  using ops::client::validate_object;
  EXPECT_TRUE(validate_object(R"({"a":1,"b":{"c":[1,2,{"d":null}]}})").ok());
  EXPECT_TRUE(validate_object(R"(  {}  )").ok());
  EXPECT_FALSE(validate_object("").ok());
  EXPECT_FALSE(validate_object("[]").ok());
  EXPECT_FALSE(validate_object("42").ok());
  EXPECT_FALSE(validate_object(R"("s")").ok());
  EXPECT_FALSE(validate_object(R"({"a":1} x)").ok());
  EXPECT_FALSE(validate_object(R"({"a":1}{})").ok());
  EXPECT_FALSE(validate_object(R"({"a":1,"a":2})").ok());
  EXPECT_FALSE(validate_object(R"({"x":{"a":1,"a":2}})").ok());
  EXPECT_TRUE(validate_object(R"({"x":{"a":1},"y":{"a":2}})").ok());  // same name, other objects
  EXPECT_FALSE(validate_object("{\"a\":\"\xff\"}").ok());
  EXPECT_FALSE(validate_object(R"({"a":"\udc00"})").ok());
  EXPECT_FALSE(validate_object(R"({"a":"\ud800"})").ok());
  EXPECT_TRUE(validate_object(R"({"a":"\ud83d\ude00"})").ok());
  EXPECT_FALSE(validate_object("\xEF\xBB\xBF{}").ok());  // a byte-order mark

  std::string deep = "{\"a\":";
  for (int i = 0; i < 30; ++i) deep += "[";
  deep += "1";
  for (int i = 0; i < 30; ++i) deep += "]";
  deep += "}";
  EXPECT_TRUE(validate_object(deep, 31).ok());
  EXPECT_FALSE(validate_object(deep, 30).ok());
}

TEST(Sha256Fd, MatchesBufferDigest) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  const std::string data = "hello, ops";
  ASSERT_EQ(::write(p[1], data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::close(p[1]);
  auto digest = ops::client::sha256_fd(p[0]);
  ::close(p[0]);
  ASSERT_TRUE(digest);
  EXPECT_EQ(*digest, ops::proof::sha256_hex(data));
}

TEST(ClientHandshake, Succeeds) {
  FakeServer server([](int fd) { serve_handshake(fd); });
  Failure why = Failure::io;
  auto c = Client::connect(options_for(server), &why);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(why, Failure::none);
  EXPECT_EQ((*c)->server_version(), "opserver/test");
  EXPECT_EQ((*c)->user(), "alice");
}

TEST(ClientHandshake, WrongKeyIsAuthFailure) {
  FakeServer server([](int fd) { serve_handshake(fd, "another key"); });
  Failure why = Failure::none;
  auto c = Client::connect(options_for(server), &why);
  ASSERT_FALSE(c);
  EXPECT_EQ(why, Failure::auth);
  EXPECT_EQ(c.error().code, ErrorCode::auth_failed);
}

TEST(ClientHandshake, WrongServerProofIsRefused) {
  // A server that lets anyone in but cannot prove it knows the key.
  FakeServer server([](int fd) { serve_handshake(fd, kKey, "not the key"); });
  Failure why = Failure::none;
  auto c = Client::connect(options_for(server), &why);
  ASSERT_FALSE(c);
  EXPECT_EQ(why, Failure::server_proof);
  EXPECT_NE(c.error().message.find("proof"), std::string::npos);
}

TEST(ClientHandshake, BadChallengesAreProtocolFailures) {
  const std::string bad[] = {
      "not json",
      "[]",
      R"({"type":"challenge","protocol":"ops/2","nonce":")" + std::string(64, 'a') +
          R"(","mechanisms":["hmac-sha256"]})",
      R"({"type":"challenge","protocol":"ops/1","nonce":")" + std::string(64, 'A') +
          R"(","mechanisms":["hmac-sha256"]})",
      R"({"type":"challenge","protocol":"ops/1","nonce":"abcd","mechanisms":["hmac-sha256"]})",
      R"({"type":"challenge","protocol":"ops/1","nonce":")" + std::string(64, 'a') +
          R"(","mechanisms":["plain"]})",
      R"({"type":"hello"})",
  };
  for (const auto& frame : bad) {
    SCOPED_TRACE(frame);
    FakeServer server([&](int fd) {
      write_frame(fd, frame);
      char c;
      ::recv(fd, &c, 1, 0);  // until the client hangs up
    });
    Failure why = Failure::none;
    auto c = Client::connect(options_for(server), &why);
    ASSERT_FALSE(c);
    EXPECT_EQ(why, Failure::protocol);
  }
}

TEST(ClientHandshake, OversizedFrameIsRefusedBeforeAllocation) {
  FakeServer server([](int fd) { write_n(fd, std::string("\x7f\xff\xff\xff", 4)); });
  Failure why = Failure::none;
  auto c = Client::connect(options_for(server), &why);
  ASSERT_FALSE(c);
  EXPECT_EQ(why, Failure::protocol);
}

TEST(ClientHandshake, SilentServerTimesOut) {
  FakeServer server([](int fd) {
    char c;
    ::recv(fd, &c, 1, 0);
  });
  auto o = options_for(server);
  o.timeout = std::chrono::milliseconds(200);
  Failure why = Failure::none;
  auto c = Client::connect(o, &why);
  ASSERT_FALSE(c);
  EXPECT_EQ(why, Failure::io);
  EXPECT_EQ(c.error().code, ErrorCode::timeout);
}

TEST(ClientHandshake, AnotherProtocolsBannerFailsAtOnce) {
  // An SSH server speaks first too; its banner cannot start a challenge frame.
  FakeServer server([](int fd) {
    write_n(fd, "SSH-2.0-OpenSSH_9.2p1\r\n");
    char c;
    ::recv(fd, &c, 1, 0);
  });
  const auto start = std::chrono::steady_clock::now();
  Failure why = Failure::none;
  auto c = Client::connect(options_for(server), &why);
  ASSERT_FALSE(c);
  EXPECT_EQ(why, Failure::protocol);
  EXPECT_NE(c.error().message.find("no OPS/1 challenge: is this an opserver?"), std::string::npos)
      << c.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(ClientHandshake, SilentServerNamesTheLikelyCause) {
  FakeServer server([](int fd) {
    char c;
    ::recv(fd, &c, 1, 0);
  });
  auto o = options_for(server);
  o.timeout = std::chrono::milliseconds(200);
  auto c = Client::connect(o);
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("no OPS/1 challenge: is this an opserver?"), std::string::npos)
      << c.error().message;
}

TEST(ClientRequests, OnFrameSeesEveryHeaderBothWays) {
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    read_frame(fd);
    write_frame(fd, R"({"id":1,"ok":true,"result":{}})");
  });
  auto o = options_for(server);
  std::vector<std::pair<bool, std::string>> seen;
  o.on_frame = [&](bool sent, std::string_view header) { seen.emplace_back(sent, header); };
  auto c = Client::connect(o);
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE((*c)->call("describe"));
  ASSERT_EQ(seen.size(), 5u);  // challenge, auth, welcome, request, response
  EXPECT_FALSE(seen[0].first);
  EXPECT_NE(seen[0].second.find("\"challenge\""), std::string::npos);
  EXPECT_TRUE(seen[1].first);
  EXPECT_NE(seen[1].second.find("\"auth\""), std::string::npos);
  EXPECT_FALSE(seen[2].first);
  EXPECT_TRUE(seen[3].first);
  EXPECT_NE(seen[3].second.find("\"describe\""), std::string::npos);
  EXPECT_FALSE(seen[4].first);
  EXPECT_NE(seen[4].second.find("\"ok\":true"), std::string::npos);
}

TEST(ClientHandshake, ServerClosingIsIo) {
  FakeServer server([](int) {});
  Failure why = Failure::none;
  auto c = Client::connect(options_for(server), &why);
  ASSERT_FALSE(c);
  EXPECT_EQ(why, Failure::io);
}

TEST(ClientConnect, RefusedIsConnectFailure) {
  // A port that was just free: bind, read it, close.
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(s);
  Options o;
  o.port = ntohs(addr.sin_port);
  o.user = "alice";
  o.key = kKey;
  Failure why = Failure::none;
  auto c = Client::connect(o, &why);
  ASSERT_FALSE(c);
  EXPECT_EQ(why, Failure::connect);
  EXPECT_NE(c.error().message.find("cannot connect"), std::string::npos);
}

TEST(ClientRequests, EncodesRequestsAndReadsPayloads) {
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    auto req = parse(read_frame(fd));
    ASSERT_TRUE(req.IsObject());
    EXPECT_EQ(req["id"].GetUint64(), 1u);
    EXPECT_STREQ(req["operate"].GetString(), "upload");
    EXPECT_STREQ(req["args"]["path"].GetString(), "a/b.txt");
    EXPECT_EQ(req["payload"].GetUint64(), 5u);
    EXPECT_FALSE(req.HasMember("user"));
    std::string body(5, '\0');
    ASSERT_TRUE(read_n(fd, body.data(), 5));
    EXPECT_EQ(body, "hello");
    write_frame(fd, R"({"id":1,"ok":true,"result":{"path":"a/b.txt","size":5}})");

    auto req2 = parse(read_frame(fd));
    EXPECT_EQ(req2["id"].GetUint64(), 2u);
    EXPECT_FALSE(req2.HasMember("args"));
    EXPECT_FALSE(req2.HasMember("payload"));
    write_frame(fd, R"({"id":2,"ok":true,"result":{"length":3},"payload":3})");
    write_n(fd, "xyz");

    parse(read_frame(fd));
    write_frame(fd,
                R"({"id":3,"ok":false,"error":{"code":"not_found","message":"no such file: q"}})");
  });
  auto c = Client::connect(options_for(server));
  ASSERT_TRUE(c) << c.error().message;
  auto& client = **c;

  auto r1 = client.call("upload", R"({"path":"a/b.txt"})", "hello");
  ASSERT_TRUE(r1) << r1.error().message;
  EXPECT_TRUE(r1->ok);
  EXPECT_EQ(r1->id, 1u);
  auto result = parse(r1->result_json);
  EXPECT_EQ(result["size"].GetUint64(), 5u);

  std::string payload;
  auto r2 = client.call_collect("download", "", payload);
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_EQ(payload, "xyz");
  EXPECT_EQ(r2->payload_size, 3u);

  auto r3 = client.call("download", R"({"path":"q"})");
  ASSERT_TRUE(r3);
  EXPECT_FALSE(r3->ok);
  EXPECT_EQ(r3->error.code, ErrorCode::not_found);
  EXPECT_EQ(r3->error.message, "no such file: q");
  EXPECT_EQ(client.last_failure(), Failure::none);
  EXPECT_FALSE(client.broken());
}

TEST(ClientRequests, BadArgsAreRefusedBeforeSending) {
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    auto req = parse(read_frame(fd));  // only the valid request arrives
    EXPECT_EQ(req["id"].GetUint64(), 1u);
    write_frame(fd, R"({"id":1,"ok":true,"result":{}})");
  });
  auto c = Client::connect(options_for(server));
  ASSERT_TRUE(c);
  auto& client = **c;
  EXPECT_FALSE(client.send_request("list", "[1]"));
  EXPECT_FALSE(client.send_request("list", R"({"a":1,"a":2})"));
  EXPECT_FALSE(client.send_request("list", "{"));
  EXPECT_FALSE(client.send_request("li\xffst", "{}"));
  EXPECT_FALSE(client.broken());
  auto r = client.call("list", "{}");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->ok);
}

TEST(ClientRequests, PipelinedAnswersComeInOrder) {
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    for (int i = 1; i <= 3; ++i) {
      auto req = parse(read_frame(fd));
      EXPECT_EQ(req["id"].GetUint64(), static_cast<std::uint64_t>(i));
    }
    for (int i = 1; i <= 3; ++i) {
      write_frame(fd, R"({"id":)" + std::to_string(i) + R"(,"ok":true,"result":{"n":)" +
                          std::to_string(i) + "}}");
    }
  });
  auto c = Client::connect(options_for(server));
  ASSERT_TRUE(c);
  auto& client = **c;
  for (int i = 1; i <= 3; ++i) {
    auto id = client.send_request("list", "{}");
    ASSERT_TRUE(id);
    EXPECT_EQ(*id, static_cast<std::uint64_t>(i));
  }
  for (int i = 1; i <= 3; ++i) {
    auto r = client.read_response();
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->id, static_cast<std::uint64_t>(i));
  }
}

TEST(ClientRequests, OutOfOrderAnswerIsAProtocolFailure) {
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    parse(read_frame(fd));
    parse(read_frame(fd));
    write_frame(fd, R"({"id":2,"ok":true,"result":{}})");
  });
  auto c = Client::connect(options_for(server));
  ASSERT_TRUE(c);
  auto& client = **c;
  ASSERT_TRUE(client.send_request("list", ""));
  ASSERT_TRUE(client.send_request("list", ""));
  auto r = client.read_response();
  ASSERT_FALSE(r);
  EXPECT_EQ(client.last_failure(), Failure::protocol);
  EXPECT_TRUE(client.broken());
  EXPECT_FALSE(client.send_request("list", ""));  // unusable from now on
}

TEST(ClientRequests, FatalErrorIsReturnedThenTheConnectionIsUnusable) {
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    parse(read_frame(fd));
    write_frame(fd, R"({"id":null,"ok":false,"error":{"code":"bad_frame","message":"bad"}})");
  });
  auto c = Client::connect(options_for(server));
  ASSERT_TRUE(c);
  auto r = (*c)->call("list", "{}");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->ok);
  EXPECT_FALSE(r->has_id);
  EXPECT_EQ(r->error.code, ErrorCode::bad_frame);
  EXPECT_EQ((*c)->last_failure(), Failure::none);
  EXPECT_TRUE((*c)->broken());
  EXPECT_FALSE((*c)->call("list", "{}"));
}

TEST(ClientRequests, FatalErrorWhileThePayloadIsGoingOutStillBreaksTheConnection) {
  // The same answer, but the server closes while the payload is still being sent: the
  // send fails (EPIPE or ECONNRESET) and the answer is read after the failure. Whichever
  // way the timing goes, a fatal code leaves the connection unusable.
  constexpr std::size_t kSize = 64u << 20;
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    parse(read_frame(fd));
    write_frame(fd, R"({"id":null,"ok":false,"error":{"code":"bad_frame","message":"bad"}})");
    std::string sink(1 << 20, '\0');
    ::recv(fd, sink.data(), sink.size(), 0);  // a little, then close with data unread
  });
  auto c = Client::connect(options_for(server));
  ASSERT_TRUE(c);
  const std::string big(kSize, 'z');
  auto r = (*c)->call("upload", R"({"path":"big"})", big);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->error.code, ErrorCode::bad_frame);
  EXPECT_TRUE((*c)->broken());
  EXPECT_FALSE((*c)->call("list", "{}"));
}

TEST(ClientRequests, UnreadPayloadIsSkippedByTheNextRead) {
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    parse(read_frame(fd));
    parse(read_frame(fd));
    write_frame(fd, R"({"id":1,"ok":true,"result":{},"payload":4})");
    write_n(fd, "abcd");
    write_frame(fd, R"({"id":2,"ok":true,"result":{"second":true}})");
  });
  auto c = Client::connect(options_for(server));
  ASSERT_TRUE(c);
  auto& client = **c;
  ASSERT_TRUE(client.send_request("download", ""));
  ASSERT_TRUE(client.send_request("list", ""));
  auto r1 = client.read_response();
  ASSERT_TRUE(r1);
  EXPECT_EQ(client.payload_pending(), 4u);
  auto r2 = client.read_response();
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_EQ(r2->id, 2u);
  EXPECT_EQ(client.payload_pending(), 0u);
}

TEST(ClientRequests, ShortPayloadIsAnIoFailure) {
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    parse(read_frame(fd));
    write_frame(fd, R"({"id":1,"ok":true,"result":{"length":100},"payload":100})");
    write_n(fd, std::string(40, 'x'));
  });
  auto c = Client::connect(options_for(server));
  ASSERT_TRUE(c);
  auto& client = **c;
  std::string out;
  auto r = client.call_collect("download", "", out);
  ASSERT_FALSE(r);
  EXPECT_EQ(client.last_failure(), Failure::io);
}

TEST(ClientRequests, EarlyAnswerDuringALargePayloadIsKept) {
  // The server answers before the payload is in and discards the rest (§3); the
  // client must neither deadlock nor lose the answer.
  constexpr std::size_t kSize = 16u << 20;
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    parse(read_frame(fd));
    write_frame(fd,
                R"({"id":1,"ok":false,"error":{"code":"payload_too_large","message":"too big"}})");
    std::string sink(1 << 16, '\0');
    std::size_t left = kSize;
    while (left > 0) {
      ssize_t r = ::recv(fd, sink.data(), std::min(sink.size(), left), 0);
      if (r <= 0) return;
      left -= static_cast<std::size_t>(r);
    }
  });
  auto c = Client::connect(options_for(server));
  ASSERT_TRUE(c);
  const std::string big(kSize, 'z');
  auto r = (*c)->call("upload", R"({"path":"big"})", big);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->error.code, ErrorCode::payload_too_large);
}

TEST(ClientRequests, EarlyAnswerThenCloseStillReportsTheAnswer) {
  // §3: past its discard limit the server "answers and closes". The send then fails,
  // but the answer is the news, not the broken pipe.
  constexpr std::size_t kSize = 64u << 20;
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    parse(read_frame(fd));
    write_frame(fd,
                R"({"id":1,"ok":false,"error":{"code":"payload_too_large","message":"too big"}})");
    std::string sink(1 << 20, '\0');
    ::recv(fd, sink.data(), sink.size(), 0);  // a little, then close with data unread
  });
  auto c = Client::connect(options_for(server));
  ASSERT_TRUE(c);
  const std::string big(kSize, 'z');
  auto r = (*c)->call("upload", R"({"path":"big"})", big);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->error.code, ErrorCode::payload_too_large);
  EXPECT_TRUE((*c)->broken());  // the payload never went out whole
}

TEST(ClientRequests, PayloadFromFdThatEndsEarlyIsLocal) {
  FakeServer server([](int fd) {
    ASSERT_TRUE(serve_handshake(fd));
    parse(read_frame(fd));
    char c;
    while (::recv(fd, &c, 1, 0) > 0) {
    }
  });
  auto c = Client::connect(options_for(server));
  ASSERT_TRUE(c);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ASSERT_EQ(::write(p[1], "abc", 3), 3);
  ::close(p[1]);
  auto r = (*c)->call_fd("upload", R"({"path":"x"})", p[0], 10);
  ::close(p[0]);
  ASSERT_FALSE(r);
  EXPECT_EQ((*c)->last_failure(), Failure::local);
  EXPECT_TRUE((*c)->broken());
}

}  // namespace
