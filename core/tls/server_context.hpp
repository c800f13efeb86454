// The server's TLS context (§8), built once at start-up from TlsSettings and shared by
// every TLS connection (read-only afterwards; OpenSSL contexts are thread-safe to use).
//
// Policy: TLS 1.3 only by default; with min_version "1.2", TLS 1.2 is allowed with
// ECDHE key exchange and AEAD ciphers only, and a TLS 1.2 connection without the
// extended master secret (RFC 7627) is refused after its handshake (TlsTransport checks
// it; RFC 9266 forbids the tls-exporter binding without it). No renegotiation, no
// compression, no 0-RTT, no session tickets or cache. Client certificates are required
// where client_ca is set.
//
// Everything that can be wrong with the files is found here, with a message that names
// the file: missing, unreadable, not PEM, a key that does not match the certificate, a
// certificate expired or not yet valid, a private key readable by group or others
// (refused, as ssh refuses such keys).
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <filesystem>
#include <memory>

#include "config/tls_config.hpp"
#include "opserver/error.hpp"

namespace ops::core {

Result<std::shared_ptr<boost::asio::ssl::context>> make_server_tls_context(
    const TlsSettings& settings);

// The private key file's permission check alone: refused when group or others have any
// access, or when it is not a regular file.
Status check_private_key_mode(const std::filesystem::path& key_file);

}  // namespace ops::core
