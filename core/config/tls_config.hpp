// The "tls" block of server.json (§8) and the listeners' "proxy_protocol" flags:
//
//   "proxy_protocol": false,             plain listener expects a PROXY v2 header
//   "tls": {
//     "listen": "0.0.0.0:9443",          required
//     "cert": "tls/server.crt",          required: the certificate chain (PEM), leaf first
//     "key": "tls/server.key",           required: its private key (PEM), mode 0600 or stricter
//     "client_ca": "tls/clients.pem",    optional: require client certificates from this CA
//     "min_version": "1.3",              "1.3" (default) or "1.2" (ECDHE+AEAD, EMS only)
//     "channel_binding": "required",     "required" (default: hmac-sha256-plus) or "off"
//     "proxy_protocol": false,           TLS listener expects a PROXY v2 header first
//     "handshake_threads": 0             threads doing TLS handshakes, off the I/O
//                                        threads; 0 (default): a quarter of the CPUs, >= 1
//   }
//
// Parsed here, into TlsSettings, with unknown members refused like the rest of the file;
// config.cpp calls parse_tls_settings() for the block and apply_tls_overrides() for the
// command line. Whether the files are usable is checked by make_server_tls_context().
#pragma once

#include <rapidjson/document.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "opserver/error.hpp"

namespace ops::core {

enum class TlsMinVersion : std::uint8_t { tls1_2, tls1_3 };

struct TlsSettings {
  std::string listen_host;
  std::uint16_t listen_port = 0;
  std::filesystem::path cert;                      // chain, PEM
  std::filesystem::path key;                       // private key, PEM
  std::optional<std::filesystem::path> client_ca;  // set: mutual TLS
  TlsMinVersion min_version = TlsMinVersion::tls1_3;
  bool channel_binding = true;  // false: "off", the listener offers plain hmac-sha256
  bool proxy_protocol = false;
  unsigned handshake_threads = 0;  // 0: HandshakeThreads::default_count()
};

// Command-line flags: --tls-listen, --tls-cert, --tls-key, --tls-client-ca. Each replaces
// the file's value; --tls-listen with --tls-cert and --tls-key creates the block when the
// file has none.
struct TlsOverrides {
  std::optional<std::string> listen;
  std::optional<std::filesystem::path> cert;
  std::optional<std::filesystem::path> key;
  std::optional<std::filesystem::path> client_ca;
  bool any() const { return listen || cert || key || client_ca; }
};

// Builds "file:line:col: reason" for a JSON pointer into server.json (config.cpp's).
using ConfigErrorAt = std::function<Error(const std::string& pointer, const std::string& reason)>;

// `value` is the "tls" member of server.json.
Result<TlsSettings> parse_tls_settings(const rapidjson::Value& value,
                                       const ConfigErrorAt& error_at);

// A "proxy_protocol" member: true or false.
Result<bool> parse_proxy_protocol(const rapidjson::Value& value, const std::string& pointer,
                                  const ConfigErrorAt& error_at);

// Applies the flags; errors name the flag.
Status apply_tls_overrides(std::optional<TlsSettings>& tls, const TlsOverrides& overrides);

}  // namespace ops::core
