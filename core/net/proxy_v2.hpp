// PROXY protocol version 2 (HAProxy's binary header, haproxy.org/download/2.9/doc/
// proxy-protocol.txt): what a load balancer sends before anything else so that the
// server can log the real client's address (§8).
//
// Sans-I/O parsing in two steps, so a reader takes exactly the header's bytes from the
// socket and never a byte of what follows (the TLS handshake or the first OPS/1 frame):
// the 16-byte fixed part says how many bytes follow; the rest is parsed once read.
// read_proxy_v2() does both steps on a socket. Pure functions otherwise; any thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "opserver/error.hpp"

namespace ops::core::proxy_v2 {

inline constexpr std::size_t kFixedBytes = 16;
// Address block plus TLVs. The largest address block (AF_UNIX) is 216 bytes; HAProxy's
// TLVs (ALPN, authority, SSL facts, unique id) fit well within this. More is refused
// before anything is read for it.
inline constexpr std::size_t kMaxBodyBytes = 1024;

// The fixed part: the signature, version 2, a known command and family. Returns how many
// bytes follow (address block and TLVs), at most kMaxBodyBytes; bad_frame otherwise.
Result<std::size_t> parse_fixed(std::span<const std::uint8_t, kFixedBytes> fixed);

// The address block that follows `fixed` (`body` is exactly the length parse_fixed gave).
// Returns the source address to log, "1.2.3.4:5678" or "[2001:db8::1]:5678", or nullopt
// where the real peer's address stands: the LOCAL command (the balancer's own health
// check) and the UNSPEC family. TLVs are skipped. bad_frame for anything malformed or
// unsupported (AF_UNIX, datagram).
Result<std::optional<std::string>> parse_body(std::span<const std::uint8_t, kFixedBytes> fixed,
                                              std::span<const std::uint8_t> body);

// Both steps over one buffer that must hold exactly one header (tests, fuzzing).
Result<std::optional<std::string>> parse(std::span<const std::uint8_t> header);

// Reads exactly one PROXY v2 header from `socket` (two exact reads: the fixed part, then
// the length it names) and parses it. bad_frame when the bytes are not a valid header,
// unavailable when the socket fails or closes first. Whoever calls it bounds it with a
// deadline (closing the socket cancels the read).
boost::asio::awaitable<Result<std::optional<std::string>>> read_proxy_v2(
    boost::asio::ip::tcp::socket& socket);

}  // namespace ops::core::proxy_v2
