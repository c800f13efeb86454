#include "proto/header.hpp"

#include "proto/strict_json.hpp"

namespace ops::core {

Result<Header> parse_header(std::string_view bytes) {
  Header header;
  JsonError error;
  if (!parse_strict_json(bytes, header.doc, error)) {
    return fail(ErrorCode::bad_frame,
                "invalid header at byte " + std::to_string(error.offset) + ": " + error.reason);
  }
  if (!header.doc.IsObject()) return fail(ErrorCode::bad_frame, "the header must be a JSON object");
  auto payload = header.doc.FindMember("payload");
  if (payload != header.doc.MemberEnd()) {
    // Only plain digit strings parse as Uint64 (strict_json), so 1.0, 1e3 and -0 fail here.
    if (!payload->value.IsUint64() || payload->value.GetUint64() > kMaxWireInteger) {
      return fail(ErrorCode::bad_frame, "\"payload\" must be an integer from 0 to 2^53-1");
    }
    header.payload = payload->value.GetUint64();
  }
  return header;
}

std::variant<Request, RequestError> interpret_request(const Header& header) {
  const rapidjson::Value& doc = header.doc;
  Request request;
  request.payload = header.payload;

  auto id = doc.FindMember("id");
  if (id == doc.MemberEnd()) {
    return RequestError{std::nullopt, {ErrorCode::bad_request, "missing \"id\""}};
  }
  if (!id->value.IsUint64() || id->value.GetUint64() > kMaxWireInteger) {
    return RequestError{std::nullopt,
                        {ErrorCode::bad_request, "\"id\" must be an integer from 0 to 2^53-1"}};
  }
  request.id = id->value.GetUint64();

  auto type = doc.FindMember("type");
  if (type != doc.MemberEnd() && type->value.IsString() &&
      std::string_view(type->value.GetString(), type->value.GetStringLength()) == "auth") {
    return RequestError{request.id, {ErrorCode::bad_request, "already authenticated"}};
  }

  auto operate = doc.FindMember("operate");
  if (operate == doc.MemberEnd() || !operate->value.IsString()) {
    return RequestError{request.id, {ErrorCode::bad_request, "\"operate\" must be a string"}};
  }
  request.operate.assign(operate->value.GetString(), operate->value.GetStringLength());

  auto deadline = doc.FindMember("deadline_ms");
  if (deadline != doc.MemberEnd()) {
    if (!deadline->value.IsUint64() || deadline->value.GetUint64() < 1 ||
        deadline->value.GetUint64() > kMaxDeadlineMs) {
      return RequestError{
          request.id,
          {ErrorCode::bad_request, "\"deadline_ms\" must be an integer from 1 to 2^31-1"}};
    }
    request.deadline_ms = static_cast<std::uint32_t>(deadline->value.GetUint64());
  }

  auto user = doc.FindMember("user");
  if (user != doc.MemberEnd()) request.user = &user->value;
  auto args = doc.FindMember("args");
  if (args != doc.MemberEnd() && !args->value.IsNull()) request.args = &args->value;
  return request;
}

}  // namespace ops::core
