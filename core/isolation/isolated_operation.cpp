#include "isolation/isolated_operation.hpp"

#include <unistd.h>

#include <spdlog/spdlog.h>
#include <filesystem>

namespace ops::isolation {
namespace fs = std::filesystem;

std::string worker_host_path() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path sibling = self.parent_path() / "opserver-plugin-host";
    if (::access(sibling.c_str(), X_OK) == 0) return sibling.string();
  }
#ifdef OPS_PLUGIN_HOST_BUILD_PATH
  return OPS_PLUGIN_HOST_BUILD_PATH;
#else
  return "opserver-plugin-host";
#endif
}

IsolatedOperation start_isolated_operation(const std::string& name,
                                           const core::OperationPolicy& policy,
                                           const core::Config& config) {
  const core::IsolationSpec& iso = *policy.isolation;
  PoolSpec spec;
  spec.operation = name;
  spec.settings_json = policy.settings_json;
  spec.max_concurrent = iso.limits.max_concurrent;
  spec.max_calls = iso.limits.max_calls;
  spec.retire_grace = std::min(config.shutdown_grace, std::chrono::milliseconds(5000));

  // The worker confines itself beneath the storage root (Landlock needs it to exist); the
  // server creates it at start-up anyway, just after the operations are bound.
  std::error_code ec;
  fs::create_directories(config.storage_dir, ec);

  std::vector<std::string>& argv = spec.argv;
  argv = {worker_host_path(), "--parent", std::to_string(::getpid()), "--storage",
          fs::absolute(config.storage_dir).lexically_normal().string()};
  if (iso.limits.memory_bytes) {
    argv.insert(argv.end(), {"--memory", std::to_string(*iso.limits.memory_bytes)});
  }
  if (iso.limits.cpu_seconds) {
    argv.insert(argv.end(), {"--cpu-seconds", std::to_string(*iso.limits.cpu_seconds)});
  }
  if (iso.limits.open_files) {
    argv.insert(argv.end(), {"--open-files", std::to_string(*iso.limits.open_files)});
  }
  if (!iso.run_as.empty()) argv.insert(argv.end(), {"--run-as", iso.run_as});
  if (!iso.exec.empty()) {
    spec.asks_health = false;    // an exec program has no health hook
    spec.keeps_scratch = false;  // and expects every descriptor with every call
    argv.insert(argv.end(), {"--cwd", iso.working_dir.string(), "--exec", "--"});
    argv.insert(argv.end(), iso.exec.begin(), iso.exec.end());
  } else {
    const fs::path plugin =
        iso.plugin.is_absolute() ? iso.plugin : fs::absolute(config.plugin_dir / iso.plugin);
    // Half the retire grace for the shutdown hook, so the worker exits before it is killed.
    argv.insert(argv.end(), {"--shutdown-ms", std::to_string(spec.retire_grace.count() / 2),
                             "--plugin", plugin.lexically_normal().string()});
  }

  auto pool = std::make_shared<WorkerPool>(std::move(spec));
  IsolatedOperation out;
  out.backend = std::make_shared<ProcessBackend>(pool);
  auto ready = pool->start();
  if (ready) {
    out.ready = std::move(*ready);
  } else {
    spdlog::error("operation {} is down: {}", name, ready.error().message);
  }
  return out;
}

}  // namespace ops::isolation
