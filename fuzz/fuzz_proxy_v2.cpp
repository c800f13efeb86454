// Fuzz target: the PROXY protocol v2 parser (§8). Inputs are candidate headers, and with
// the first byte odd the rest is XORed over a valid TCP4 header so that near-misses are
// common. Properties: parse() accepts only an input of exactly 16 + the length the fixed
// part names, agrees with the two-step parse_fixed/parse_body a socket reader uses, never
// accepts a shorter prefix, and an address it returns looks like one.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "net/proxy_v2.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

const std::vector<std::uint8_t> kValid = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11,
    0x00, 0x0C, 192,  0,    2,    7,    198,  51,   100,  1,    0xC8, 0x22, 0x01, 0xBB};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace pv2 = ops::core::proxy_v2;
  if (size == 0) return 0;
  std::vector<std::uint8_t> input;
  if (data[0] & 1) {
    input = kValid;
    for (std::size_t i = 1; i < size; ++i) {
      if (i - 1 < input.size()) {
        input[i - 1] ^= data[i];
      } else {
        input.push_back(data[i]);
      }
    }
  } else {
    input.assign(data + 1, data + size);
  }
  auto whole = pv2::parse(input);
  if (input.size() < pv2::kFixedBytes) {
    check(!whole);
    return 0;
  }
  std::span<const std::uint8_t, pv2::kFixedBytes> fixed(input.data(), pv2::kFixedBytes);
  auto length = pv2::parse_fixed(fixed);
  if (!length) {
    check(!whole);
    return 0;
  }
  check(*length <= pv2::kMaxBodyBytes);
  if (input.size() != pv2::kFixedBytes + *length) {
    check(!whole);
    return 0;
  }
  auto steps = pv2::parse_body(fixed, std::span<const std::uint8_t>(input).subspan(16));
  check(whole.ok() == steps.ok());
  if (!whole) return 0;
  check(*whole == *steps);
  if (whole->has_value()) {
    const std::string& address = **whole;
    check(!address.empty() && address.size() < 64);
    check(address.find(':') != std::string::npos);
  }
  // A header cut short is never accepted.
  check(!pv2::parse(std::span<const std::uint8_t>(input).first(input.size() - 1)));
  return 0;
}
