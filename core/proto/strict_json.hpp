// The strict JSON rules live in the SDK (opserver/strict_json.hpp), shared with the
// clients; the core uses them under its own namespace.
#pragma once

#include "opserver/strict_json.hpp"

namespace ops::core {
using json::is_valid_utf8;
using json::JsonError;
using json::line_col;
using json::LineCol;
using json::parse_strict_json;
using json::StrictJsonOptions;
using json::validate_strict_object;
}  // namespace ops::core
