#include "tls/server_context.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace ops::core {
namespace {

namespace fs = std::filesystem;

// ECDHE key exchange with an AEAD cipher, for TLS 1.2 (TLS 1.3 suites are all AEAD).
constexpr const char* kTls12Ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL";

Error tls_error(const std::string& message) {
  return Error{ErrorCode::internal, message};
}

// The oldest error OpenSSL queued (its reason), and the queue cleared.
std::string openssl_reason() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  const char* reason = ERR_reason_error_string(code);
  if (reason != nullptr) return reason;
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

// The file must exist and be readable by us, checked with open(2) so the message says
// which it is.
Status check_readable(const fs::path& file, const char* what) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) {
      return tls_error(std::string("TLS ") + what + " " + file.string() + ": no such file");
    }
    return tls_error(std::string("TLS ") + what + " " + file.string() +
                     ": cannot read it: " + std::strerror(err));
  }
  struct stat st {};
  bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  ::close(fd);
  if (!regular) {
    return tls_error(std::string("TLS ") + what + " " + file.string() + ": not a regular file");
  }
  return ok_status();
}

std::string asn1_time_text(const ASN1_TIME* time) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr) return "?";
  ASN1_TIME_print(bio, time);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  std::string text(data, static_cast<std::size_t>(size > 0 ? size : 0));
  BIO_free(bio);
  return text;
}

Status check_validity(SSL_CTX* ctx, const fs::path& cert_file) {
  X509* cert = SSL_CTX_get0_certificate(ctx);
  if (cert == nullptr) return tls_error("TLS certificate " + cert_file.string() + ": none loaded");
  const ASN1_TIME* not_before = X509_get0_notBefore(cert);
  const ASN1_TIME* not_after = X509_get0_notAfter(cert);
  if (X509_cmp_current_time(not_before) >= 0) {
    return tls_error("TLS certificate " + cert_file.string() + " is not valid yet (from " +
                     asn1_time_text(not_before) + ")");
  }
  if (X509_cmp_current_time(not_after) <= 0) {
    return tls_error("TLS certificate " + cert_file.string() + " has expired (on " +
                     asn1_time_text(not_after) + ")");
  }
  return ok_status();
}

}  // namespace

Status check_private_key_mode(const fs::path& key_file) {
  if (Status st = check_readable(key_file, "private key"); !st) return st;
  struct stat st {};
  if (::stat(key_file.c_str(), &st) != 0) {
    return tls_error("TLS private key " + key_file.string() + ": " + std::strerror(errno));
  }
  if ((st.st_mode & 0077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return tls_error("TLS private key " + key_file.string() +
                     " is accessible by group or others (mode " + mode +
                     "); refusing to use it: chmod 600 " + key_file.string());
  }
  return ok_status();
}

Result<std::shared_ptr<boost::asio::ssl::context>> make_server_tls_context(
    const TlsSettings& settings) {
  namespace ssl = boost::asio::ssl;
  ERR_clear_error();
  if (Status st = check_readable(settings.cert, "certificate"); !st) return st.error();
  if (Status st = check_private_key_mode(settings.key); !st) return st.error();
  if (settings.client_ca) {
    if (Status st = check_readable(*settings.client_ca, "client CA file"); !st) return st.error();
  }

  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* ctx = context->native_handle();

  const int min_version =
      settings.min_version == TlsMinVersion::tls1_2 ? TLS1_2_VERSION : TLS1_3_VERSION;
  if (SSL_CTX_set_min_proto_version(ctx, min_version) != 1) {
    return tls_error("cannot set the minimum TLS version: " + openssl_reason());
  }
  if (settings.min_version == TlsMinVersion::tls1_2 &&
      SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1) {
    return tls_error("cannot set the TLS 1.2 cipher suites: " + openssl_reason());
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  // RFC 7627 is on by default in OpenSSL 3; make sure nothing turned it off.
  SSL_CTX_clear_options(ctx, SSL_OP_NO_EXTENDED_MASTER_SECRET | SSL_OP_ALLOW_CLIENT_RENEGOTIATION |
                                 SSL_OP_LEGACY_SERVER_CONNECT);
  SSL_CTX_set_max_early_data(ctx, 0);
  SSL_CTX_set_recv_max_early_data(ctx, 0);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

  if (SSL_CTX_use_certificate_chain_file(ctx, settings.cert.c_str()) != 1) {
    return tls_error("TLS certificate " + settings.cert.string() +
                     ": cannot load a PEM certificate chain: " + openssl_reason());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, settings.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    // OpenSSL compares a key with the certificate already loaded as it loads it.
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      return tls_error("TLS private key " + settings.key.string() +
                       " does not match the certificate " + settings.cert.string());
    }
    return tls_error("TLS private key " + settings.key.string() +
                     ": cannot load a PEM private key: " + openssl_reason());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    return tls_error("TLS private key " + settings.key.string() +
                     " does not match the certificate " + settings.cert.string());
  }
  if (Status st = check_validity(ctx, settings.cert); !st) return st.error();

  if (settings.client_ca) {
    const std::string ca = settings.client_ca->string();
    if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
      return tls_error("TLS client CA file " + ca +
                       ": cannot load PEM certificates: " + openssl_reason());
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(ca.c_str());
    if (names == nullptr) {
      return tls_error("TLS client CA file " + ca + ": no CA certificate in it");
    }
    SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  ERR_clear_error();
  return context;
}

}  // namespace ops::core
