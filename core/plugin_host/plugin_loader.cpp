#include "plugin_host/plugin_loader.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <boost/dll/shared_library.hpp>
#include <map>

namespace ops::core {
namespace fs = std::filesystem;
namespace dll = boost::dll;

namespace {

std::string last_dlerror() {
  const char* text = ::dlerror();
  return text ? text : "unknown dlopen error";
}

Error plugin_error(const fs::path& file, const std::string& reason) {
  return Error{ErrorCode::internal, "plugin " + file.string() + ": " + reason};
}

Result<std::vector<LoadedOperation>> load_one(const fs::path& file) {
  auto library = std::make_shared<dll::shared_library>();
  boost::dll::fs::error_code ec;
  ::dlerror();  // clear any stale message
  library->load(file, dll::load_mode::rtld_now | dll::load_mode::rtld_local, ec);
  if (ec || !library->is_loaded()) return plugin_error(file, "cannot load: " + last_dlerror());

  // Compatibility first, reading data only, like nginx's module signature check.
  if (!library->has(OPS_PLUGIN_STAMP_SYMBOL)) {
    return plugin_error(file, "not an opserver plugin: missing symbol " OPS_PLUGIN_STAMP_SYMBOL);
  }
  const auto& stamp = library->get<const ops_plugin_stamp_v1>(OPS_PLUGIN_STAMP_SYMBOL);
  if (stamp.abi_version != OPS_PLUGIN_ABI_VERSION) {
    return plugin_error(file, "built for plugin ABI version " + std::to_string(stamp.abi_version) +
                                  ", this server expects version " +
                                  std::to_string(OPS_PLUGIN_ABI_VERSION));
  }
  std::string signature = stamp.build_signature ? stamp.build_signature : "(none)";
  // Same architecture, and the same C++ library ABI unless the plugin is plain C.
  bool compatible = signature == OPS_BUILD_SIGNATURE || signature == OPS_BUILD_SIGNATURE_ARCH "c";
  if (!compatible) {
    return plugin_error(file, "is not binary compatible: built as \"" + signature +
                                  "\", this server is \"" OPS_BUILD_SIGNATURE "\"");
  }
  if (!library->has(OPS_PLUGIN_ENTRY_SYMBOL)) {
    return plugin_error(file, "missing entry symbol " OPS_PLUGIN_ENTRY_SYMBOL);
  }
  auto entry = library->get<const ops_plugin_v1*()>(OPS_PLUGIN_ENTRY_SYMBOL);
  const ops_plugin_v1* plugin = entry();
  if (plugin == nullptr) return plugin_error(file, "the entry returned no descriptor");
  if (plugin->abi_version != OPS_PLUGIN_ABI_VERSION) {
    return plugin_error(file, "descriptor is for plugin ABI version " +
                                  std::to_string(plugin->abi_version) + ", this server expects " +
                                  std::to_string(OPS_PLUGIN_ABI_VERSION));
  }
  if (plugin->struct_size < sizeof(ops_plugin_v1) || plugin->name == nullptr ||
      (plugin->op_count > 0 && plugin->ops == nullptr)) {
    return plugin_error(file, "malformed plugin descriptor");
  }

  std::vector<LoadedOperation> out;
  for (std::size_t i = 0; i < plugin->op_count; ++i) {
    const ops_op_v1* op = &plugin->ops[i];
    if (op->struct_size < sizeof(ops_op_v1) || op->name == nullptr || op->name[0] == '\0' ||
        op->call == nullptr || op->args_schema == nullptr || op->payload < OPS_PAYLOAD_NONE ||
        op->payload > OPS_PAYLOAD_OUT) {
      return plugin_error(file, "malformed operation #" + std::to_string(i));
    }
    out.push_back(
        LoadedOperation{op, plugin->name, plugin->version ? plugin->version : "0", file, library});
  }
  return out;
}

}  // namespace

Result<std::vector<LoadedOperation>> load_plugins(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return Error{ErrorCode::internal, "plugin directory " + dir.string() + " does not exist"};
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".so" && entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());  // a stable order for messages

  std::vector<LoadedOperation> all;
  std::map<std::string, fs::path> provider;
  for (const fs::path& file : files) {
    auto loaded = load_one(file);
    if (!loaded) return loaded.error();
    for (LoadedOperation& op : *loaded) {
      auto [it, inserted] = provider.emplace(op.op->name, file);
      if (!inserted) {
        return Error{ErrorCode::internal, std::string("operation \"") + op.op->name +
                                              "\" is provided twice: by " + it->second.string() +
                                              " and by " + file.string()};
      }
      all.push_back(std::move(op));
    }
  }
  return all;
}

}  // namespace ops::core
