// opclient -v: every frame header exchanged, on stderr, like curl -v ("> " sent,
// "< " received). Payload bytes are never shown, nor secrets: any member named "proof"
// or "key" (the login's proofs, a key in a register or rekey result) is redacted.
#pragma once

#include <string>
#include <string_view>

namespace ops::opclient {

// The header as shown: one line of JSON with secrets replaced by "<redacted>". Text that
// is not JSON (a broken peer) is shown as a note of its length only.
std::string redact_header(std::string_view header_json);

// Prints one traced header to stderr.
void trace_frame(bool sent, std::string_view header_json);

}  // namespace ops::opclient
