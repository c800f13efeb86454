// Fuzz target: the configuration loader (server.json and the ops.json it names). The
// first byte picks the file the rest of the input becomes; the other file is a valid one.
// Properties: load_config never crashes or hangs, every refusal names the file with
// line:col, and an accepted configuration respects the documented bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "config/config.hpp"

namespace {

namespace fs = std::filesystem;

void check(bool ok) {
  if (!ok) std::abort();
}

struct Files {
  fs::path dir;
  Files() {
    std::string templ = (fs::temp_directory_path() / "opsfuzz-config-XXXXXX").string();
    check(::mkdtemp(templ.data()) != nullptr);
    dir = templ;
  }
};

Files& files() {
  static Files* f = new Files();
  return *f;
}

void write(const fs::path& p, std::string_view text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  // A configuration naming a device or /proc file makes the loader read that file: an
  // operator's choice, not input, and not what this target is about.
  for (std::string_view bad : {"/dev", "/proc", "/sys", "/run"}) {
    if (text.find(bad) != std::string_view::npos) return 0;
  }
  Files& f = files();
  const fs::path server = f.dir / "server.json";
  const fs::path ops = f.dir / "ops.json";
  const bool fuzz_server = data[0] & 1;
  if (fuzz_server) {
    write(server, text);
    write(ops, R"({"plugin_dir":"plugins","operations":{"upload":{"allow":["*"]}}})");
  } else {
    write(server, R"({"listen":"127.0.0.1:0","ops_config":")" + ops.string() + "\"}");
    write(ops, text);
  }
  auto config = ops::core::load_config(server);
  if (!config) {
    // Every refusal names a file: "<file>: reason" or "<file>:line:col: reason".
    const std::string& m = config.error().message;
    check(m.find(": ") != std::string::npos && m.find(": ") > 0);
    return 0;
  }
  check(config->max_frame >= 2);
  check(config->max_auth_frame <= config->max_frame);
  check(config->worker_threads >= 1);
  check(config->max_worker_threads >= config->worker_threads);
  for (const auto& [name, policy] : config->operations) {
    check(!name.empty() && name != "describe");
    if (policy.max_payload) check(*policy.max_payload <= (std::uint64_t{1} << 53) - 1);
  }
  return 0;
}
