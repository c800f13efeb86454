#include "opserver/frame.hpp"

namespace ops::frame {

std::string encode(std::string_view header) {
  const auto len = static_cast<std::uint32_t>(header.size());
  std::string out;
  out.reserve(4 + header.size());
  out.push_back(static_cast<char>(len >> 24));
  out.push_back(static_cast<char>(len >> 16));
  out.push_back(static_cast<char>(len >> 8));
  out.push_back(static_cast<char>(len));
  out.append(header);
  return out;
}

}  // namespace ops::frame
