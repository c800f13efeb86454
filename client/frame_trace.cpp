#include "frame_trace.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdio>

namespace ops::opclient {

namespace {

void redact(rapidjson::Value& value) {
  if (value.IsObject()) {
    for (auto& member : value.GetObject()) {
      const std::string_view name(member.name.GetString(), member.name.GetStringLength());
      if (name == "proof" || name == "key") {
        member.value.SetString("<redacted>");
      } else {
        redact(member.value);
      }
    }
  } else if (value.IsArray()) {
    for (auto& element : value.GetArray()) redact(element);
  }
}

}  // namespace

std::string redact_header(std::string_view header_json) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(header_json.data(), header_json.size());
  if (doc.HasParseError()) {
    std::string note = std::to_string(header_json.size());
    note.insert(0, 1, '(');
    note += " bytes that are not JSON)";
    return note;
  }
  redact(doc);
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  doc.Accept(writer);
  return {buffer.GetString(), buffer.GetSize()};
}

void trace_frame(bool sent, std::string_view header_json) {
  const std::string line = redact_header(header_json);
  std::fprintf(stderr, "%s %s\n", sent ? ">" : "<", line.c_str());
  std::fflush(stderr);
}

}  // namespace ops::opclient
