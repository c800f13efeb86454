// Loads every plugin .so in a directory with Boost.DLL and checks it before trusting it:
// the exported stamp (ABI version, build signature) is read before any plugin code is
// called, symbols are bound at load (RTLD_NOW) so a missing one fails at start-up, and
// each operation name may be provided once. Start-up only; main thread.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "opserver/error.hpp"
#include "opserver/plugin_abi.h"

namespace boost::dll {
class shared_library;
}

namespace ops::core {

// One operation found in a plugin. `library` keeps the .so mapped for as long as the
// operation (or anything else holding this pointer) lives: unloading first would leave
// `op` and `handler` dangling (Boost.DLL's docs show that crash).
struct LoadedOperation {
  const ops_op_v1* op = nullptr;
  std::string plugin_name;
  std::string plugin_version;
  std::filesystem::path file;
  std::shared_ptr<boost::dll::shared_library> library;
};

// Loads all "*.so" files in `dir`. Errors name the file and the reason.
Result<std::vector<LoadedOperation>> load_plugins(const std::filesystem::path& dir);

}  // namespace ops::core
