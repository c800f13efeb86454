// Test certificates made at test time with the OpenSSL API (no fixtures to expire): a CA,
// and certificates it signs with chosen names, addresses and validity. EC P-256 keys.
// Header-only; used by the unit tests (TLS context checks) and the integration tests.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ops::test {

struct CertSpec {
  std::string common_name = "opserver test";
  std::vector<std::string> dns = {"localhost"};
  std::vector<std::string> ips = {"127.0.0.1"};
  long not_before_seconds = -3600;     // relative to now
  long not_after_seconds = 7 * 86400;  // relative to now
  bool client = false;                 // extendedKeyUsage clientAuth instead of serverAuth
};

struct CertFiles {
  std::filesystem::path cert;
  std::filesystem::path key;
};

class TestPki {
 public:
  // Creates a CA ("<name>-ca.crt") in `dir`.
  explicit TestPki(std::filesystem::path dir, const std::string& name = "test")
      : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
    ca_key_.reset(new_key());
    ca_.reset(X509_new());
    X509_set_version(ca_.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(ca_.get()), next_serial_++);
    X509_gmtime_adj(X509_getm_notBefore(ca_.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(ca_.get()), 30L * 86400);
    X509_set_pubkey(ca_.get(), ca_key_.get());
    X509_NAME* subject = X509_get_subject_name(ca_.get());
    std::string cn = name + " CA";
    X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    X509_set_issuer_name(ca_.get(), subject);
    add_ext(ca_.get(), ca_.get(), NID_basic_constraints, "critical,CA:TRUE");
    add_ext(ca_.get(), ca_.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
    add_ext(ca_.get(), ca_.get(), NID_subject_key_identifier, "hash");
    if (X509_sign(ca_.get(), ca_key_.get(), EVP_sha256()) == 0) throw std::runtime_error("sign CA");
    ca_file_ = dir_ / (name + "-ca.crt");
    write_cert(ca_file_, ca_.get());
  }

  const std::filesystem::path& ca_file() const { return ca_file_; }

  // "<name>.crt" (the leaf; with `chain`, followed by the CA) and "<name>.key" (0600).
  CertFiles issue(const std::string& name, const CertSpec& spec = {}, bool chain = false) {
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(new_key(), &EVP_PKEY_free);
    std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), &X509_free);
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), next_serial_++);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), spec.not_before_seconds);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), spec.not_after_seconds);
    X509_set_pubkey(cert.get(), key.get());
    X509_NAME* subject = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(spec.common_name.c_str()), -1,
                               -1, 0);
    X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_.get()));
    add_ext(ca_.get(), cert.get(), NID_basic_constraints, "critical,CA:FALSE");
    add_ext(ca_.get(), cert.get(), NID_key_usage, "critical,digitalSignature");
    add_ext(ca_.get(), cert.get(), NID_ext_key_usage, spec.client ? "clientAuth" : "serverAuth");
    add_ext(ca_.get(), cert.get(), NID_authority_key_identifier, "keyid:always");
    std::string san;
    // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on literal + string.
    auto add_name = [&san](const char* kind, const std::string& value) {
      if (!san.empty()) san += ',';
      san += kind;
      san += value;
    };
    for (const auto& d : spec.dns) add_name("DNS:", d);
    for (const auto& i : spec.ips) add_name("IP:", i);
    if (!san.empty()) add_ext(ca_.get(), cert.get(), NID_subject_alt_name, san.c_str());
    if (X509_sign(cert.get(), ca_key_.get(), EVP_sha256()) == 0) {
      throw std::runtime_error("sign " + name);
    }
    CertFiles files{dir_ / (name + ".crt"), dir_ / (name + ".key")};
    write_cert(files.cert, cert.get(), chain ? ca_.get() : nullptr);
    write_key(files.key, key.get());
    return files;
  }

  // A key that belongs to no certificate.
  std::filesystem::path stray_key(const std::string& name) {
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(new_key(), &EVP_PKEY_free);
    auto path = dir_ / (name + ".key");
    write_key(path, key.get());
    return path;
  }

 private:
  static EVP_PKEY* new_key() {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    if (key == nullptr) throw std::runtime_error("EC key generation failed");
    return key;
  }
  static void add_ext(X509* issuer, X509* cert, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    if (ext == nullptr) throw std::runtime_error(std::string("extension ") + value);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  static void write_cert(const std::filesystem::path& path, X509* cert, X509* then = nullptr) {
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) throw std::runtime_error("cannot write " + path.string());
    PEM_write_X509(f, cert);
    if (then != nullptr) PEM_write_X509(f, then);
    std::fclose(f);
  }
  static void write_key(const std::filesystem::path& path, EVP_PKEY* key) {
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) throw std::runtime_error("cannot write " + path.string());
    ::chmod(path.c_str(), 0600);
    PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(f);
  }

  std::filesystem::path dir_;
  std::filesystem::path ca_file_;
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> ca_key_{nullptr, &EVP_PKEY_free};
  std::unique_ptr<X509, decltype(&X509_free)> ca_{nullptr, &X509_free};
  long next_serial_ = 1;
};

}  // namespace ops::test
