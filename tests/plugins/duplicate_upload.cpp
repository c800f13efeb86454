// Provides "upload" a second time.
#include "opserver/plugin.hpp"

namespace {
ops::Status handle(ops::sdk::Call&, const rapidjson::Value&) {
  return ops::ok_status();
}
}  // namespace

OPS_EXPORT_PLUGIN("duplicate_upload", "1.0.0",
                  OPS_OPERATION("upload", "A second upload", "1.0.0", OPS_PAYLOAD_IN,
                                R"({"type":"object"})", handle))
