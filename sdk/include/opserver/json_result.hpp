// A small builder for an operation's result object, so each plugin does not hand-roll
// rapidjson writer boilerplate:
//   return call.send_result(JsonResult().str("path", path).u64("size", n).done());
// Strings are written as given (the caller passes valid UTF-8, e.g. a validated path).
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace ops::sdk {

class JsonResult {
 public:
  JsonResult() : writer_(buffer_) { writer_.StartObject(); }

  JsonResult& str(const char* key, std::string_view value) {
    writer_.Key(key);
    writer_.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
    return *this;
  }
  JsonResult& u64(const char* key, std::uint64_t value) {
    writer_.Key(key);
    writer_.Uint64(value);
    return *this;
  }
  JsonResult& i64(const char* key, std::int64_t value) {
    writer_.Key(key);
    writer_.Int64(value);
    return *this;
  }
  JsonResult& boolean(const char* key, bool value) {
    writer_.Key(key);
    writer_.Bool(value);
    return *this;
  }
  // Closes the object; call once.
  std::string done() {
    writer_.EndObject();
    return std::string(buffer_.GetString(), buffer_.GetSize());
  }

 private:
  rapidjson::StringBuffer buffer_;
  rapidjson::Writer<rapidjson::StringBuffer> writer_;
};

// args[name] when it is a bool, else `fallback` (the host has checked the schema).
inline bool arg_bool(const rapidjson::Value& args, const char* name, bool fallback) {
  auto it = args.FindMember(name);
  return it != args.MemberEnd() && it->value.IsBool() ? it->value.GetBool() : fallback;
}
// args[name] when it is a string, else `fallback`.
inline std::string arg_string(const rapidjson::Value& args, const char* name,
                              std::string_view fallback = {}) {
  auto it = args.FindMember(name);
  if (it == args.MemberEnd() || !it->value.IsString()) return std::string(fallback);
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

}  // namespace ops::sdk
