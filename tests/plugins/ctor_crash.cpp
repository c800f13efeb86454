// A plugin whose static constructor aborts while the server loads it (reliability.md case
// 104): the crash must come at start-up, before the server listens, never mid-service.
#include <cstdlib>

#include "opserver/plugin.hpp"

namespace {

struct AbortsWhenLoaded {
  AbortsWhenLoaded() { std::abort(); }
};
const AbortsWhenLoaded boom;

ops::Status handle_never(ops::sdk::Call& call, const rapidjson::Value&) {
  return call.send_result("{}");
}

}  // namespace

OPS_EXPORT_PLUGIN("ctor_crash", "1.0.0",
                  OPS_OPERATION("never", "Never reached", "1.0.0", OPS_PAYLOAD_NONE,
                                R"({"type":"object"})", handle_never))
