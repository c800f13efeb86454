// Quotas, usage, unregister, rekey and bandwidth limits (OPS/1 §10) against the real
// server and plugins: quota refusals before any payload byte is read, concurrent uploads
// against one quota, usage after a restart, connections closed by unregister and rekey,
// and the per-user bandwidth limit applied (loosely; the exact rate is scripts/bench_bandwidth).
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "scratch_util.hpp"

namespace ops::test {
namespace {

using Clock = std::chrono::steady_clock;

std::string users_ops_json(const std::string& extra_unregister_allow = "") {
  return R"({
  "plugin_dir": ")" +
         std::string(OPS_PLUGIN_DIR) + R"(",
  "operations": {
    "upload": {"allow": ["*"]},
    "download": {"allow": ["*"]},
    "list": {"allow": ["*"]},
    "register": {"allow": ["admin"]},
    "usage": {"allow": ["*"]},
    "rekey": {"allow": ["*"], "settings": {"rekey_others": ["admin"]}},
    "set_quota": {"allow": ["admin"]},
    "unregister": {"allow": ["admin")" +
         extra_unregister_allow + R"(]}
  }
})";
}

ServerOptions users_options(std::string settings = "") {
  ServerOptions o;
  o.ops_json = users_ops_json();
  o.settings = std::move(settings);
  return o;
}

// The integer (or -1 for null) of `member` in a result.
std::int64_t num(const Outcome& o, const char* member) {
  rapidjson::Document d = o.result();
  if (!d.IsObject() || !d.HasMember(member)) {
    ADD_FAILURE() << "no " << member << " in " << o.result_json;
    return -2;
  }
  if (d[member].IsNull()) return -1;
  return d[member].GetInt64();
}

std::string key_of(const Outcome& o) {
  rapidjson::Document d = o.result();
  return d.IsObject() && d.HasMember("key") ? d["key"].GetString() : "";
}

// True if a request on `c` now fails at the transport (the server closed it).
bool is_closed(client::Client& c) {
  auto r = c.call("usage", "{}");
  return !r;
}

// Reads one frame from the raw socket within `timeout`, or "<none>".
std::string reply(RawConnection& raw, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  auto f = raw.read_frame(timeout);
  return f ? *f : "<none>";
}

class UsersQuota : public ::testing::Test {
 protected:
  void start(ServerOptions options = users_options()) {
    server_ = std::make_unique<ServerProcess>(std::move(options));
    admin_ = server_->connect_admin();
    ASSERT_TRUE(admin_);
  }
  std::string add(const std::string& name, const std::string& extra = "") {
    auto r = call_op(*admin_, "register", "{\"user\":" + jstr(name) + extra + "}");
    EXPECT_OP_OK(r);
    return key_of(r);
  }
  Outcome set_quota(const std::string& name, const std::string& members) {
    return call_op(*admin_, "set_quota", "{\"user\":" + jstr(name) + members + "}");
  }
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::Client> admin_;
};

TEST_F(UsersQuota, UsageCountsRegularFilesAndBytes) {
  start();
  std::string key = add("alice");
  auto alice = server_->connect("alice", key);
  ASSERT_TRUE(alice);
  auto u = call_op(*alice, "usage", "{}");
  EXPECT_OP_OK(u);
  EXPECT_EQ(u.result_json,
            R"({"user":"alice","bytes":0,"files":0,"reserved_bytes":0,"quota_bytes":null,)"
            R"("quota_files":null})");
  EXPECT_OP_OK(upload(*alice, "a.txt", std::string(100, 'a')));
  EXPECT_OP_OK(upload(*alice, "d/e/b.txt", std::string(23, 'b')));
  EXPECT_OP_OK(upload(*alice, "empty", ""));
  u = call_op(*alice, "usage", "{}");
  EXPECT_EQ(num(u, "bytes"), 123);
  EXPECT_EQ(num(u, "files"), 3);  // directories are not counted
  EXPECT_EQ(num(u, "reserved_bytes"), 0);
  // The args schema refuses members usage does not know.
  EXPECT_OP_ERR(call_op(*alice, "usage", R"({"user":"admin"})"), "invalid_args");
}

TEST_F(UsersQuota, QuotaExceededIsAnsweredBeforeThePayloadIsRead) {
  start();
  std::string key = add("alice", R"(,"quota_bytes":1000)");
  RawConnection raw(server_->port());
  ASSERT_TRUE(raw.authenticate("alice", key));
  // 100 MiB declared (past the 64 MiB discard limit, so the server answers and closes
  // rather than skipping it), not one byte sent: the answer can only come before the
  // payload.
  ASSERT_TRUE(raw.send(frame_of(request_json(1, "upload", R"({"path":"big.bin"})", 100u << 20))));
  std::string answer = reply(raw);
  EXPECT_NE(answer.find("\"quota_exceeded\""), std::string::npos) << answer;
  EXPECT_FALSE(fs::exists(server_->storage_dir() / "alice" / "big.bin"));
  EXPECT_TRUE(tree(server_->storage_dir() / "alice").empty());
  // Nothing left in the scratch directory either (no temporary file was made).
  for (const auto& e : tree(server_->storage_dir() / ".ops-tmp")) {
    EXPECT_EQ(e.find("upload-"), std::string::npos) << e;
  }
  // Within the quota it works, and usage counts it.
  auto alice = server_->connect("alice", key);
  ASSERT_TRUE(alice);
  EXPECT_OP_OK(upload(*alice, "ok.bin", std::string(1000, 'x')));
  EXPECT_OP_ERR(upload(*alice, "one.bin", "y"), "quota_exceeded");
  EXPECT_EQ(num(call_op(*alice, "usage", "{}"), "bytes"), 1000);
}

TEST_F(UsersQuota, AReservationInProgressCountsAgainstTheQuota) {
  start();
  std::string key = add("alice", R"(,"quota_bytes":1000000)");
  RawConnection first(server_->port());
  ASSERT_TRUE(first.authenticate("alice", key));
  // An upload of 600,000 bytes under way: its room is reserved until it ends.
  ASSERT_TRUE(first.send(frame_of(request_json(1, "upload", R"({"path":"a"})", 600000))));
  ASSERT_TRUE(first.send(std::string(1000, 'a')));
  auto second = server_->connect("alice", key);
  ASSERT_TRUE(second);
  Outcome refused;
  for (int i = 0; i < 50; ++i) {  // until the first handler has reserved
    auto u = call_op(*second, "usage", "{}");
    if (num(u, "reserved_bytes") == 600000) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_OP_ERR(upload(*second, "b", std::string(500000, 'b')), "quota_exceeded");
  EXPECT_OP_OK(upload(*second, "c", std::string(400000, 'c')));  // exactly what is left
  ASSERT_TRUE(first.send(std::string(599000, 'a')));
  std::string answer = reply(first);
  EXPECT_NE(answer.find("\"ok\":true"), std::string::npos) << answer;
  auto u = call_op(*second, "usage", "{}");
  EXPECT_EQ(num(u, "bytes"), 1000000);
  EXPECT_EQ(num(u, "reserved_bytes"), 0);
}

TEST_F(UsersQuota, AFailedUploadGivesItsReservationBack) {
  start();
  std::string key = add("alice", R"(,"quota_bytes":1000)");
  auto alice = server_->connect("alice", key);
  ASSERT_TRUE(alice);
  // A checksum mismatch: nothing stored, nothing kept reserved.
  EXPECT_OP_ERR(
      upload(*alice, "a", std::string(900, 'a'), R"(,"sha256":")" + std::string(64, '0') + "\""),
      "checksum_mismatch");
  // A client that vanishes in the middle of its payload.
  {
    RawConnection raw(server_->port());
    ASSERT_TRUE(raw.authenticate("alice", key));
    ASSERT_TRUE(raw.send(frame_of(request_json(1, "upload", R"({"path":"b"})", 900))));
    ASSERT_TRUE(raw.send(std::string(100, 'b')));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  Outcome u;
  for (int i = 0; i < 100; ++i) {  // until the server has noticed the loss
    u = call_op(*alice, "usage", "{}");
    if (num(u, "reserved_bytes") == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(u.result_json,
            R"({"user":"alice","bytes":0,"files":0,"reserved_bytes":0,"quota_bytes":1000,)"
            R"("quota_files":null})");
  EXPECT_OP_OK(upload(*alice, "c", std::string(1000, 'c')));  // all of the room is there
}

TEST_F(UsersQuota, ConcurrentUploadsCannotTogetherExceedTheQuota) {
  start();
  std::string key = add("alice", R"(,"quota_bytes":1000000)");
  constexpr int kUploads = 8;
  std::atomic<int> succeeded{0}, refused{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kUploads; ++i) {
    threads.emplace_back([&, i] {
      auto c = server_->connect("alice", key);
      if (!c) return;
      const std::string name = std::string("f") + static_cast<char>('0' + i);
      auto r = upload(*c, name, std::string(300000, 'z'));
      if (r.ok) ++succeeded;
      if (r.code == "quota_exceeded") ++refused;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(succeeded.load(), 3);  // 3 x 300,000 fit in 1,000,000; a fourth does not
  EXPECT_EQ(refused.load(), kUploads - 3);
  std::uintmax_t total = 0;
  for (const auto& e : tree(server_->storage_dir() / "alice")) {
    total += fs::file_size(server_->storage_dir() / "alice" / e);
  }
  EXPECT_EQ(total, 900000u);
  auto u = call_op(*admin_, "set_quota", R"({"user":"alice"})");
  EXPECT_OP_OK(u);
}

TEST_F(UsersQuota, OverwriteCountsTheDifferenceAndShrinkingAlwaysPasses) {
  start();
  std::string key = add("alice", R"(,"quota_bytes":1000,"quota_files":1)");
  auto alice = server_->connect("alice", key);
  ASSERT_TRUE(alice);
  EXPECT_OP_OK(upload(*alice, "f", std::string(800, 'a')));
  EXPECT_OP_OK(upload(*alice, "f", std::string(1000, 'b'), R"(,"overwrite":true)"));
  EXPECT_OP_ERR(upload(*alice, "f", std::string(1001, 'c'), R"(,"overwrite":true)"),
                "quota_exceeded");
  EXPECT_OP_ERR(upload(*alice, "g", ""), "quota_exceeded");  // the file quota
  EXPECT_EQ(read_file(server_->storage_dir() / "alice" / "f"), std::string(1000, 'b'));
  // Over quota after a lower limit: a smaller replacement still passes.
  EXPECT_OP_OK(set_quota("alice", R"(,"bytes":10)"));
  EXPECT_OP_OK(upload(*alice, "f", std::string(500, 'd'), R"(,"overwrite":true)"));
  EXPECT_OP_ERR(upload(*alice, "f", std::string(501, 'e'), R"(,"overwrite":true)"),
                "quota_exceeded");
  auto u = call_op(*alice, "usage", "{}");
  EXPECT_EQ(num(u, "bytes"), 500);
  EXPECT_EQ(num(u, "files"), 1);
}

TEST_F(UsersQuota, SetQuotaBelowUsageRefusesGrowthAndRemovesNothing) {
  start();
  std::string key = add("alice");
  auto alice = server_->connect("alice", key);
  ASSERT_TRUE(alice);
  EXPECT_OP_OK(upload(*alice, "a", std::string(600, 'a')));
  EXPECT_OP_OK(upload(*alice, "b", std::string(600, 'b')));
  auto set = set_quota("alice", R"(,"bytes":1000)");
  EXPECT_OP_OK(set);
  EXPECT_EQ(set.result_json, R"({"user":"alice","quota_bytes":1000,"quota_files":null})");
  EXPECT_OP_ERR(upload(*alice, "c", "c"), "quota_exceeded");
  EXPECT_EQ(tree(server_->storage_dir() / "alice"), (std::vector<std::string>{"a", "b"}));
  // A member left out stays; null clears.
  set = set_quota("alice", R"(,"files":5)");
  EXPECT_EQ(set.result_json, R"({"user":"alice","quota_bytes":1000,"quota_files":5})");
  set = set_quota("alice", R"(,"bytes":null)");
  EXPECT_EQ(set.result_json, R"({"user":"alice","quota_bytes":null,"quota_files":5})");
  EXPECT_OP_OK(upload(*alice, "c", "c"));
  EXPECT_OP_ERR(set_quota("nobody", R"(,"bytes":1)"), "not_found");
  EXPECT_OP_ERR(set_quota("alice", R"(,"bytes":-1)"), "invalid_args");
  EXPECT_OP_ERR(set_quota("alice", R"(,"bytes":1.5)"), "invalid_args");
  // Only admin may set quotas (ops.json).
  EXPECT_OP_ERR(call_op(*alice, "set_quota", R"({"user":"alice","bytes":null})"), "forbidden");
}

TEST_F(UsersQuota, UsageAndQuotasSurviveARestart) {
  start(users_options(R"("default_quota_files": 10)"));
  std::string key = add("alice", R"(,"quota_bytes":5000)");
  std::string bob_key = add("bob");
  {
    auto alice = server_->connect("alice", key);
    ASSERT_TRUE(alice);
    EXPECT_OP_OK(upload(*alice, "x/y", std::string(1234, 'a')));
    EXPECT_OP_OK(upload(*alice, "z", std::string(766, 'a')));
  }
  admin_.reset();
  server_->stop();
  server_->restart();
  auto alice = server_->connect("alice", key);
  ASSERT_TRUE(alice);
  auto u = call_op(*alice, "usage", "{}");
  EXPECT_EQ(u.result_json,
            R"({"user":"alice","bytes":2000,"files":2,"reserved_bytes":0,"quota_bytes":5000,)"
            R"("quota_files":10})");
  EXPECT_OP_ERR(upload(*alice, "w", std::string(3001, 'w')), "quota_exceeded");
  EXPECT_OP_OK(upload(*alice, "w", std::string(3000, 'w')));
  auto bob = server_->connect("bob", bob_key);
  ASSERT_TRUE(bob);
  EXPECT_EQ(num(call_op(*bob, "usage", "{}"), "quota_files"), 10);  // the server default
}

TEST_F(UsersQuota, UnregisterClosesConnectionsAndRemovesTheStorage) {
  start();
  std::string key = add("bob");
  auto bob1 = server_->connect("bob", key);
  auto bob2 = server_->connect("bob", key);
  ASSERT_TRUE(bob1 && bob2);
  EXPECT_OP_OK(upload(*bob1, "secret/file", "bob's data"));
  // One connection in the middle of an upload: it must end at once too.
  RawConnection mid(server_->port());
  ASSERT_TRUE(mid.authenticate("bob", key));
  ASSERT_TRUE(mid.send(frame_of(request_json(9, "upload", R"({"path":"half"})", 1000000))));
  ASSERT_TRUE(mid.send(std::string(1000, 'h')));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));

  auto r = call_op(*admin_, "unregister", R"({"user":"bob"})");
  EXPECT_OP_OK(r);
  EXPECT_EQ(r.result_json, R"({"user":"bob"})");
  EXPECT_FALSE(fs::exists(server_->storage_dir() / "bob"));
  EXPECT_TRUE(mid.closed_within(std::chrono::seconds(2)));
  EXPECT_TRUE(is_closed(*bob1));
  EXPECT_TRUE(is_closed(*bob2));
  client::Failure why{};
  auto again = client::Client::connect(server_->options("bob", key), &why);
  EXPECT_FALSE(again);
  EXPECT_EQ(why, client::Failure::auth);
  // The moved-aside tree is deleted in the background.
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = scratch_clean(server_->storage_dir());
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(gone) << "the unregistered user's files are still in the scratch directory";

  // A new bob starts empty, with a fresh usage count.
  std::string new_key = add("bob");
  auto bob = server_->connect("bob", new_key);
  ASSERT_TRUE(bob);
  EXPECT_TRUE(names_of(call_op(*bob, "list", "{}")).empty());
  EXPECT_EQ(num(call_op(*bob, "usage", "{}"), "files"), 0);
  EXPECT_OP_ERR(call_op(*admin_, "unregister", R"({"user":"nobody"})"), "not_found");
}

TEST_F(UsersQuota, UnregisterOfSelfOrAdminIsForbidden) {
  ServerOptions o = users_options();
  o.ops_json = users_ops_json(R"(, "carol")");
  start(std::move(o));
  std::string carol_key = add("carol");
  std::string dave_key = add("dave");
  EXPECT_OP_ERR(call_op(*admin_, "unregister", R"({"user":"admin"})"), "forbidden");
  auto carol = server_->connect("carol", carol_key);
  ASSERT_TRUE(carol);
  EXPECT_OP_ERR(call_op(*carol, "unregister", R"({"user":"carol"})"), "forbidden");
  EXPECT_OP_ERR(call_op(*carol, "unregister", R"({"user":"admin"})"), "forbidden");
  auto dave = server_->connect("dave", dave_key);
  ASSERT_TRUE(dave);
  EXPECT_OP_ERR(call_op(*dave, "unregister", R"({"user":"carol"})"), "forbidden");  // allow
  // Both still exist and work.
  EXPECT_OP_OK(call_op(*carol, "usage", "{}"));
  EXPECT_TRUE(server_->connect("carol", carol_key));
  EXPECT_TRUE(server_->connect_admin());
}

TEST_F(UsersQuota, RekeyClosesOtherConnectionsButNotTheCallers) {
  start();
  std::string old_key = add("alice");
  auto asking = server_->connect("alice", old_key);
  auto other = server_->connect("alice", old_key);
  ASSERT_TRUE(asking && other);
  auto r = call_op(*asking, "rekey", "{}");
  EXPECT_OP_OK(r);
  std::string new_key = key_of(r);
  EXPECT_TRUE(std::regex_match(new_key, std::regex("[0-9a-f]{64}"))) << new_key;
  EXPECT_NE(new_key, old_key);
  EXPECT_NE(r.result_json.find(R"("user":"alice")"), std::string::npos);
  EXPECT_OP_OK(call_op(*asking, "usage", "{}"));  // the caller's connection stays
  EXPECT_TRUE(is_closed(*other));
  client::Failure why{};
  EXPECT_FALSE(client::Client::connect(server_->options("alice", old_key), &why));
  EXPECT_EQ(why, client::Failure::auth);
  EXPECT_TRUE(server_->connect("alice", new_key));
  // A chosen key, with register's rules.
  r = call_op(*asking, "rekey", R"({"key":"my own key"})");
  EXPECT_OP_OK(r);
  EXPECT_EQ(key_of(r), "my own key");
  EXPECT_TRUE(server_->connect("alice", "my own key"));
  EXPECT_OP_ERR(call_op(*asking, "rekey", R"({"key":"bad\u0001key"})"), "invalid_args");
  EXPECT_OP_ERR(call_op(*asking, "rekey", R"({"key":""})"), "invalid_args");
}

TEST_F(UsersQuota, RekeyOfAnotherUserOnlyForAdmin) {
  start();
  std::string alice_key = add("alice");
  std::string bob_key = add("bob");
  auto alice = server_->connect("alice", alice_key);
  auto bob = server_->connect("bob", bob_key);
  ASSERT_TRUE(alice && bob);
  EXPECT_OP_ERR(call_op(*alice, "rekey", R"({"user":"bob"})"), "forbidden");
  EXPECT_OP_ERR(call_op(*alice, "rekey", R"({"user":"nobody"})"), "forbidden");
  EXPECT_TRUE(server_->connect("bob", bob_key));  // unchanged
  // admin may: every connection of bob closes, none of admin's.
  auto r = call_op(*admin_, "rekey", R"({"user":"bob"})");
  EXPECT_OP_OK(r);
  EXPECT_TRUE(is_closed(*bob));
  EXPECT_TRUE(server_->connect("bob", key_of(r)));
  EXPECT_OP_OK(call_op(*admin_, "usage", "{}"));
  EXPECT_OP_OK(call_op(*alice, "usage", "{}"));
  EXPECT_OP_ERR(call_op(*admin_, "rekey", R"({"user":"nobody"})"), "not_found");
}

TEST_F(UsersQuota, RegisterTakesQuotasAndValidatesThem) {
  start(users_options(R"("default_quota_bytes": 777)"));
  add("q1", R"(,"quota_bytes":10,"quota_files":null)");
  auto u = call_op(*admin_, "set_quota", R"({"user":"q1"})");
  EXPECT_EQ(u.result_json, R"({"user":"q1","quota_bytes":10,"quota_files":null})");
  add("q2");
  u = call_op(*admin_, "set_quota", R"({"user":"q2"})");
  EXPECT_EQ(u.result_json, R"({"user":"q2","quota_bytes":777,"quota_files":null})");
  EXPECT_OP_ERR(call_op(*admin_, "register", R"({"user":"q3","quota_bytes":-5})"), "invalid_args");
  EXPECT_OP_ERR(call_op(*admin_, "register", R"({"user":"q3","quota_files":"x"})"), "invalid_args");
  // The store keeps them with the user.
  std::string store = read_file(server_->state_dir() / "users.json");
  EXPECT_NE(store.find(R"("q1":{"key":)"), std::string::npos) << store;
  EXPECT_NE(store.find(R"("quota_bytes":10,"quota_files":null)"), std::string::npos) << store;
}

TEST_F(UsersQuota, BandwidthLimitIsApplied) {
  // 1 MiB/s each way for every user; 2 MiB each way must take about 2 s (at least 0.8x
  // of the time the bucket allows after its 0.1 s burst).
  start(users_options(
      R"("default_upload_bytes_per_second": 1048576, "default_download_bytes_per_second": 1048576)"));
  std::string key = add("alice");
  auto alice = server_->connect("alice", key);
  ASSERT_TRUE(alice);
  const std::string body(2u << 20, 'r');
  auto t0 = Clock::now();
  EXPECT_OP_OK(upload(*alice, "r", body));
  double up = std::chrono::duration<double>(Clock::now() - t0).count();
  t0 = Clock::now();
  auto d = download(*alice, "r");
  double down = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_OP_OK(d);
  EXPECT_EQ(d.payload.size(), body.size());
  EXPECT_GE(up, 0.8 * 1.9) << "upload took " << up << " s";
  EXPECT_GE(down, 0.8 * 1.9) << "download took " << down << " s";
  EXPECT_LT(up, 10.0);
  EXPECT_LT(down, 10.0);
}

}  // namespace
}  // namespace ops::test
