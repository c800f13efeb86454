// The calls whose answer carries a new key (register, rekey): the key must never be lost
// once the server has it, so a key file asked for is created (exclusively, 0600) before
// the call, and written and fsynced after it; if that write fails, the key goes to stdout.
#pragma once

#include <string>

#include "connection.hpp"

namespace ops::opclient {

struct NewKey {
  std::string result_json;
  std::string user;
  std::string key;
  bool in_file = false;  // written to key_file_out (else the caller shows it)
};

// Calls `operate` with `args_json`. Returns exit_code::kOk and fills `out`, or the exit
// status after printing why (the key file, if made, is removed unless it holds the key).
int call_for_new_key(const ConnectionFlags& conn, const char* operate, const std::string& args_json,
                     const std::string& key_file_out, NewKey& out);

}  // namespace ops::opclient
