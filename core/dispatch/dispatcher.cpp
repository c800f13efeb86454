#include "dispatch/dispatcher.hpp"

#include "dispatch/registry.hpp"
#include "plugin_host/host_api.hpp"

namespace ops::core {

Decision dispatch(const Snapshot& snapshot, std::string_view user, const Request& request) {
  if (request.user != nullptr &&
      !(request.user->IsString() &&
        std::string_view(request.user->GetString(), request.user->GetStringLength()) == user)) {
    return Error{ErrorCode::forbidden, "\"user\" must be the authenticated user"};
  }
  if (request.operate == "describe") {
    if (request.payload > 0) return Error{ErrorCode::bad_request, "describe takes no payload"};
    return DescribeDecision{};
  }
  const Operation* op = snapshot.registry->find(request.operate);
  if (op == nullptr) {
    return Error{ErrorCode::unknown_operation,
                 "no such operation: " + sanitize_message(request.operate.substr(0, 64))};
  }
  if (!op->policy.allows(user)) {
    return Error{ErrorCode::forbidden, "not allowed to call " + op->name};
  }
  if (!op->backend->available()) {
    return Error{ErrorCode::unavailable,
                 op->name + " is down (its plugin failed to start); the server log says why"};
  }
  if (request.args != nullptr && !request.args->IsObject()) {
    return Error{ErrorCode::invalid_args, "\"args\" must be an object"};
  }
  if (request.payload > 0 && op->payload != OPS_PAYLOAD_IN) {
    return Error{ErrorCode::bad_request, op->name + " takes no request payload"};
  }
  if (op->policy.max_payload && request.payload > *op->policy.max_payload) {
    return Error{ErrorCode::payload_too_large, "payload of " + std::to_string(request.payload) +
                                                   " bytes is over this operation's limit of " +
                                                   std::to_string(*op->policy.max_payload)};
  }
  static const rapidjson::Value kEmptyObject(rapidjson::kObjectType);
  if (Status valid = validate_args(*op, request.args ? *request.args : kEmptyObject); !valid) {
    return valid.error();
  }
  return CallDecision{op, request.args};
}

}  // namespace ops::core
