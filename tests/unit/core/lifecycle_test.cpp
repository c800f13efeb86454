// The lifecycle helpers of plugin ABI 1.1 (plugin_host/lifecycle.hpp, op_hooks.hpp), with
// operation descriptors made here: what a minor-0 struct hides, the settings messages, and
// init, shutdown and health around the plugin's return values.
#include "plugin_host/lifecycle.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "plugin_host/op_hooks.hpp"

namespace ops::core {
namespace {

using namespace std::chrono_literals;

constexpr const char* kListSettings = R"({
  "type": "object",
  "properties": {
    "max_list_entries": {"type": "integer", "minimum": 1},
    "max_list_bytes": {"type": "integer", "minimum": 1024, "maximum": 1048576},
    "mode": {"enum": ["fast", "safe"]},
    "nested": {"type": "object", "properties": {"depth": {"type": "integer", "exclusiveMinimum": true, "minimum": 0}},
               "required": ["depth"]}
  },
  "additionalProperties": false
})";

int handler(const ops_host_v1*, ops_call*, const char*, std::size_t) {
  return OPS_OK;
}

ops_op_v1 op_with_schema(const char* schema) {
  ops_op_v1 op{};
  op.struct_size = sizeof(ops_op_v1);
  op.name = "list";
  op.args_schema = "{}";
  op.call = handler;
  op.settings_schema = schema;
  return op;
}

std::string message_of(const Status& status) {
  return status ? std::string("(ok)") : status.error().message;
}

TEST(OpHooks, AStructOfAbi10HasNoHooksWhateverFollowsIt) {
  // A minor-0 plugin's ops_op_v1 ends after `call`: what lies beyond is not its own (here,
  // garbage that must never be read as a hook).
  ops_op_v1 op;
  std::memset(&op, 0xAB, sizeof op);
  op.struct_size = static_cast<std::uint32_t>(kOpSizeV1_0);
  const OpHooks hooks = hooks_of(&op);
  EXPECT_EQ(hooks.settings_schema, nullptr);
  EXPECT_EQ(hooks.init, nullptr);
  EXPECT_EQ(hooks.shutdown, nullptr);
  EXPECT_EQ(hooks.health, nullptr);
  // One that stops after settings_schema has that and nothing more.
  op.struct_size = static_cast<std::uint32_t>(offsetof(ops_op_v1, init));
  op.settings_schema = "{}";
  EXPECT_STREQ(hooks_of(&op).settings_schema, "{}");
  EXPECT_EQ(hooks_of(&op).init, nullptr);
  EXPECT_EQ(kOpSizeV1_0, 56u);  // x86_64 and aarch64: the size ABI 1.0 plugins write
}

TEST(OpHooks, StampMinor) {
  ops_plugin_stamp_v1 stamp{};
  stamp.abi_version = 1;
  stamp.struct_size = static_cast<std::uint32_t>(kStampSizeV1_0);
  stamp.abi_minor = 7;  // beyond struct_size: not there
  EXPECT_EQ(stamp_minor(stamp), 0u);
  stamp.struct_size = sizeof stamp;
  EXPECT_EQ(stamp_minor(stamp), 7u);
}

TEST(CheckSettings, NoSchemaAcceptsAnything) {
  ops_op_v1 op = op_with_schema(nullptr);
  EXPECT_TRUE(check_settings("list", &op, R"({"whatever": [1, 2]})"));
}

TEST(CheckSettings, MessagesNameTheOperationTheFieldAndTheRule) {
  ops_op_v1 op = op_with_schema(kListSettings);
  EXPECT_TRUE(check_settings("list", &op, R"({"max_list_entries": 5, "mode": "safe"})"));
  EXPECT_TRUE(check_settings("list", &op, "{}"));
  const std::pair<const char*, const char*> cases[] = {
      {R"({"max_list_entries": 0})",
       R"(operation "list": settings.max_list_entries: must be >= 1)"},
      {R"({"max_list_bytes": 2000000})",
       R"(operation "list": settings.max_list_bytes: must be <= 1048576)"},
      {R"({"max_list_entries": "many"})",
       R"(operation "list": settings.max_list_entries: must be of type "integer")"},
      {R"({"max_list_entrys": 5})",
       R"(operation "list": settings: unknown member "max_list_entrys")"},
      {R"({"mode": "slow"})", R"(operation "list": settings.mode: must be one of ["fast","safe"])"},
      {R"({"nested": {}})",
       R"(operation "list": settings.nested: missing required member "depth")"},
      {R"({"nested": {"depth": 0}})", R"(operation "list": settings.nested.depth: must be > 0)"},
      {R"([1])", R"(operation "list": settings: must be a JSON object)"},
  };
  for (const auto& [settings, expected] : cases) {
    Status status = check_settings("list", &op, settings);
    ASSERT_FALSE(status) << settings;
    EXPECT_EQ(status.error().message, expected) << settings;
    EXPECT_EQ(status.error().code, ErrorCode::invalid_args);
  }
}

TEST(CheckSettings, ASchemaThatIsNoObjectIsThePluginsFault) {
  ops_op_v1 op = op_with_schema("[not json");
  EXPECT_EQ(message_of(check_settings("list", &op, "{}")),
            R"(operation "list": the plugin's settings schema is not a JSON object)");
  op.settings_schema = "true";
  EXPECT_EQ(message_of(check_settings("list", &op, "{}")),
            R"(operation "list": the plugin's settings schema is not a JSON object)");
}

std::string last_settings;
int init_records(const char* settings, std::size_t len, char*, std::size_t) {
  last_settings.assign(settings, len);
  return settings[len] == '\0' ? 0 : 99;  // the ABI promises a NUL after the text
}
int init_refuses(const char*, std::size_t, char* error, std::size_t cap) {
  std::snprintf(error, cap, "no\x01 thanks\n");
  return 3;
}
int init_refuses_silently(const char*, std::size_t, char*, std::size_t) {
  return 1;
}
int init_overfills(const char*, std::size_t, char* error, std::size_t cap) {
  std::memset(error, 'x', cap);  // no NUL at all
  return 1;
}

TEST(RunInit, PassesTheSettingsAndReportsTheReasonCleaned) {
  ops_op_v1 op = op_with_schema(nullptr);
  EXPECT_TRUE(run_init("list", &op, R"({"a":1})"));  // no init: ready
  op.init = init_records;
  EXPECT_TRUE(run_init("list", &op, R"({"a":1})"));
  EXPECT_EQ(last_settings, R"({"a":1})");
  op.init = init_refuses;
  EXPECT_EQ(message_of(run_init("list", &op, "{}")),
            R"(operation "list": init refused the operation: no  thanks )");
  op.init = init_refuses_silently;
  EXPECT_EQ(message_of(run_init("list", &op, "{}")),
            R"(operation "list": init refused the operation: (no reason given))");
  op.init = init_overfills;
  const std::string message = message_of(run_init("list", &op, "{}"));
  EXPECT_LT(message.size(), 600u) << message;  // cut, and no read past the buffer
}

std::atomic<int> shutdowns{0};
std::atomic<std::uint32_t> told_deadline{0};
void shutdown_counts(std::uint32_t deadline_ms) {
  told_deadline = deadline_ms;
  ++shutdowns;
}
std::atomic<bool> release_hang{false};
void shutdown_hangs(std::uint32_t) {
  while (!release_hang) std::this_thread::sleep_for(5ms);
}

TEST(RunShutdown, WaitsForTheHookAtMostItsDeadline) {
  ops_op_v1 op = op_with_schema(nullptr);
  EXPECT_TRUE(run_shutdown(&op, 100ms));  // none
  op.shutdown = shutdown_counts;
  shutdowns = 0;
  EXPECT_TRUE(run_shutdown(&op, 1500ms));
  EXPECT_EQ(shutdowns, 1);
  EXPECT_EQ(told_deadline, 1500u);

  op.shutdown = shutdown_hangs;
  auto kept = std::make_shared<int>(1);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(run_shutdown(&op, 200ms, kept));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(kept.use_count(), 2);  // the hung hook's thread keeps the library
  release_hang = true;
  for (int i = 0; i < 200 && kept.use_count() > 1; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(kept.use_count(), 1);
}

TEST(OpLifecycle, ShutdownRunsOnceAfterASuccessfulInitWhenTheLastHolderGoes) {
  ops_op_v1 op = op_with_schema(nullptr);
  op.shutdown = shutdown_counts;
  shutdowns = 0;
  { OpLifecycle never_prepared(&op, nullptr); }
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(shutdowns, 0);  // nothing initialised, nothing to shut down

  op.init = init_refuses;
  {
    OpLifecycle refused(&op, nullptr);
    EXPECT_FALSE(refused.prepare("list", "{}", 1000ms));
    EXPECT_FALSE(refused.prepared());
  }
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(shutdowns, 0);

  op.init = init_records;
  {
    OpLifecycle lifecycle(&op, nullptr);
    EXPECT_TRUE(lifecycle.prepare("list", R"({"g":1})", 1000ms));
    EXPECT_TRUE(lifecycle.prepare("list", R"({"g":2})", 700ms));  // a reload: init again
  }
  for (int i = 0; i < 200 && shutdowns == 0; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(shutdowns, 1);
  EXPECT_EQ(told_deadline, 700u);
}

TEST(OpLifecycle, ShutdownAllRunsEachPreparedOneOnce) {
  ops_op_v1 op = op_with_schema(nullptr);
  op.shutdown = shutdown_counts;
  shutdowns = 0;
  auto a = std::make_shared<OpLifecycle>(&op, nullptr);
  auto b = std::make_shared<OpLifecycle>(&op, nullptr);
  auto idle = std::make_shared<OpLifecycle>(&op, nullptr);
  ASSERT_TRUE(a->prepare("a", "{}", 1000ms));
  ASSERT_TRUE(b->prepare("b", "{}", 1000ms));
  EXPECT_TRUE(OpLifecycle::shutdown_all(2s));
  EXPECT_EQ(shutdowns, 2);
  a.reset();
  b.reset();
  idle.reset();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(shutdowns, 2);  // not again when they go
  EXPECT_TRUE(OpLifecycle::shutdown_all(100ms));
  EXPECT_EQ(shutdowns, 2);
}

int healthy(char*, std::size_t) {
  return 0;
}
int sick(char* reason, std::size_t cap) {
  std::snprintf(reason, cap, "disk\tfull");
  return 1;
}
int sick_silently(char*, std::size_t) {
  return 2;
}

TEST(RunHealth, NulloptWhenHealthyOrWithoutAHook) {
  ops_op_v1 op = op_with_schema(nullptr);
  EXPECT_EQ(run_health(&op), std::nullopt);
  op.health = healthy;
  EXPECT_EQ(run_health(&op), std::nullopt);
  op.health = sick;
  EXPECT_EQ(run_health(&op), std::optional<std::string>("disk full"));
  op.health = sick_silently;
  EXPECT_EQ(run_health(&op), std::optional<std::string>("unhealthy"));
}

}  // namespace
}  // namespace ops::core
