// An operation with every lifecycle hook (ABI minor 1), driven by its settings, for
// lifecycle_test:
//   level          integer >= 1, echoed by each call (shows which generation answers)
//   refuse         true: init refuses the operation
//   marker         a file init and shutdown append a line to ("init level=N", "shutdown
//                  deadline_ms=N"), so the test sees what ran and in which order
//   hang_shutdown  true: shutdown never returns (after writing its line)
//   sick_file      while this file exists, health reports the operation unhealthy
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#include "opserver/plugin.hpp"

namespace {

constexpr const char* kArgs = R"({"type":"object","additionalProperties":false})";
constexpr const char* kSettingsSchema = R"json({
  "type": "object",
  "properties": {
    "level": {"type": "integer", "minimum": 1},
    "refuse": {"type": "boolean"},
    "marker": {"type": "string"},
    "hang_shutdown": {"type": "boolean"},
    "sick_file": {"type": "string"}
  },
  "additionalProperties": false
})json";

struct State {
  std::mutex mutex;
  std::string marker;
  std::string sick_file;
  bool hang_shutdown = false;
};
State& state() {
  static State s;
  return s;
}

std::string string_setting(const rapidjson::Value& settings, const char* name) {
  auto it = settings.FindMember(name);
  return it != settings.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
}

void mark(const std::string& marker, const std::string& line) {
  if (marker.empty()) return;
  std::ofstream(marker, std::ios::app) << line << '\n';
}

ops::Status init_hooked(const rapidjson::Value& settings) {
  if (auto it = settings.FindMember("refuse"); it != settings.MemberEnd() && it->value.IsTrue()) {
    return ops::fail(ops::ErrorCode::invalid_args, "refused by its settings (refuse is true)");
  }
  std::uint64_t level = 1;
  if (auto it = settings.FindMember("level"); it != settings.MemberEnd() && it->value.IsUint64()) {
    level = it->value.GetUint64();
  }
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.marker = string_setting(settings, "marker");
  s.sick_file = string_setting(settings, "sick_file");
  auto hang = settings.FindMember("hang_shutdown");
  s.hang_shutdown = hang != settings.MemberEnd() && hang->value.IsTrue();
  mark(s.marker, "init level=" + std::to_string(level));
  return ops::ok_status();
}

void shutdown_hooked(std::chrono::milliseconds deadline) {
  State& s = state();
  std::string marker;
  bool hang = false;
  {
    std::lock_guard lock(s.mutex);
    marker = s.marker;
    hang = s.hang_shutdown;
  }
  mark(marker, "shutdown deadline_ms=" + std::to_string(deadline.count()));
  while (hang) std::this_thread::sleep_for(std::chrono::seconds(1));
}

std::optional<std::string> health_hooked() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (!s.sick_file.empty() && ::access(s.sick_file.c_str(), F_OK) == 0) {
    return std::string("the sick file exists");
  }
  return std::nullopt;
}

ops::Status handle_hooked(ops::sdk::Call& call, const rapidjson::Value&) {
  return call.send_result("{\"level\":" + std::to_string(call.setting_u64("level", 1)) + "}");
}

}  // namespace

OPS_EXPORT_PLUGIN("hooks", "1.0.0",
                  OPS_OPERATION_HOOKS("hooked", "Has every lifecycle hook", "1.0.0",
                                      OPS_PAYLOAD_NONE, kArgs, handle_hooked, kSettingsSchema,
                                      init_hooked, shutdown_hooked, health_hooked))
