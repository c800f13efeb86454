// OPS/1 §1 framing helpers shared by clients and tests: u32 big-endian LEN, LEN bytes of
// JSON header, then `payload` raw bytes. Pure functions; any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ops::frame {

inline constexpr std::uint64_t kMaxPayload = (std::uint64_t{1} << 53) - 1;  // §1
inline constexpr std::uint32_t kDefaultMaxFrame = 1u << 20;                 // §1

// The 4-byte big-endian length prefix followed by `header`.
std::string encode(std::string_view header);
inline std::uint32_t decode_length(const unsigned char* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

}  // namespace ops::frame
