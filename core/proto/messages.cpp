#include "proto/messages.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "opserver/frame.hpp"
#include "opserver/proof.hpp"

namespace ops::core {
namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void put(Writer& w, std::string_view s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

std::string finish(const rapidjson::StringBuffer& buffer) {
  return frame::encode({buffer.GetString(), buffer.GetSize()});
}

}  // namespace

std::string challenge_frame(std::string_view nonce_hex, bool channel_binding) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("type");
  put(w, "challenge");
  w.Key("protocol");
  put(w, proof::kProtocol);
  w.Key("nonce");
  put(w, nonce_hex);
  w.Key("mechanisms");
  w.StartArray();
  put(w, channel_binding ? proof::kMechanismPlus : proof::kMechanism);
  w.EndArray();
  w.EndObject();
  return finish(buffer);
}

std::string welcome_frame(std::string_view user, std::string_view proof_hex,
                          std::string_view server_version) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("type");
  put(w, "welcome");
  w.Key("user");
  put(w, user);
  w.Key("proof");
  put(w, proof_hex);
  w.Key("server");
  put(w, server_version);
  w.EndObject();
  return finish(buffer);
}

const std::string& auth_failed_frame() {
  static const std::string frame = frame::encode(
      R"({"type":"error","error":{"code":"auth_failed","message":"authentication failed"}})");
  return frame;
}

std::string ok_response_frame(std::uint64_t id, std::string_view result_json,
                              std::uint64_t payload) {
  std::string header;
  header.reserve(48 + result_json.size());
  header += "{\"id\":";
  header += std::to_string(id);
  header += ",\"ok\":true,\"result\":";
  header += result_json;
  if (payload > 0) {
    header += ",\"payload\":";
    header += std::to_string(payload);
  }
  header += '}';
  return frame::encode(header);
}

std::string error_response_frame(std::optional<std::uint64_t> id, const Error& error) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("id");
  if (id) {
    w.Uint64(*id);
  } else {
    w.Null();
  }
  w.Key("ok");
  w.Bool(false);
  w.Key("error");
  w.StartObject();
  w.Key("code");
  put(w, wire_name(error.code));
  w.Key("message");
  put(w, error.message);
  if (!error.details.empty()) {
    w.Key("details");
    w.RawValue(error.details.data(), error.details.size(), rapidjson::kObjectType);
  }
  w.EndObject();
  w.EndObject();
  return finish(buffer);
}

}  // namespace ops::core
