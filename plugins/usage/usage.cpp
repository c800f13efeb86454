// usage (OPS/1 §10): the caller's stored bytes and files, what open resumable uploads
// reserve, and the quotas in force (null where there is none).
//
// The host keeps the counts (ops_host_v1::get_usage): they are recounted from the user's
// directory once per server start and kept up to date by every operation that adds or
// removes files, so this answer costs no directory walk after the first.
#include "opserver/plugin.hpp"

namespace {

using ops::Status;
using ops::sdk::Call;

constexpr const char* kSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {},
  "additionalProperties": false
})json";

Status handle_usage(Call& call, const rapidjson::Value&) {
  auto report = call.usage();
  if (!report) return std::move(report).error();
  return call.send_result(*report);
}

}  // namespace

OPS_EXPORT_PLUGIN("usage", "1.0.0",
                  OPS_OPERATION("usage", "Your stored bytes and files, reserved bytes and quotas",
                                "1.0.0", OPS_PAYLOAD_NONE, kSchema, handle_usage))
