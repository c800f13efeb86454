#include "net/proxy_v2.hpp"

#include <arpa/inet.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstring>
#include <vector>

#include "net/await_tuple.hpp"

namespace ops::core::proxy_v2 {
namespace asio = boost::asio;

namespace {
constexpr std::array<std::uint8_t, 12> kSignature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                     0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr std::uint8_t kVersion2 = 0x20;
constexpr std::uint8_t kCommandLocal = 0x0;
constexpr std::uint8_t kCommandProxy = 0x1;
constexpr std::uint8_t kFamilyUnspec = 0x0;
constexpr std::uint8_t kFamilyInet = 0x1;
constexpr std::uint8_t kFamilyInet6 = 0x2;
constexpr std::uint8_t kFamilyUnix = 0x3;
constexpr std::uint8_t kProtoUnspec = 0x0;
constexpr std::uint8_t kProtoStream = 0x1;
constexpr std::uint8_t kProtoDgram = 0x2;
constexpr std::size_t kInetBlock = 12;   // src 4, dst 4, src port 2, dst port 2
constexpr std::size_t kInet6Block = 36;  // src 16, dst 16, src port 2, dst port 2

Error malformed(const std::string& why) {
  return fail(ErrorCode::bad_frame, "not a valid PROXY v2 header: " + why);
}

std::uint16_t be16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}

}  // namespace

Result<std::size_t> parse_fixed(std::span<const std::uint8_t, kFixedBytes> fixed) {
  if (std::memcmp(fixed.data(), kSignature.data(), kSignature.size()) != 0) {
    return malformed("no PROXY v2 signature");
  }
  const std::uint8_t ver_cmd = fixed[12];
  if ((ver_cmd & 0xF0) != kVersion2) return malformed("version is not 2");
  const std::uint8_t command = ver_cmd & 0x0F;
  if (command != kCommandLocal && command != kCommandProxy) return malformed("unknown command");
  const std::uint8_t family = fixed[13] >> 4;
  const std::uint8_t protocol = fixed[13] & 0x0F;
  if (family > kFamilyUnix || protocol > kProtoDgram) {
    return malformed("unknown address family or protocol");
  }
  const std::size_t length = be16(fixed.data() + 14);
  if (length > kMaxBodyBytes) {
    return malformed("address block of " + std::to_string(length) + " bytes (at most " +
                     std::to_string(kMaxBodyBytes) + ")");
  }
  return length;
}

Result<std::optional<std::string>> parse_body(std::span<const std::uint8_t, kFixedBytes> fixed,
                                              std::span<const std::uint8_t> body) {
  auto length = parse_fixed(fixed);
  if (!length) return std::move(length).error();
  if (body.size() != *length) return malformed("length does not match");
  const std::uint8_t command = fixed[12] & 0x0F;
  const std::uint8_t family = fixed[13] >> 4;
  const std::uint8_t protocol = fixed[13] & 0x0F;
  // LOCAL: the balancer speaking for itself (a health check); its address block, if
  // any, is to be ignored and the connection's own addresses used.
  if (command == kCommandLocal) return std::optional<std::string>{};
  if (family == kFamilyUnspec) return std::optional<std::string>{};
  if (family == kFamilyUnix) return malformed("AF_UNIX sources are not supported");
  if (protocol != kProtoStream) return malformed("only TCP (STREAM) connections are supported");

  char text[INET6_ADDRSTRLEN] = {};
  if (family == kFamilyInet) {
    if (body.size() < kInetBlock) return malformed("address block too short for TCP over IPv4");
    if (::inet_ntop(AF_INET, body.data(), text, sizeof text) == nullptr) {
      return malformed("bad IPv4 address");
    }
    std::string out(text);  // appended, not operator+: GCC 12's -Wrestrict false positive
    out += ':';
    out += std::to_string(be16(body.data() + 8));
    return std::optional<std::string>(std::move(out));
  }
  if (body.size() < kInet6Block) return malformed("address block too short for TCP over IPv6");
  if (::inet_ntop(AF_INET6, body.data(), text, sizeof text) == nullptr) {
    return malformed("bad IPv6 address");
  }
  std::string out = "[";
  out += text;
  out += "]:";
  out += std::to_string(be16(body.data() + 32));
  return std::optional<std::string>(std::move(out));
}

Result<std::optional<std::string>> parse(std::span<const std::uint8_t> header) {
  if (header.size() < kFixedBytes) return malformed("shorter than 16 bytes");
  std::span<const std::uint8_t, kFixedBytes> fixed(header.data(), kFixedBytes);
  return parse_body(fixed, header.subspan(kFixedBytes));
}

asio::awaitable<Result<std::optional<std::string>>> read_proxy_v2(asio::ip::tcp::socket& socket) {
  std::array<std::uint8_t, kFixedBytes> fixed{};
  // Exact reads: the bytes after the header belong to TLS or to OPS/1.
  auto [ec, n] = co_await asio::async_read(socket, asio::buffer(fixed), kAwaitTuple);
  if (ec) co_return fail(ErrorCode::unavailable, "closed before a PROXY v2 header");
  auto length = parse_fixed(fixed);
  if (!length) co_return std::move(length).error();
  std::vector<std::uint8_t> body(*length);
  if (!body.empty()) {
    auto [ec2, n2] = co_await asio::async_read(socket, asio::buffer(body), kAwaitTuple);
    if (ec2) co_return fail(ErrorCode::unavailable, "closed within a PROXY v2 header");
  }
  co_return parse_body(fixed, body);
}

}  // namespace ops::core::proxy_v2
