// What a worker process does to itself before it runs plugin code (opserver-plugin-host):
// resource limits, no new privileges, another uid, and a Landlock domain. Each layer is
// described in docs/PLUGINS.md ("What isolation protects against").
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "opserver/error.hpp"

namespace ops::isolation {

struct ProcessLimits {
  std::optional<std::uint64_t> memory_bytes;  // RLIMIT_AS
  std::optional<std::uint64_t> open_files;    // RLIMIT_NOFILE
};

// No core dumps (a crashing worker must not fill the disk with the server's memory), and
// the given limits. Soft and hard alike, so plugin code cannot raise them.
Status apply_limits(const ProcessLimits& limits);

// Switches to `user` (its uid, gid and no supplementary groups). Only root can.
Status become_user(const std::string& user);

// Asks to be SIGKILLed when the server (`parent`) goes away, and to gain no privileges
// through exec (setuid binaries, file capabilities) ever again.
Status bind_to_parent(long parent);

// Lets this process (and what it executes) write only beneath `writable_root`; with
// `read_everywhere` it may still read and execute any file (an interpreter needs its
// libraries), otherwise nothing outside `writable_root` at all. Returns the Landlock ABI
// version applied, 0 when this kernel has no Landlock (then nothing is restricted).
Result<int> restrict_filesystem(const std::string& writable_root, bool read_everywhere);

// Per-call CPU limit: the process may use `seconds` more of CPU time from now (SIGXCPU,
// then SIGKILL, past it).
void limit_cpu_from_now(std::uint64_t seconds);

}  // namespace ops::isolation
