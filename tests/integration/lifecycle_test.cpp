// Plugin ABI 1.1 (docs/PLUGINS.md, "Lifecycle hooks" and "ABI versioning"), on the real
// server with real .so files: a plugin built against the previous header loads and answers;
// an operation's settings are checked against the schema its plugin declares, at start-up,
// --check-config and reload; init, shutdown and health run when the rules say.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A plugin directory of its own: the real list plugin and the two test plugins.
class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    plugins_ = dir_.path() / "plugins";
    fs::create_directories(plugins_);
    fs::copy_file(fs::path(OPS_PLUGIN_DIR) / "liblist.so", plugins_ / "liblist.so");
    for (const char* name : {"libhooks.so", "libold_abi.so"}) {
      fs::copy_file(fs::path(OPS_TEST_PLUGIN_DIR) / name, plugins_ / name);
    }
    marker_ = dir_.path() / "marker.txt";
    sick_ = dir_.path() / "sick";
  }

  // ops.json enabling list, old_echo and hooked (with `hooked_settings`).
  std::string ops_json(const std::string& hooked_settings,
                       const std::string& list_settings = "{}") const {
    return R"({"plugin_dir": ")" + plugins_.string() +
           R"(", "operations": {"list": {"allow": ["*"], "settings": )" + list_settings +
           R"(}, "old_echo": {"allow": ["*"]}, "old_second": {"allow": ["*"]}, "hooked": {"allow": ["*"], "settings": )" +
           hooked_settings + "}}}";
  }
  std::string settings(int level, const std::string& extra = "") const {
    return R"({"level": )" + std::to_string(level) + R"(, "marker": ")" + marker_.string() +
           R"(", "sick_file": ")" + sick_.string() + "\"" + extra + "}";
  }
  ServerOptions options(const std::string& ops, const std::string& server_extra = "") const {
    ServerOptions o;
    o.ops_json = ops;
    o.plugin_dir = plugins_.string();
    o.settings = R"("worker_threads": 2)" + server_extra;
    return o;
  }

  // Both --check-config and a real start refuse, naming `expected`.
  void expect_refused(const std::string& ops, const std::string& expected) {
    const fs::path root = dir_.path() / "refused";
    fs::create_directories(root);
    std::ofstream(root / "ops.json", std::ios::trunc) << ops;
    std::ofstream(root / "server.json", std::ios::trunc)
        << R"({"listen": "127.0.0.1:0", "storage_dir": ")" << (root / "storage").string()
        << R"(", "state_dir": ")" << (root / "state").string() << R"(", "ops_config": ")"
        << (root / "ops.json").string() << "\"}";
    for (bool check : {true, false}) {
      std::vector<std::string> argv{OPS_SERVER_BIN, "--config", (root / "server.json").string()};
      if (check) argv.insert(argv.begin() + 1, "--check-config");
      RunResult r = run_program(argv);
      EXPECT_EQ(r.status, 1) << r.output;
      EXPECT_NE(r.output.find(expected), std::string::npos) << r.output;
    }
  }

  TempDir dir_;
  fs::path plugins_;
  fs::path marker_;
  fs::path sick_;
};

// Sends SIGHUP and waits for the reload's outcome line; returns it ("" if none came).
std::string reload(ServerProcess& server) {
  const std::string before = server.log();
  const std::size_t done =
      count_of(before, "reload: generation ") + count_of(before, "reload refused");
  EXPECT_EQ(::kill(server.pid(), SIGHUP), 0);
  for (int i = 0; i < 1000; ++i) {
    const std::string log = server.log();
    if (count_of(log, "reload: generation ") + count_of(log, "reload refused") > done) {
      std::istringstream lines(log.substr(before.size()));
      for (std::string line; std::getline(lines, line);) {
        if (line.find("reload: generation ") != std::string::npos ||
            line.find("reload refused") != std::string::npos) {
          return line;
        }
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  return "";
}

std::uint64_t level_of(client::Client& c) {
  Outcome out = call_op(c, "hooked", "{}");
  EXPECT_OP_OK(out);
  if (!out.ok) return 0;
  return out.result()["level"].GetUint64();
}

TEST_F(LifecycleTest, APluginBuiltAgainstThePreviousHeaderLoadsAndAnswers) {
  ServerProcess server(options(ops_json(settings(1))));
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  Outcome echoed = call_op(*c, "old_echo", R"({"say":"hello"})");
  EXPECT_OP_OK(echoed);
  EXPECT_EQ(echoed.result_json, R"({"old_abi":true,"args":{"say":"hello"}})");
  // Its args schema still applies.
  EXPECT_OP_ERR(call_op(*c, "old_echo", R"({"say":1})"), "invalid_args");
  Outcome described = call_op(*c, "describe", "{}");
  EXPECT_OP_OK(described);
  EXPECT_NE(described.result_json.find(R"("name":"old_echo")"), std::string::npos)
      << described.result_json;
  EXPECT_NE(described.result_json.find(R"("plugin":"old_abi")"), std::string::npos);
  // Its second operation: found at ABI 1.0's stride, not this server's.
  Outcome second = call_op(*c, "old_second", "{}");
  EXPECT_OP_OK(second);
  EXPECT_EQ(second.result_json, R"({"second":true})");
}

TEST_F(LifecycleTest, SettingsThatFailTheSchemaRefuseTheStartNamingTheField) {
  expect_refused(ops_json(settings(0)), R"(operation "hooked": settings.level: must be >= 1)");
  expect_refused(ops_json(R"({"levle": 2})"),
                 R"(operation "hooked": settings: unknown member "levle")");
  expect_refused(ops_json(R"({"level": "high"})"),
                 R"(operation "hooked": settings.level: must be of type "integer")");
  // A real plugin's schema: list.
  expect_refused(ops_json(settings(1), R"({"max_list_entries": 0})"),
                 R"(operation "list": settings.max_list_entries: must be >= 1)");
  expect_refused(ops_json(settings(1), R"({"max_list_entries": 10, "max_list_byte": 1})"),
                 R"(operation "list": settings: unknown member "max_list_byte")");
  // A refused start never called init.
  EXPECT_FALSE(fs::exists(marker_)) << slurp(marker_);
}

TEST_F(LifecycleTest, CheckConfigRunsInitThenShutdown) {
  const fs::path root = dir_.path() / "check";
  fs::create_directories(root);
  std::ofstream(root / "ops.json") << ops_json(settings(3));
  std::ofstream(root / "server.json")
      << R"({"listen": "127.0.0.1:0", "storage_dir": ")" << (root / "storage").string()
      << R"(", "state_dir": ")" << (root / "state").string() << R"(", "ops_config": ")"
      << (root / "ops.json").string() << R"(", "shutdown_grace_ms": 1234})";
  RunResult r =
      run_program({OPS_SERVER_BIN, "--check-config", "--config", (root / "server.json").string()});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(slurp(marker_), "init level=3\nshutdown deadline_ms=1234\n");
}

TEST_F(LifecycleTest, AnInitRefusalIsTheStartupError) {
  expect_refused(ops_json(settings(1, R"(, "refuse": true)")),
                 R"(operation "hooked": init refused the operation: refused by its settings )"
                 R"((refuse is true))");
}

TEST_F(LifecycleTest, ReloadRerunsInitRefusesBadSettingsAndShutdownRunsOnceAtStop) {
  ServerProcess server(options(ops_json(settings(1)), R"(, "shutdown_grace_ms": 3000)"));
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  EXPECT_EQ(level_of(*c), 1u);
  EXPECT_EQ(slurp(marker_), "init level=1\n");

  // Settings the schema refuses: the reload is refused naming the field, init never runs,
  // generation 1 answers on.
  write_file(server.root() / "ops.json", ops_json(settings(0)));
  std::string line = reload(server);
  EXPECT_NE(line.find("reload refused"), std::string::npos) << line;
  EXPECT_NE(line.find(R"(operation "hooked": settings.level: must be >= 1)"), std::string::npos)
      << line;
  EXPECT_EQ(level_of(*c), 1u);

  // An init that refuses: the reload is refused with the plugin's reason.
  write_file(server.root() / "ops.json", ops_json(settings(5, R"(, "refuse": true)")));
  line = reload(server);
  EXPECT_NE(line.find("reload refused"), std::string::npos) << line;
  EXPECT_NE(line.find("init refused the operation: refused by its settings"), std::string::npos)
      << line;
  EXPECT_EQ(level_of(*c), 1u);

  // Good settings: init runs again on the reused library, with the new settings, and no
  // shutdown in between.
  write_file(server.root() / "ops.json", ops_json(settings(2)));
  line = reload(server);
  EXPECT_NE(line.find("reload: generation 2 in force"), std::string::npos) << line;
  EXPECT_EQ(level_of(*c), 2u);
  EXPECT_EQ(slurp(marker_), "init level=1\ninit level=2\n");

  c.reset();
  const auto stopping = std::chrono::steady_clock::now();
  EXPECT_EQ(server.stop(), 0) << server.log();
  EXPECT_LT(std::chrono::steady_clock::now() - stopping, 3s);
  // Shutdown once, at stop, told the grace period as its deadline.
  EXPECT_EQ(slurp(marker_), "init level=1\ninit level=2\nshutdown deadline_ms=3000\n");
}

TEST_F(LifecycleTest, AReplacedLibraryIsShutDownAfterTheReloadThatDropsIt) {
  ServerProcess server(options(ops_json(settings(1)), R"(, "shutdown_grace_ms": 3000)"));
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  EXPECT_EQ(level_of(*c), 1u);
  // A new build of the plugin (a new file): the reload loads it afresh; the old library
  // goes with generation 1, and its shutdown runs then, not at stop.
  fs::remove(plugins_ / "libhooks.so");
  fs::copy_file(fs::path(OPS_TEST_PLUGIN_DIR) / "libhooks.so", plugins_ / "libhooks.so");
  std::string line = reload(server);
  EXPECT_NE(line.find("reload: generation 2 in force"), std::string::npos) << line;
  EXPECT_EQ(level_of(*c), 1u);
  std::string marks;
  for (int i = 0; i < 300 && count_of(marks, "shutdown") == 0; ++i) {
    std::this_thread::sleep_for(10ms);
    marks = slurp(marker_);
  }
  // The new library's init ran before the old one was let go.
  EXPECT_EQ(marks, "init level=1\ninit level=1\nshutdown deadline_ms=3000\n");
  c.reset();
  EXPECT_EQ(server.stop(), 0);
  EXPECT_EQ(count_of(slurp(marker_), "shutdown"), 2u);
}

TEST_F(LifecycleTest, AShutdownThatHangsDoesNotKeepTheServerPastItsGrace) {
  ServerProcess server(options(ops_json(settings(1, R"(, "hang_shutdown": true)")),
                               R"(, "shutdown_grace_ms": 1000)"));
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  EXPECT_EQ(level_of(*c), 1u);
  c.reset();
  const auto stopping = std::chrono::steady_clock::now();
  EXPECT_EQ(::kill(server.pid(), SIGTERM), 0);
  // Grace for the connections (none open), then at most the grace for the shutdown hooks.
  auto status = server.wait_exit(4s);
  ASSERT_TRUE(status.has_value()) << "still running";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  const auto took = std::chrono::steady_clock::now() - stopping;
  EXPECT_GE(took, 900ms);
  EXPECT_NE(slurp(marker_).find("shutdown deadline_ms=1000"), std::string::npos);
  EXPECT_NE(server.log().find("shutdown hook did not return within 1000 ms"), std::string::npos)
      << server.log();
}

struct HttpReply {
  int status = 0;
  std::string body;
};

HttpReply http_get(std::uint16_t port, const std::string& path) {
  HttpReply reply;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    ::close(fd);
    return reply;
  }
  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string text;
  char buf[4096];
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, 5000) > 0) {
    const ssize_t got = ::recv(fd, buf, sizeof buf, 0);
    if (got <= 0) break;
    text.append(buf, static_cast<std::size_t>(got));
  }
  ::close(fd);
  if (text.rfind("HTTP/1.1 ", 0) != 0) return reply;
  reply.status = std::stoi(text.substr(9, 3));
  if (auto end = text.find("\r\n\r\n"); end != std::string::npos) reply.body = text.substr(end + 4);
  return reply;
}

std::uint16_t admin_port(const ServerProcess& server) {
  static const std::regex kLine(R"(admin listening on [^ ]+:(\d+) )");
  std::smatch m;
  const std::string log = server.log();
  if (!std::regex_search(log, m, kLine)) return 0;
  return static_cast<std::uint16_t>(std::stoi(m[1]));
}

// Polls /readyz until it answers `status` (the health result is cached about a second).
HttpReply readyz_until(std::uint16_t port, int status) {
  HttpReply reply;
  for (int i = 0; i < 100; ++i) {
    reply = http_get(port, "/readyz");
    if (reply.status == status) break;
    std::this_thread::sleep_for(50ms);
  }
  return reply;
}

TEST_F(LifecycleTest, ReadinessNamesAnUnhealthyOperation) {
  ServerProcess server(options(ops_json(settings(1)), R"(, "admin_listen": "127.0.0.1:0")"));
  const std::uint16_t port = admin_port(server);
  ASSERT_NE(port, 0) << server.log();
  HttpReply ready = http_get(port, "/readyz");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.body, "ready\n");

  write_file(sick_, "");
  HttpReply sick = readyz_until(port, 503);
  EXPECT_EQ(sick.status, 503);
  EXPECT_EQ(sick.body, "unhealthy operations:\nhooked: the sick file exists\n");
  EXPECT_NE(http_get(port, "/metrics").body.find("\nopserver_operations_unhealthy 1"),
            std::string::npos);
  // Calls still go on: health is the operator's signal, not a refusal.
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  EXPECT_EQ(level_of(*c), 1u);

  fs::remove(sick_);
  HttpReply well = readyz_until(port, 200);
  EXPECT_EQ(well.status, 200);
  EXPECT_EQ(well.body, "ready\n");
}

// The same hooks when the operation runs isolated (docs/PLUGINS.md, "Isolated plugins"):
// the worker checks the settings and runs init before it is ready, answers the readiness
// check's health question, and runs shutdown when it is retired. The worker may touch only
// the storage tree, so the marker and the sick file live there.
TEST_F(LifecycleTest, AnIsolatedPluginGetsTheSameHooks) {
  const std::string isolated = R"(, "isolation": "process", "plugin": "libhooks.so")";
  auto in_storage = [](const std::string& ops) {
    return [ops](const fs::path& root) {
      std::string text = ops;
      for (std::size_t at; (at = text.find("@STORAGE@")) != std::string::npos;) {
        text.replace(at, 9, (root / "storage").string());
      }
      std::ofstream(root / "ops.json", std::ios::trunc) << text;
    };
  };
  const std::string hooked =
      R"({"level": 3, "marker": "@STORAGE@/marker.txt", "sick_file": "@STORAGE@/sick"})";
  std::string ops = ops_json(hooked);
  const std::string entry = R"("hooked": {"allow": ["*"])";
  ops.replace(ops.find(entry), entry.size(), R"("hooked": {"allow": ["*"])" + isolated);
  ServerOptions o = options(ops, R"(, "admin_listen": "127.0.0.1:0")");
  o.prepare = in_storage(ops);
  fs::path storage;
  {
    ServerProcess server(o);
    storage = server.storage_dir();
    auto c = server.connect_admin();
    ASSERT_TRUE(c);
    EXPECT_EQ(level_of(*c), 3u);
    const std::uint16_t port = admin_port(server);
    ASSERT_NE(port, 0) << server.log();
    EXPECT_EQ(readyz_until(port, 200).status, 200);
    write_file(storage / "sick", "");
    HttpReply sick = readyz_until(port, 503);
    EXPECT_EQ(sick.body, "unhealthy operations:\nhooked: the sick file exists\n");
    fs::remove(storage / "sick");
    EXPECT_EQ(readyz_until(port, 200).status, 200);
    EXPECT_EQ(server.stop(), 0);
    const std::string marks = read_file(storage / "marker.txt");
    EXPECT_NE(marks.find("init level=3"), std::string::npos) << marks;
    EXPECT_NE(marks.find("shutdown"), std::string::npos) << "the worker's shutdown hook ran:\n"
                                                         << marks;
  }
  // Settings its schema refuses, or an init that refuses: the worker never becomes ready,
  // so the operation is down (the rest of the server starts), with the reason in the log.
  std::string refused = ops_json(R"({"level": 0})");
  refused.replace(refused.find(entry), entry.size(), R"("hooked": {"allow": ["*"])" + isolated);
  ServerOptions r = options(refused);
  ServerProcess server(r);
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  EXPECT_OP_ERR(call_op(*c, "hooked", "{}"), "unavailable");
  EXPECT_NE(server.log().find("settings.level"), std::string::npos) << server.log();
}

}  // namespace
}  // namespace ops::test
