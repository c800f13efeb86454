// Live reload (SIGHUP, `opserver reload`): a new configuration goes into force for new
// requests without dropping a connection; a broken one is refused and the old one stays;
// plugins come and go with the plugin directory, and a running call keeps its plugin.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;

void write_text(const fs::path& path, const std::string& text) {
  // Written beside and renamed, as an operator's editor or deployment would.
  const fs::path tmp = path.string() + ".new";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
  }
  fs::rename(tmp, path);
}

// The server's log from where the last look ended: a loaded server logs a line per request,
// so reading it whole on every poll would cost more than the test.
class LogTail {
 public:
  explicit LogTail(const ServerProcess& server) : path_(server.root() / "server.log") {}
  // The complete lines added since the last call.
  std::string next() {
    std::ifstream in(path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset_));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::size_t end = text.rfind('\n');
    if (end == std::string::npos) return "";
    offset_ += end + 1;
    return text.substr(0, end + 1);
  }

 private:
  fs::path path_;
  std::size_t offset_ = 0;
};

// Sends SIGHUP and waits until the server has logged the outcome of a reload; returns that
// log line ("" if none came within the limit).
std::string reload_and_wait(ServerProcess& server, LogTail& tail,
                            std::chrono::milliseconds limit = 10s) {
  tail.next();  // what came before the signal
  EXPECT_EQ(::kill(server.pid(), SIGHUP), 0);
  const auto give_up = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < give_up) {
    std::istringstream lines(tail.next());
    for (std::string line; std::getline(lines, line);) {
      if (line.find("reload: generation ") != std::string::npos ||
          line.find("reload refused") != std::string::npos) {
        return line;
      }
    }
    std::this_thread::sleep_for(5ms);
  }
  return "";
}
std::string reload_and_wait(ServerProcess& server) {
  LogTail tail(server);
  return reload_and_wait(server, tail);
}

std::string ops_json_with(const std::string& plugin_dir, const std::string& extra_ops) {
  return R"({"plugin_dir": ")" + plugin_dir + R"(", "operations": {
    "upload": {"allow": ["*"]}, "download": {"allow": ["*"]}, "list": {"allow": ["*"]},
    "register": {"allow": ["admin"]})" +
         extra_ops + "}}";
}

std::string server_json(const ServerProcess& server, const std::string& extra) {
  return "{\"listen\": \"127.0.0.1:0\", \"storage_dir\": \"" + server.storage_dir().string() +
         "\", \"state_dir\": \"" + server.state_dir().string() + "\", \"ops_config\": \"" +
         (server.root() / "ops.json").string() + "\", \"io_threads\": 2" + extra + "}\n";
}

bool maps_mention(pid_t pid, const std::string& what) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find(what) != std::string::npos) return true;
  }
  return false;
}

// A plugin directory of the test's own (the loader refuses one others may write).
fs::path plugin_dir_with(const fs::path& root, std::initializer_list<const char*> from_real,
                         std::initializer_list<const char*> from_test) {
  fs::path dir = root / "plugins";
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all);
  for (const char* name : from_real) fs::copy_file(fs::path(OPS_PLUGIN_DIR) / name, dir / name);
  for (const char* name : from_test)
    fs::copy_file(fs::path(OPS_TEST_PLUGIN_DIR) / name, dir / name);
  return dir;
}

// --- (1) reloads under load -------------------------------------------------------------

TEST(Reload, TwentyReloadsUnderFiftyPipeliningClientsDropNothing) {
  TempDir spare;  // a plugin directory without upload: "a missing plugin"
  const fs::path partial = plugin_dir_with(spare.path(), {"libdownload.so", "liblist.so"}, {});
  ServerProcess server;
  const std::string good_ops = ops_json_with(OPS_PLUGIN_DIR, "");
  const std::string good_ops_more = ops_json_with(OPS_PLUGIN_DIR, R"(, "stat": {"allow": ["*"]})");
  const std::string admin_key = server.admin_key();

  constexpr int kClients = 50;
  constexpr int kReloads = 20;
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> answered{0}, failed{0}, dropped{0};
  std::vector<std::string> first_failure(kClients);
  std::vector<std::thread> clients;
  for (int n = 0; n < kClients; ++n) {
    clients.emplace_back([&, n] {
      auto c = client::Client::connect(server.options("admin", admin_key));
      if (!c) {
        dropped.fetch_add(1);
        first_failure[n] = "connect: " + c.error().message;
        return;
      }
      std::mt19937 rng(n);
      std::string previous;  // the content of the file uploaded last round
      for (int round = 0; !done.load() || round < 3; ++round) {
        // Pipelined: upload this round's file, download last round's, list, in one go.
        std::string content(1024 + rng() % 8192, '\0');
        for (char& ch : content) ch = static_cast<char>('a' + rng() % 26);
        const std::string path = "c" + std::to_string(n) + "-" + std::to_string(round % 4);
        const std::string last = "c" + std::to_string(n) + "-" + std::to_string((round + 3) % 4);
        std::string args = R"({"path":")" + path + R"(","overwrite":true})";
        bool ok = c->get()->send_request("upload", args, content.size()).ok() &&
                  c->get()->send_payload(content.data(), content.size()).ok();
        if (round > 0)
          ok = ok && c->get()->send_request("download", R"({"path":")" + last + "\"}").ok();
        ok = ok && c->get()->send_request("list", R"({"path":""})").ok();
        if (!ok) {
          dropped.fetch_add(1);
          first_failure[n] = "send failed";
          return;
        }
        auto expect = [&](const char* what, bool good, const std::string& detail) {
          answered.fetch_add(1);
          if (!good) {
            failed.fetch_add(1);
            if (first_failure[n].empty()) first_failure[n] = std::string(what) + ": " + detail;
          }
        };
        auto up = c->get()->read_response();
        if (!up) {
          dropped.fetch_add(1);
          first_failure[n] = "upload answer: " + up.error().message;
          return;
        }
        expect("upload", up->ok, up->header_json);
        if (round > 0) {
          auto down = c->get()->read_response();
          if (!down) {
            dropped.fetch_add(1);
            first_failure[n] = "download answer: " + down.error().message;
            return;
          }
          std::string got(down->payload_size, '\0');
          if (down->payload_size > 0 && !c->get()->read_payload(got.data(), got.size()).ok()) {
            dropped.fetch_add(1);
            return;
          }
          expect("download", down->ok && got == previous, down->header_json);
        }
        auto listed = c->get()->read_response();
        if (!listed) {
          dropped.fetch_add(1);
          first_failure[n] = "list answer: " + listed.error().message;
          return;
        }
        expect("list", listed->ok && listed->result_json.find(path) != std::string::npos,
               listed->header_json);
        previous = content;
      }
    });
  }

  const fs::path ops = server.root() / "ops.json";
  LogTail tail(server);
  const auto started = std::chrono::steady_clock::now();
  int applied = 0, refused = 0;
  for (int i = 0; i < kReloads; ++i) {
    std::this_thread::sleep_for(100ms);  // let requests pile up between reloads
    const bool good = i % 2 == 0;
    std::string extra_settings;
    if (good) {
      write_text(ops, i % 4 == 0 ? good_ops_more : good_ops);
      extra_settings = ", \"idle_timeout_ms\": " + std::to_string(60000 + i);
    } else if (i % 6 == 1) {
      write_text(ops, good_ops.substr(0, good_ops.size() / 2));  // a broken ops.json
    } else if (i % 6 == 3) {
      write_text(ops, ops_json_with(partial.string(), ""));  // upload's plugin is missing
    } else {
      write_text(ops, good_ops);
      extra_settings = ", \"max_frame\": 1";  // an invalid setting
    }
    write_text(server.config_path(), server_json(server, extra_settings));
    const std::string outcome = reload_and_wait(server, tail);
    if (good) {
      EXPECT_NE(outcome.find("reload: generation " + std::to_string(applied + 2) + " in force"),
                std::string::npos)
          << "reload " << i << ": " << outcome;
      ++applied;
    } else {
      EXPECT_NE(outcome.find("reload refused, generation " + std::to_string(applied + 1) +
                             " stays in force"),
                std::string::npos)
          << "reload " << i << ": " << outcome;
      ++refused;
    }
  }
  const auto reload_time = std::chrono::steady_clock::now() - started;
  done = true;
  for (auto& t : clients) t.join();
  const auto total = std::chrono::steady_clock::now() - started;

  for (int n = 0; n < kClients; ++n) EXPECT_EQ(first_failure[n], "") << "client " << n;
  EXPECT_EQ(dropped.load(), 0u);
  EXPECT_EQ(failed.load(), 0u);
  EXPECT_EQ(applied, kReloads / 2);
  EXPECT_EQ(refused, kReloads / 2);
  EXPECT_GT(answered.load(), std::uint64_t{kClients} * 3);
  EXPECT_TRUE(server.running());
  // The last good configuration (with "stat") is what a new connection sees.
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  auto described = c->call("describe");
  ASSERT_TRUE(described && described->ok);
  std::printf(
      "[ reload ] %d clients, %llu requests answered, %llu failed, %llu connections dropped; "
      "%d reloads applied, %d refused in %lld ms (%lld ms with the clients' last rounds)\n",
      kClients, static_cast<unsigned long long>(answered.load()),
      static_cast<unsigned long long>(failed.load()),
      static_cast<unsigned long long>(dropped.load()), applied, refused,
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(reload_time).count()),
      static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(total).count()));
  EXPECT_EQ(server.stop(), 0);
}

// --- (2) a plugin added to, then removed from, a running server --------------------------

TEST(Reload, APluginAddedToARunningServerIsServedAndARemovedOneIsGone) {
  TempDir dirs;
  const fs::path plugins = plugin_dir_with(
      dirs.path(), {"libupload.so", "libdownload.so", "liblist.so", "libregister.so"}, {});
  ServerOptions options;
  options.ops_json = ops_json_with(plugins.string(), "");
  ServerProcess server(options);
  auto before = server.connect_admin();
  ASSERT_TRUE(before);
  auto r = before->call("fail", R"({"message":"x"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->error.code, ErrorCode::unknown_operation);

  // Add: copy the .so in, enable its operations, SIGHUP.
  fs::copy_file(fs::path(OPS_TEST_PLUGIN_DIR) / "libmisbehave.so", plugins / "libmisbehave.so");
  write_text(
      server.root() / "ops.json",
      ops_json_with(plugins.string(), R"(, "fail": {"allow": ["*"]}, "sleep": {"allow": ["*"]})"));
  const std::string added = reload_and_wait(server);
  EXPECT_NE(added.find("reload: generation 2 in force (ops: describe, download, fail, list, "
                       "register, sleep, upload)"),
            std::string::npos)
      << added;
  // The connection opened before the reload sees it too (per request, not per connection).
  auto described = before->call("describe");
  ASSERT_TRUE(described && described->ok);
  EXPECT_NE(described->result_json.find(R"("name":"sleep")"), std::string::npos);
  auto slept = before->call("sleep", R"({"ms":1})");
  ASSERT_TRUE(slept);
  EXPECT_TRUE(slept->ok) << slept->header_json;
  auto failed = before->call("fail", R"({"message":"as asked"})");
  ASSERT_TRUE(failed);
  EXPECT_FALSE(failed->ok);
  EXPECT_NE(failed->error.code, ErrorCode::unknown_operation);
  EXPECT_TRUE(maps_mention(server.pid(), "opserver-plugin:libmisbehave.so"));

  // Remove: the .so and its operations go; new requests do not find them.
  fs::remove(plugins / "libmisbehave.so");
  write_text(server.root() / "ops.json", ops_json_with(plugins.string(), ""));
  const std::string removed = reload_and_wait(server);
  EXPECT_NE(removed.find("reload: generation 3 in force"), std::string::npos) << removed;
  auto gone = before->call("sleep", R"({"ms":1})");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->error.code, ErrorCode::unknown_operation);
  // Nothing holds it any more: unloaded.
  auto give_up = std::chrono::steady_clock::now() + 2s;
  while (maps_mention(server.pid(), "libmisbehave") && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(maps_mention(server.pid(), "libmisbehave")) << "the removed plugin stayed mapped";
  EXPECT_EQ(server.stop(), 0);
}

TEST(Reload, AChangedPluginFileIsLoadedAgainAndAnUnchangedOneIsKept) {
  TempDir dirs;
  const fs::path plugins = plugin_dir_with(
      dirs.path(), {"libupload.so", "libdownload.so", "liblist.so", "libregister.so"},
      {"libmisbehave.so"});
  ServerOptions options;
  options.ops_json = ops_json_with(plugins.string(), R"(, "sleep": {"allow": ["*"]})");
  ServerProcess server(options);
  const std::string first = (plugins / "libmisbehave.so").string();
  EXPECT_TRUE(maps_mention(server.pid(), first));

  // Unchanged: reused, not loaded again.
  EXPECT_NE(reload_and_wait(server).find("generation 2 in force"), std::string::npos);
  EXPECT_FALSE(maps_mention(server.pid(), "opserver-plugin:libmisbehave.so"));
  EXPECT_TRUE(maps_mention(server.pid(), first));

  // Replaced (a new file at the same path): the new one is loaded, the old one goes.
  fs::copy_file(fs::path(OPS_TEST_PLUGIN_DIR) / "libmisbehave.so", plugins / "new.tmp");
  fs::rename(plugins / "new.tmp", plugins / "libmisbehave.so");
  EXPECT_NE(reload_and_wait(server).find("generation 3 in force"), std::string::npos);
  EXPECT_TRUE(maps_mention(server.pid(), "opserver-plugin:libmisbehave.so"));
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  auto slept = c->call("sleep", R"({"ms":1})");
  ASSERT_TRUE(slept);
  EXPECT_TRUE(slept->ok);
  auto give_up = std::chrono::steady_clock::now() + 2s;
  while (maps_mention(server.pid(), first) && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(maps_mention(server.pid(), first)) << "the replaced plugin stayed mapped";
  EXPECT_EQ(server.stop(), 0);
}

// --- (3) a running call keeps its plugin -------------------------------------------------

TEST(Reload, ARunningCallFinishesOnThePluginARemovalTookAway) {
  TempDir dirs;
  const fs::path plugins = plugin_dir_with(
      dirs.path(), {"libupload.so", "libdownload.so", "liblist.so", "libregister.so"},
      {"libmisbehave.so"});
  ServerOptions options;
  options.ops_json = ops_json_with(plugins.string(), R"(, "sleep": {"allow": ["*"]})");
  ServerProcess server(options);
  const std::string so = (plugins / "libmisbehave.so").string();

  auto sleeper = server.connect_admin();
  ASSERT_TRUE(sleeper);
  ASSERT_TRUE(sleeper->send_request("sleep", R"({"ms":2000})"));
  std::this_thread::sleep_for(300ms);  // the handler is running

  fs::remove(plugins / "libmisbehave.so");
  write_text(server.root() / "ops.json", ops_json_with(plugins.string(), ""));
  const auto reloaded_at = std::chrono::steady_clock::now();
  EXPECT_NE(reload_and_wait(server).find("generation 2 in force"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - reloaded_at, 1500ms)
      << "the reload waited for the running call";
  // New requests no longer find it; the running call still has its code mapped.
  auto other = server.connect_admin();
  ASSERT_TRUE(other);
  auto refused = other->call("sleep", R"({"ms":1})");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->error.code, ErrorCode::unknown_operation);
  EXPECT_TRUE(maps_mention(server.pid(), so)) << "unloaded under a running call";

  auto answer = sleeper->read_response();
  ASSERT_TRUE(answer) << answer.error().message;
  EXPECT_TRUE(answer->ok) << answer->header_json;
  // Its last call over, the plugin goes.
  auto give_up = std::chrono::steady_clock::now() + 2s;
  while (maps_mention(server.pid(), so) && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(maps_mention(server.pid(), so));
  EXPECT_EQ(server.stop(), 0);
}

// --- (4) opserver reload -------------------------------------------------------------------

TEST(Reload, OpserverReloadSignalsTheRunningServerThroughItsPidFile) {
  TempDir elsewhere;
  const fs::path nowhere = elsewhere.path() / "opserver.pid";
  RunResult none = run_program({OPS_SERVER_BIN, "reload", "--pid-file", nowhere.string()});
  EXPECT_EQ(none.status, 1);
  EXPECT_NE(none.output.find(nowhere.string() + ": no pid file: no opserver is running"),
            std::string::npos)
      << none.output;

  // A stale pid file: a process that has exited.
  pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  { std::ofstream(nowhere) << dead << "\n"; }
  RunResult stale = run_program({OPS_SERVER_BIN, "reload", "--pid-file", nowhere.string()});
  EXPECT_EQ(stale.status, 1);
  EXPECT_NE(stale.output.find("stale pid file: process " + std::to_string(dead)), std::string::npos)
      << stale.output;
  // A pid file naming some other living program.
  { std::ofstream(nowhere) << ::getpid() << "\n"; }
  RunResult foreign = run_program({OPS_SERVER_BIN, "reload", "--pid-file", nowhere.string()});
  EXPECT_EQ(foreign.status, 1);
  EXPECT_NE(foreign.output.find("not opserver"), std::string::npos) << foreign.output;

  ServerOptions options;
  options.settings = R"("pid_file": "opserver.pid")";  // beside server.json
  ServerProcess server(options);
  const fs::path pid_file = server.root() / "opserver.pid";
  std::string text;
  std::getline(std::ifstream(pid_file), text);
  EXPECT_EQ(text, std::to_string(server.pid()));

  // No server.json pid_file given: the config names it.
  RunResult by_config =
      run_program({OPS_SERVER_BIN, "reload", "--config", server.config_path().string()});
  EXPECT_EQ(by_config.status, 0) << by_config.output;
  EXPECT_NE(by_config.output.find("sent SIGHUP to opserver (pid " + std::to_string(server.pid())),
            std::string::npos)
      << by_config.output;
  auto give_up = std::chrono::steady_clock::now() + 5s;
  while (server.log().find("reload: generation 2 in force") == std::string::npos &&
         std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(10ms);
  EXPECT_NE(server.log().find("reload: generation 2 in force"), std::string::npos) << server.log();
  RunResult by_file = run_program({OPS_SERVER_BIN, "reload", "--pid-file", pid_file.string()});
  EXPECT_EQ(by_file.status, 0) << by_file.output;

  // A config without pid_file says so.
  TempDir bare;
  std::ofstream(bare.path() / "server.json") << "{}\n";
  std::ofstream(bare.path() / "ops.json") << R"({"plugin_dir": "p", "operations": {}})";
  RunResult unset =
      run_program({OPS_SERVER_BIN, "reload", "--config", (bare.path() / "server.json").string()});
  EXPECT_EQ(unset.status, 1);
  EXPECT_NE(unset.output.find("sets no \"pid_file\""), std::string::npos) << unset.output;

  EXPECT_EQ(server.stop(), 0);
  EXPECT_FALSE(fs::exists(pid_file)) << "the pid file outlived the server";
}

// --- (5) relative paths from the file that names them --------------------------------------

TEST(ConfigPaths, RelativePathsAreTakenFromTheDirectoryOfTheFileThatNamesThem) {
  TempDir root;
  fs::create_directories(root.path() / "etc" / "ops");
  const fs::path plugins = plugin_dir_with(root.path(), {"liblist.so"}, {});
  std::ofstream(root.path() / "etc" / "server.json")
      << R"({"listen": "127.0.0.1:0", "storage_dir": "../var/storage", "state_dir": "../var/state",
          "ops_config": "ops/ops.json", "io_threads": 1})";
  std::ofstream(root.path() / "etc" / "ops" / "ops.json")
      << R"({"plugin_dir": "../../plugins", "operations": {"list": {"allow": ["*"]}}})";
  const std::string config = (root.path() / "etc" / "server.json").string();
  RunResult check = run_program({OPS_SERVER_BIN, "--check-config", "--config", config}, "/");
  EXPECT_EQ(check.status, 0) << check.output;
  EXPECT_NE(check.output.find("configuration OK: 1 operation(s)"), std::string::npos)
      << check.output;
  // A user added from another directory lands in <root>/var/state.
  RunResult add = run_program({OPS_SERVER_BIN, "--config", config, "user", "add", "alice"}, "/tmp");
  EXPECT_EQ(add.status, 0) << add.output;
  EXPECT_TRUE(fs::exists(root.path() / "var" / "state" / "users.json"));

  // What cannot be opened is named by its absolute path.
  std::ofstream(root.path() / "etc" / "server.json") << R"({"ops_config": "missing.json"})";
  RunResult missing =
      run_program({OPS_SERVER_BIN, "--check-config", "--config", "etc/server.json"}, root.path());
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.output.find((root.path() / "etc" / "missing.json").string() +
                                ": cannot open the file"),
            std::string::npos)
      << missing.output;
  RunResult no_server =
      run_program({OPS_SERVER_BIN, "--check-config", "--config", "nope.json"}, root.path());
  EXPECT_NE(no_server.output.find((root.path() / "nope.json").string() + ": cannot open the file"),
            std::string::npos)
      << no_server.output;
}

TEST(ConfigPaths, TheShippedConfigWorksFromAnyDirectory) {
  const fs::path source = OPS_SOURCE_DIR;
  if (!fs::exists(source / "build" / "plugins" / "liblist.so")) {
    GTEST_SKIP() << "the shipped config names ../build/plugins, and this build is elsewhere";
  }
  RunResult check = run_program(
      {OPS_SERVER_BIN, "--check-config", "--config", (source / "config" / "server.json").string()},
      "/tmp");
  EXPECT_EQ(check.status, 0) << check.output;
}

}  // namespace
}  // namespace ops::test
