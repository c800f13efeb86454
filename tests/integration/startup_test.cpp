// Start-up refusals: broken configurations and broken plugins make the server exit 1
// naming the problem, both under --check-config and on a real start (§6, issue 3).
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <optional>
#include <thread>

#include "harness/server_process.hpp"

namespace ops::test {
namespace {

class StartupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    plugins_ = dir_.path() / "plugins";
    fs::create_directories(plugins_);
    for (const char* name : {"libupload.so", "libdownload.so", "liblist.so", "libregister.so"}) {
      fs::copy_file(fs::path(OPS_PLUGIN_DIR) / name, plugins_ / name);
    }
    write("ops.json", default_ops_json(plugins_.string()));
    server_settings_ = R"("listen": "127.0.0.1:0", "storage_dir": ")" +
                       (dir_.path() / "storage").string() + R"(", "state_dir": ")" +
                       (dir_.path() / "state").string() + R"(", "ops_config": ")" +
                       (dir_.path() / "ops.json").string() + "\"";
    write("server.json", "{" + server_settings_ + "}");
  }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_.path() / name, std::ios::binary) << text;
  }
  void add_test_plugin(const std::string& file) {
    fs::copy_file(fs::path(OPS_TEST_PLUGIN_DIR) / file, plugins_ / file);
  }
  RunResult check() {
    return run_program(
        {OPS_SERVER_BIN, "--check-config", "--config", (dir_.path() / "server.json").string()});
  }
  // Both --check-config and a real start must refuse, with `expected` in the message.
  void expect_refused(const std::string& expected) {
    RunResult r = check();
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << r.output;
    RunResult start =
        run_program({OPS_SERVER_BIN, "--config", (dir_.path() / "server.json").string()});
    EXPECT_EQ(start.status, 1) << start.output;
    EXPECT_NE(start.output.find(expected), std::string::npos) << start.output;
  }

  TempDir dir_;
  fs::path plugins_;
  std::string server_settings_;
};

TEST_F(StartupTest, TheGoodConfigurationPassesTheCheck) {
  RunResult r = check();
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("configuration OK"), std::string::npos);
}

TEST_F(StartupTest, MissingOrEmptyFiles) {
  fs::remove(dir_.path() / "ops.json");
  expect_refused("ops.json: cannot open");
  write("ops.json", "  \n");
  expect_refused("ops.json:1:1: the file is empty");
}

TEST_F(StartupTest, InvalidJsonIsReportedWithLineAndColumn) {
  write("ops.json", "{\n  \"plugin_dir\": \"x\",\n  \"operations\": {},\n}");
  expect_refused("ops.json:4:1");
  write("ops.json", "{\"plugin_dir\": \"x\", \"plugin_dir\": \"y\", \"operations\": {}}");
  expect_refused("duplicate member name \"plugin_dir\"");
}

TEST_F(StartupTest, WrongShapesAndTyposAreNamed) {
  write("ops.json", R"({"plugin_dir": ")" + plugins_.string() +
                        R"(", "operations": {"upload": {"allow": "*"}}})");
  expect_refused("\"allow\" must be an array");
  write("ops.json", R"({"plugin_dir": ")" + plugins_.string() +
                        "\",\n\"operations\": {\"upload\": {\"alow\": [\"*\"]}}}");
  expect_refused("ops.json:2:34: unknown setting \"alow\"");
  write("ops.json", R"({"operations": {}})");
  expect_refused("missing \"plugin_dir\"");
}

TEST_F(StartupTest, ServerSettingsOutOfRange) {
  for (const char* bad : {R"("max_frame": 0)", R"("max_frame": -1)", R"("max_frame": 4294967296)",
                          R"("max_frame": 1.5)", R"("idle_timeout_ms": "soon")"}) {
    write("server.json", "{" + server_settings_ + ", " + bad + "}");
    RunResult r = check();
    EXPECT_EQ(r.status, 1) << bad << "\n" << r.output;
    EXPECT_NE(r.output.find("server.json:1:"), std::string::npos) << r.output;
  }
  write("server.json", "{" + server_settings_ + ", \"max_frame\": 4294967295}");
  EXPECT_EQ(check().status, 0);
}

TEST_F(StartupTest, HandlerThreadAndPayloadRateSettings) {
  write("server.json",
        "{" + server_settings_ + R"(, "worker_threads": 8, "max_worker_threads": 4})");
  expect_refused("\"max_worker_threads\" must be at least worker_threads (8)");
  for (const char* bad : {R"("max_worker_threads": 0)", R"("payload_min_rate": -1)",
                          R"("payload_rate_grace_ms": "later")"}) {
    write("server.json", "{" + server_settings_ + ", " + bad + "}");
    RunResult r = check();
    EXPECT_EQ(r.status, 1) << bad << "\n" << r.output;
    EXPECT_NE(r.output.find("server.json:1:"), std::string::npos) << r.output;
  }
  write("server.json", "{" + server_settings_ +
                           R"(, "worker_threads": 4, "max_worker_threads": 4, )"
                           R"("payload_min_rate": 0, "payload_rate_grace_ms": 0})");
  RunResult ok = check();
  EXPECT_EQ(ok.status, 0) << ok.output;
}

TEST_F(StartupTest, AnEnabledOperationNoPluginProvides) {
  fs::remove(plugins_ / "libdownload.so");
  expect_refused("operation \"download\" is enabled");
  RunResult r = check();
  EXPECT_NE(r.output.find("upload (libupload.so)"), std::string::npos) << r.output;
}

TEST_F(StartupTest, PluginDirectoryMissing) {
  fs::remove_all(plugins_);
  expect_refused("does not exist");
}

TEST_F(StartupTest, CorruptLibrariesAreNamedWithTheLoaderError) {
  write("plugins/libjunk.so", "this is not an ELF file\n");
  expect_refused("libjunk.so: cannot load:");
  fs::remove(plugins_ / "libjunk.so");
  write("plugins/libempty.so", "");
  expect_refused("libempty.so: cannot load:");
  fs::remove(plugins_ / "libempty.so");
  std::string elf;
  {
    std::ifstream in(plugins_ / "liblist.so", std::ios::binary);
    elf.assign(std::istreambuf_iterator<char>(in), {});
  }
  write("plugins/libtruncated.so", elf.substr(0, 200));
  expect_refused("libtruncated.so: cannot load:");
}

TEST_F(StartupTest, AMissingSymbolFailsAtLoadNotAtCallTime) {
  add_test_plugin("libmissing_symbol.so");
  expect_refused("ops_test_function_that_does_not_exist");
}

TEST_F(StartupTest, AbiMismatchNamesBothVersions) {
  add_test_plugin("libwrong_abi.so");
  expect_refused("built for plugin ABI version 999, this server expects version 1");
}

TEST_F(StartupTest, ABuildForAnotherStandardLibraryIsNotBinaryCompatible) {
  add_test_plugin("libforeign_build.so");
  expect_refused("is not binary compatible: built as \"x86_64-linux/libc++-1\"");
}

TEST_F(StartupTest, MissingEntrySymbol) {
  add_test_plugin("libno_entry.so");
  expect_refused("missing entry symbol ops_plugin_entry");
}

TEST_F(StartupTest, NotAPluginAtAll) {
  // A valid shared library without the stamp: the C library's math library will do.
  fs::copy_file("/lib/x86_64-linux-gnu/libm.so.6", plugins_ / "libm.so");
  expect_refused("not an opserver plugin");
}

TEST_F(StartupTest, TwoPluginsProvidingOneOperation) {
  add_test_plugin("libduplicate_upload.so");
  expect_refused("operation \"upload\" is provided twice");
  RunResult r = check();
  EXPECT_NE(r.output.find("libduplicate_upload.so"), std::string::npos);
  EXPECT_NE(r.output.find("libupload.so"), std::string::npos);
}

// Case 105: who may change plugin_dir or a .so (sshd's StrictModes, docs/PLUGINS.md).

// A group that some account other than root and us has as its login group: writable by
// that group means writable by a stranger.
std::optional<gid_t> a_shared_group() {
  std::optional<gid_t> found;
  ::setpwent();
  while (passwd* pw = ::getpwent()) {
    if (pw->pw_uid != 0 && pw->pw_uid != ::geteuid()) {
      found = pw->pw_gid;
      break;
    }
  }
  ::endpwent();
  return found;
}

// Our login group has no member but root and us (a user private group).
bool our_group_is_private() {
  const gid_t gid = ::getegid();
  const group* gr = ::getgrgid(gid);
  if (gr == nullptr) return false;
  for (char** name = gr->gr_mem; *name != nullptr; ++name) {
    const passwd* pw = ::getpwnam(*name);
    if (pw == nullptr || (pw->pw_uid != 0 && pw->pw_uid != ::geteuid())) return false;
  }
  bool only_us = true;
  ::setpwent();
  while (passwd* pw = ::getpwent()) {
    if (pw->pw_gid == gid && pw->pw_uid != 0 && pw->pw_uid != ::geteuid()) only_us = false;
  }
  ::endpwent();
  return only_us;
}

TEST_F(StartupTest, AWorldWritablePluginDirectoryIsRefused) {
  fs::permissions(plugins_, fs::perms::all);
  expect_refused("plugin directory " + plugins_.string() +
                 " is writable by others (mode 0777); refusing to load plugins from it");
  // The sticky bit keeps others from replacing our files, not from adding their own.
  fs::permissions(plugins_, fs::perms::all | fs::perms::sticky_bit);
  expect_refused("plugin directory " + plugins_.string() + " is writable by others (mode 1777)");
  fs::permissions(plugins_, fs::perms(0755));
  EXPECT_EQ(check().status, 0);
}

TEST_F(StartupTest, AWorldWritablePluginIsRefused) {
  const fs::path lib = plugins_ / "liblist.so";
  fs::permissions(lib, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                           fs::perms::others_all);
  expect_refused("plugin " + lib.string() +
                 ": is writable by others (mode 0757); refusing to load it");
}

TEST_F(StartupTest, AGroupWritablePluginOfASharedGroupIsRefused) {
  auto shared = a_shared_group();
  if (!shared) GTEST_SKIP() << "no account other than root and us to share a group with";
  const fs::path lib = plugins_ / "liblist.so";
  if (::chown(lib.c_str(), static_cast<uid_t>(-1), *shared) != 0) {
    GTEST_SKIP() << "cannot give the file to group " << *shared << " (not root)";
  }
  fs::permissions(lib, fs::perms::group_write, fs::perm_options::add);
  expect_refused("plugin " + lib.string() + ": is writable by its group (gid " +
                 std::to_string(*shared) +
                 "), which has members other than root and the server's user");
  ASSERT_EQ(::chown(plugins_.c_str(), static_cast<uid_t>(-1), *shared), 0);
  fs::permissions(lib, fs::perms::group_write, fs::perm_options::remove);
  fs::permissions(plugins_, fs::perms::group_write, fs::perm_options::add);
  expect_refused("plugin directory " + plugins_.string() + " is writable by its group (gid " +
                 std::to_string(*shared) + ")");
}

TEST_F(StartupTest, AGroupWritablePluginDirectoryOfAPrivateGroupLoads) {
  // What umask 002 gives a user whose login group is their own (Debian's default).
  if (!our_group_is_private()) GTEST_SKIP() << "our login group has other members";
  ASSERT_EQ(::chown(plugins_.c_str(), static_cast<uid_t>(-1), ::getegid()), 0);
  fs::permissions(plugins_, fs::perms::group_write, fs::perm_options::add);
  for (const auto& entry : fs::directory_iterator(plugins_)) {
    ASSERT_EQ(::chown(entry.path().c_str(), static_cast<uid_t>(-1), ::getegid()), 0);
    fs::permissions(entry.path(), fs::perms::group_write, fs::perm_options::add);
  }
  RunResult r = check();
  EXPECT_EQ(r.status, 0) << r.output;
  ServerOptions options;
  options.plugin_dir = plugins_.string();
  ServerProcess server(options);
  EXPECT_TRUE(server.connect_admin());
}

TEST_F(StartupTest, APluginOrItsDirectoryOwnedByAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "giving a file to another uid needs root";
  constexpr uid_t kStranger = 54321;
  const fs::path lib = plugins_ / "liblist.so";
  ASSERT_EQ(::chown(lib.c_str(), kStranger, static_cast<gid_t>(-1)), 0);
  expect_refused("plugin " + lib.string() +
                 ": is owned by uid 54321, not by root or the server's user (uid 0)");
  ASSERT_EQ(::chown(lib.c_str(), 0, static_cast<gid_t>(-1)), 0);
  ASSERT_EQ(::chown(plugins_.c_str(), kStranger, static_cast<gid_t>(-1)), 0);
  expect_refused("plugin directory " + plugins_.string() + " is owned by uid 54321");
}

TEST_F(StartupTest, ASymlinkedPluginIsCheckedWhereItLeads) {
  const fs::path elsewhere = dir_.path() / "elsewhere";
  fs::create_directories(elsewhere);
  fs::permissions(elsewhere, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                 fs::perms::others_read | fs::perms::others_exec);
  const fs::path link = plugins_ / "liblist.so";
  fs::rename(link, elsewhere / "liblist.so.1");
  fs::create_symlink(elsewhere / "liblist.so.1", link);
  RunResult r = check();
  EXPECT_EQ(r.status, 0) << r.output;  // a safe target loads

  const fs::path target = fs::canonical(elsewhere / "liblist.so.1");
  fs::permissions(target, fs::perms::others_write, fs::perm_options::add);
  expect_refused("plugin " + link.string() + ": its target " + target.string() +
                 " is writable by others");
  fs::permissions(target, fs::perms::others_write, fs::perm_options::remove);
  fs::permissions(elsewhere, fs::perms::all);
  expect_refused("plugin " + link.string() + ": its target's directory " +
                 target.parent_path().string() + " is writable by others (mode 0777)");
}

TEST_F(StartupTest, HelpAndVersion) {
  RunResult help = run_program({OPS_SERVER_BIN, "--help"});
  EXPECT_EQ(help.status, 0);
  for (const char* flag : {"--config", "--listen", "--storage", "--state", "--plugins",
                           "--check-config", "--version", "user"}) {
    EXPECT_NE(help.output.find(flag), std::string::npos) << flag;
  }
  RunResult version = run_program({OPS_SERVER_BIN, "--version"});
  EXPECT_EQ(version.status, 0);
  EXPECT_NE(version.output.find("opserver/"), std::string::npos);
}

TEST_F(StartupTest, OfflineUserCommandsShareTheStore) {
  std::string cfg = (dir_.path() / "server.json").string();
  RunResult add = run_program({OPS_SERVER_BIN, "--config", cfg, "user", "add", "erin"});
  ASSERT_EQ(add.status, 0) << add.output;
  EXPECT_EQ(add.output.size(), 65u) << add.output;  // 64 hex and a newline
  EXPECT_EQ(run_program({OPS_SERVER_BIN, "--config", cfg, "user", "add", "erin"}).status, 1);
  EXPECT_EQ(run_program({OPS_SERVER_BIN, "--config", cfg, "user", "add", "Bad!"}).status, 1);
  RunResult list = run_program({OPS_SERVER_BIN, "--config", cfg, "user", "list"});
  EXPECT_NE(list.output.find("erin"), std::string::npos);
  EXPECT_EQ(fs::status(dir_.path() / "state" / "users.json").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(run_program({OPS_SERVER_BIN, "--config", cfg, "user", "remove", "erin"}).status, 0);
  list = run_program({OPS_SERVER_BIN, "--config", cfg, "user", "list"});
  EXPECT_EQ(list.output.find("erin"), std::string::npos);
}

TEST(StartupAdmin, FirstStartCreatesAdminWithAKeyFileNeverLogged) {
  ServerProcess server;
  std::string key = server.admin_key();
  EXPECT_EQ(key.size(), 64u);
  EXPECT_EQ(fs::status(server.state_dir() / "admin.key").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(server.log().find(key), std::string::npos);
  EXPECT_NE(server.log().find("admin.key"), std::string::npos);
  EXPECT_TRUE(server.connect_admin());
}

}  // namespace
}  // namespace ops::test

namespace ops::test {
namespace {

TEST(StartupSignals, SighupReloadsAndKeepsTheServerRunning) {
  ServerProcess server;
  ASSERT_EQ(::kill(server.pid(), SIGHUP), 0);
  // The server logs the reload once it is done; until then keep asking.
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (server.log().find("reload: generation 2 in force") == std::string::npos &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::yield();
  }
  EXPECT_NE(server.log().find("reload: generation 2 in force"), std::string::npos);
  EXPECT_TRUE(server.running());
  EXPECT_TRUE(server.connect_admin());
  EXPECT_EQ(server.stop(), 0);
}

}  // namespace
}  // namespace ops::test
