// opclient rm, mv, mkdir and stat: one small request each (OPS/1 §10); the server's result
// is printed as JSON, errors as for every command.
#include <rapidjson/stringbuffer.h>

#include <string>

#include "commands.hpp"
#include "exit_codes.hpp"
#include "json_args.hpp"

namespace ops::opclient {

namespace {

// Sends `operate` with the args written by `fill` (false: a path was not valid UTF-8) and
// prints the result.
template <class Fill>
int run_simple(const ConnectionFlags& conn, const char* operate, Fill fill) {
  rapidjson::StringBuffer buffer;
  StrictWriter w(buffer);
  w.StartObject();
  if (!fill(w)) {
    print_error("usage", "a path is not valid UTF-8");
    return exit_code::kUsage;
  }
  w.EndObject();
  int status = 0;
  std::string result;
  if (!simple_call(conn, operate, {buffer.GetString(), buffer.GetSize()}, result, status)) {
    return status;
  }
  print_json(result, stdout);
  return exit_code::kOk;
}

}  // namespace

int run_rm(const ConnectionFlags& conn, const RmFlags& flags) {
  int code = run_simple(conn, "remove", [&](StrictWriter& w) {
    w.Key("path");
    if (!write_string(w, flags.path)) return false;
    w.Key("recursive");
    w.Bool(flags.recursive);
    return true;
  });
  if (code == exit_for(ErrorCode::conflict) && !flags.recursive) {
    note(conn.output, "use -r to remove a directory and everything in it");
  }
  return code;
}

int run_mv(const ConnectionFlags& conn, const MvFlags& flags) {
  int code = run_simple(conn, "move", [&](StrictWriter& w) {
    w.Key("from");
    if (!write_string(w, flags.from)) return false;
    w.Key("to");
    if (!write_string(w, flags.to)) return false;
    w.Key("overwrite");
    w.Bool(flags.overwrite);
    return true;
  });
  if (code == exit_for(ErrorCode::already_exists) && !flags.overwrite) {
    note(conn.output, "use --overwrite to replace the file at " + flags.to);
  }
  return code;
}

int run_mkdir(const ConnectionFlags& conn, const MkdirFlags& flags) {
  return run_simple(conn, "mkdir", [&](StrictWriter& w) {
    w.Key("path");
    if (!write_string(w, flags.path)) return false;
    w.Key("parents");
    w.Bool(flags.parents);
    return true;
  });
}

int run_stat(const ConnectionFlags& conn, const StatFlags& flags) {
  return run_simple(conn, "stat", [&](StrictWriter& w) {
    if (!flags.path.empty()) {
      w.Key("path");
      if (!write_string(w, flags.path)) return false;
    }
    if (flags.sha256) {
      w.Key("sha256");
      w.Bool(true);
    }
    return true;
  });
}

}  // namespace ops::opclient
