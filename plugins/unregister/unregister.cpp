// unregister (OPS/1 §10): removes a user, its key, its connections and its files.
//
// Decisions:
//  - The host does the work in one call (ops_host_v1::remove_user): the user leaves the
//    key store (atomic, durable), every connection of that user is closed at once, and
//    its storage directory is moved out of the storage root at once (into this server's
//    own private scratch directory) and deleted in the background, so a later user of the
//    same name starts empty.
//  - Unregistering oneself is forbidden (the answer could not arrive on a connection the
//    server is closing), and so is unregistering `admin`; an unknown user is not_found.
//  - Who may call it is ops.json's allow list (admin by default).
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string>

#include "opserver/plugin.hpp"

namespace {

using ops::ErrorCode;
using ops::Status;
using ops::sdk::Call;

constexpr const char* kSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "user": {"type": "string", "minLength": 1, "maxLength": 32,
             "description": "the user to remove"}
  },
  "required": ["user"],
  "additionalProperties": false
})json";

Status handle_unregister(Call& call, const rapidjson::Value& args) {
  const std::string user(args["user"].GetString(), args["user"].GetStringLength());
  if (user == call.user()) {
    return ops::fail(ErrorCode::forbidden, "you cannot unregister yourself");
  }
  if (user == "admin") return ops::fail(ErrorCode::forbidden, "admin cannot be unregistered");
  if (Status removed = call.remove_user(user); !removed) return removed;

  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> w(out);
  w.StartObject();
  w.Key("user");
  w.String(user.data(), static_cast<rapidjson::SizeType>(user.size()));
  w.EndObject();
  return call.send_result(std::string_view(out.GetString(), out.GetSize()));
}

}  // namespace

OPS_EXPORT_PLUGIN("unregister", "1.0.0",
                  OPS_OPERATION("unregister",
                                "Remove a user: its key, its connections and its files", "1.0.0",
                                OPS_PAYLOAD_NONE, kSchema, handle_unregister))
