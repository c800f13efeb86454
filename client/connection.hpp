// The connection options every opclient command shares (--server, --user, --key-file and
// the OPS_* environment), turned into a connected, logged-in client library Client.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "opserver/client.hpp"
#include "output.hpp"

namespace ops::opclient {

struct ConnectionFlags {
  std::string server = "127.0.0.1:9000";  // --server / OPS_SERVER; "tls://HOST:PORT" = --tls
  std::string user;                       // --user / OPS_USER
  std::string key_file;                   // --key-file / OPS_KEY_FILE (OPS_KEY below it)
  double timeout_seconds = 60;            // --timeout
  OutputFlags output;                     // --quiet
  bool verbose = false;                   // -v: trace frame headers on stderr
  // §8 TLS
  bool tls = false;                  // --tls
  std::string ca_file;               // --ca: trust these CAs instead of the system's
  std::string cert_file;             // --cert: client certificate (mutual TLS)
  std::string tls_key_file;          // --key: its private key
  bool insecure_no_binding = false;  // --insecure-no-binding
};

// Where the key comes from: --key-file, then OPS_KEY_FILE (both via CLI11), then OPS_KEY.
// A key file holds the key on its first line; surrounding whitespace is dropped.
struct Login {
  client::Options options;
  int exit_status = 0;  // non-zero: an error was printed; exit with this
};
Login resolve_login(const ConnectionFlags& flags);

// Connects and logs in. On failure prints the error and sets `exit_status`.
std::unique_ptr<client::Client> open_client(const ConnectionFlags& flags, int& exit_status);

// Connects, runs one request without payload and prints any error. Returns true with the
// result's JSON, or false with `status` set to the exit status.
bool simple_call(const ConnectionFlags& conn, const char* operate, const std::string& args,
                 std::string& result_json, int& status);

}  // namespace ops::opclient
