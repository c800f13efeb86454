// Handlers that fail in the ways a real plugin might: throwing, sleeping, echoing.
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include "opserver/plugin.hpp"

namespace {

ops::Status handle_throw(ops::sdk::Call&, const rapidjson::Value& args) {
  if (args.HasMember("int")) throw 42;
  throw std::runtime_error("secret detail /etc/shadow");
}

ops::Status handle_sleep(ops::sdk::Call& call, const rapidjson::Value& args) {
  std::this_thread::sleep_for(std::chrono::milliseconds(args["ms"].GetUint()));
  return call.send_result(R"({"slept":true})");
}

// Reads the whole payload and sends it back as the response payload.
ops::Status handle_echo(ops::sdk::Call& call, const rapidjson::Value&) {
  std::string data;
  char buf[65536];
  for (;;) {
    std::int64_t n = call.read_payload(buf, sizeof buf);
    if (n < 0) return ops::fail(ops::ErrorCode::unavailable, "payload did not arrive");
    if (n == 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  return ops::ok_status();
}

// Reads only half of the payload, then answers: the host must discard the rest.
ops::Status handle_half(ops::sdk::Call& call, const rapidjson::Value&) {
  char buf[1];
  std::uint64_t half = call.payload_size() / 2;
  for (std::uint64_t i = 0; i < half; ++i) {
    if (call.read_payload(buf, 1) != 1) return ops::fail(ops::ErrorCode::unavailable, "short");
  }
  return call.send_result("{\"read\":" + std::to_string(half) + "}");
}

ops::Status handle_fail(ops::sdk::Call&, const rapidjson::Value& args) {
  return ops::fail(ops::ErrorCode::not_found, args["message"].GetString());
}

constexpr const char* kAny = R"({"type":"object"})";
constexpr const char* kSleep =
    R"({"type":"object","properties":{"ms":{"type":"integer","minimum":0}},"required":["ms"],"additionalProperties":false})";
constexpr const char* kFail =
    R"({"type":"object","properties":{"message":{"type":"string"}},"required":["message"]})";

}  // namespace

OPS_EXPORT_PLUGIN(
    "misbehave", "1.0.0",
    OPS_OPERATION("throw", "Throws", "1.0.0", OPS_PAYLOAD_NONE, kAny, handle_throw),
    OPS_OPERATION("sleep", "Sleeps", "1.0.0", OPS_PAYLOAD_NONE, kSleep, handle_sleep),
    OPS_OPERATION("drain", "Reads its payload", "1.0.0", OPS_PAYLOAD_IN, kAny, handle_echo),
    OPS_OPERATION("half", "Reads half its payload", "1.0.0", OPS_PAYLOAD_IN, kAny, handle_half),
    OPS_OPERATION("fail", "Fails with a message", "1.0.0", OPS_PAYLOAD_NONE, kFail, handle_fail))
