// How an operation runs when ops.json isolates it (docs/PLUGINS.md, "Isolated plugins"):
// its .so in a worker process ("isolation": "process", "plugin": FILE), or an executable
// speaking the worker protocol ("exec": [ARGV...]), with the worker's limits.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ops::core {

struct WorkerLimits {
  std::optional<std::uint64_t> memory_bytes;  // RLIMIT_AS of each worker
  std::optional<std::uint64_t> cpu_seconds;   // per call (.so workers); per process (exec)
  std::optional<std::uint64_t> open_files;    // RLIMIT_NOFILE
  unsigned max_concurrent = 4;                // worker processes, so concurrent calls
  std::uint64_t max_calls = 0;  // calls a process serves before it is replaced (0: no limit)
};

struct IsolationSpec {
  // The .so, relative to plugin_dir unless absolute; empty for an exec operation.
  std::filesystem::path plugin;
  // The program and its arguments; empty for an isolated .so. argv[0] is absolute or taken
  // from ops.json's directory, which is also the program's working directory.
  std::vector<std::string> exec;
  std::filesystem::path working_dir;
  WorkerLimits limits;
  std::string run_as;  // a user name to run the workers as (the server must be root)
};

}  // namespace ops::core
