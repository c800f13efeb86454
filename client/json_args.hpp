// Building a request's args object from the command line: strings that must be valid
// UTF-8 (the writer refuses anything else, so a bad argument is a usage error rather than
// a request the server refuses as bad_frame); and reading results back.
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string>
#include <string_view>

namespace ops::opclient {

using StrictWriter =
    rapidjson::Writer<rapidjson::StringBuffer, rapidjson::UTF8<>, rapidjson::UTF8<>,
                      rapidjson::CrtAllocator, rapidjson::kWriteValidateEncodingFlag>;

// False when `s` is not valid UTF-8.
inline bool write_string(StrictWriter& w, std::string_view s) {
  return w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

// The string member `name` of a result object, or "" when it is absent or not a string.
inline std::string str_member(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject()) return {};
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsString()) return {};
  return {it->value.GetString(), it->value.GetStringLength()};
}

}  // namespace ops::opclient
