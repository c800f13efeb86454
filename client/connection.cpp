#include "connection.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "exit_codes.hpp"
#include "frame_trace.hpp"

namespace ops::opclient {

namespace {

constexpr std::size_t kMaxKeyFile = 64 * 1024;

std::string trim(std::string text) {
  const char* ws = " \t\r\n";
  auto first = text.find_first_not_of(ws);
  if (first == std::string::npos) return {};
  auto last = text.find_last_not_of(ws);
  return text.substr(first, last - first + 1);
}

// Reads the key from `path`. Returns false (error printed) when it cannot.
bool read_key_file(const std::string& path, const OutputFlags& flags, std::string& key) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    print_error("usage", "cannot read key file " + path + ": " + std::strerror(errno));
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      print_error("usage", "key file " + path + " is not a regular file");
      return false;
    }
    if ((st.st_mode & 0077) != 0) {
      note(flags, "warning: key file " + path + " is readable by other users (chmod 600 it)");
    }
  }
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      print_error("usage", "cannot read key file " + path + ": " + std::strerror(err));
      return false;
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxKeyFile) {
      ::close(fd);
      print_error("usage", "key file " + path + " is too large to hold a key");
      return false;
    }
  }
  ::close(fd);
  key = trim(std::move(text));
  if (key.empty()) {
    print_error("usage", "key file " + path + " is empty");
    return false;
  }
  if (key.find('\n') != std::string::npos) {
    print_error("usage", "key file " + path + " must hold the key on one line");
    return false;
  }
  return true;
}

}  // namespace

Login resolve_login(const ConnectionFlags& flags) {
  Login login;
  auto& o = login.options;
  // "tls://HOST:PORT" selects TLS as --tls does; "tcp://HOST:PORT" is plain.
  std::string_view server = flags.server;
  o.tls = flags.tls;
  if (server.starts_with("tls://")) {
    o.tls = true;
    server.remove_prefix(6);
  } else if (server.starts_with("tcp://")) {
    server.remove_prefix(6);
  }
  if (Status s = client::parse_endpoint(server, o.host, o.port); !s) {
    print_error("usage", s.error().message);
    login.exit_status = exit_code::kUsage;
    return login;
  }
  o.user = flags.user;
  if (o.user.empty()) {
    print_error("usage", "no user: use --user or OPS_USER");
    login.exit_status = exit_code::kUsage;
    return login;
  }
  if (!flags.key_file.empty()) {
    if (!read_key_file(flags.key_file, flags.output, o.key)) {
      login.exit_status = exit_code::kUsage;
      return login;
    }
  } else if (const char* env = std::getenv("OPS_KEY"); env != nullptr && *env != '\0') {
    o.key = trim(env);
  } else {
    print_error("usage", "no key: use --key-file, OPS_KEY_FILE or OPS_KEY");
    login.exit_status = exit_code::kUsage;
    return login;
  }
  if (!(flags.timeout_seconds > 0)) {
    print_error("usage", "--timeout must be a positive number of seconds");
    login.exit_status = exit_code::kUsage;
    return login;
  }
  o.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(flags.timeout_seconds * 1000));
  const bool tls_options = !flags.ca_file.empty() || !flags.cert_file.empty() ||
                           !flags.tls_key_file.empty() || flags.insecure_no_binding;
  if (tls_options && !o.tls) {
    print_error("usage", "--ca, --cert, --key and --insecure-no-binding need --tls (or tls://)");
    login.exit_status = exit_code::kUsage;
    return login;
  }
  if (flags.cert_file.empty() != flags.tls_key_file.empty()) {
    print_error("usage", "--cert and --key go together (the client certificate and its key)");
    login.exit_status = exit_code::kUsage;
    return login;
  }
  o.ca_file = flags.ca_file;
  o.cert_file = flags.cert_file;
  o.key_file = flags.tls_key_file;
  o.insecure_no_binding = flags.insecure_no_binding;
  if (flags.verbose) o.on_frame = trace_frame;
  if (o.insecure_no_binding) {
    note(flags.output,
         "warning: --insecure-no-binding: a TLS server without channel binding is accepted");
  }
  return login;
}

std::unique_ptr<client::Client> open_client(const ConnectionFlags& flags, int& exit_status) {
  Login login = resolve_login(flags);
  if (login.exit_status != 0) {
    exit_status = login.exit_status;
    return nullptr;
  }
  client::Failure why = client::Failure::none;
  auto connected = client::Client::connect(login.options, &why);
  if (!connected) {
    exit_status = report(connected.error(), why);
    return nullptr;
  }
  exit_status = 0;
  return std::move(connected).value();
}

bool simple_call(const ConnectionFlags& conn, const char* operate, const std::string& args,
                 std::string& result_json, int& status) {
  auto client = open_client(conn, status);
  if (!client) return false;
  auto response = client->call(operate, args);
  if (!response) {
    status = report(response.error(), client->last_failure());
    return false;
  }
  if (!response->ok) {
    status = report(response->error, client::Failure::none);
    return false;
  }
  result_json = std::move(response->result_json);
  return true;
}

}  // namespace ops::opclient
