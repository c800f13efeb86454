// Strict JSON for OPS/1 headers (§1, §7), the server's config files and the clients: one
// set of rules on both sides of the wire.
// Rejects what RapidJSON alone would accept: duplicate member names, nesting deeper than
// a limit, escaped lone surrogates, a byte-order mark, and any byte after the value.
// Numbers keep their spelling: only plain digit strings become unsigned integers, so
// `"payload": 1.0`, `1e3` or `-0` are never mistaken for integers.
// Stateless; any thread.
#pragma once

#include <rapidjson/document.h>

#include <cstddef>
#include <map>
#include <string>
#include <string_view>

namespace ops::json {

struct JsonError {
  std::size_t offset = 0;  // byte offset into the input where the problem was found
  std::string reason;
};

struct StrictJsonOptions {
  unsigned max_depth = 32;  // §7: containers nested deeper than this are refused
  // When set, receives the byte offset of every value, keyed by its JSON pointer
  // ("" for the root, "/operations/upload/allow"), so config errors can say line:col.
  std::map<std::string, std::size_t>* offsets = nullptr;
};

// Parses `text` into `out`. On failure returns false and fills `error`.
bool parse_strict_json(std::string_view text, rapidjson::Document& out, JsonError& error,
                       const StrictJsonOptions& options = {});

// The same rules without building anything: true if `text` is one JSON object that
// parse_strict_json would accept. For checking JSON that is passed on as text (a
// plugin's result) at a fraction of the cost.
bool validate_strict_object(std::string_view text, JsonError& error,
                            const StrictJsonOptions& options = {});

// True if `text` is well-formed UTF-8 with no surrogate code points and no overlong forms.
bool is_valid_utf8(std::string_view text) noexcept;

// The offset of the first byte where `text` stops being such UTF-8, or text.size().
std::size_t utf8_error_offset(std::string_view text) noexcept;

// Line and column (1-based) of a byte offset, for "file:line:col" messages.
struct LineCol {
  std::size_t line = 1;
  std::size_t col = 1;
};
LineCol line_col(std::string_view text, std::size_t offset) noexcept;

// Compact JSON text of a value (RapidJSON's Writer).
std::string to_string(const rapidjson::Value& value);

}  // namespace ops::json
