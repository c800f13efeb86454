// A plugin that takes its process down, the ways real plugin bugs do (reliability.md case
// 98): abort, SIGSEGV, std::terminate, exit, a hang, a spin, a memory leak; "throw" throws
// through the SDK shim (answered `internal`), "none" answers ok. In the server's process
// nothing survives the fatal ones (faults_test documents that the server dies and a
// supervisor restart finds everything consistent); run isolated ("isolation": "process",
// isolation_test) each costs only its own call.
#include <fcntl.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "opserver/plugin.hpp"

namespace {

ops::Status handle_crash(ops::sdk::Call& call, const rapidjson::Value& args) {
  std::string_view how = "abort";
  if (auto it = args.FindMember("how"); it != args.MemberEnd() && it->value.IsString()) {
    how = std::string_view(it->value.GetString(), it->value.GetStringLength());
  }
  if (how == "probe") {
    // What this process may touch: read `path`, create a file in `path`'s directory.
    std::string path = "/etc/passwd";
    if (auto it = args.FindMember("path"); it != args.MemberEnd() && it->value.IsString()) {
      path = it->value.GetString();
    }
    const int rd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (rd >= 0) ::close(rd);
    const std::string created = path.substr(0, path.rfind('/') + 1) + "crashy-probe";
    const int wr = ::open(created.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (wr >= 0) {
      ::close(wr);
      ::unlink(created.c_str());
    }
    return call.send_result(std::string(R"({"read":)") + (rd >= 0 ? "true" : "false") +
                            R"(,"write":)" + (wr >= 0 ? "true" : "false") + "}");
  }
  if (how == "none") {
    return call.send_result(R"({"crashed":false})");
  } else if (how == "throw") {
    throw std::runtime_error("thrown by the crashy plugin");
  } else if (how == "hang") {
    for (;;) ::pause();
  } else if (how == "spin") {
    for (;;) asm volatile("" ::: "memory");  // a loop the compiler keeps
  } else if (how == "leak") {
    // Leaks until the allocator fails (a memory limit), then dies as a leaking plugin would.
    for (;;) {
      void* block = std::malloc(16u << 20);
      if (block == nullptr) std::abort();
      std::memset(block, 1, 16u << 20);
    }
  } else if (how == "segv") {
    std::raise(SIGSEGV);
  } else if (how == "terminate") {
    std::terminate();
  } else if (how == "exit") {
    std::exit(0);
  }
  std::abort();
}

constexpr const char* kSchema =
    R"({"type":"object","properties":{"path":{"type":"string"},"how":{"enum":["probe","none","throw","abort","segv","terminate","exit","hang","spin","leak"]}},"additionalProperties":false})";

}  // namespace

OPS_EXPORT_PLUGIN("crashy", "1.0.0",
                  OPS_OPERATION("crash", "Crashes the process", "1.0.0", OPS_PAYLOAD_NONE, kSchema,
                                handle_crash))
