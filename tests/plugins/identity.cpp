// Test plugin for the dispatch and resource cases of reliability.md: "whoami" echoes the
// identity the host hands the handler (case 50), "leak" leaks one descriptor and 1 KiB
// per call on purpose (case 99: such a plugin is visible in the server's figures).
#include <fcntl.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "opserver/plugin.hpp"

namespace {

ops::Status handle_whoami(ops::sdk::Call& call, const rapidjson::Value&) {
  std::string user(call.user());
  // User names match ^[a-z_][a-z0-9_.-]{0,31}$: nothing to escape.
  return call.send_result("{\"user\":\"" + user + "\"}");
}

ops::Status handle_leak(ops::sdk::Call& call, const rapidjson::Value&) {
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);  // never closed
  void* block = std::malloc(1024);                     // never freed
  if (block != nullptr) std::memset(block, 0x5a, 1024);
  return call.send_result("{\"fd\":" + std::to_string(fd) + "}");
}

constexpr const char* kNone = R"({"type":"object","additionalProperties":false})";

}  // namespace

OPS_EXPORT_PLUGIN("identity", "1.0.0",
                  OPS_OPERATION("whoami", "Echoes the caller's identity", "1.0.0", OPS_PAYLOAD_NONE,
                                kNone, handle_whoami),
                  OPS_OPERATION("leak", "Leaks a descriptor and 1 KiB per call", "1.0.0",
                                OPS_PAYLOAD_NONE, kNone, handle_leak))
