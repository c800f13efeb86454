#include "plugin_host/prepare_operations.hpp"

#include <map>
#include <string>

#include "plugin_host/lifecycle.hpp"

namespace ops::core {

Status prepare_in_process(const Config& config, const std::vector<LoadedOperation>& loaded) {
  std::map<std::string, const LoadedOperation*> by_name;
  for (const LoadedOperation& op : loaded) by_name.emplace(op.op->name, &op);
  std::vector<std::pair<std::string, const LoadedOperation*>> enabled;
  for (const auto& [name, policy] : config.operations) {
    auto it = by_name.find(name);
    if (it != by_name.end()) enabled.emplace_back(name, it->second);
  }
  for (const auto& [name, op] : enabled) {
    Status checked = check_settings(name, op->op, config.operations.at(name).settings_json);
    if (!checked) {
      return fail(checked.error().code,
                  config.ops_config_path.string() + ": " + checked.error().message);
    }
  }
  for (const auto& [name, op] : enabled) {
    const std::string& settings = config.operations.at(name).settings_json;
    Status ready = op->lifecycle ? op->lifecycle->prepare(name, settings, config.shutdown_grace)
                                 : run_init(name, op->op, settings);
    if (!ready) return ready;
  }
  return ok_status();
}

}  // namespace ops::core
