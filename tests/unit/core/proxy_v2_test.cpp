// PROXY protocol v2 (§8): good headers of every supported kind, and malformed ones.
#include "net/proxy_v2.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cstdint>
#include <vector>

namespace ops::core {
namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes header(std::uint8_t ver_cmd, std::uint8_t fam, const Bytes& body) {
  Bytes h = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
  h.push_back(ver_cmd);
  h.push_back(fam);
  h.push_back(static_cast<std::uint8_t>(body.size() >> 8));
  h.push_back(static_cast<std::uint8_t>(body.size() & 0xFF));
  h.insert(h.end(), body.begin(), body.end());
  return h;
}

Bytes tcp4_body() {
  // 192.0.2.7:51234 -> 198.51.100.1:443
  return {192, 0, 2, 7, 198, 51, 100, 1, 0xC8, 0x22, 0x01, 0xBB};
}

Bytes tcp6_body() {
  Bytes b(36, 0);
  b[0] = 0x20;  // 2001:db8::1
  b[1] = 0x01;
  b[2] = 0x0d;
  b[3] = 0xb8;
  b[15] = 0x01;
  b[31] = 0x02;
  b[32] = 0x00;  // port 80
  b[33] = 0x50;
  b[34] = 0x01;
  b[35] = 0xBB;
  return b;
}

TEST(ProxyV2, Tcp4GivesTheSourceAddress) {
  auto r = proxy_v2::parse(header(0x21, 0x11, tcp4_body()));
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(**r, "192.0.2.7:51234");
}

TEST(ProxyV2, Tcp6GivesTheSourceAddress) {
  auto r = proxy_v2::parse(header(0x21, 0x21, tcp6_body()));
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(**r, "[2001:db8::1]:80");
}

TEST(ProxyV2, TlvsAfterTheAddressesAreSkipped) {
  Bytes body = tcp4_body();
  // PP2_TYPE_ALPN "h2" and a PP2_TYPE_NOOP of 3 bytes.
  const Bytes tlvs = {0x01, 0x00, 0x02, 'h', '2', 0x04, 0x00, 0x03, 0, 0, 0};
  body.insert(body.end(), tlvs.begin(), tlvs.end());
  auto r = proxy_v2::parse(header(0x21, 0x11, body));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->value(), "192.0.2.7:51234");
}

TEST(ProxyV2, LocalAndUnspecMeanTheRealPeer) {
  auto local = proxy_v2::parse(header(0x20, 0x00, {}));
  ASSERT_TRUE(local) << local.error().message;
  EXPECT_FALSE(local->has_value());
  // LOCAL with an address block: the block is ignored.
  auto local_with = proxy_v2::parse(header(0x20, 0x11, tcp4_body()));
  ASSERT_TRUE(local_with);
  EXPECT_FALSE(local_with->has_value());
  auto unspec = proxy_v2::parse(header(0x21, 0x00, {1, 2, 3}));
  ASSERT_TRUE(unspec);
  EXPECT_FALSE(unspec->has_value());
}

TEST(ProxyV2, FixedPartGivesTheLengthThatFollows) {
  Bytes h = header(0x21, 0x11, tcp4_body());
  auto n = proxy_v2::parse_fixed(std::span<const std::uint8_t, 16>(h.data(), 16));
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 12u);
}

TEST(ProxyV2, MalformedHeadersAreRefused) {
  Bytes good = header(0x21, 0x11, tcp4_body());
  std::vector<std::pair<const char*, Bytes>> cases;
  Bytes sig = good;
  sig[5] ^= 0xFF;
  cases.emplace_back("signature", sig);
  cases.emplace_back("version 1", header(0x11, 0x11, tcp4_body()));
  cases.emplace_back("version 3", header(0x31, 0x11, tcp4_body()));
  cases.emplace_back("command 2", header(0x22, 0x11, tcp4_body()));
  cases.emplace_back("family 4", header(0x21, 0x41, tcp4_body()));
  cases.emplace_back("protocol 3", header(0x21, 0x13, tcp4_body()));
  cases.emplace_back("tcp4 block too short", header(0x21, 0x11, Bytes(11, 0)));
  cases.emplace_back("tcp6 block too short", header(0x21, 0x21, Bytes(35, 0)));
  cases.emplace_back("udp", header(0x21, 0x12, tcp4_body()));
  cases.emplace_back("unix", header(0x21, 0x31, Bytes(216, 0)));
  cases.emplace_back("too long", header(0x21, 0x11, Bytes(proxy_v2::kMaxBodyBytes + 1, 0)));
  Bytes truncated = good;
  truncated.pop_back();
  cases.emplace_back("shorter than its length", truncated);
  Bytes longer = good;
  longer.push_back(0);
  cases.emplace_back("longer than its length", longer);
  cases.emplace_back("under 16 bytes", Bytes(good.begin(), good.begin() + 15));
  cases.emplace_back("empty", Bytes{});
  // The PROXY v1 text form and a plain OPS/1 frame are not v2 headers.
  std::string v1 = "PROXY TCP4 192.0.2.7 198.51.100.1 51234 443\r\n";
  cases.emplace_back("v1 text", Bytes(v1.begin(), v1.end()));
  cases.emplace_back("OPS/1 frame", Bytes{0,   0,   0,   20,  '{', '"', 't', 'y', 'p', 'e',
                                          '"', ':', '"', 'a', 'u', 't', 'h', '"', '}', ' '});
  for (const auto& [name, bytes] : cases) {
    SCOPED_TRACE(name);
    auto r = proxy_v2::parse(bytes);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::bad_frame);
  }
}

TEST(ProxyV2, ReadTakesExactlyTheHeaderFromTheSocket) {
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::address_v4::loopback(), 0});
  asio::ip::tcp::socket client(io);
  client.connect(acceptor.local_endpoint());
  asio::ip::tcp::socket server = acceptor.accept();

  Bytes bytes = header(0x21, 0x11, tcp4_body());
  const std::string after = "after the header";
  bytes.insert(bytes.end(), after.begin(), after.end());
  asio::write(client, asio::buffer(bytes));

  std::optional<Result<std::optional<std::string>>> got;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { got.emplace(co_await proxy_v2::read_proxy_v2(server)); },
      asio::detached);
  io.run();
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->value(), "192.0.2.7:51234");
  // Nothing past the header was consumed.
  std::string rest(after.size(), '\0');
  asio::read(server, asio::buffer(rest));
  EXPECT_EQ(rest, after);
}

TEST(ProxyV2, ReadRefusesGarbageAndEarlyClose) {
  namespace asio = boost::asio;
  for (bool garbage : {true, false}) {
    asio::io_context io;
    asio::ip::tcp::acceptor acceptor(io, {asio::ip::address_v4::loopback(), 0});
    asio::ip::tcp::socket client(io);
    client.connect(acceptor.local_endpoint());
    asio::ip::tcp::socket server = acceptor.accept();
    if (garbage) {
      asio::write(client, asio::buffer(std::string(16, 'x')));
    } else {
      asio::write(client, asio::buffer(std::string("\r\n\r\n")));
      client.close();
    }
    std::optional<Result<std::optional<std::string>>> got;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> { got.emplace(co_await proxy_v2::read_proxy_v2(server)); },
        asio::detached);
    io.run();
    ASSERT_TRUE(got);
    ASSERT_FALSE(*got);
    EXPECT_EQ(got->error().code, garbage ? ErrorCode::bad_frame : ErrorCode::unavailable);
  }
}

}  // namespace
}  // namespace ops::core
