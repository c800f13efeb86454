// Users' keys at rest in a shared database: sealed with AES-256-GCM under a 256-bit key
// that only the server can read (server.json user_store.key_file). The server must compute
// HMACs with a user's key, so a one-way hash will not do; encryption keeps a database dump,
// a backup or a read-only SQL account from yielding usable keys.
//
// A sealed key is: 1 version byte (1) | 12-byte random nonce | ciphertext | 16-byte tag.
// The associated data is "opserver-user-key/v1/" + the user name, so a sealed key copied
// to another user's row does not open (the tag check fails).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "opserver/error.hpp"

namespace ops::core {

class KeySealer {
 public:
  // Reads the key file: 64 hexadecimal characters (a trailing newline allowed). Refuses a
  // file that group or others may read or write, or that is not a regular file (like ssh
  // with a private key), so the key is never silently exposed.
  static Result<KeySealer> from_file(const std::filesystem::path& file);
  explicit KeySealer(const std::array<std::uint8_t, 32>& key) : key_(key) {}
  ~KeySealer();
  KeySealer(const KeySealer&) = default;
  KeySealer& operator=(const KeySealer&) = default;

  std::string seal(std::string_view user, std::string_view plaintext) const;
  // nullopt if the record was not sealed for `user` with this key, or was altered.
  std::optional<std::string> open(std::string_view user, std::string_view sealed) const;

 private:
  std::array<std::uint8_t, 32> key_{};
};

}  // namespace ops::core
