#include "auth/user_store.hpp"

#include "proto/strict_json.hpp"

namespace ops::core {

bool is_valid_user_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 32) return false;
  char first = name.front();
  if (!((first >= 'a' && first <= 'z') || first == '_')) return false;
  for (char c : name.substr(1)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool is_valid_key(std::string_view key) noexcept {
  if (key.empty() || key.size() > 1024 || !is_valid_utf8(key)) return false;
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

}  // namespace ops::core
