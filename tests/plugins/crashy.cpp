// A plugin that takes the whole process down, the ways real plugin bugs do (reliability.md
// case 98). Plugins run inside the server process (docs/ARCHITECTURE.md), so nothing the
// host can do survives these: the tests document that the server dies with the signal,
// and that a supervisor restarting it on the same storage finds everything consistent.
#include <csignal>
#include <cstdlib>
#include <exception>
#include <string_view>

#include "opserver/plugin.hpp"

namespace {

ops::Status handle_crash(ops::sdk::Call&, const rapidjson::Value& args) {
  std::string_view how = "abort";
  if (auto it = args.FindMember("how"); it != args.MemberEnd() && it->value.IsString()) {
    how = std::string_view(it->value.GetString(), it->value.GetStringLength());
  }
  if (how == "segv") {
    std::raise(SIGSEGV);
  } else if (how == "terminate") {
    std::terminate();
  } else if (how == "exit") {
    std::exit(0);
  }
  std::abort();
}

constexpr const char* kSchema =
    R"({"type":"object","properties":{"how":{"enum":["abort","segv","terminate","exit"]}},"additionalProperties":false})";

}  // namespace

OPS_EXPORT_PLUGIN("crashy", "1.0.0",
                  OPS_OPERATION("crash", "Crashes the process", "1.0.0", OPS_PAYLOAD_NONE, kSchema,
                                handle_crash))
