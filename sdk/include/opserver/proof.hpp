// The OPS/1 §2 handshake cryptography, shared by the server and every client:
// nonces, HMAC-SHA256 proofs (with the §8 TLS channel binding appended for
// hmac-sha256-plus), hex, constant-time comparison. Thread-safe (OpenSSL 3).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ops::proof {

inline constexpr std::size_t kNonceBytes = 32;
inline constexpr std::size_t kProofBytes = 32;
using Nonce = std::array<std::uint8_t, kNonceBytes>;
using Digest = std::array<std::uint8_t, kProofBytes>;

inline constexpr std::string_view kProtocol = "ops/1";
inline constexpr std::string_view kMechanism = "hmac-sha256";
// §8: the same proofs with the TLS channel binding appended; offered only over TLS.
inline constexpr std::string_view kMechanismPlus = "hmac-sha256-plus";
// RFC 9266 tls-exporter: this label, a zero-length context (use_context = 1), 32 bytes.
inline constexpr std::string_view kExporterLabel = "EXPORTER-Channel-Binding";
inline constexpr std::size_t kChannelBindingBytes = 32;
using ChannelBinding = std::array<std::uint8_t, kChannelBindingBytes>;
inline constexpr std::string_view kClientLabel = "ops/1 client";
inline constexpr std::string_view kServerLabel = "ops/1 server";

// 32 bytes from OpenSSL's CSPRNG. Aborts if the CSPRNG fails: nothing safe can follow.
Nonce random_nonce();
// `n` random bytes as lowercase hex (2n characters).
std::string random_hex(std::size_t n);

// HMAC-SHA256(key, label || 0x00 || nonce || cnonce || user [|| cb]) (§2; §8 with `cb`).
Digest compute(std::string_view key, std::string_view label, const Nonce& nonce,
               const Nonce& cnonce, std::string_view user, const ChannelBinding* cb = nullptr);
inline Digest client_proof(std::string_view key, const Nonce& nonce, const Nonce& cnonce,
                           std::string_view user) {
  return compute(key, kClientLabel, nonce, cnonce, user);
}
inline Digest server_proof(std::string_view key, const Nonce& nonce, const Nonce& cnonce,
                           std::string_view user) {
  return compute(key, kServerLabel, nonce, cnonce, user);
}
// hmac-sha256-plus (§8): the proofs above with the channel binding appended.
inline Digest client_proof(std::string_view key, const Nonce& nonce, const Nonce& cnonce,
                           std::string_view user, const ChannelBinding& cb) {
  return compute(key, kClientLabel, nonce, cnonce, user, &cb);
}
inline Digest server_proof(std::string_view key, const Nonce& nonce, const Nonce& cnonce,
                           std::string_view user, const ChannelBinding& cb) {
  return compute(key, kServerLabel, nonce, cnonce, user, &cb);
}

// Lowercase hex.
std::string to_hex(const std::uint8_t* data, std::size_t size);
template <std::size_t N>
std::string to_hex(const std::array<std::uint8_t, N>& bytes) {
  return to_hex(bytes.data(), N);
}
// Exactly 2*N lowercase hex digits into N bytes; nullopt for anything else (uppercase
// included: §2 says lowercase, and one spelling per value keeps proofs unambiguous).
template <std::size_t N>
std::optional<std::array<std::uint8_t, N>> from_hex(std::string_view hex);
extern template std::optional<std::array<std::uint8_t, 32>> from_hex<32>(std::string_view);

// Constant-time equality (CRYPTO_memcmp); sizes are public.
bool equal(const Digest& a, const Digest& b) noexcept;

// SHA-256 of a buffer, lowercase hex (tests, small payloads).
std::string sha256_hex(std::string_view data);

// SHA-256 over data that arrives in pieces (uploads, files read in chunks). ok() is false
// if OpenSSL could not start or a step failed; hex() then returns "".
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(const void* data, std::size_t size) noexcept;
  bool ok() const noexcept { return ok_; }
  // Lowercase hex of everything given to update(); call once.
  std::string hex();

 private:
  void* ctx_;  // EVP_MD_CTX, kept out of this header
  bool ok_;
};

}  // namespace ops::proof
