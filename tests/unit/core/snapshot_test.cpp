// Snapshot lifetime: a request holds the snapshot it started with, and a running call holds
// its operation's backend, so a plugin stays loaded after the store has moved on and goes
// only when the last holder lets go.
#include "dispatch/snapshot.hpp"

#include <gtest/gtest.h>

#include <boost/dll/shared_library.hpp>

#include "dispatch/registry.hpp"
#include "plugin_host/plugin_loader.hpp"

namespace ops::core {
namespace {

std::shared_ptr<const Snapshot> make_snapshot(std::uint64_t generation,
                                              std::weak_ptr<boost::dll::shared_library>* lib) {
  Config config;
  config.plugin_dir = OPS_TEST_PLUGIN_DIR;
  config.operations["list"].allow = {"*"};
  auto loaded = load_plugins(config.plugin_dir);
  EXPECT_TRUE(loaded.ok());
  for (const LoadedOperation& op : *loaded) {
    if (std::string(op.op->name) == "list") *lib = op.library;
  }
  auto registry = Registry::build(config, std::move(*loaded));
  EXPECT_TRUE(registry.ok());
  auto s = std::make_shared<Snapshot>();
  s->registry = std::move(*registry);
  s->generation = generation;
  return s;
}

TEST(Snapshots, ARequestKeepsItsSnapshotAndPluginAfterTheStoreMovesOn) {
  std::weak_ptr<boost::dll::shared_library> first_lib, second_lib;
  SnapshotStore store(make_snapshot(1, &first_lib));
  ASSERT_FALSE(first_lib.expired());

  std::shared_ptr<const Snapshot> held = store.current();  // a request starts
  store.publish(make_snapshot(2, &second_lib));
  EXPECT_EQ(store.current()->generation, 2u);
  EXPECT_EQ(held->generation, 1u);
  EXPECT_FALSE(first_lib.expired()) << "the request's plugin was unloaded under it";
  EXPECT_TRUE(first_lib.lock()->is_loaded());

  held.reset();  // the request ends
  EXPECT_TRUE(first_lib.expired()) << "nothing holds the old snapshot, yet its plugin stayed";
  EXPECT_FALSE(second_lib.expired());
}

TEST(Snapshots, ARunningCallHoldsItsBackendAfterTheSnapshotIsGone) {
  std::weak_ptr<boost::dll::shared_library> lib, unused;
  SnapshotStore store(make_snapshot(1, &lib));
  // What a plugin call keeps while its handler runs (dispatch/plugin_call.cpp).
  std::shared_ptr<const OperationBackend> running =
      store.current()->registry->find("list")->backend;
  store.publish(make_snapshot(2, &unused));
  EXPECT_FALSE(lib.expired());
  running.reset();
  EXPECT_TRUE(lib.expired());
}

}  // namespace
}  // namespace ops::core
