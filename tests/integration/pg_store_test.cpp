// The PostgreSQL user store (issue 17) against a real, throwaway PostgreSQL 15 cluster
// (harness/pg_cluster.hpp) and real servers: `opserver db migrate`, register and login,
// concurrent registers of one name on two servers sharing the database, a rekey or an
// unregister on one server closing the user's connections on the other within 1 s, keys
// sealed at rest, and PostgreSQL restarting under a running server.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "connect_util.hpp"
#include "harness/pg_cluster.hpp"
#include "harness/server_process.hpp"
#include "ops_test_util.hpp"

namespace ops::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const std::string kStoreKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

std::string pg_ops_json() {
  return R"({
  "plugin_dir": ")" +
         std::string(OPS_PLUGIN_DIR) + R"(",
  "operations": {
    "list": {"allow": ["*"]},
    "usage": {"allow": ["*"]},
    "register": {"allow": ["admin"]},
    "rekey": {"allow": ["*"], "settings": {"rekey_others": ["admin"]}},
    "set_quota": {"allow": ["admin"]},
    "unregister": {"allow": ["admin"]}
  }
})";
}

std::string key_of(const Outcome& o) {
  std::smatch m;
  static const std::regex kKey(R"re("key":"([^"]+)")re");
  if (!std::regex_search(o.result_json, m, kKey)) return {};
  return m[1];
}

bool is_closed(client::Client& c) {
  return !c.call("usage", "{}");
}

std::unique_ptr<RawConnection> authenticate_soon(const ServerProcess& server,
                                                 const std::string& user, const std::string& key) {
  const auto give_up = Clock::now() + 2s;
  while (true) {
    auto raw = std::make_unique<RawConnection>(server.port());
    if (raw->authenticate(user, key)) return raw;
    if (Clock::now() > give_up) {
      ADD_FAILURE() << "raw login as " << user << " still refused after 2 s";
      return nullptr;
    }
    std::this_thread::sleep_for(5ms);
  }
}

class PgStore : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(PgCluster::available())
        << "postgresql-15 is not installed (scripts/setup installs it)";
    pg_ = std::make_unique<PgCluster>();
    key_file_ = keys_.path() / "store.key";
    write_key(key_file_, kStoreKey, 0600);
  }

  static void write_key(const fs::path& file, const std::string& hex, mode_t mode) {
    std::ofstream(file) << hex << "\n";
    ::chmod(file.c_str(), mode);
  }

  std::string store_setting(const fs::path& key_file) const {
    return R"("user_store": {"postgresql": ")" + pg_->conninfo() + R"(", "key_file": ")" +
           key_file.string() + R"("})";
  }

  // A server on the test database; `migrate` runs `opserver db migrate` on its config first.
  ServerOptions options(bool migrate = true) const {
    ServerOptions o;
    o.ops_json = pg_ops_json();
    o.settings = store_setting(key_file_);
    if (migrate) {
      o.prepare = [](const fs::path& root) {
        RunResult r = run_program(
            {OPS_SERVER_BIN, "db", "migrate", "--config", (root / "server.json").string()});
        ASSERT_EQ(r.status, 0) << r.output;
      };
    }
    return o;
  }

  std::unique_ptr<PgCluster> pg_;
  TempDir keys_;
  fs::path key_file_;
};

TEST_F(PgStore, MigrateCreatesTheSchemaOnceAndTheServerRefusesAnUnmigratedDatabase) {
  // Before any migration the server refuses to start, naming the command to run.
  try {
    ServerProcess unmigrated(options(false));
    ADD_FAILURE() << "the server started on a database without the schema";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("opserver db migrate"), std::string::npos) << e.what();
  }
  TempDir dir;
  const fs::path config = dir.path() / "server.json";
  std::ofstream(dir.path() / "ops.json") << pg_ops_json();
  std::ofstream(config) << "{" << store_setting(key_file_) << "}\n";
  RunResult first = run_program({OPS_SERVER_BIN, "db", "migrate", "--config", config.string()});
  EXPECT_EQ(first.status, 0) << first.output;
  EXPECT_NE(first.output.find("schema migrated from version 0 to 2"), std::string::npos)
      << first.output;
  RunResult again = run_program({OPS_SERVER_BIN, "db", "migrate", "--config", config.string()});
  EXPECT_EQ(again.status, 0) << again.output;
  EXPECT_NE(again.output.find("schema already at version 2"), std::string::npos) << again.output;
  auto version = pg_->query("SELECT version FROM opserver_schema");
  ASSERT_EQ(version.size(), 1u);
  EXPECT_EQ(version[0][0], "2");
  // The file store needs no migration, and says so.
  std::ofstream(config) << "{\"user_store\": \"file\"}\n";
  RunResult file = run_program({OPS_SERVER_BIN, "db", "migrate", "--config", config.string()});
  EXPECT_NE(file.status, 0);
  EXPECT_NE(file.output.find("needs no migration"), std::string::npos) << file.output;
}

TEST_F(PgStore, RegisterAndLoginThroughTheServerSurviveARestart) {
  ServerProcess server(options());
  std::string alice_key = server.add_user("alice");
  ASSERT_FALSE(alice_key.empty());
  EXPECT_TRUE(server.connect("alice", alice_key));
  auto admin = server.connect_admin();
  ASSERT_TRUE(admin);
  EXPECT_OP_ERR(call_op(*admin, "register", R"({"user":"alice"})"), "already_exists");
  // In the database, not in users.json; the limits with it.
  EXPECT_FALSE(fs::exists(server.state_dir() / "users.json"));
  EXPECT_OP_OK(call_op(*admin, "set_quota", R"({"user":"alice","bytes":1000})"));
  auto rows = pg_->query("SELECT name, quota_bytes, quota_files FROM opserver_users ORDER BY name");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0][0], "admin");
  EXPECT_EQ(rows[1][0], "alice");
  EXPECT_EQ(rows[1][1], "1000");
  EXPECT_EQ(rows[1][2], std::nullopt);  // the server's default
  // A restart reads everything back.
  server.stop();
  server.restart();
  EXPECT_TRUE(server.connect("alice", alice_key));
  auto again = server.connect_admin();
  ASSERT_TRUE(again);
  auto q = call_op(*again, "set_quota", R"({"user":"alice"})");
  EXPECT_NE(q.result_json.find(R"("quota_bytes":1000)"), std::string::npos) << q.result_json;
  EXPECT_FALSE(server.connect_admin() == nullptr);
  client::Failure why{};
  EXPECT_FALSE(client::Client::connect(server.options("alice", "not the key"), &why));
  EXPECT_EQ(why, client::Failure::auth);
}

// Counts `needle` in the cluster's statement log.
std::size_t occurrences(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

TEST_F(PgStore, HandshakesOfKnownUsersCostNoDatabaseRoundTrip) {
  ServerProcess server(options());
  const std::string key = server.add_user("henry");
  ASSERT_TRUE(server.connect("henry", key));
  std::this_thread::sleep_for(200ms);  // the listener has heard the register back
  const std::string lookup = "$1 = 'henry'";
  const std::size_t before = occurrences(pg_->log(), lookup);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(server.connect("henry", key));
  client::Failure why{};
  EXPECT_FALSE(client::Client::connect(server.options("henry", "wrong"), &why));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(occurrences(pg_->log(), lookup), before) << "handshakes read henry's row";
  // Nor does a name nobody has: an unknown name costs what a known one does.
  EXPECT_FALSE(client::Client::connect(server.options("nobody_here", "x"), &why));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(occurrences(pg_->log(), "nobody_here"), 0u);
}

TEST_F(PgStore, ConcurrentRegistersOfOneNameOnTwoServersGiveExactlyOneOk) {
  ServerProcess a(options());
  // B shares the database (and the key file); admin exists already, so B creates none.
  ServerProcess b(options(false));
  EXPECT_FALSE(fs::exists(b.state_dir() / "admin.key"));
  const std::string admin_key = a.admin_key();
  auto admin_a = a.connect("admin", admin_key);
  auto admin_b = b.connect("admin", admin_key);
  ASSERT_TRUE(admin_a && admin_b);
  for (int round = 0; round < 20; ++round) {
    const std::string args = R"({"user":"racer)" + std::to_string(round) + R"("})";
    std::atomic<bool> go{false};
    Outcome ra, rb;
    std::thread ta([&] {
      while (!go) {
      }
      ra = call_op(*admin_a, "register", args);
    });
    std::thread tb([&] {
      while (!go) {
      }
      rb = call_op(*admin_b, "register", args);
    });
    go = true;
    ta.join();
    tb.join();
    ASSERT_NE(ra.ok, rb.ok) << "round " << round << ": " << ra.code << " / " << rb.code;
    const Outcome& lost = ra.ok ? rb : ra;
    EXPECT_EQ(lost.code, "already_exists") << lost.message;
    // The key the winner handed out works on both servers.
    const std::string key = key_of(ra.ok ? ra : rb);
    const std::string name = "racer" + std::to_string(round);
    EXPECT_TRUE(connect_soon(a, name, key));
    EXPECT_TRUE(connect_soon(b, name, key));
  }
  EXPECT_EQ(pg_->query("SELECT count(*) FROM opserver_users WHERE name LIKE 'racer%'")[0][0], "20");
}

TEST_F(PgStore, RekeyOnOneServerClosesTheUsersConnectionsOnTheOtherWithinASecond) {
  ServerProcess a(options());
  ServerProcess b(options(false));
  const std::string old_key = a.add_user("alice");
  auto on_b = connect_soon(b, "alice", old_key);
  auto raw_on_b = authenticate_soon(b, "alice", old_key);
  ASSERT_TRUE(on_b && raw_on_b);
  std::string bob_key = a.add_user("bob");
  auto bob_on_b = connect_soon(b, "bob", bob_key);
  ASSERT_TRUE(bob_on_b);

  auto asking = a.connect("alice", old_key);
  ASSERT_TRUE(asking);
  auto r = call_op(*asking, "rekey", "{}");
  const auto answered = Clock::now();
  EXPECT_OP_OK(r);
  EXPECT_TRUE(raw_on_b->closed_within(1s)) << "alice's connection on B is still open";
  EXPECT_LT(Clock::now() - answered, 1s);
  EXPECT_TRUE(is_closed(*on_b));
  EXPECT_OP_OK(call_op(*asking, "usage", "{}"));    // the caller's own connection stays
  EXPECT_OP_OK(call_op(*bob_on_b, "usage", "{}"));  // other users' connections stay
  client::Failure why{};
  EXPECT_FALSE(client::Client::connect(b.options("alice", old_key), &why));
  EXPECT_EQ(why, client::Failure::auth);
  EXPECT_TRUE(b.connect("alice", key_of(r)));
  EXPECT_NE(b.log().find("rekeyed or unregistered on another server"), std::string::npos);
}

TEST_F(PgStore, UnregisterOnOneServerClosesTheUsersConnectionsOnTheOther) {
  ServerProcess a(options());
  ServerProcess b(options(false));
  const std::string key = a.add_user("carol");
  auto raw_on_b = authenticate_soon(b, "carol", key);
  ASSERT_TRUE(raw_on_b);
  auto admin = a.connect_admin();
  ASSERT_TRUE(admin);
  EXPECT_OP_OK(call_op(*admin, "unregister", R"({"user":"carol"})"));
  EXPECT_TRUE(raw_on_b->closed_within(1s));
  client::Failure why{};
  EXPECT_FALSE(client::Client::connect(b.options("carol", key), &why));
  EXPECT_EQ(why, client::Failure::auth);
  // B may register the name again at once: the database says it is free.
  auto admin_b = b.connect("admin", a.admin_key());
  ASSERT_TRUE(admin_b);
  EXPECT_OP_OK(call_op(*admin_b, "register", R"({"user":"carol"})"));
}

TEST_F(PgStore, OfflineUserCommandsUseTheDatabaseAndReachTheRunningServer) {
  ServerProcess server(options());
  const std::string config = server.config_path().string();
  RunResult add = run_program({OPS_SERVER_BIN, "--config", config, "user", "add", "zed"});
  ASSERT_EQ(add.status, 0) << add.output;
  std::string key = add.output;
  while (!key.empty() && key.back() == '\n') key.pop_back();
  ASSERT_EQ(key.size(), 64u) << add.output;
  auto raw = authenticate_soon(server, "zed", key);  // the running server hears of zed
  ASSERT_TRUE(raw);
  RunResult list = run_program({OPS_SERVER_BIN, "--config", config, "user", "list"});
  EXPECT_EQ(list.output, "admin\nzed\n");
  // Removing zed offline closes its connection on the running server.
  RunResult remove = run_program({OPS_SERVER_BIN, "--config", config, "user", "remove", "zed"});
  EXPECT_EQ(remove.status, 0) << remove.output;
  EXPECT_TRUE(raw->closed_within(1s));
  client::Failure why{};
  EXPECT_FALSE(client::Client::connect(server.options("zed", key), &why));
  EXPECT_EQ(why, client::Failure::auth);
}

TEST_F(PgStore, KeysAreSealedAtRestAndOnlyOpenForTheirOwnUserWithTheKeyFile) {
  ServerProcess server(options());
  auto admin = server.connect_admin();
  ASSERT_TRUE(admin);
  const std::string dave_key = "dave's own chosen key";
  EXPECT_OP_OK(call_op(*admin, "register", R"({"user":"dave","key":"dave's own chosen key"})"));
  const std::string erin_key = server.add_user("erin");
  auto rows = pg_->query(
      "SELECT encode(key_sealed, 'escape') FROM opserver_users WHERE name IN "
      "('dave', 'erin')");
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& row : rows) {
    ASSERT_TRUE(row[0]);
    EXPECT_EQ(row[0]->find(dave_key), std::string::npos);
    EXPECT_EQ(row[0]->find(erin_key), std::string::npos);
  }
  // Nonce per record: the same key sealed twice differs.
  EXPECT_OP_OK(call_op(*admin, "rekey", R"({"user":"erin","key":"dave's own chosen key"})"));
  auto sealed = pg_->query("SELECT key_sealed FROM opserver_users WHERE name IN ('dave', 'erin')");
  ASSERT_EQ(sealed.size(), 2u);
  EXPECT_NE(sealed[0][0], sealed[1][0]);

  // dave's sealed key copied into erin's row does not open for erin.
  pg_->query(
      "UPDATE opserver_users SET key_sealed = (SELECT key_sealed FROM opserver_users "
      "WHERE name = 'dave') WHERE name = 'erin'");
  server.stop();
  server.restart();
  client::Failure why{};
  EXPECT_FALSE(client::Client::connect(server.options("erin", dave_key), &why));
  EXPECT_EQ(why, client::Failure::auth);
  EXPECT_TRUE(server.connect("dave", dave_key));
  EXPECT_NE(server.log().find("the key of user erin does not open"), std::string::npos)
      << server.log();

  // Another key file opens nothing: nobody logs in, admin included.
  server.stop();
  write_key(key_file_, std::string(64, 'a'), 0600);
  server.restart();
  EXPECT_FALSE(client::Client::connect(server.options("dave", dave_key), &why));
  EXPECT_EQ(why, client::Failure::auth);
  EXPECT_FALSE(client::Client::connect(server.options("admin", server.admin_key()), &why));
}

TEST_F(PgStore, AKeyFileOthersCanReadIsRefused) {
  write_key(key_file_, kStoreKey, 0644);
  // --check-config says so too, without contacting the database.
  TempDir dir;
  std::ofstream(dir.path() / "ops.json") << pg_ops_json();
  std::ofstream(dir.path() / "server.json") << "{" << store_setting(key_file_) << "}\n";
  RunResult check = run_program(
      {OPS_SERVER_BIN, "--check-config", "--config", (dir.path() / "server.json").string()});
  EXPECT_NE(check.status, 0);
  EXPECT_NE(check.output.find("readable by its owner only"), std::string::npos) << check.output;
  try {
    ServerProcess server(options());
    ADD_FAILURE() << "the server started with a key file others can read";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("readable by its owner only"), std::string::npos)
        << e.what();
  }
}

TEST_F(PgStore, PostgresRestartingMeansUnavailableThenServiceResumesByItself) {
  ServerProcess server(options());
  const std::string frank_key = server.add_user("frank");
  auto admin = server.connect_admin();
  auto frank = server.connect("frank", frank_key);
  ASSERT_TRUE(admin && frank);
  // The server's copy has frank once the listener has heard the register back (ms); from
  // then on an outage does not take frank's limits away.
  std::this_thread::sleep_for(300ms);

  pg_->stop();
  EXPECT_OP_ERR(call_op(*admin, "register", R"({"user":"gina"})"), "unavailable");
  EXPECT_OP_ERR(call_op(*admin, "rekey", R"({"user":"frank"})"), "unavailable");
  // Connections already open carry on; a new login cannot be checked, so it fails. Usage
  // is in the database too (the shared usage ledger): that one says unavailable.
  EXPECT_OP_OK(call_op(*frank, "list", "{}"));
  EXPECT_OP_ERR(call_op(*frank, "usage", "{}"), "unavailable");
  client::Failure why{};
  EXPECT_FALSE(client::Client::connect(server.options("frank", frank_key), &why));

  pg_->start();
  // No restart of the server: it reconnects by itself (backoff at most 2 s).
  Outcome r;
  const auto give_up = Clock::now() + 15s;
  do {
    r = call_op(*admin, "register", R"({"user":"gina"})");
    if (r.ok) break;
    EXPECT_EQ(r.code, "unavailable") << r.message;
    std::this_thread::sleep_for(100ms);
  } while (Clock::now() < give_up);
  EXPECT_OP_OK(r);
  EXPECT_TRUE(server.connect("gina", key_of(r)));
  EXPECT_TRUE(server.connect("frank", frank_key));
  // Nothing was lost: frank's key is the one from before (the failed rekey changed nothing).
  EXPECT_EQ(pg_->query("SELECT count(*) FROM opserver_users")[0][0], "3");
}

}  // namespace
}  // namespace ops::test
