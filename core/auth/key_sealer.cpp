#include "auth/key_sealer.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace ops::core {
namespace {

constexpr std::uint8_t kVersion = 1;
constexpr std::size_t kNonce = 12;
constexpr std::size_t kTag = 16;

std::string associated_data(std::string_view user) {
  return "opserver-user-key/v1/" + std::string(user);
}

struct CipherFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Cipher = std::unique_ptr<EVP_CIPHER_CTX, CipherFree>;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Result<KeySealer> KeySealer::from_file(const std::filesystem::path& file) {
  const std::string name = file.string();
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return fail(ErrorCode::invalid_args,
                name + ": cannot open the user store's key file: " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(ErrorCode::invalid_args, name + ": the user store's key file is not a file");
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    return fail(ErrorCode::invalid_args,
                name +
                    ": the user store's key file must be readable by its owner only "
                    "(chmod 600)");
  }
  char text[80] = {};
  ssize_t n = ::read(fd, text, sizeof text);
  ::close(fd);
  std::size_t len = n > 0 ? static_cast<std::size_t>(n) : 0;
  while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) --len;
  std::array<std::uint8_t, 32> key{};
  bool good = len == 64;
  for (std::size_t i = 0; good && i < 32; ++i) {
    int hi = hex_value(text[2 * i]);
    int lo = hex_value(text[2 * i + 1]);
    good = hi >= 0 && lo >= 0;
    key[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  OPENSSL_cleanse(text, sizeof text);
  if (!good) {
    OPENSSL_cleanse(key.data(), key.size());
    return fail(ErrorCode::invalid_args,
                name +
                    ": the user store's key file must hold 64 hexadecimal characters "
                    "(openssl rand -hex 32)");
  }
  KeySealer sealer(key);
  OPENSSL_cleanse(key.data(), key.size());
  return sealer;
}

KeySealer::~KeySealer() {
  OPENSSL_cleanse(key_.data(), key_.size());
}

std::string KeySealer::seal(std::string_view user, std::string_view plaintext) const {
  std::string out(1 + kNonce + plaintext.size() + kTag, '\0');
  auto* bytes = reinterpret_cast<unsigned char*>(out.data());
  bytes[0] = kVersion;
  if (RAND_bytes(bytes + 1, kNonce) != 1) return {};
  const std::string aad = associated_data(user);
  Cipher ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  bool ok =
      ctx &&
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), bytes + 1) == 1 &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &len,
                        reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) == 1 &&
      EVP_EncryptUpdate(ctx.get(), bytes + 1 + kNonce, &len,
                        reinterpret_cast<const unsigned char*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) == 1 &&
      EVP_EncryptFinal_ex(ctx.get(), bytes + 1 + kNonce + len, &len) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag,
                          bytes + 1 + kNonce + plaintext.size()) == 1;
  if (!ok) return {};
  return out;
}

std::optional<std::string> KeySealer::open(std::string_view user, std::string_view sealed) const {
  if (sealed.size() < 1 + kNonce + kTag || static_cast<std::uint8_t>(sealed[0]) != kVersion) {
    return std::nullopt;
  }
  const auto* bytes = reinterpret_cast<const unsigned char*>(sealed.data());
  const std::size_t text_len = sealed.size() - 1 - kNonce - kTag;
  std::string plain(text_len, '\0');
  const std::string aad = associated_data(user);
  unsigned char tag[kTag];
  std::memcpy(tag, bytes + 1 + kNonce + text_len, kTag);
  Cipher ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  bool ok =
      ctx &&
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), bytes + 1) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &len,
                        reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) == 1 &&
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()), &len,
                        bytes + 1 + kNonce, static_cast<int>(text_len)) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, tag) == 1 &&
      EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()) + len, &len) ==
          1;
  if (!ok) {
    OPENSSL_cleanse(plain.data(), plain.size());
    return std::nullopt;
  }
  return plain;
}

}  // namespace ops::core
