// The dispatch rules of §3, §4 and §7 as one pure function: given the snapshot in force,
// the authenticated user and an interpreted request, what happens to it. No I/O, no
// clock; the session acts on the decision, and unit tests and fuzzers call it directly.
#pragma once

#include <rapidjson/document.h>

#include <string_view>
#include <variant>

#include "dispatch/snapshot.hpp"
#include "opserver/error.hpp"
#include "proto/header.hpp"

namespace ops::core {

struct Operation;

// Answer the built-in describe (§4) for this user.
struct DescribeDecision {};
// Call `op` with `args` (validated against its schema; an empty object when absent).
struct CallDecision {
  const Operation* op = nullptr;
  const rapidjson::Value* args = nullptr;  // null: no args were sent
};
// Refuse with this error; the request's payload is then discarded.
using Decision = std::variant<DescribeDecision, CallDecision, Error>;

// The checks, in this order (each one's failure answers and stops):
//  1. `user`, when present, is the authenticated user       forbidden
//  2. `describe` is built in (and takes no payload)           bad_request
//  3. the operation is enabled                                unknown_operation
//  4. the caller is in its allow list                         forbidden
//  5. `args`, when present, is an object                      invalid_args
//  6. a request payload only for a payload "in" operation     bad_request
//  7. the payload is within the operation's max_payload       payload_too_large
//  8. `args` is valid against the operation's schema          invalid_args
Decision dispatch(const Snapshot& snapshot, std::string_view user, const Request& request);

}  // namespace ops::core
