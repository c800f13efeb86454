// Fuzz target: the frame decoder and header parser (OPS/1 §1, §7), as the session uses
// them: a byte stream of frames, each LEN checked against max_frame before anything is
// taken for it, the header parsed strictly, the request interpreted, the declared payload
// skipped. Properties beyond "no crash": a parsed header is an object, its payload within
// 2^53-1, and a request's id within 2^53-1.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <variant>

#include "opserver/frame.hpp"
#include "proto/header.hpp"

namespace {
constexpr std::uint32_t kMaxFrame = 1u << 20;

void check(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  while (in.size() >= 4) {
    std::uint32_t len =
        ops::frame::decode_length(reinterpret_cast<const unsigned char*>(in.data()));
    if (len < 2 || len > kMaxFrame) return 0;  // bad_frame: the session closes
    if (in.size() - 4 < len) return 0;         // waits for more bytes
    auto header = ops::core::parse_header(in.substr(4, len));
    in.remove_prefix(4 + std::size_t{len});
    if (!header) {
      check(header.error().code == ops::ErrorCode::bad_frame);
      return 0;  // bad_frame: the session closes
    }
    check(header->doc.IsObject());
    check(header->payload <= ops::core::kMaxWireInteger);
    auto request = ops::core::interpret_request(*header);
    if (auto* r = std::get_if<ops::core::Request>(&request)) {
      check(r->id <= ops::core::kMaxWireInteger);
      check(r->payload == header->payload);
    } else {
      auto& e = std::get<ops::core::RequestError>(request);
      check(e.error.code == ops::ErrorCode::bad_request);
    }
    if (header->payload >= in.size()) return 0;
    in.remove_prefix(static_cast<std::size_t>(header->payload));
  }
  return 0;
}
