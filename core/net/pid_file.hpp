// The pid file of a running server (the "pid_file" setting, --pid-file): written at start,
// removed at stop, read by `opserver reload` to find whom to signal.
#pragma once

#include <sys/types.h>

#include <filesystem>

#include "opserver/error.hpp"

namespace ops::core {

// Writes this process's pid to `path` atomically (a temporary file beside it, fsync,
// rename, fsync of the directory), so a reader never sees a half-written number.
Status write_pid_file(const std::filesystem::path& path);

// Removes `path` if it still names this process (a later server may have taken it over).
void remove_pid_file(const std::filesystem::path& path);

// The pid of the opserver running per `path`. Errors, for people: no pid file (no server
// runs), an unreadable or malformed one, a stale one (no such process, or the process is
// no opserver).
Result<pid_t> running_server_pid(const std::filesystem::path& path);

}  // namespace ops::core
