#include "opserver/client.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <set>
#include <vector>

#include "opserver/frame.hpp"
#include "opserver/proof.hpp"
#include "opserver/strict_json.hpp"

namespace ops::client {

namespace {

constexpr std::size_t kChunk = std::size_t{1} << 20;  // payload streaming buffer
// A response header larger than this is refused before it is allocated. Servers answer
// far smaller headers; the limit only bounds what a broken peer can make us allocate.
constexpr std::uint32_t kMaxResponseFrame = 16u << 20;
// What an early answer may occupy while a request payload is still going out.
constexpr std::size_t kMaxEarlyBytes = 1u << 20;

// Writer that refuses invalid UTF-8 instead of sending it (the server would answer
// bad_frame and close, §7).
using StrictWriter =
    rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>, rapidjson::UTF8<>,
                      rapidjson::CrtAllocator, rapidjson::kWriteValidateEncodingFlag>;

std::string errno_text(int err) {
  return std::strerror(err);
}

std::string endpoint_text(const std::string& host, std::uint16_t port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

int timeout_ms(std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) return -1;  // no timeout
  return static_cast<int>(std::min<std::int64_t>(timeout.count(), 0x7fffffff));
}

std::string seconds_text(std::chrono::milliseconds timeout) {
  auto ms = timeout.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  return std::to_string(ms) + " ms";
}

// OpenSSL writes to the socket with write(2), which raises SIGPIPE when the server has
// gone; a library must not kill the program that uses it (the plain path uses
// MSG_NOSIGNAL). As libpq does: SIGPIPE is blocked in this thread around each TLS call,
// and one raised meanwhile is discarded. errno is kept for the caller.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeGuard() {
    const int saved = errno;
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        const timespec zero{0, 0};
        while (sigtimedwait(&pipe_, nullptr, &zero) < 0 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    errno = saved;
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool was_pending_ = false;
};

// poll() one fd for `events`, retrying on EINTR. Returns revents, 0 on timeout, -1 on error.
int poll_one(int fd, short events, int timeout) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, timeout);
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) return rc;
    return p.revents;
  }
}

// Writes all of `data` to a local fd (a file, a pipe, a terminal), waiting if it is
// non-blocking. Returns 0 or an errno value.
int write_local(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n > 0) {
      data += n;
      size -= static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      poll_one(fd, POLLOUT, -1);
      continue;
    }
    return n < 0 ? errno : EIO;
  }
  return 0;
}

// Reads up to `size` bytes from a local fd, waiting if it is non-blocking.
// Returns bytes read (0 at EOF) or -errno.
ssize_t read_local(int fd, char* data, std::size_t size, int timeout) {
  for (;;) {
    ssize_t n = ::read(fd, data, size);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (poll_one(fd, POLLIN, timeout) == 0) return -ETIMEDOUT;
      continue;
    }
    return -errno;
  }
}

// The "payload" member of a header (§1): absent means 0, else a plain non-negative integer.
bool read_payload_size(const rapidjson::Value& header, std::uint64_t& size) {
  size = 0;
  auto it = header.FindMember("payload");
  if (it == header.MemberEnd()) return true;
  if (!it->value.IsUint64()) return false;
  size = it->value.GetUint64();
  return size <= frame::kMaxPayload;
}

// Reads {"code": "...", "message": "...", "details": {...}}; unknown codes become `internal` (the
// message keeps the name) so that a newer server never crashes an older client.
Error error_from(const rapidjson::Value& header) {
  Error error{ErrorCode::internal, "the server reported an error without details"};
  auto it = header.FindMember("error");
  if (it == header.MemberEnd() || !it->value.IsObject()) return error;
  const auto& obj = it->value;
  std::string message;
  if (auto m = obj.FindMember("message"); m != obj.MemberEnd() && m->value.IsString()) {
    message.assign(m->value.GetString(), m->value.GetStringLength());
  }
  std::string code_name;
  if (auto c = obj.FindMember("code"); c != obj.MemberEnd() && c->value.IsString()) {
    code_name.assign(c->value.GetString(), c->value.GetStringLength());
  }
  // §9: optional machine-readable facts; anything but an object is ignored.
  if (auto d = obj.FindMember("details"); d != obj.MemberEnd() && d->value.IsObject()) {
    error.details = json::to_string(d->value);
  }
  if (auto code = error_code_from_wire(code_name)) {
    error.code = *code;
    error.message = message.empty() ? std::string(wire_name(*code)) : message;
  } else {
    error.code = ErrorCode::internal;
    error.message = "unknown error code \"" + code_name + "\"" +
                    (message.empty() ? std::string() : ": " + message);
  }
  return error;
}

bool is_string(const rapidjson::Value& obj, const char* name, std::string_view expected) {
  auto it = obj.FindMember(name);
  return it != obj.MemberEnd() && it->value.IsString() &&
         std::string_view(it->value.GetString(), it->value.GetStringLength()) == expected;
}

std::optional<std::string_view> get_string(const rapidjson::Value& obj, const char* name) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsString()) return std::nullopt;
  return std::string_view(it->value.GetString(), it->value.GetStringLength());
}

}  // namespace

std::string_view failure_name(Failure failure) noexcept {
  switch (failure) {
    case Failure::none:
      return "none";
    case Failure::connect:
      return "connect";
    case Failure::auth:
      return "auth";
    case Failure::server_proof:
      return "server_proof";
    case Failure::protocol:
      return "protocol";
    case Failure::io:
      return "io";
    case Failure::local:
      return "local";
  }
  return "none";
}

Status parse_endpoint(std::string_view text, std::string& host, std::uint16_t& port) {
  auto bad = [&](std::string why) {
    return fail(ErrorCode::invalid_args,
                "bad server address \"" + std::string(text) + "\": " + why);
  };
  std::string_view h = text;
  std::string_view p;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) return bad("missing ']'");
    h = text.substr(1, close - 1);
    auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return bad("expected ':' after ']'");
      p = rest.substr(1);
      if (p.empty()) return bad("empty port");
    }
  } else if (auto colon = text.rfind(':'); colon != std::string_view::npos) {
    if (text.find(':') == colon) {  // one colon: HOST:PORT
      h = text.substr(0, colon);
      p = text.substr(colon + 1);
      if (p.empty()) return bad("empty port");
    }  // several colons, no brackets: a bare IPv6 address
  }
  if (h.empty()) return bad("empty host");
  if (!p.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
    if (ec != std::errc() || end != p.data() + p.size() || value == 0 || value > 65535) {
      return bad("port must be a number from 1 to 65535");
    }
    port = static_cast<std::uint16_t>(value);
  }
  host.assign(h);
  return ok_status();
}

Status validate_object(std::string_view json, int max_depth) {
  // The same rules the server applies to every header (§7); whitespace around the object
  // is fine here, since the client re-encodes what a user typed.
  const auto first = json.find_first_not_of(" \t\r\n");
  json = first == std::string_view::npos ? std::string_view() : json.substr(first);
  json = json.substr(0, json.find_last_not_of(" \t\r\n") + 1);
  rapidjson::Document doc;
  json::JsonError error;
  if (!json::parse_strict_json(json, doc, error,
                               json::StrictJsonOptions{static_cast<unsigned>(max_depth)})) {
    return fail(ErrorCode::invalid_args, error.reason);
  }
  if (!doc.IsObject()) return fail(ErrorCode::invalid_args, "not a JSON object");
  return ok_status();
}

Result<std::string> sha256_fd(int fd, std::uint64_t total, const Progress& progress) {
  proof::Sha256 sha;
  std::unique_ptr<char[]> buffer(new char[kChunk]);
  std::uint64_t done = 0;
  for (;;) {
    ssize_t n = read_local(fd, buffer.get(), kChunk, -1);
    if (n < 0) return fail(ErrorCode::internal, "cannot read: " + errno_text(static_cast<int>(-n)));
    if (n == 0) break;
    sha.update(buffer.get(), static_cast<std::size_t>(n));
    done += static_cast<std::uint64_t>(n);
    if (progress) progress(done, std::max(total, done));
  }
  std::string hex = sha.hex();
  if (hex.empty()) return fail(ErrorCode::internal, "cannot compute SHA-256");
  return hex;
}

// --- Client ---

Client::Client(int fd, Options options)
    : fd_(fd), options_(std::move(options)), user_(options_.user) {}

Client::~Client() {
  if (ssl_ != nullptr) {
    {
      SigpipeGuard guard;
      SSL_shutdown(ssl_);  // close_notify, best effort: the socket is non-blocking
    }
    SSL_free(ssl_);
  }
  if (ssl_ctx_ != nullptr) SSL_CTX_free(ssl_ctx_);
  if (fd_ >= 0) ::close(fd_);
}

std::string Client::tls_version() const {
  return ssl_ != nullptr ? SSL_get_version(ssl_) : "";
}

// --- TLS (§8) ---

namespace {

// The oldest queued OpenSSL error (its reason), and the queue cleared.
std::string openssl_reason() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown TLS error";
  if (const char* reason = ERR_reason_error_string(code)) return reason;
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

bool is_ip_address(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

Status Client::start_tls() {
  const std::string where = endpoint_text(options_.host, options_.port);
  auto tls_failed = [&](const std::string& what) {
    return failed(Failure::connect, ErrorCode::unavailable, "TLS with " + where + ": " + what);
  };
  ERR_clear_error();
  ssl_ctx_ = SSL_CTX_new(TLS_client_method());
  if (ssl_ctx_ == nullptr) return tls_failed("cannot create a TLS context: " + openssl_reason());
  SSL_CTX_set_min_proto_version(ssl_ctx_, options_.allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
  SSL_CTX_set_options(ssl_ctx_, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                                    SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_clear_options(ssl_ctx_, SSL_OP_NO_EXTENDED_MASTER_SECRET);
  if (options_.allow_tls12) {
    SSL_CTX_set_cipher_list(ssl_ctx_, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL");
  }
  // Writes may be partial and retried from a moved buffer: write_all() advances as it goes.
  SSL_CTX_set_mode(ssl_ctx_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_verify(ssl_ctx_, SSL_VERIFY_PEER, nullptr);
  if (!options_.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ssl_ctx_, options_.ca_file.c_str(), nullptr) != 1) {
      return tls_failed("cannot load the CA file " + options_.ca_file + ": " + openssl_reason());
    }
  } else if (SSL_CTX_set_default_verify_paths(ssl_ctx_) != 1) {
    return tls_failed("cannot load the system's CA certificates: " + openssl_reason());
  }
  if (!options_.cert_file.empty() || !options_.key_file.empty()) {
    if (options_.cert_file.empty() || options_.key_file.empty()) {
      return tls_failed("a client certificate needs both its certificate and its key file");
    }
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx_, options_.cert_file.c_str()) != 1) {
      return tls_failed("cannot load the client certificate " + options_.cert_file + ": " +
                        openssl_reason());
    }
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx_, options_.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return tls_failed("cannot load the client key " + options_.key_file + ": " +
                        openssl_reason());
    }
    if (SSL_CTX_check_private_key(ssl_ctx_) != 1) {
      ERR_clear_error();
      return tls_failed("the client key " + options_.key_file + " does not match the certificate " +
                        options_.cert_file);
    }
  }
  ssl_ = SSL_new(ssl_ctx_);
  if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) {
    return tls_failed("cannot start TLS: " + openssl_reason());
  }
  const std::string& name = options_.server_name.empty() ? options_.host : options_.server_name;
  if (is_ip_address(name)) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name.c_str()) != 1) {
      return tls_failed("cannot check the address " + name);
    }
  } else {
    SSL_set_tlsext_host_name(ssl_, name.c_str());  // SNI: IP addresses are not sent
    if (SSL_set1_host(ssl_, name.c_str()) != 1) return tls_failed("cannot check the name " + name);
  }

  for (;;) {
    ERR_clear_error();
    int rc = 0;
    int err = 0;
    {
      SigpipeGuard guard;
      rc = SSL_connect(ssl_);
      err = SSL_get_error(ssl_, rc);
    }
    if (rc == 1) break;
    short events = err == SSL_ERROR_WANT_READ ? POLLIN : err == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (events != 0) {
      if (poll_one(fd_, events, timeout_ms(options_.timeout)) == 0) {
        return tls_failed("the TLS handshake timed out after " + seconds_text(options_.timeout));
      }
      continue;
    }
    const long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK) {
      return tls_failed("the server's certificate is not trusted for " + name + ": " +
                        X509_verify_cert_error_string(verify));
    }
    if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN) {
      const int saved = errno;
      std::string reason = openssl_reason();
      if (reason == "unknown TLS error") {
        reason = saved != 0 ? errno_text(saved) : "the server closed the connection";
      }
      return tls_failed("the TLS handshake failed: " + reason);
    }
    return tls_failed("the TLS handshake failed: " + openssl_reason());
  }
  // RFC 9266 needs the extended master secret under TLS 1.2 (RFC 7627).
  if (SSL_version(ssl_) < TLS1_3_VERSION && SSL_get_extms_support(ssl_) != 1) {
    return tls_failed("the server negotiated TLS 1.2 without the extended master secret");
  }
  proof::ChannelBinding cb{};
  if (SSL_export_keying_material(ssl_, cb.data(), cb.size(), proof::kExporterLabel.data(),
                                 proof::kExporterLabel.size(), nullptr, 0, 1) != 1) {
    return tls_failed("cannot export the channel binding: " + openssl_reason());
  }
  binding_ = cb;
  return ok_status();
}

bool Client::tls_pending() const {
  return ssl_ != nullptr && SSL_pending(ssl_) > 0;
}

long Client::transfer_out(const void* data, std::size_t size, short& wait, std::string& error) {
  wait = 0;
  if (ssl_ == nullptr) {
    for (;;) {
      ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL);
      if (n >= 0) return static_cast<long>(n);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wait = POLLOUT;
        return -1;
      }
      error = errno == EPIPE || errno == ECONNRESET
                  ? std::string("the server closed the connection while we were sending")
                  : "send failed: " + errno_text(errno);
      return -1;
    }
  }
  ERR_clear_error();
  int n = 0;
  int err = 0;
  {
    SigpipeGuard guard;
    n = SSL_write(ssl_, data, static_cast<int>(std::min<std::size_t>(size, 1u << 30)));
    err = SSL_get_error(ssl_, n);
  }
  if (n > 0) return n;
  if (err == SSL_ERROR_WANT_WRITE) {
    wait = POLLOUT;
    return -1;
  }
  if (err == SSL_ERROR_WANT_READ) {
    wait = POLLIN;
    return -1;
  }
  const int saved = errno;
  if (err == SSL_ERROR_ZERO_RETURN ||
      (err == SSL_ERROR_SYSCALL && (saved == EPIPE || saved == ECONNRESET || saved == 0))) {
    ERR_clear_error();
    error = "the server closed the connection while we were sending";
  } else {
    error = "send failed: " + (err == SSL_ERROR_SYSCALL ? errno_text(saved) : openssl_reason());
  }
  return -1;
}

long Client::transfer_in(void* data, std::size_t size, short& wait, std::string& error) {
  wait = 0;
  if (ssl_ == nullptr) {
    for (;;) {
      ssize_t n = ::recv(fd_, data, size, 0);
      if (n >= 0) return static_cast<long>(n);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wait = POLLIN;
        return -1;
      }
      error = errno == ECONNRESET ? std::string("the server reset the connection")
                                  : "receive failed: " + errno_text(errno);
      return -1;
    }
  }
  ERR_clear_error();
  int n = 0;
  int err = 0;
  {
    SigpipeGuard guard;  // a read may write too (a key update's answer)
    n = SSL_read(ssl_, data, static_cast<int>(std::min<std::size_t>(size, 1u << 30)));
    err = SSL_get_error(ssl_, n);
  }
  if (n > 0) return n;
  if (err == SSL_ERROR_WANT_READ) {
    wait = POLLIN;
    return -1;
  }
  if (err == SSL_ERROR_WANT_WRITE) {
    wait = POLLOUT;
    return -1;
  }
  // A close with or without close_notify (SSL_OP_IGNORE_UNEXPECTED_EOF): OPS/1's lengths
  // tell a truncated frame or payload from a complete one.
  if (err == SSL_ERROR_ZERO_RETURN) return 0;
  const int saved = errno;
  if (err == SSL_ERROR_SYSCALL && saved == ECONNRESET) {
    ERR_clear_error();
    error = "the server reset the connection";
  } else if (err == SSL_ERROR_SYSCALL && saved == 0) {
    ERR_clear_error();
    return 0;
  } else {
    error = "receive failed: " + (err == SSL_ERROR_SYSCALL ? errno_text(saved) : openssl_reason());
  }
  return -1;
}

Error Client::failed(Failure failure, ErrorCode code, std::string message) {
  failure_ = failure;
  Error error{code, std::move(message)};
  if (failure == Failure::io || failure == Failure::protocol || failure == Failure::local) {
    if (!broken_) {
      broken_ = true;
      broken_error_ = error;
    }
  }
  return error;
}

Error Client::refuse_broken() const {
  return Error{broken_error_.code,
               "connection unusable after an earlier failure: " + broken_error_.message};
}

char* Client::buffer() {
  if (!buffer_) buffer_.reset(new char[kChunk]);
  return buffer_.get();
}

Result<std::unique_ptr<Client>> Client::connect(const Options& options, Failure* why) {
  auto set_why = [&](Failure f) {
    if (why) *why = f;
  };
  set_why(Failure::none);
  if (options.user.empty()) return fail(ErrorCode::invalid_args, "no user name given");

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  addrinfo* list = nullptr;
  const std::string where = endpoint_text(options.host, options.port);
  int gai =
      ::getaddrinfo(options.host.c_str(), std::to_string(options.port).c_str(), &hints, &list);
  if (gai != 0) {
    set_why(Failure::connect);
    return fail(ErrorCode::unavailable,
                "cannot resolve " + options.host + ": " + ::gai_strerror(gai));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(list, &::freeaddrinfo);

  int fd = -1;
  std::string last_error = "no address";
  for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    int s =
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (s < 0) {
      last_error = errno_text(errno);
      continue;
    }
    int rc = ::connect(s, ai->ai_addr, ai->ai_addrlen);
    if (rc < 0 && errno == EINPROGRESS) {
      int revents = poll_one(s, POLLOUT, timeout_ms(options.timeout));
      if (revents == 0) {
        last_error = "timed out after " + seconds_text(options.timeout);
        ::close(s);
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      if (revents < 0)
        err = errno;
      else if (::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
      rc = err == 0 ? 0 : -1;
      errno = err;
    }
    if (rc < 0) {
      last_error = errno_text(errno);
      ::close(s);
      continue;
    }
    fd = s;
    break;
  }
  if (fd < 0) {
    set_why(Failure::connect);
    return fail(ErrorCode::unavailable, "cannot connect to " + where + ": " + last_error);
  }
  int one = 1;
  // Headers are small and answered one by one: Nagle would delay each by an RTT.
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  std::unique_ptr<Client> client(new Client(fd, options));
  if (options.tls) {
    if (Status st = client->start_tls(); !st) {
      set_why(client->failure_);
      return std::move(st).error();
    }
  }
  Status hs = client->handshake();
  if (!hs) {
    set_why(client->failure_);
    return std::move(hs).error();
  }
  return client;
}

// The first frame, read so that a peer that is not an opserver fails fast and says so: at
// most kChallengeWait of silence (less with a shorter --timeout), and a length prefix
// that no challenge would have (e.g. "SSH-", "HTTP") refused at once, before reading on.
Result<std::string> Client::read_challenge() {
  constexpr std::chrono::milliseconds kChallengeWait{10000};
  constexpr std::uint32_t kMaxChallengeFrame = 64 * 1024;
  const auto saved = options_.timeout;
  if (options_.timeout.count() <= 0 || options_.timeout > kChallengeWait) {
    options_.timeout = kChallengeWait;
  }
  auto text = read_frame_header(kMaxChallengeFrame);
  options_.timeout = saved;
  return text;
}

Status Client::handshake() {
  // §2.1: the challenge.
  auto challenge_text = read_challenge();
  if (!challenge_text) {
    if (failure_ == Failure::io && ssl_ != nullptr) {
      // Under TLS 1.3 the server checks a client certificate after our side of the
      // handshake has completed: its refusal arrives here, as an alert.
      return failed(Failure::connect, ErrorCode::unavailable,
                    "the server ended the TLS connection before the OPS/1 challenge (does it "
                    "require a client certificate?): " +
                        challenge_text.error().message);
    }
    if (failure_ == Failure::io || failure_ == Failure::protocol) {
      return failed(
          failure_, challenge_text.error().code,
          "no OPS/1 challenge: is this an opserver? (" + challenge_text.error().message + ")");
    }
    return std::move(challenge_text).error();
  }
  rapidjson::Document challenge;
  challenge.Parse<rapidjson::kParseValidateEncodingFlag>(challenge_text->data(),
                                                         challenge_text->size());
  auto protocol_error = [&](const std::string& what) {
    return failed(Failure::protocol, ErrorCode::bad_frame,
                  "no OPS/1 challenge: is this an opserver? (" + what + ")");
  };
  if (challenge.HasParseError() || !challenge.IsObject()) {
    return protocol_error("the challenge is not a JSON object");
  }
  std::uint64_t payload = 0;
  if (!read_payload_size(challenge, payload) || payload != 0) {
    return protocol_error("the challenge carries a payload");
  }
  if (is_string(challenge, "type", "error")) {
    Error error = error_from(challenge);
    if (error.code == ErrorCode::auth_failed)
      return failed(Failure::auth, error.code, error.message);
    failure_ = Failure::none;  // the server answered, e.g. unavailable when it is full
    return error;
  }
  if (!is_string(challenge, "type", "challenge")) return protocol_error("expected a challenge");
  if (!is_string(challenge, "protocol", proof::kProtocol)) {
    return protocol_error("unsupported protocol");
  }
  bool offers_plain = false;
  bool offers_plus = false;
  if (auto m = challenge.FindMember("mechanisms");
      m != challenge.MemberEnd() && m->value.IsArray()) {
    for (const auto& v : m->value.GetArray()) {
      if (!v.IsString()) continue;
      std::string_view name(v.GetString(), v.GetStringLength());
      offers_plain = offers_plain || name == proof::kMechanism;
      offers_plus = offers_plus || name == proof::kMechanismPlus;
    }
  }
  // §8: over TLS, the login is bound to this TLS connection (hmac-sha256-plus) unless the
  // user explicitly allowed going on without it.
  const bool use_plus = binding_.has_value() && offers_plus;
  if (binding_ && !offers_plus) {
    if (!options_.insecure_no_binding) {
      return failed(Failure::auth, ErrorCode::auth_failed,
                    "the server does not offer channel binding (hmac-sha256-plus) over TLS; "
                    "refusing to log in without it (allow it with --insecure-no-binding)");
    }
    if (!offers_plain) return protocol_error("the server offers no mechanism we know");
  } else if (!binding_ && !offers_plain) {
    return protocol_error("the server does not offer hmac-sha256");
  }
  const std::string_view mechanism = use_plus ? proof::kMechanismPlus : proof::kMechanism;
  const proof::ChannelBinding* cb = use_plus ? &*binding_ : nullptr;
  auto nonce_hex = get_string(challenge, "nonce");
  std::optional<proof::Nonce> nonce;
  if (nonce_hex) nonce = proof::from_hex<proof::kNonceBytes>(*nonce_hex);
  if (!nonce) return protocol_error("the challenge nonce is not 64 lowercase hex digits");

  // §2.2: our answer. §7: a cnonce equal to the nonce fails, so never send one.
  proof::Nonce cnonce = proof::random_nonce();
  while (cnonce == *nonce) cnonce = proof::random_nonce();
  const proof::Digest client_proof =
      proof::compute(options_.key, proof::kClientLabel, *nonce, cnonce, user_, cb);
  rapidjson::StringBuffer buf;
  StrictWriter w(buf);
  w.StartObject();
  w.Key("type");
  w.String("auth");
  w.Key("mechanism");
  w.String(mechanism.data(), static_cast<rapidjson::SizeType>(mechanism.size()));
  w.Key("user");
  if (!w.String(user_.data(), static_cast<rapidjson::SizeType>(user_.size()))) {
    failure_ = Failure::none;
    return fail(ErrorCode::invalid_args, "the user name is not valid UTF-8");
  }
  w.Key("cnonce");
  w.String(proof::to_hex(cnonce));
  w.Key("proof");
  w.String(proof::to_hex(client_proof));
  w.EndObject();
  if (options_.on_frame) options_.on_frame(true, {buf.GetString(), buf.GetSize()});
  const std::string auth_frame = frame::encode({buf.GetString(), buf.GetSize()});
  if (Status s = write_all(auth_frame.data(), auth_frame.size()); !s) return s;

  // §2.3 / §2.4: welcome or auth_failed.
  auto reply_text = read_frame_header();
  if (!reply_text) {
    if (failure_ == Failure::io) {
      return failed(Failure::io, reply_text.error().code,
                    "the server closed the connection during login: " + reply_text.error().message);
    }
    return std::move(reply_text).error();
  }
  rapidjson::Document reply;
  reply.Parse<rapidjson::kParseValidateEncodingFlag>(reply_text->data(), reply_text->size());
  if (reply.HasParseError() || !reply.IsObject())
    return protocol_error("the reply to auth is not an object");
  if (is_string(reply, "type", "error")) {
    Error error = error_from(reply);
    if (error.code == ErrorCode::auth_failed) {
      return failed(Failure::auth, error.code,
                    "login refused for user \"" + user_ + "\" (" + error.message +
                        "): wrong user name or key");
    }
    failure_ = Failure::none;
    return error;
  }
  if (!is_string(reply, "type", "welcome")) return protocol_error("expected welcome");
  auto server_hex = get_string(reply, "proof");
  std::optional<proof::Digest> server_proof;
  if (server_hex) server_proof = proof::from_hex<proof::kProofBytes>(*server_hex);
  if (!server_proof) return protocol_error("the welcome proof is not 64 lowercase hex digits");
  const proof::Digest expected =
      proof::compute(options_.key, proof::kServerLabel, *nonce, cnonce, user_, cb);
  if (!proof::equal(*server_proof, expected)) {
    // The server accepted us without knowing the key: it is not the server we meant.
    return failed(Failure::server_proof, ErrorCode::auth_failed,
                  "the server's proof is wrong: it does not know the key of user \"" + user_ +
                      "\"; refusing to continue");
  }
  if (!read_payload_size(reply, payload) || payload != 0) {
    return protocol_error("the welcome carries a payload");
  }
  if (auto u = get_string(reply, "user"); u && *u != user_) {
    return protocol_error("the welcome names another user");
  }
  if (auto s = get_string(reply, "server")) server_.assign(*s);
  channel_bound_ = use_plus;
  failure_ = Failure::none;
  return ok_status();
}

// --- socket I/O ---

Status Client::write_all(const void* data, std::size_t size) {
  if (broken_) return refuse_broken();
  const char* p = static_cast<const char*>(data);
  bool peer_closed = false;
  std::string error;
  while (size > 0) {
    short wait = 0;
    long n = transfer_out(p, size, wait, error);
    if (n > 0) {
      p += n;
      size -= static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0 || wait == 0) {
      return failed(Failure::io, ErrorCode::unavailable,
                    error.empty() ? "send failed: nothing written" : error);
    }
    // While blocked, take in what the server says: an early answer (§3: an error to a
    // request whose payload it discards) must not deadlock us against a full socket.
    short events = wait;
    const bool take_in = !peer_closed && rbuf_.size() - rpos_ < kMaxEarlyBytes;
    if (take_in) events |= POLLIN;
    int revents =
        (take_in && tls_pending()) ? POLLIN : poll_one(fd_, events, timeout_ms(options_.timeout));
    if (revents == 0) {
      return failed(Failure::io, ErrorCode::timeout,
                    "sending stalled for " + seconds_text(options_.timeout));
    }
    if (revents > 0 && (revents & POLLIN) && take_in) {
      char tmp[65536];
      short rwait = 0;
      std::string rerror;
      long r = transfer_in(tmp, sizeof tmp, rwait, rerror);
      if (r > 0) {
        if (rpos_ == rbuf_.size()) {
          rbuf_.clear();
          rpos_ = 0;
        }
        rbuf_.append(tmp, static_cast<std::size_t>(r));
      } else if (r == 0 || rwait == 0) {
        peer_closed = true;
      }
    }
  }
  return ok_status();
}

Status Client::wait_readable() {
  if (tls_pending()) return ok_status();
  int revents = poll_one(fd_, POLLIN, timeout_ms(options_.timeout));
  if (revents == 0) {
    return failed(Failure::io, ErrorCode::timeout,
                  "no answer from the server for " + seconds_text(options_.timeout));
  }
  return ok_status();
}

Result<std::size_t> Client::read_some(void* data, std::size_t size) {
  if (broken_) return refuse_broken();
  if (rpos_ < rbuf_.size()) {
    std::size_t n = std::min(size, rbuf_.size() - rpos_);
    std::memcpy(data, rbuf_.data() + rpos_, n);
    rpos_ += n;
    if (rpos_ == rbuf_.size()) {
      rbuf_.clear();
      rpos_ = 0;
    }
    return n;
  }
  std::string error;
  for (;;) {
    short wait = 0;
    long n = transfer_in(data, size, wait, error);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (wait == 0) return failed(Failure::io, ErrorCode::unavailable, error);
    if (wait == POLLIN) {
      if (Status s = wait_readable(); !s) return std::move(s).error();
      continue;
    }
    // TLS wanting to write while reading (a key update's answer).
    if (poll_one(fd_, wait, timeout_ms(options_.timeout)) == 0) {
      return failed(Failure::io, ErrorCode::timeout,
                    "no progress with the server for " + seconds_text(options_.timeout));
    }
  }
}

Status Client::read_exact(void* data, std::size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    auto n = read_some(p, size);
    if (!n) return std::move(n).error();
    if (*n == 0)
      return failed(Failure::io, ErrorCode::unavailable, "the server closed the connection");
    p += *n;
    size -= *n;
  }
  return ok_status();
}

Result<std::string> Client::read_frame_header(std::uint32_t max_len) {
  if (max_len == 0) max_len = kMaxResponseFrame;
  unsigned char prefix[4];
  if (Status s = read_exact(prefix, sizeof prefix); !s) return std::move(s).error();
  const std::uint32_t len = frame::decode_length(prefix);
  if (len < 2 || len > max_len) {
    return failed(Failure::protocol, ErrorCode::bad_frame,
                  "the server sent a frame of " + std::to_string(len) + " bytes (allowed: 2 to " +
                      std::to_string(max_len) + ")");
  }
  std::string header(len, '\0');
  if (Status s = read_exact(header.data(), len); !s) return std::move(s).error();
  if (options_.on_frame) options_.on_frame(false, header);
  return header;
}

// --- requests ---

Result<std::uint64_t> Client::send_request(std::string_view operate, std::string_view args_json,
                                           std::uint64_t payload_size) {
  if (broken_) return refuse_broken();
  if (out_pending_ > 0) {
    return fail(ErrorCode::internal, "the previous request's payload is not fully sent (" +
                                         std::to_string(out_pending_) + " bytes left)");
  }
  if (!args_json.empty()) {
    // §7: the header nests args one level down; 32 levels in all.
    if (Status s = validate_object(args_json, 31); !s) {
      return fail(ErrorCode::invalid_args, "args: " + s.error().message);
    }
  }
  if (payload_size > frame::kMaxPayload) {
    return fail(ErrorCode::payload_too_large, "payload larger than 2^53-1 bytes");
  }
  const std::uint64_t id = next_id_;
  rapidjson::StringBuffer buf;
  StrictWriter w(buf);
  w.StartObject();
  w.Key("id");
  w.Uint64(id);
  w.Key("operate");
  if (!w.String(operate.data(), static_cast<rapidjson::SizeType>(operate.size()))) {
    return fail(ErrorCode::invalid_args, "the operation name is not valid UTF-8");
  }
  if (!args_json.empty()) {
    w.Key("args");
    w.RawValue(args_json.data(), args_json.size(), rapidjson::kObjectType);
  }
  if (payload_size > 0) {
    w.Key("payload");
    w.Uint64(payload_size);
  }
  w.EndObject();
  if (buf.GetSize() > 0xffffffffu) return fail(ErrorCode::payload_too_large, "header too large");
  if (options_.on_frame) options_.on_frame(true, {buf.GetString(), buf.GetSize()});
  const std::string request = frame::encode({buf.GetString(), buf.GetSize()});
  if (Status s = write_all(request.data(), request.size()); !s) {
    return std::move(s).error();
  }
  ++next_id_;
  pending_ids_.push_back(id);
  out_pending_ = payload_size;
  return id;
}

Status Client::send_payload(const void* data, std::size_t size) {
  if (broken_) return refuse_broken();
  if (size > out_pending_) {
    return fail(ErrorCode::internal, "more payload than the request declared");
  }
  if (Status s = write_all(data, size); !s) return s;
  out_pending_ -= size;
  return ok_status();
}

Status Client::send_payload_from_fd(int fd, std::uint64_t size, const Progress& progress) {
  if (broken_) return refuse_broken();
  if (size > out_pending_) {
    return fail(ErrorCode::internal, "more payload than the request declared");
  }
  char* buf = buffer();
  std::uint64_t done = 0;
  while (done < size) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - done));
    ssize_t n = read_local(fd, buf, want, timeout_ms(options_.timeout));
    if (n == 0) {
      return failed(Failure::local, ErrorCode::internal,
                    "the input ended after " + std::to_string(done) + " of " +
                        std::to_string(size) + " bytes");
    }
    if (n < 0) {
      return failed(Failure::local, ErrorCode::internal,
                    "cannot read the input: " + errno_text(static_cast<int>(-n)));
    }
    if (Status s = write_all(buf, static_cast<std::size_t>(n)); !s) return s;
    done += static_cast<std::uint64_t>(n);
    out_pending_ -= static_cast<std::uint64_t>(n);
    if (progress) progress(done, size);
  }
  return ok_status();
}

Result<Response> Client::read_response() {
  if (broken_) return refuse_broken();
  if (in_pending_ > 0) {
    if (Status s = skip_payload(in_pending_); !s) return std::move(s).error();
  }
  auto text = read_frame_header();
  if (!text) return std::move(text).error();
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(text->data(), text->size());
  auto protocol_error = [&](const std::string& what) {
    return failed(Failure::protocol, ErrorCode::bad_frame, "bad response from the server: " + what);
  };
  if (doc.HasParseError() || !doc.IsObject()) return protocol_error("not a JSON object");

  Response r;
  if (!read_payload_size(doc, r.payload_size)) return protocol_error("bad \"payload\"");
  auto id = doc.FindMember("id");
  if (id == doc.MemberEnd() || id->value.IsNull()) {
    r.has_id = false;
  } else if (id->value.IsUint64()) {
    r.id = id->value.GetUint64();
  } else {
    return protocol_error("bad \"id\"");
  }
  auto ok = doc.FindMember("ok");
  if (ok != doc.MemberEnd() && ok->value.IsBool()) {
    r.ok = ok->value.GetBool();
  } else if (is_string(doc, "type", "error")) {
    r.ok = false;  // a connection-level error frame, as in the handshake (§2.4)
  } else {
    return protocol_error("no \"ok\"");
  }
  if (r.ok) {
    auto result = doc.FindMember("result");
    if (result != doc.MemberEnd()) {
      if (!result->value.IsObject()) return protocol_error("\"result\" is not an object");
      r.result_json = json::to_string(result->value);
    }
  } else {
    r.error = error_from(doc);
  }
  // §3: answers come strictly in order.
  if (!pending_ids_.empty()) {
    if (r.has_id && r.id != pending_ids_.front()) {
      return protocol_error("answer to request " + std::to_string(r.id) + " while request " +
                            std::to_string(pending_ids_.front()) + " was next");
    }
    pending_ids_.pop_front();
  }
  r.header_json = std::move(*text);
  in_pending_ = r.payload_size;
  if (!r.ok && is_fatal(r.error.code) && !broken_) {
    // §3: the server closes after these. The answer itself is still returned, and
    // last_failure() stays none: it was the server that spoke.
    broken_ = true;
    broken_error_ = Error{r.error.code, "the server closed the connection after " +
                                            std::string(wire_name(r.error.code))};
  }
  return r;
}

Status Client::read_payload(void* data, std::size_t size) {
  if (broken_) return refuse_broken();
  if (size > in_pending_) return fail(ErrorCode::internal, "more payload asked for than announced");
  if (Status s = read_exact(data, size); !s) return s;
  in_pending_ -= size;
  return ok_status();
}

Status Client::read_payload_to_fd(int fd, std::uint64_t size, const Progress& progress) {
  if (broken_) return refuse_broken();
  if (size > in_pending_) return fail(ErrorCode::internal, "more payload asked for than announced");
  char* buf = buffer();
  std::uint64_t done = 0;
  while (done < size) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - done));
    auto n = read_some(buf, want);
    if (!n) return std::move(n).error();
    if (*n == 0) {
      return failed(Failure::io, ErrorCode::unavailable,
                    "the server closed the connection after " + std::to_string(done) + " of " +
                        std::to_string(size) + " payload bytes");
    }
    if (int err = write_local(fd, buf, *n); err != 0) {
      return failed(Failure::local, ErrorCode::internal,
                    "cannot write the output: " + errno_text(err));
    }
    done += *n;
    in_pending_ -= *n;
    if (progress) progress(done, size);
  }
  return ok_status();
}

Status Client::skip_payload(std::uint64_t size) {
  if (broken_) return refuse_broken();
  if (size > in_pending_) return fail(ErrorCode::internal, "more payload skipped than announced");
  char* buf = buffer();
  while (size > 0) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size));
    auto n = read_some(buf, want);
    if (!n) return std::move(n).error();
    if (*n == 0) {
      return failed(Failure::io, ErrorCode::unavailable,
                    "the server closed the connection in the middle of a payload");
    }
    size -= *n;
    in_pending_ -= *n;
  }
  return ok_status();
}

// A send failed. If the server had answered (early, before closing: §3 "answers and
// closes"), that answer is the useful news; otherwise the send error is.
Result<Response> Client::after_send_failure(Error send_error) {
  if (failure_ != Failure::io || send_error.code == ErrorCode::timeout) return send_error;
  const Failure saved = failure_;
  broken_ = false;
  in_pending_ = 0;
  const auto old_timeout = options_.timeout;
  options_.timeout = std::min(options_.timeout, std::chrono::milliseconds(2000));
  auto r = read_response();
  options_.timeout = old_timeout;
  broken_ = true;
  failure_ = saved;
  if (r) return r;
  return send_error;
}

Result<Response> Client::call(std::string_view operate, std::string_view args_json,
                              std::string_view payload) {
  auto id = send_request(operate, args_json, payload.size());
  if (!id) {
    if (failure_ == Failure::io) return after_send_failure(std::move(id).error());
    return std::move(id).error();
  }
  if (!payload.empty()) {
    if (Status s = send_payload(payload.data(), payload.size()); !s) {
      return after_send_failure(std::move(s).error());
    }
  }
  return read_response();
}

Result<Response> Client::call_collect(std::string_view operate, std::string_view args_json,
                                      std::string& payload_out, std::string_view payload) {
  auto r = call(operate, args_json, payload);
  if (!r) return r;
  payload_out.clear();
  if (r->payload_size > 0) {
    if (r->payload_size > payload_out.max_size()) {
      return fail(ErrorCode::payload_too_large, "payload too large for memory");
    }
    payload_out.resize(static_cast<std::size_t>(r->payload_size));
    if (Status s = read_payload(payload_out.data(), payload_out.size()); !s) {
      return std::move(s).error();
    }
  }
  return r;
}

Result<Response> Client::call_fd(std::string_view operate, std::string_view args_json, int in_fd,
                                 std::uint64_t in_size, const Progress& progress) {
  auto id = send_request(operate, args_json, in_size);
  if (!id) {
    if (failure_ == Failure::io) return after_send_failure(std::move(id).error());
    return std::move(id).error();
  }
  if (in_size > 0) {
    if (Status s = send_payload_from_fd(in_fd, in_size, progress); !s) {
      return after_send_failure(std::move(s).error());
    }
  }
  return read_response();
}

Status Client::send_raw(std::string_view bytes) {
  return write_all(bytes.data(), bytes.size());
}

}  // namespace ops::client
