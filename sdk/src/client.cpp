#include "opserver/client.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
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

// SAX checks a strict OPS/1 peer applies to a header (§7) that rapidjson alone does not:
// duplicate member names, nesting depth, escaped lone surrogates.
class StrictHandler : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, StrictHandler> {
 public:
  explicit StrictHandler(int max_depth) : max_depth_(max_depth) {}

  bool Default() {
    if (depth() == 0) return fail("not a JSON object");
    return true;
  }
  bool String(const char* s, rapidjson::SizeType n, bool) {
    if (depth() == 0) return fail("not a JSON object");
    return check_text(s, n);
  }
  bool StartObject() {
    if (static_cast<int>(keys_.size()) >= max_depth_) return fail("nested too deeply");
    keys_.emplace_back();
    kinds_.push_back(true);
    return true;
  }
  bool Key(const char* s, rapidjson::SizeType n, bool) {
    if (!check_text(s, n)) return false;
    if (!keys_.back().emplace(s, n).second) {
      return fail("duplicate member name \"" + std::string(s, n) + "\"");
    }
    return true;
  }
  bool EndObject(rapidjson::SizeType) {
    keys_.pop_back();
    kinds_.pop_back();
    return true;
  }
  bool StartArray() {
    if (depth() == 0) return fail("not a JSON object");
    if (static_cast<int>(kinds_.size()) >= max_depth_) return fail("nested too deeply");
    kinds_.push_back(false);
    return true;
  }
  bool EndArray(rapidjson::SizeType) {
    kinds_.pop_back();
    return true;
  }

  const std::string& reason() const noexcept { return reason_; }

 private:
  std::size_t depth() const noexcept { return kinds_.size(); }
  bool fail(std::string reason) {
    reason_ = std::move(reason);
    return false;
  }
  // rapidjson decodes "\udc00" alone into the UTF-8 form of a surrogate (ED B0..BF xx),
  // which raw-input validation cannot see; a strict peer rejects it.
  bool check_text(const char* s, rapidjson::SizeType n) {
    for (rapidjson::SizeType i = 0; i + 1 < n; ++i) {
      if (static_cast<unsigned char>(s[i]) == 0xED &&
          static_cast<unsigned char>(s[i + 1]) >= 0xA0) {
        return fail("a lone surrogate escape");
      }
    }
    return true;
  }

  int max_depth_;
  std::vector<std::set<std::string, std::less<>>> keys_;
  std::vector<bool> kinds_;  // true: object, false: array
  std::string reason_;
};

// The "payload" member of a header (§1): absent means 0, else a plain non-negative integer.
bool read_payload_size(const rapidjson::Value& header, std::uint64_t& size) {
  size = 0;
  auto it = header.FindMember("payload");
  if (it == header.MemberEnd()) return true;
  if (!it->value.IsUint64()) return false;
  size = it->value.GetUint64();
  return size <= frame::kMaxPayload;
}

std::string to_json(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
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
    error.details = to_json(d->value);
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
  StrictHandler handler(max_depth);
  rapidjson::Reader reader;
  rapidjson::MemoryStream stream(json.data(), json.size());
  rapidjson::ParseResult result =
      reader.Parse<rapidjson::kParseValidateEncodingFlag>(stream, handler);
  if (!result) {
    if (!handler.reason().empty()) return fail(ErrorCode::invalid_args, handler.reason());
    return fail(ErrorCode::invalid_args, std::string("invalid JSON at offset ") +
                                             std::to_string(result.Offset()) + ": " +
                                             rapidjson::GetParseError_En(result.Code()));
  }
  // A scalar or array root never gets here: the handler refuses anything but an object at
  // depth 0.
  return ok_status();
}

Result<std::string> sha256_fd(int fd, std::uint64_t total, const Progress& progress) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return fail(ErrorCode::internal, "cannot start SHA-256");
  }
  std::unique_ptr<char[]> buffer(new char[kChunk]);
  std::uint64_t done = 0;
  for (;;) {
    ssize_t n = read_local(fd, buffer.get(), kChunk, -1);
    if (n < 0) return fail(ErrorCode::internal, "cannot read: " + errno_text(static_cast<int>(-n)));
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buffer.get(), static_cast<std::size_t>(n));
    done += static_cast<std::uint64_t>(n);
    if (progress) progress(done, std::max(total, done));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  return proof::to_hex(digest, length);
}

// --- Client ---

Client::Client(int fd, Options options)
    : fd_(fd), options_(std::move(options)), user_(options_.user) {}

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
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
  Status hs = client->handshake();
  if (!hs) {
    set_why(client->failure_);
    return std::move(hs).error();
  }
  return client;
}

Status Client::handshake() {
  // §2.1: the challenge.
  auto challenge_text = read_frame_header();
  if (!challenge_text) {
    if (failure_ == Failure::io) {
      return failed(Failure::io, challenge_text.error().code,
                    "no challenge from the server: " + challenge_text.error().message);
    }
    return std::move(challenge_text).error();
  }
  rapidjson::Document challenge;
  challenge.Parse<rapidjson::kParseValidateEncodingFlag>(challenge_text->data(),
                                                         challenge_text->size());
  auto protocol_error = [&](const std::string& what) {
    return failed(Failure::protocol, ErrorCode::bad_frame, "not an OPS/1 server (" + what + ")");
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
  bool has_mechanism = false;
  if (auto m = challenge.FindMember("mechanisms");
      m != challenge.MemberEnd() && m->value.IsArray()) {
    for (const auto& v : m->value.GetArray()) {
      if (v.IsString() &&
          std::string_view(v.GetString(), v.GetStringLength()) == proof::kMechanism) {
        has_mechanism = true;
      }
    }
  }
  if (!has_mechanism) return protocol_error("the server does not offer hmac-sha256");
  auto nonce_hex = get_string(challenge, "nonce");
  std::optional<proof::Nonce> nonce;
  if (nonce_hex) nonce = proof::from_hex<proof::kNonceBytes>(*nonce_hex);
  if (!nonce) return protocol_error("the challenge nonce is not 64 lowercase hex digits");

  // §2.2: our answer. §7: a cnonce equal to the nonce fails, so never send one.
  proof::Nonce cnonce = proof::random_nonce();
  while (cnonce == *nonce) cnonce = proof::random_nonce();
  const proof::Digest client_proof = proof::client_proof(options_.key, *nonce, cnonce, user_);
  rapidjson::StringBuffer buf;
  StrictWriter w(buf);
  w.StartObject();
  w.Key("type");
  w.String("auth");
  w.Key("mechanism");
  w.String(proof::kMechanism.data(), static_cast<rapidjson::SizeType>(proof::kMechanism.size()));
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
  const proof::Digest expected = proof::server_proof(options_.key, *nonce, cnonce, user_);
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
  failure_ = Failure::none;
  return ok_status();
}

// --- socket I/O ---

Status Client::write_all(const void* data, std::size_t size) {
  if (broken_) return refuse_broken();
  const char* p = static_cast<const char*>(data);
  bool peer_closed = false;
  while (size > 0) {
    ssize_t n = ::send(fd_, p, size, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      size -= static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // While blocked, take in what the server says: an early answer (§3: an error to a
      // request whose payload it discards) must not deadlock us against a full socket.
      short events = POLLOUT;
      if (!peer_closed && rbuf_.size() - rpos_ < kMaxEarlyBytes) events |= POLLIN;
      int revents = poll_one(fd_, events, timeout_ms(options_.timeout));
      if (revents == 0) {
        return failed(Failure::io, ErrorCode::timeout,
                      "sending stalled for " + seconds_text(options_.timeout));
      }
      if (revents > 0 && (revents & POLLIN) && (events & POLLIN)) {
        char tmp[65536];
        ssize_t r = ::recv(fd_, tmp, sizeof tmp, 0);
        if (r > 0) {
          if (rpos_ == rbuf_.size()) {
            rbuf_.clear();
            rpos_ = 0;
          }
          rbuf_.append(tmp, static_cast<std::size_t>(r));
        } else if (r == 0) {
          peer_closed = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          peer_closed = true;
        }
      }
      continue;
    }
    int err = n < 0 ? errno : EIO;
    if (err == EPIPE || err == ECONNRESET) {
      return failed(Failure::io, ErrorCode::unavailable,
                    "the server closed the connection while we were sending");
    }
    return failed(Failure::io, ErrorCode::unavailable, "send failed: " + errno_text(err));
  }
  return ok_status();
}

Status Client::wait_readable() {
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
  for (;;) {
    ssize_t n = ::recv(fd_, data, size, 0);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (Status s = wait_readable(); !s) return std::move(s).error();
      continue;
    }
    int err = errno;
    if (err == ECONNRESET) {
      return failed(Failure::io, ErrorCode::unavailable, "the server reset the connection");
    }
    return failed(Failure::io, ErrorCode::unavailable, "receive failed: " + errno_text(err));
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

Result<std::string> Client::read_frame_header() {
  unsigned char prefix[4];
  if (Status s = read_exact(prefix, sizeof prefix); !s) return std::move(s).error();
  const std::uint32_t len = frame::decode_length(prefix);
  if (len < 2 || len > kMaxResponseFrame) {
    return failed(Failure::protocol, ErrorCode::bad_frame,
                  "the server sent a frame of " + std::to_string(len) + " bytes (allowed: 2 to " +
                      std::to_string(kMaxResponseFrame) + ")");
  }
  std::string header(len, '\0');
  if (Status s = read_exact(header.data(), len); !s) return std::move(s).error();
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
      r.result_json = to_json(result->value);
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
