// Reload without a server: which settings need a restart, how the plugin directory is
// loaded again (unchanged files reused, changed ones loaded afresh, old ones unloaded when
// released), and the Reloader's all-or-nothing publish with its counters and hooks.
#include "net/reload.hpp"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <boost/dll/shared_library.hpp>
#include <filesystem>
#include <fstream>

#include "dispatch/registry.hpp"

namespace ops::core {
namespace {

namespace fs = std::filesystem;

TEST(ReloadSettings, OnlyStartUpSettingsNeedARestart) {
  Config running;
  Config next = running;
  next.idle_timeout = std::chrono::milliseconds(1234);  // run-time: reloads
  next.max_frame = 4096;
  next.plugin_dir = "/elsewhere";  // the plugin directory reloads too
  EXPECT_TRUE(settings_needing_restart(running, next).empty());
  next.listen_port = 9999;
  next.storage_dir = "/other";
  next.worker_threads = 3;
  next.default_quota_bytes = 10;
  EXPECT_EQ(
      settings_needing_restart(running, next),
      (std::vector<std::string>{"listen", "storage_dir", "worker_threads", "default_quota_bytes"}));
}

class PluginReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ops-reload-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::copy_file(fs::path(OPS_TEST_PLUGIN_DIR) / "liblist.so", dir_ / "liblist.so");
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

std::weak_ptr<boost::dll::shared_library> library_of(const std::vector<LoadedOperation>& ops,
                                                     const std::string& name) {
  for (const LoadedOperation& op : ops) {
    if (name == op.op->name) return op.library;
  }
  return {};
}

TEST_F(PluginReloadTest, UnchangedIsReusedChangedIsLoadedAfreshAndTheOldOneUnloaded) {
  auto first = load_plugins(dir_);
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto first_lib = library_of(*first, "list");
  ASSERT_FALSE(first_lib.expired());

  // Unchanged: the very same library.
  auto again = load_plugins(dir_, PluginReload{&*first});
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(library_of(*again, "list").lock(), first_lib.lock());

  // Replaced by a new file at the same path: a new library, from a fresh name.
  fs::copy_file(dir_ / "liblist.so", dir_ / "new.tmp");
  fs::rename(dir_ / "new.tmp", dir_ / "liblist.so");
  auto changed = load_plugins(dir_, PluginReload{&*again});
  ASSERT_TRUE(changed.ok()) << changed.error().message;
  auto changed_lib = library_of(*changed, "list");
  ASSERT_FALSE(changed_lib.expired());
  EXPECT_NE(changed_lib.lock(), first_lib.lock());
  EXPECT_NE(changed_lib.lock()->location().string().find("/proc/self/fd/"), std::string::npos);
  // Its handler is code in a loaded object (relocated, callable).
  for (const LoadedOperation& op : *changed) {
    Dl_info info{};
    EXPECT_NE(::dladdr(reinterpret_cast<void*>(op.op->call), &info), 0)
        << op.op->name << " at " << reinterpret_cast<void*>(op.op->call);
  }
  // Its code is really a different mapping: the handler's address differs.
  EXPECT_NE(library_of(*changed, "list").lock()->native(), first_lib.lock()->native());

  // The old one goes when its last holder lets go; the new one stays.
  first->clear();
  again->clear();
  EXPECT_TRUE(first_lib.expired());
  EXPECT_FALSE(changed_lib.expired());
  changed->clear();
  EXPECT_TRUE(changed_lib.expired());
}

TEST_F(PluginReloadTest, TheReloaderPublishesAValidConfigurationAndRefusesABrokenOne) {
  Config start;
  start.plugin_dir = dir_;
  start.operations["list"].allow = {"*"};
  auto loaded = load_plugins(dir_);
  ASSERT_TRUE(loaded.ok());
  auto registry = Registry::build(start, *loaded);
  ASSERT_TRUE(registry.ok());
  auto first = std::make_shared<Snapshot>();
  first->registry = std::move(*registry);
  first->generation = 1;
  SnapshotStore store(first);
  first.reset();

  Result<Config> next = start;
  ReloadTarget target;
  target.load_config = [&next] { return next; };
  target.running = &start;
  target.snapshots = &store;
  std::vector<std::string> events;
  ReloadHooks hooks;
  hooks.notify_reloading = [&] { events.push_back("reloading"); };
  hooks.notify_ready = [&] { events.push_back("ready"); };
  hooks.finished = [&](bool applied, std::uint64_t generation, const std::string& reason) {
    events.push_back((applied ? "applied " : "refused ") + std::to_string(generation) +
                     (reason.empty() ? "" : " " + reason));
  };
  Reloader reloader(target, std::move(*loaded), hooks);

  next->idle_timeout = std::chrono::milliseconds(4321);
  ASSERT_TRUE(reloader.reload_now().ok());
  EXPECT_EQ(store.current()->generation, 2u);
  EXPECT_EQ(store.current()->settings.idle_timeout, std::chrono::milliseconds(4321));

  // An operation nobody provides: refused whole, generation 2 stays.
  next->operations["nonexistent"].allow = {"*"};
  next->idle_timeout = std::chrono::milliseconds(1);
  auto refused = reloader.reload_now();
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("\"nonexistent\""), std::string::npos);
  EXPECT_EQ(store.current()->generation, 2u);
  EXPECT_EQ(store.current()->settings.idle_timeout, std::chrono::milliseconds(4321));

  // A file that does not parse: refused too.
  next = Error{ErrorCode::invalid_args, "server.json:1:2: broken"};
  EXPECT_FALSE(reloader.reload_now().ok());

  EXPECT_EQ(reloader.counters().applied.load(), 1u);
  EXPECT_EQ(reloader.counters().refused.load(), 2u);
  ASSERT_EQ(events.size(), 9u);
  EXPECT_EQ(events[0], "reloading");
  EXPECT_EQ(events[1], "applied 2");
  EXPECT_EQ(events[2], "ready");
  EXPECT_EQ(events[4].rfind("refused 2 operation \"nonexistent\"", 0), 0u) << events[4];
  EXPECT_EQ(events[7], "refused 2 server.json:1:2: broken");
}

TEST(ConfigPathsUnit, RelativePathsFollowTheFileThatNamesThem) {
  char tmpl[] = "/tmp/ops-paths-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const fs::path dir = tmpl;
  fs::create_directories(dir / "conf" / "sub");
  std::ofstream(dir / "conf" / "server.json")
      << R"({"storage_dir": "../data", "ops_config": "sub/ops.json", "pid_file": "run/op.pid"})";
  std::ofstream(dir / "conf" / "sub" / "ops.json")
      << R"({"plugin_dir": "plugins", "operations": {}})";
  auto c = load_config(dir / "conf" / "server.json");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->storage_dir, dir / "data");
  EXPECT_EQ(c->state_dir, dir / "conf" / "var" / "state");  // a default, from server.json's
  EXPECT_EQ(c->ops_config_path, dir / "conf" / "sub" / "ops.json");
  EXPECT_EQ(c->plugin_dir, dir / "conf" / "sub" / "plugins");
  EXPECT_EQ(c->pid_file, dir / "conf" / "run" / "op.pid");
  // Command-line overrides stay as given (the working directory's).
  ConfigOverrides o;
  o.storage_dir = "here";
  o.pid_file = "p.pid";
  auto overridden = load_config(dir / "conf" / "server.json", o);
  ASSERT_TRUE(overridden.ok());
  EXPECT_EQ(overridden->storage_dir, fs::path("here"));
  EXPECT_EQ(overridden->pid_file, fs::path("p.pid"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ops::core
