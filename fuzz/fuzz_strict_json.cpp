// Fuzz target: the strict JSON parser shared by headers and config files (§7). Properties:
// whatever it accepts, RapidJSON's own validating parser accepts too; the offsets it
// records lie inside the input; and an accepted document written out again parses to an
// equal document (no duplicate names, no lost values).
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "proto/strict_json.hpp"

namespace {
void check(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)ops::core::is_valid_utf8(text);
  (void)ops::core::line_col(text, size / 2);

  rapidjson::Document doc;
  ops::core::JsonError error;
  std::map<std::string, std::size_t> offsets;
  ops::core::StrictJsonOptions options;
  options.offsets = &offsets;
  const bool parsed = ops::core::parse_strict_json(text, doc, error, options);
  // The validate-only path (used on plugin results) agrees with the full parser.
  ops::core::JsonError validate_error;
  check(ops::core::validate_strict_object(text, validate_error) == (parsed && doc.IsObject()));
  if (!parsed) {
    check(error.offset <= size);
    check(!error.reason.empty());
    return 0;
  }
  for (const auto& [pointer, offset] : offsets) check(offset <= size);

  std::string copy(text);
  rapidjson::Document plain;
  plain.Parse<rapidjson::kParseValidateEncodingFlag | rapidjson::kParseStopWhenDoneFlag>(
      copy.c_str(), copy.size());
  check(!plain.HasParseError());

  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> writer(out);
  if (!doc.Accept(writer)) return 0;  // e.g. 1e400 became infinity: not writable
  rapidjson::Document again;
  ops::core::JsonError again_error;
  check(ops::core::parse_strict_json({out.GetString(), out.GetSize()}, again, again_error));
  check(again == doc);
  return 0;
}
