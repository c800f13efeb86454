#include "in_process_server.hpp"

#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <fstream>
#include <stdexcept>

#include "auth/file_user_store.hpp"
#include "config/config.hpp"
#include "opserver/frame.hpp"
#include "opserver/proof.hpp"

namespace ops::test {
namespace fs = std::filesystem;

InProcessServer::InProcessServer(const std::string& extra_settings) {
  std::string templ = (fs::temp_directory_path() / "ops-inproc-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp");
  dir_ = templ;
  std::ofstream(dir_ / "ops.json") << R"({"plugin_dir": ")" OPS_TEST_PLUGIN_DIR R"(",
    "operations": {"upload": {"allow": ["*"], "max_payload": 100000000},
                   "download": {"allow": ["*"]}, "list": {"allow": ["*"]},
                   "register": {"allow": ["admin"]}}})";
  std::ofstream(dir_ / "server.json")
      << R"({"listen": "127.0.0.1:0", "storage_dir": ")" << (dir_ / "storage").string()
      << R"(", "state_dir": ")" << (dir_ / "state").string() << R"(", "ops_config": ")"
      << (dir_ / "ops.json").string()
      << R"(", "io_threads": 2, "worker_threads": 4, "shutdown_grace_ms": 500,
            "log_level": "warn")"
      << (extra_settings.empty() ? "" : ", " + extra_settings) << "}";
  fs::create_directories(dir_ / "storage");
  {
    core::FileUserStore users(dir_ / "state", dir_ / "storage");
    if (!users.open(false).ok() || !users.add(kUser, kKey).ok()) {
      throw std::runtime_error("user store");
    }
  }
  auto config = core::load_config(dir_ / "server.json");
  if (!config) throw std::runtime_error("config: " + config.error().message);
  auto created = core::Server::create(std::move(*config));
  if (!created) throw std::runtime_error("server: " + created.error().message);
  server_ = std::move(*created);
  runner_ = std::thread([s = server_.get()] { s->run(); });
}

InProcessServer::~InProcessServer() {
  server_->stop();
  runner_.join();
  server_.reset();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

core::MemoryPeer InProcessServer::connect() {
  for (int i = 0; i < 200; ++i) {
    if (auto peer = server_->connect_in_memory()) return std::move(*peer);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  throw std::runtime_error("the server refused an in-memory connection");
}

std::string InProcessServer::read_header(core::MemoryPeer& peer,
                                         std::chrono::milliseconds timeout) {
  std::string len = peer.read_exact(4, timeout);
  if (len.size() != 4) return {};
  std::uint32_t n = frame::decode_length(reinterpret_cast<const unsigned char*>(len.data()));
  return peer.read_exact(n, timeout);
}

std::string InProcessServer::login(core::MemoryPeer& peer) {
  std::string challenge = read_header(peer);
  auto at = challenge.find("\"nonce\":\"");
  if (at == std::string::npos) return "no challenge: " + challenge;
  auto nonce = proof::from_hex<32>(challenge.substr(at + 9, 64));
  if (!nonce) return "bad nonce";
  proof::Nonce cnonce = proof::random_nonce();
  auto digest = proof::client_proof(kKey, *nonce, cnonce, kUser);
  peer.write(frame::encode(std::string(R"({"type":"auth","mechanism":"hmac-sha256","user":")") +
                           kUser + R"(","cnonce":")" + proof::to_hex(cnonce) + R"(","proof":")" +
                           proof::to_hex(digest) + "\"}"));
  std::string welcome = read_header(peer);
  if (welcome.find("\"welcome\"") == std::string::npos) return "no welcome: " + welcome;
  return {};
}

}  // namespace ops::test
