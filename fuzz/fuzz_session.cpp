// Fuzz target: whole sessions against the real server logic (reliability.md, "harness
// hints"; the shape of h2o's fuzz/driver.cc), without a listening socket. The real Server
// (core/net) runs in this process with the real plugin .so files; each input is one
// connection over the in-memory transport (Server::connect_in_memory), so the session,
// dispatcher, plugin calls and the payload path over the strand all see it. The challenge
// is read and, unless the first byte's low bit is set, the handshake completed as user
// "fuzz" so that the post-authentication parser, dispatcher and plugins see the rest. The
// rest of the input (after a second byte choosing a chunk size of 1-256) is then written in
// chunks of that size, the write side closed, and the answers read until the server
// closes. Properties: the handshake of a valid user always succeeds (the server is alive
// and well), and the server always closes a connection whose client has finished sending
// (no hang: 5 s).
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>
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
#include <optional>
#include <string>
#include <thread>

#include "auth/file_user_store.hpp"
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

bool read_frame(ops::core::MemoryPeer& peer, std::string& header, Clock::time_point until) {
  auto left = [&] {
    return std::max(std::chrono::milliseconds(1),
                    std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()));
  };
  std::string len = peer.read_exact(4, left());
  if (len.size() != 4) return false;
  std::uint32_t n = ops::frame::decode_length(reinterpret_cast<const unsigned char*>(len.data()));
  if (n > (1u << 20)) return false;
  header = peer.read_exact(n, left());
  return header.size() == n;
}

void stop_live_server();

struct LiveServer {
  fs::path dir;
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
    std::ofstream(dir / "server.json")
        << R"({"listen": "127.0.0.1:0", "storage_dir": ")" << (dir / "storage").string()
        << R"(", "state_dir": ")" << (dir / "state").string() << R"(", "ops_config": ")"
        << (dir / "ops.json").string()
        << R"(", "io_threads": 2, "worker_threads": 4, "handshake_timeout_ms": 2000,
              "idle_timeout_ms": 2000, "payload_timeout_ms": 1000, "shutdown_grace_ms": 200,
              "log_level": "warn"})";
    {
      fs::create_directories(dir / "storage");
      ops::core::FileUserStore users(dir / "state", dir / "storage");
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
  }
};

LiveServer* g_live = nullptr;

void stop_live_server() {
  if (g_live == nullptr || !g_live->runner.joinable()) return;
  g_live->server->stop();
  g_live->runner.join();
}

LiveServer& live() {
  if (g_live == nullptr) g_live = new LiveServer();  // never destroyed
  return *g_live;
}

// Empty on success, else what went wrong.
std::string authenticate(ops::core::MemoryPeer& peer, const std::string& challenge,
                         Clock::time_point until) {
  auto at = challenge.find("\"nonce\":\"");
  if (at == std::string::npos) return "no nonce in " + challenge;
  auto nonce = ops::proof::from_hex<32>(challenge.substr(at + 9, 64));
  if (!nonce) return "bad nonce in " + challenge;
  ops::proof::Nonce cnonce = ops::proof::random_nonce();
  auto proof = ops::proof::client_proof(kKey, *nonce, cnonce, "fuzz");
  std::string auth = ops::frame::encode(
      R"({"type":"auth","mechanism":"hmac-sha256","user":"fuzz","cnonce":")" +
      ops::proof::to_hex(cnonce) + R"(","proof":")" + ops::proof::to_hex(proof) + "\"}");
  peer.write(auth);
  std::string welcome;
  if (!read_frame(peer, welcome, until)) {
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

  std::optional<ops::core::MemoryPeer> connected;
  for (int i = 0; i < 500 && !connected; ++i) {
    connected = s.server->connect_in_memory();
    if (!connected) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  check(connected.has_value(), "the server refused an in-memory connection");
  ops::core::MemoryPeer& peer = *connected;
  const auto until = Clock::now() + std::chrono::seconds(5);
  std::string challenge;
  if (!read_frame(peer, challenge, until)) {
    fail(Clock::now() >= until ? "no challenge within 5 s" : "closed before the challenge");
  }
  if (!pre_auth) {
    std::string failed = authenticate(peer, challenge, until);
    if (!failed.empty()) fail("a valid login failed: " + failed);
  }

  while (left > 0 && !peer.server_closed()) {
    std::size_t n = std::min(chunk, left);
    peer.write(std::string_view(body, n));
    body += n;
    left -= n;
    // Drain as a client would, so the server's output never blocks on us.
    peer.read_some(1u << 20, std::chrono::milliseconds(0));
  }
  peer.close_write();
  // Drain answers until the server closes; it must, now that the client is done.
  bool closed = false;
  while (Clock::now() < until) {
    peer.read_some(1u << 20, std::chrono::milliseconds(50));
    if (peer.server_closed()) {
      closed = true;
      break;
    }
  }
  check(closed, "the server kept a finished connection open for 5 s");
  return 0;
}
