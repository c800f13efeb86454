// Isolated plugins (docs/PLUGINS.md, "Isolated plugins"): an operation with "isolation":
// "process" runs its unmodified .so in worker processes, so each way a plugin can fail
// (tests/plugins/crashy.cpp: throw, abort, SIGSEGV, terminate, exit, hang, spin, leak)
// costs only its own call, answered `unavailable` or `timeout`: the server, the caller's
// connection and every other client carry on, and 1,000 crashes leave no descriptor,
// process or memory behind in the server. Real server, real .so files, real sockets.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "fault_util.hpp"
#include "harness/server_process.hpp"
#include "ops_test_util.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;

// The server's live child processes (its workers), from /proc/<pid>/task/*/children.
std::size_t children_of(pid_t pid) {
  std::size_t n = 0;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream in(task.path() / "children");
    std::string child;
    while (in >> child) ++n;
  }
  return n;
}

std::string crash_ops(const fs::path& dir, const std::string& crash_extra) {
  return ops_json_with(
      dir, {"crashy"},
      R"("crash": {"allow": ["*"], "isolation": "process", "plugin": "libcrashy.so")" +
          crash_extra + "}");
}

Outcome crash(client::Client& c, const std::string& how) {
  return call_op(c, "crash", R"({"how":")" + how + R"("})");
}

// `connections` connections at once, each making `calls_each` calls with `call` (true when
// answered as the test wants); how many were {right, wrong} (a failed connect counts once).
template <class Connect, class Call>
std::pair<int, int> call_concurrently(int connections, int calls_each, Connect connect, Call call) {
  std::atomic<int> ok{0}, wrong{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < connections; ++t) {
    callers.emplace_back([&] {
      auto c = connect();
      if (!c) return void(wrong++);
      for (int i = 0; i < calls_each; ++i) call(*c) ? ok++ : wrong++;
    });
  }
  for (auto& t : callers) t.join();
  return {ok.load(), wrong.load()};
}

class IsolatedPlugin : public ::testing::Test {
 protected:
  void start(const std::string& crash_extra, const std::string& settings = "") {
    ServerOptions o;
    o.ops_json = crash_ops(plugins_.path() / "p", crash_extra);
    o.settings = settings;
    server_ = std::make_unique<ServerProcess>(o);
    key_ = server_->add_user("ivy");
  }
  std::unique_ptr<client::Client> connect() { return server_->connect("ivy", key_); }

  TempDir plugins_;
  std::unique_ptr<ServerProcess> server_;
  std::string key_;
};

// Every failure mode, one after another on one connection, with a bystander client that
// keeps a connection open and uploads between them.
TEST_F(IsolatedPlugin, EachWayAPluginFailsCostsOnlyItsOwnCall) {
  // A sanitizer-built worker reserves terabytes of shadow address space, which no
  // RLIMIT_AS of 160 MiB admits: the worker could not start at all.
  if (kSanitizerBuild) GTEST_SKIP() << "RLIMIT_AS cannot hold a sanitizer's shadow memory";
  start(R"(, "timeout_ms": 800, "limits": {"memory_mb": 160})");
  auto caller = connect();
  auto bystander = connect();
  ASSERT_TRUE(caller && bystander);
  ASSERT_TRUE(upload(*bystander, "before.bin", std::string(300000, 'b')).ok);

  struct Way {
    const char* how;
    const char* code;
  };
  for (const Way& way :
       {Way{"throw", "internal"}, Way{"abort", "unavailable"}, Way{"segv", "unavailable"},
        Way{"terminate", "unavailable"}, Way{"exit", "unavailable"}, Way{"leak", "unavailable"},
        Way{"hang", "timeout"}}) {
    SCOPED_TRACE(way.how);
    EXPECT_OP_ERR(crash(*caller, way.how), way.code);
    ASSERT_TRUE(server_->running()) << server_->log();
    // The caller's connection goes on: the same operation works again at once.
    Outcome again = crash(*caller, "none");
    EXPECT_TRUE(again.ok) << again.code << ": " << again.message;
    // Nobody else noticed.
    const std::string body(200000, way.how[0]);
    EXPECT_TRUE(upload(*bystander, std::string("after-") + way.how, body).ok);
    Outcome back = download(*bystander, std::string("after-") + way.how);
    EXPECT_TRUE(back.ok && back.payload == body);
  }
  EXPECT_NE(server_->log().find("killed by signal 11"), std::string::npos)
      << "the log names how the worker ended:\n"
      << server_->log();
}

// Calls in flight on other connections to the same isolated operation are not disturbed by
// a worker that crashes: each call has its own worker process.
TEST_F(IsolatedPlugin, ACrashDoesNotDisturbConcurrentCallsOfTheSameOperation) {
  start(R"(, "limits": {"max_concurrent": 6})");
  auto crasher = connect();
  ASSERT_TRUE(crasher);
  std::thread crashes([&] {
    for (int i = 0; i < 20; ++i) EXPECT_OP_ERR(crash(*crasher, "segv"), "unavailable");
  });
  auto [ok, wrong] = call_concurrently(
      3, 30, [&] { return connect(); }, [](client::Client& c) { return crash(c, "none").ok; });
  crashes.join();
  EXPECT_EQ(ok, 90);
  EXPECT_EQ(wrong, 0);
}

// With one worker for four busy connections, calls queue for it (on the server's I/O
// threads, docs/ARCHITECTURE.md "Calls") instead of failing or starting more workers: all
// 100 calls are answered ok, by one process.
TEST_F(IsolatedPlugin, CallsQueueForABusyPoolsOnlyWorker) {
  start(R"(, "limits": {"max_concurrent": 1})");
  auto [ok, wrong] = call_concurrently(
      4, 25, [&] { return connect(); }, [](client::Client& c) { return crash(c, "none").ok; });
  EXPECT_EQ(ok, 100);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(children_of(server_->pid()), 1u);
}

// A call waiting for the only worker while that one hangs: when the hung call's deadline
// kills it, the waiting call gets a fresh worker and is answered ok within its own deadline.
TEST_F(IsolatedPlugin, ACallWaitingForAHungWorkerGetsTheNextOne) {
  start(R"(, "timeout_ms": 1500, "limits": {"max_concurrent": 1})");
  auto hung = connect();
  auto waiting = connect();
  ASSERT_TRUE(hung && waiting);
  ASSERT_TRUE(crash(*waiting, "none").ok);  // the worker is up
  Outcome hung_outcome;
  std::thread first([&] { hung_outcome = crash(*hung, "hang"); });
  std::this_thread::sleep_for(700ms);  // the hang holds the worker; 800 ms are left after it
  const auto asked = std::chrono::steady_clock::now();
  Outcome next = crash(*waiting, "none");
  const auto took = std::chrono::steady_clock::now() - asked;
  first.join();
  EXPECT_EQ(hung_outcome.code, "timeout");
  EXPECT_TRUE(next.ok) << next.code << ": " << next.message;
  EXPECT_GE(took, 500ms) << "it waited for the hung call's end";
  EXPECT_TRUE(crash(*hung, "none").ok);
}

// The leak check the issue asks for: 1,000 worker crashes, then the server holds as many
// descriptors and processes as before, and its memory has not grown with the crashes.
TEST_F(IsolatedPlugin, AThousandWorkerCrashesLeakNothingInTheServer) {
  if (kSanitizerBuild) GTEST_SKIP() << "sanitizers keep freed memory in quarantine";
  start("");
  auto c = connect();
  ASSERT_TRUE(c);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(crash(*c, "abort").code, "unavailable");  // warm up
  ASSERT_TRUE(crash(*c, "none").ok);
  // The baseline once it holds still (a closing descriptor of the warm-up may linger).
  std::size_t fds = 0;
  eventually([&] {
    fds = server_->open_fds();
    std::this_thread::sleep_for(50ms);
    return server_->open_fds() == fds;
  });
  const std::size_t children = children_of(server_->pid());
  const std::uint64_t rss = server_->rss_bytes();
  for (int i = 0; i < 1000; ++i) {
    Outcome r = crash(*c, i % 2 ? "abort" : "segv");
    ASSERT_EQ(r.code, "unavailable") << "crash " << i << ": " << r.message;
  }
  ASSERT_TRUE(crash(*c, "none").ok);
  // Both settle within moments (a worker being reaped, a descriptor being closed).
  EXPECT_TRUE(eventually([&] { return server_->open_fds() <= fds; }, 3s))
      << "descriptors leaked across 1,000 worker crashes: " << server_->open_fds() << " vs " << fds;
  EXPECT_TRUE(eventually([&] { return children_of(server_->pid()) == children; }, 3s))
      << "worker processes left behind: " << children_of(server_->pid()) << " vs " << children;
  EXPECT_LT(server_->rss_bytes(), rss + (4u << 20)) << "memory grew across 1,000 crashes";
  std::printf(
      "[ figures ] 1000 crashes: fds %zu -> %zu, workers %zu -> %zu, rss %llu -> %llu KiB\n", fds,
      server_->open_fds(), children, children_of(server_->pid()),
      static_cast<unsigned long long>(rss >> 10),
      static_cast<unsigned long long>(server_->rss_bytes() >> 10));
}

// A plugin whose code crashes as it loads never gets to serve: after a few tries with
// backoff the operation is marked down, left out of describe and answered `unavailable`,
// and the rest of the server serves as usual.
TEST(IsolationStartup, APluginThatCrashesAtStartIsMarkedDown) {
  TempDir plugins;
  ServerOptions o;
  o.ops_json = ops_json_with(
      plugins.path() / "p", {"ctor_crash"},
      R"("boom": {"allow": ["*"], "isolation": "process", "plugin": "libctor_crash.so"})");
  ServerProcess server(o);
  auto admin = server.connect_admin();
  ASSERT_TRUE(admin);
  Outcome d = call_op(*admin, "describe", "{}");
  ASSERT_TRUE(d.ok);
  EXPECT_EQ(d.result_json.find("\"boom\""), std::string::npos) << d.result_json;
  Outcome r = call_op(*admin, "boom", "{}");
  EXPECT_OP_ERR(r, "unavailable");
  EXPECT_NE(r.message.find("down"), std::string::npos) << r.message;
  EXPECT_TRUE(upload(*admin, "still.txt", "serving").ok);
  EXPECT_NE(server.log().find("operation boom is down"), std::string::npos) << server.log();
  EXPECT_EQ(children_of(server.pid()), 0u) << "a down operation keeps no worker";
}

// Limits from ops.json: a spinning call is ended by its CPU limit long before the
// operation timeout.
TEST_F(IsolatedPlugin, ACpuLimitEndsASpinningCall) {
  start(R"(, "timeout_ms": 20000, "limits": {"cpu_seconds": 1})");
  auto c = connect();
  ASSERT_TRUE(c);
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_OP_ERR(crash(*c, "spin"), "unavailable");
  EXPECT_LT(std::chrono::steady_clock::now() - begin, 8s);
  EXPECT_TRUE(crash(*c, "none").ok);
}

// Landlock: the worker reads and writes nothing outside the storage tree, whatever its
// code tries, while the same probe inside the user's directory works.
TEST_F(IsolatedPlugin, TheWorkerCannotTouchFilesOutsideTheStorageTree) {
  start("");
  auto c = connect();
  ASSERT_TRUE(c);
  for (const fs::path& outside :
       {fs::path("/etc/passwd"), server_->state_dir() / "users.json", server_->config_path()}) {
    Outcome r = call_op(*c, "crash", R"({"how":"probe","path":)" + jstr(outside.string()) + "}");
    ASSERT_TRUE(r.ok) << r.message;
    EXPECT_EQ(r.result_json, R"({"read":false,"write":false})") << outside;
  }
  const fs::path inside = server_->storage_dir() / "ivy" / "mine.txt";
  write_file(inside, "x");
  Outcome r = call_op(*c, "crash", R"({"how":"probe","path":)" + jstr(inside.string()) + "}");
  ASSERT_TRUE(r.ok) << r.message;
  EXPECT_EQ(r.result_json, R"({"read":true,"write":true})");
}

// The standard transfer plugins, unmodified, run isolated: every host service crosses the
// worker socket (payload both ways, send_file with a passed descriptor, quotas).
// `usage` asks the server for get_usage: its first call counts the user's directory on a
// handler thread, later ones are answered on I/O threads from the count. With one worker
// for four busy connections the calls queue for it (handler and I/O threads in one queue)
// and every call is answered.
TEST(IsolationQueue, HandlerThreadCallsQueueForTheOnlyWorker) {
  TempDir plugins;
  ServerOptions o;
  const fs::path dir = plugins.path() / "p";
  o.ops_json = ops_json_with(dir, {},
                             R"("usage": {"allow": ["*"], "isolation": "process", "plugin": )"
                             R"("libusage.so", "limits": {"max_concurrent": 1}})");
  fs::copy_file(fs::path(OPS_PLUGIN_DIR) / "libusage.so", dir / "libusage.so");
  ServerProcess server(o);
  const std::string key = server.add_user("una");
  auto [ok, wrong] = call_concurrently(
      4, 20, [&] { return server.connect("una", key); },
      [](client::Client& c) {
        Outcome r = call_op(c, "usage", "{}");
        return r.ok && r.result_json.find("\"files\"") != std::string::npos;
      });
  EXPECT_EQ(ok, 80);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(children_of(server.pid()), 1u);
}

// An isolated `usage` answered from counts already taken (on the I/O thread) follows every
// change at once: what it reports is what was stored a moment before.
TEST(IsolationQueue, IsolatedUsageFollowsEachUpload) {
  TempDir plugins;
  ServerOptions o;
  const fs::path dir = plugins.path() / "p";
  o.ops_json = ops_json_with(dir, {},
                             R"("usage": {"allow": ["*"], "isolation": "process", "plugin": )"
                             R"("libusage.so"})");
  fs::copy_file(fs::path(OPS_PLUGIN_DIR) / "libusage.so", dir / "libusage.so");
  ServerProcess server(o);
  const std::string key = server.add_user("ulla");
  auto c = server.connect("ulla", key);
  ASSERT_TRUE(c);
  std::uint64_t bytes = 0;
  for (int i = 0; i < 5; ++i) {
    Outcome u = call_op(*c, "usage", "{}");
    ASSERT_TRUE(u.ok) << u.message;
    EXPECT_NE(u.result_json.find("\"bytes\":" + std::to_string(bytes) + ","), std::string::npos)
        << u.result_json;
    EXPECT_NE(u.result_json.find("\"files\":" + std::to_string(i) + ","), std::string::npos)
        << u.result_json;
    const std::string data(100 * (i + 1), 'u');
    Outcome up = call_op(*c, "upload", R"({"path":"f)" + std::to_string(i) + R"("})", data);
    ASSERT_TRUE(up.ok) << up.message;
    bytes += data.size();
  }
}

TEST(IsolationTransfers, UploadAndDownloadRunIsolatedWithQuotas) {
  TempDir plugins;
  ServerOptions o;
  const fs::path dir = plugins.path() / "p";
  o.ops_json = ops_json_with(dir, {}, "");
  for (const char* op : {"upload", "download", "list"}) {
    const std::string from = std::string("\"") + op + R"(": {"allow": ["*"]})";
    const std::string to = std::string("\"") + op +
                           R"(": {"allow": ["*"], "isolation": "process", "plugin": "lib)" + op +
                           R"(.so"})";
    o.ops_json.replace(o.ops_json.find(from), from.size(), to);
  }
  o.settings = R"("default_quota_bytes": 20000000)";
  ServerProcess server(o);
  const std::string key = server.add_user("uma");
  auto c = server.connect("uma", key);
  ASSERT_TRUE(c);
  std::string body(12u << 20, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i * 7 + (i >> 13));
  Outcome up = upload(*c, "big.bin", body);
  ASSERT_TRUE(up.ok) << up.code << ": " << up.message;
  EXPECT_EQ(read_file(server.storage_dir() / "uma" / "big.bin"), body);
  Outcome down = download(*c, "big.bin", R"(, "sha256": true)");
  ASSERT_TRUE(down.ok) << down.message;
  EXPECT_TRUE(down.payload == body);
  EXPECT_NE(down.result_json.find("sha256"), std::string::npos);
  // A second 12 MiB file would pass the 20 MB quota: refused before any byte is stored.
  EXPECT_OP_ERR(upload(*c, "second.bin", body), "quota_exceeded");
  EXPECT_FALSE(fs::exists(server.storage_dir() / "uma" / "second.bin"));
  Outcome ls = call_op(*c, "list", "{}");
  ASSERT_TRUE(ls.ok);
  EXPECT_NE(ls.result_json.find("big.bin"), std::string::npos);
}

}  // namespace
}  // namespace ops::test

namespace ops::test {
namespace {

// An exec operation whose program does, per call, what its "mode" argument says: answer,
// or break the worker protocol in one way or another.
constexpr const char* kUnrulyScript = R"(#!/bin/sh
read -r init
echo '{"ready":{"summary":"misbehaves on request","version":"1.0.0","payload":"none","args_schema":{"type":"object"}}}'
while read -r call; do
  case "$call" in
    *'"mode":"garbage"'*) echo 'this is not json' ;;
    *'"mode":"huge"'*) head -c 1100000 /dev/zero | tr '\0' 'a' ;;
    *'"mode":"exit"'*) exit 3 ;;
    *'"mode":"bytes"'*) printf '{"host":"log","level":"info","message":"x","bytes":5}\nhello' ; read -r reply ;;
    *'"mode":"unknown"'*)
      echo '{"host":"format_disk"}'; read -r reply
      printf '{"host":"send_result","result":%s,"payload_size":0}\n' "$reply"; read -r r
      echo '{"done":0}' ;;
    *'"mode":"pid"'*)
      printf '{"host":"send_result","result":{"pid":%s},"payload_size":0,"reply":false}\n{"done":"ok"}\n' $$ ;;
    *'"mode":"fail"'*)
      echo '{"host":"fail","code":"not_found","message":"no such thing"}'; read -r r
      echo '{"done":"not_found"}' ;;
    *) echo '{"host":"send_result","result":{"ok":true},"payload_size":0}'; read -r r; echo '{"done":0}' ;;
  esac
done
)";

class ExecPlugin : public ::testing::Test {
 protected:
  void start(const std::string& extra = "") {
    const fs::path script = dir_.path() / "unruly.sh";
    write_file(script, kUnrulyScript);
    ServerOptions o;
    o.ops_json = ops_json_with(dir_.path() / "p", {},
                               R"("unruly": {"allow": ["*"], "exec": ["/bin/sh", ")" +
                                   script.string() + R"("])" + extra + "}");
    server_ = std::make_unique<ServerProcess>(o);
    client_ = server_->connect_admin();
    ASSERT_TRUE(client_);
  }
  Outcome call(const std::string& mode) {
    return call_op(*client_, "unruly", R"({"mode":")" + mode + R"("})");
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(ExecPlugin, AnExecProgramServesCallsAndReportsErrors) {
  start();
  Outcome ok = call("ok");
  ASSERT_TRUE(ok.ok) << ok.message;
  EXPECT_EQ(ok.result_json, R"({"ok":true})");
  EXPECT_OP_ERR(call("fail"), "not_found");
  Outcome unknown = call("unknown");
  ASSERT_TRUE(unknown.ok) << unknown.message;
  EXPECT_NE(unknown.result_json.find("unknown host request"), std::string::npos)
      << unknown.result_json;
  Outcome d = call_op(*client_, "describe", "{}");
  EXPECT_NE(d.result_json.find("misbehaves on request"), std::string::npos) << d.result_json;
}

// Each way of breaking the protocol costs that call (`unavailable`) and that worker; the
// next call gets a new worker and is served.
TEST_F(ExecPlugin, AProgramThatBreaksTheProtocolCostsOnlyItsCall) {
  start();
  for (const char* mode : {"garbage", "huge", "exit", "bytes"}) {
    SCOPED_TRACE(mode);
    EXPECT_OP_ERR(call(mode), "unavailable");
    Outcome after = call("ok");
    EXPECT_TRUE(after.ok) << after.message;
  }
  EXPECT_TRUE(server_->running());
}

TEST_F(ExecPlugin, MaxCallsOneGivesEveryCallAFreshProcess) {
  start(R"(, "limits": {"max_calls": 1})");
  Outcome a = call("pid");
  Outcome b = call("pid");
  ASSERT_TRUE(a.ok && b.ok) << a.message << b.message;
  EXPECT_NE(a.result_json, b.result_json);
}

TEST_F(ExecPlugin, AWarmWorkerServesCallAfterCall) {
  start();
  Outcome a = call("pid");
  Outcome b = call("pid");
  ASSERT_TRUE(a.ok && b.ok) << a.message << b.message;
  EXPECT_EQ(a.result_json, b.result_json);
}

// A reload starts fresh workers for isolated operations and retires the old ones: after
// it, no worker of the old generation is left.
TEST_F(ExecPlugin, AReloadReplacesTheWorkers) {
  start();
  Outcome before = call("pid");
  ASSERT_TRUE(before.ok);
  const std::size_t workers = children_of(server_->pid());
  ASSERT_EQ(::kill(server_->pid(), SIGHUP), 0);
  EXPECT_TRUE(eventually([&] {
    Outcome after = call("pid");
    return after.ok && after.result_json != before.result_json;
  }));
  EXPECT_TRUE(eventually([&] { return children_of(server_->pid()) == workers; }, 5s))
      << children_of(server_->pid()) << " workers, expected " << workers;
}

}  // namespace
}  // namespace ops::test

namespace ops::test {
namespace {

// The shipped exec examples through a real server: the shell one (the raw protocol) and
// the Python one (sdk/python/opserver_plugin.py), streaming a payload and saving it.
TEST(ExecExamples, HelloAndWordcountServeThroughTheServer) {
  TempDir dir;
  const fs::path examples = fs::path(OPS_SOURCE_DIR) / "examples" / "exec";
  ServerOptions o;
  o.ops_json = ops_json_with(dir.path() / "p", {},
                             R"("hello": {"allow": ["*"], "exec": ["/bin/bash", ")" +
                                 (examples / "hello.sh").string() +
                                 R"("]}, "wordcount": {"allow": ["*"], "exec": ["python3", ")" +
                                 (examples / "wordcount.py").string() + R"("]})");
  ServerProcess server(o);
  const std::string key = server.add_user("wendy");
  auto c = server.connect("wendy", key);
  ASSERT_TRUE(c);
  Outcome hi = call_op(*c, "hello", R"({"name":"Ada"})");
  ASSERT_TRUE(hi.ok) << hi.code << ": " << hi.message << "\n" << server.log();
  EXPECT_NE(hi.result_json.find("hello Ada"), std::string::npos) << hi.result_json;
  EXPECT_OP_ERR(call_op(*c, "hello", R"({"name":"\"quoted\""})"), "invalid_args");

  std::string text;
  for (int i = 0; i < 200000; ++i) text += (i % 7 == 0) ? "word\n" : "word ";
  Outcome wc = call_op(*c, "wordcount", R"({"save":"text.txt"})", text);
  ASSERT_TRUE(wc.ok) << wc.code << ": " << wc.message << "\n" << server.log();
  auto r = wc.result();
  EXPECT_EQ(r["bytes"].GetUint64(), text.size());
  EXPECT_EQ(r["words"].GetUint64(), 200000u);
  EXPECT_EQ(read_file(server.storage_dir() / "wendy" / "text.txt"), text);
  EXPECT_OP_ERR(call_op(*c, "wordcount", R"({"save":"../escape.txt"})", "x"), "invalid_args");
  EXPECT_FALSE(fs::exists(server.storage_dir() / "escape.txt"));
}

}  // namespace
}  // namespace ops::test
