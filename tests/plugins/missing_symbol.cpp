// Calls a function no library defines: RTLD_NOW must refuse it at load.
#include "opserver/plugin.hpp"

extern "C" void ops_test_function_that_does_not_exist();

namespace {
ops::Status handle(ops::sdk::Call&, const rapidjson::Value&) {
  ops_test_function_that_does_not_exist();
  return ops::ok_status();
}
}  // namespace

OPS_EXPORT_PLUGIN("missing_symbol", "1.0.0",
                  OPS_OPERATION("missing", "Never loads", "1.0.0", OPS_PAYLOAD_NONE,
                                R"({"type":"object"})", handle))
