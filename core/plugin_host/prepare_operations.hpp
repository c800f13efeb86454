// Readies the in-process operations of one configuration generation (Registry::build):
// every enabled operation's settings are checked against its plugin's settings schema,
// then each one's init runs. Any refusal refuses the generation: start-up fails, a reload
// keeps the generation in force, --check-config reports it.
#pragma once

#include <vector>

#include "config/config.hpp"
#include "opserver/error.hpp"
#include "plugin_host/plugin_loader.hpp"

namespace ops::core {

// The operations enabled in `config` and found in `loaded` (operations hosted elsewhere are
// not in it and are left alone). All settings are checked before any init runs, so a
// settings error never reaches a plugin.
Status prepare_in_process(const Config& config, const std::vector<LoadedOperation>& loaded);

}  // namespace ops::core
