// Fuzz target: whole sessions against the real server logic (reliability.md, "harness
// hints"; the shape of h2o's fuzz/driver.cc). The real Server (core/net) runs in this
// process, with the real plugin .so files, on a loopback port; its coverage and any
// sanitizer report count for the fuzzer. For each input a TCP connection is opened, the
// challenge read, and, unless the first byte's low bit is set, the handshake completed
// as user "fuzz" so that the post-authentication parser, dispatcher and plugins see the
// rest. The rest of the input (after a second byte choosing a chunk size of 1-256) is
// then sent in chunks of that size with TCP_NODELAY, the write side shut down, and the
// answers read until the server closes. Properties: the handshake of a valid user always
// succeeds (the server is alive and well), and the server always closes a connection
// whose client has finished sending (no hang: 5 s).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "auth/user_store.hpp"
#include "config/config.hpp"
#include "net/server.hpp"
#include "opserver/frame.hpp"
#include "opserver/proof.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const std::string kKey = "f00df00df00df00df00df00df00df00df00df00df00df00df00df00df00df00d";

fs::path g_log;  // the in-process server's log

// Aborts (a finding for libFuzzer) after showing the end of the server's log.
[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_session: %s\n", what.c_str());
  if (!g_log.empty()) {
    std::ifstream in(g_log);
    std::string line, tail[20];
    std::size_t n = 0;
    while (std::getline(in, line)) tail[n++ % 20] = line;
    std::fprintf(stderr, "---- last lines of the server log (%s)\n", g_log.c_str());
    for (std::size_t i = n > 20 ? n - 20 : 0; i < n; ++i) {
      std::fprintf(stderr, "%s\n", tail[i % 20].c_str());
    }
  }
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) fail(what);
}

std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  check(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "bind");
  check(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0, "getsockname");
  ::close(fd);
  return ntohs(a.sin_port);
}

int connect_to(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Reads exactly n bytes before `until`; false on close, error or time.
bool read_exact(int fd, char* out, std::size_t n, Clock::time_point until) {
  while (n > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    if (left.count() <= 0) return false;
    // libFuzzer's -timeout runs on SIGALRM: every blocking call may see EINTR.
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    ssize_t r = ::recv(fd, out, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    out += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool read_frame(int fd, std::string& header, Clock::time_point until) {
  unsigned char len[4];
  if (!read_exact(fd, reinterpret_cast<char*>(len), 4, until)) return false;
  std::uint32_t n = ops::frame::decode_length(len);
  if (n > (1u << 20)) return false;
  header.resize(n);
  return read_exact(fd, header.data(), n, until);
}

bool send_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

void stop_live_server();

struct LiveServer {
  fs::path dir;
  std::uint16_t port = 0;
  std::unique_ptr<ops::core::Server> server;
  std::thread runner;  // runs server->run() until the process exits

  LiveServer() {
    std::signal(SIGPIPE, SIG_IGN);  // as main() does
    std::string templ = (fs::temp_directory_path() / "opsfuzz-session-XXXXXX").string();
    check(::mkdtemp(templ.data()) != nullptr, "mkdtemp");
    dir = templ;
    // Warnings and errors only (refusals, plugin failures), kept for a failure report.
    spdlog::set_default_logger(spdlog::basic_logger_mt("opserver", (dir / "server.log").string()));
    spdlog::set_level(spdlog::level::warn);
    spdlog::flush_on(spdlog::level::warn);
    g_log = dir / "server.log";
    std::ofstream(dir / "ops.json") << R"({"plugin_dir": ")" OPS_FUZZ_PLUGIN_DIR R"(",
      "operations": {"upload": {"allow": ["*"], "max_payload": 1000000},
                     "download": {"allow": ["*"]}, "list": {"allow": ["*"]},
                     "register": {"allow": ["admin"]}}})";
    port = free_port();
    std::ofstream(dir / "server.json")
        << R"({"listen": "127.0.0.1:)" << port << R"(", "storage_dir": ")"
        << (dir / "storage").string() << R"(", "state_dir": ")" << (dir / "state").string()
        << R"(", "ops_config": ")" << (dir / "ops.json").string()
        << R"(", "io_threads": 2, "worker_threads": 4, "handshake_timeout_ms": 2000,
              "idle_timeout_ms": 2000, "payload_timeout_ms": 1000, "shutdown_grace_ms": 200,
              "log_level": "warn"})";
    {
      fs::create_directories(dir / "storage");
      ops::core::UserStore users(dir / "state", dir / "storage");
      check(users.open(false).ok(), "user store");
      check(users.add("fuzz", kKey).ok(), "add user");
    }
    auto config = ops::core::load_config(dir / "server.json");
    check(config.ok(), "config");
    auto created = ops::core::Server::create(std::move(*config));
    if (!created) std::fprintf(stderr, "%s\n", created.error().message.c_str());
    check(created.ok(), "server create");
    server = std::move(*created);
    runner = std::thread([s = server.get()] { s->run(); });
    // At exit, stop the server the way an operator does (SIGTERM, which its signal_set
    // took over from libFuzzer) and wait for its threads, before static destructors (the
    // spdlog registry among them, registered earlier, so destroyed later) pull the floor
    // from under them.
    std::atexit(stop_live_server);
    for (int i = 0; i < 500; ++i) {
      int fd = connect_to(port);
      if (fd >= 0) {
        ::close(fd);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    check(false, "the server did not start listening");
  }
};

LiveServer* g_live = nullptr;

void stop_live_server() {
  if (g_live == nullptr || !g_live->runner.joinable()) return;
  ::raise(SIGTERM);
  g_live->runner.join();
}

LiveServer& live() {
  if (g_live == nullptr) g_live = new LiveServer();  // never destroyed
  return *g_live;
}

// Empty on success, else what went wrong.
std::string authenticate(int fd, const std::string& challenge, Clock::time_point until) {
  auto at = challenge.find("\"nonce\":\"");
  if (at == std::string::npos) return "no nonce in " + challenge;
  auto nonce = ops::proof::from_hex<32>(challenge.substr(at + 9, 64));
  if (!nonce) return "bad nonce in " + challenge;
  ops::proof::Nonce cnonce = ops::proof::random_nonce();
  auto proof = ops::proof::client_proof(kKey, *nonce, cnonce, "fuzz");
  std::string auth = ops::frame::encode(
      R"({"type":"auth","mechanism":"hmac-sha256","user":"fuzz","cnonce":")" +
      ops::proof::to_hex(cnonce) + R"(","proof":")" + ops::proof::to_hex(proof) + "\"}");
  if (!send_all(fd, auth.data(), auth.size()))
    return "sending auth: " + std::string(strerror(errno));
  std::string welcome;
  if (!read_frame(fd, welcome, until)) {
    return "no welcome (" + std::string(Clock::now() >= until ? "timeout" : "closed") + ", " +
           std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                              Clock::now() - (until - std::chrono::seconds(5)))
                              .count()) +
           " ms after connect)";
  }
  if (welcome.find("\"welcome\"") == std::string::npos) return "answer: " + welcome;
  return {};
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  live();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  LiveServer& s = live();
  const bool pre_auth = data[0] & 1;
  const std::size_t chunk = std::size_t{data[1]} + 1;
  const char* body = reinterpret_cast<const char*>(data) + 2;
  std::size_t left = size - 2;

  int fd = connect_to(s.port);
  check(fd >= 0, "connect");
  const auto until = Clock::now() + std::chrono::seconds(5);
  std::string challenge;
  if (!read_frame(fd, challenge, until)) {
    fail(Clock::now() >= until ? "no challenge within 5 s" : "closed before the challenge");
  }
  if (!pre_auth) {
    std::string failed = authenticate(fd, challenge, until);
    if (!failed.empty()) fail("a valid login failed: " + failed);
  }

  while (left > 0) {
    std::size_t n = std::min(chunk, left);
    if (!send_all(fd, body, n)) break;  // the server closed first (bad_frame etc.)
    body += n;
    left -= n;
  }
  ::shutdown(fd, SHUT_WR);
  // Drain answers until the server closes; it must, now that the client is done.
  char buf[65536];
  bool closed = false;
  while (Clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) < 0 && errno != EINTR) break;
    if (p.revents == 0) continue;
    ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      closed = true;
      break;
    }
  }
  ::close(fd);
  check(closed, "the server kept a finished connection open for 5 s");
  return 0;
}
