// set_quota (OPS/1 §10): sets or clears a user's quotas, at once.
//
// Decisions:
//  - `bytes` and `files` are each a non-negative integer (the limit) or null (no limit,
//    whatever the server's default); a member left out stays as it was. With neither,
//    nothing changes and the result shows the quotas in force.
//  - A quota below current usage removes nothing: it only refuses growth (the host's
//    quota_reserve), while removals and smaller replacements still pass.
//  - An unknown user is not_found. Who may call it is ops.json's allow list (admin).
//  - The result is the quotas in force afterwards, the server default included where the
//    user has none of its own (read back through get_usage).
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
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
             "description": "whose quotas to set"},
    "bytes": {"type": ["integer", "null"], "minimum": 0,
              "description": "the byte quota, or null for none; left out: unchanged"},
    "files": {"type": ["integer", "null"], "minimum": 0,
              "description": "the file quota, or null for none; left out: unchanged"}
  },
  "required": ["user"],
  "additionalProperties": false
})json";

constexpr std::uint64_t kMaxLimit = std::uint64_t{1} << 53;  // JSON's exact integers

ops::Result<std::int64_t> limit_of(const rapidjson::Value& args, const char* name) {
  auto it = args.FindMember(name);
  if (it == args.MemberEnd()) return Call::kLimitKeep;
  if (it->value.IsNull()) return Call::kLimitNone;
  if (!it->value.IsUint64() || it->value.GetUint64() > kMaxLimit) {
    return ops::fail(ErrorCode::invalid_args,
                     std::string(name) + " must be a non-negative integer up to 2^53, or null");
  }
  return static_cast<std::int64_t>(it->value.GetUint64());
}

Status handle_set_quota(Call& call, const rapidjson::Value& args) {
  const std::string user(args["user"].GetString(), args["user"].GetStringLength());
  auto bytes = limit_of(args, "bytes");
  if (!bytes) return std::move(bytes).error();
  auto files = limit_of(args, "files");
  if (!files) return std::move(files).error();
  if (Status set = call.set_quota(user, *bytes, *files); !set) return set;

  auto report = call.usage(user);
  if (!report) return std::move(report).error();
  rapidjson::Document usage;
  usage.Parse(report->c_str(), report->size());
  if (usage.HasParseError() || !usage.IsObject()) {
    return ops::fail(ErrorCode::internal, "unreadable usage report");
  }
  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> w(out);
  w.StartObject();
  w.Key("user");
  w.String(user.data(), static_cast<rapidjson::SizeType>(user.size()));
  w.Key("quota_bytes");
  usage["quota_bytes"].Accept(w);
  w.Key("quota_files");
  usage["quota_files"].Accept(w);
  w.EndObject();
  return call.send_result(std::string_view(out.GetString(), out.GetSize()));
}

}  // namespace

OPS_EXPORT_PLUGIN("set_quota", "1.0.0",
                  OPS_OPERATION("set_quota", "Set or clear a user's byte and file quotas", "1.0.0",
                                OPS_PAYLOAD_NONE, kSchema, handle_set_quota))
