// A whole opserver in this process, with the real plugins from build/plugins, reached over
// in-memory pipes instead of sockets: unit tests and fuzzers drive complete sessions
// (handshake, dispatch, plugin calls, payloads) without a listening socket.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "net/memory_transport.hpp"
#include "net/server.hpp"

namespace ops::test {

class InProcessServer {
 public:
  static constexpr const char* kUser = "alice";
  static constexpr const char* kKey =
      "a11ce0a11ce0a11ce0a11ce0a11ce0a11ce0a11ce0a11ce0a11ce0a11ce0a11c";

  // `extra_settings`: more server.json members, e.g. R"("idle_timeout_ms": 500)".
  explicit InProcessServer(const std::string& extra_settings = "");
  ~InProcessServer();

  // A new connection; the challenge is not read yet.
  core::MemoryPeer connect();
  // Reads the challenge and logs in as kUser. Empty on success, else what went wrong.
  static std::string login(core::MemoryPeer& peer);
  // One frame's header from `peer` (empty on timeout or close).
  static std::string read_header(core::MemoryPeer& peer,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(5));

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path user_dir() const { return dir_ / "storage" / kUser; }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<core::Server> server_;
  std::thread runner_;
};

}  // namespace ops::test
