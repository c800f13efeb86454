// hello: greets its caller by name, or whoever "name" says. The smallest useful opserver
// plugin, built outside the source tree against an installed SDK (CMakeLists.txt beside
// it; docs/PLUGINS.md).
#include <string>
#include <string_view>

#include "opserver/json_result.hpp"
#include "opserver/plugin.hpp"

namespace {

constexpr const char* kHelloSchema = R"({
  "type": "object",
  "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64}},
  "additionalProperties": false
})";

ops::Status handle_hello(ops::sdk::Call& call, const rapidjson::Value& args) {
  // The server checked args against kHelloSchema: "name", if present, is a string.
  std::string name(call.user());
  if (args.HasMember("name")) name.assign(args["name"].GetString(), args["name"].GetStringLength());
  return call.send_result(ops::sdk::JsonResult().str("greeting", "hello, " + name).done());
}

}  // namespace

OPS_EXPORT_PLUGIN("hello", "1.0.0",
                  OPS_OPERATION("hello", "Greet the caller, or someone else", "1.0.0",
                                OPS_PAYLOAD_NONE, kHelloSchema, handle_hello))
