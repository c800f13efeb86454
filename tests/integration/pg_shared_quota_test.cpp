// Quotas, usage and defender bans shared by several servers through PostgreSQL (issue 17):
// two real servers on one storage root and one real, throwaway PostgreSQL cluster
// (harness/pg_cluster.hpp). Concurrent uploads of one user spread over both servers cannot
// together pass the quota; usage changed on one server is seen on the other; the
// reservations of a SIGKILLed server are given back within the documented time; a commit
// made while PostgreSQL is down is applied once it is back; a ban on one server refuses the
// address on the other.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
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
#include "opserver/frame.hpp"

namespace ops::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const std::string kStoreKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Walk {
  std::uint64_t bytes = 0;
  std::uint64_t files = 0;
};

// The user's regular files on disk, as the servers count them.
Walk walk(const fs::path& dir) {
  Walk w;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && !e.is_symlink()) {
      w.bytes += e.file_size();
      ++w.files;
    }
  }
  return w;
}

struct Used {
  std::uint64_t bytes = 0;
  std::uint64_t files = 0;
  std::uint64_t reserved = 0;
  bool ok = false;
};

Used usage_of(client::Client& c) {
  Outcome o = call_op(c, "usage", "{}");
  if (!o.ok) return {};
  auto d = o.result();
  return {d["bytes"].GetUint64(), d["files"].GetUint64(), d["reserved_bytes"].GetUint64(), true};
}

// One frame's header text from `fd`, or nullopt on close or after 5 s.
std::optional<std::string> read_frame_from(int fd) {
  auto read_n = [fd](std::size_t n) {
    std::string out;
    const auto give_up = Clock::now() + 5s;
    while (out.size() < n && Clock::now() < give_up) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t got = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), 0);
      if (got <= 0) break;
      out.append(buf, static_cast<std::size_t>(got));
    }
    return out;
  };
  std::string len = read_n(4);
  if (len.size() < 4) return std::nullopt;
  std::string body =
      read_n(frame::decode_length(reinterpret_cast<const std::uint8_t*>(len.data())));
  return body;
}

// A login from `source` with a wrong proof: true if the server answered auth_failed, false
// if it closed without a challenge (banned).
bool failed_login_from(const char* source, std::uint16_t port) {
  int fd = connect_from(source, port);
  if (fd < 0) return false;
  auto challenge = read_frame_from(fd);
  if (!challenge) {
    ::close(fd);
    return false;
  }
  const std::string auth = R"({"type":"auth","mechanism":"hmac-sha256","user":"admin","cnonce":")" +
                           std::string(64, 'a') + R"(","proof":")" + std::string(64, 'b') + "\"}";
  const std::string bytes = frame::encode(auth);
  ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  auto answer = read_frame_from(fd);
  ::close(fd);
  return answer && answer->find("auth_failed") != std::string::npos;
}

class PgShared : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(PgCluster::available())
        << "postgresql-15 is not installed (scripts/setup installs it)";
    pg_ = std::make_unique<PgCluster>();
    key_file_ = keys_.path() / "store.key";
    std::ofstream(key_file_) << kStoreKey << "\n";
    ::chmod(key_file_.c_str(), 0600);
    fs::create_directories(storage());
  }

  fs::path storage() const { return shared_.path() / "storage"; }

  // A server on the test database and the shared storage root (its <root>/storage is a
  // symlink to it); the first one migrates the database.
  ServerOptions options(bool migrate, const std::string& extra = "") const {
    ServerOptions o;
    o.ops_json = file_ops_json(OPS_PLUGIN_DIR);
    o.settings = R"("user_store": {"postgresql": ")" + pg_->conninfo() + R"(", "key_file": ")" +
                 key_file_.string() + R"("})" + extra;
    const fs::path shared = storage();
    o.prepare = [migrate, shared](const fs::path& root) {
      fs::create_directory_symlink(shared, root / "storage");
      if (!migrate) return;
      RunResult r = run_program(
          {OPS_SERVER_BIN, "db", "migrate", "--config", (root / "server.json").string()});
      ASSERT_EQ(r.status, 0) << r.output;
    };
    return o;
  }

  std::string reserved_in_db(const std::string& user) const {
    auto rows =
        pg_->query("SELECT reserved_bytes FROM opserver_usage WHERE user_name = $1", {user});
    return rows.empty() || !rows[0][0] ? "none" : *rows[0][0];
  }

  std::unique_ptr<PgCluster> pg_;
  TempDir keys_;
  TempDir shared_;
  fs::path key_file_;
};

TEST_F(PgShared, ConcurrentUploadsOnTwoServersCannotTogetherPassTheQuota) {
  ServerProcess a(options(true));
  ServerProcess b(options(false));
  const std::string key = a.add_user("quinn");
  // A file already there before anything counted the user: the first use counts it.
  write_file(storage() / "quinn" / "before.bin", std::string(1500, 'x'));
  auto admin = a.connect_admin();
  ASSERT_TRUE(admin);
  constexpr int kFits = 10;
  constexpr std::size_t kSize = 1000;
  EXPECT_OP_OK(call_op(*admin, "set_quota",
                       R"({"user":"quinn","bytes":)" + std::to_string(1500 + kFits * kSize) + "}"));

  constexpr int kClients = 8;  // four on each server
  constexpr int kEach = 4;     // 32 uploads for room for 10
  std::vector<std::unique_ptr<client::Client>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(connect_soon(i % 2 == 0 ? a : b, "quinn", key));
    ASSERT_TRUE(clients.back());
  }
  // B has heard of the limit (the set_quota's notification): its usage shows it.
  const auto give_up = Clock::now() + 2s;
  while (call_op(*clients[1], "usage", "{}").result_json.find("11500") == std::string::npos &&
         Clock::now() < give_up) {
    std::this_thread::sleep_for(10ms);
  }
  std::atomic<int> ok{0}, refused{0}, other{0};
  std::vector<std::string> others;
  std::mutex others_mutex;
  std::barrier start(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      for (int k = 0; k < kEach; ++k) {
        // Built with append: GCC 12 warns (-Wrestrict, a false positive) on "lit" + string.
        std::string path = "c";
        path.append(std::to_string(i)).append("/f").append(std::to_string(k));
        Outcome o = upload(*clients[i], path, std::string(kSize, static_cast<char>('a' + k)));
        if (o.ok) {
          ++ok;
        } else if (o.code == "quota_exceeded") {
          ++refused;
        } else {
          ++other;
          std::lock_guard lock(others_mutex);
          others.push_back(o.code + ": " + o.message);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kFits);
  EXPECT_EQ(refused.load(), kClients * kEach - kFits);
  EXPECT_EQ(other.load(), 0) << (others.empty() ? "" : others.front());

  // Usage on both servers equals a walk of the disk; nothing left reserved.
  const Walk disk = walk(storage() / "quinn");
  EXPECT_EQ(disk.bytes, 1500 + kFits * kSize);
  EXPECT_EQ(disk.files, 1u + kFits);
  for (int i : {0, 1}) {
    Used u = usage_of(*clients[i]);
    ASSERT_TRUE(u.ok);
    EXPECT_EQ(u.bytes, disk.bytes) << "server " << (i == 0 ? "A" : "B");
    EXPECT_EQ(u.files, disk.files);
    EXPECT_EQ(u.reserved, 0u);
  }
  EXPECT_EQ(pg_->query("SELECT count(*) FROM opserver_reservations")[0][0], "0");
  // Counted once for the cluster, by one server.
  const std::string counted = "usage of quinn counted for the cluster";
  EXPECT_EQ(
      (a.log().find(counted) != std::string::npos) + (b.log().find(counted) != std::string::npos),
      1);
}

TEST_F(PgShared, UsageChangedOnOneServerIsSeenOnTheOther) {
  ServerProcess a(options(true));
  ServerProcess b(options(false));
  const std::string key = a.add_user("uma");
  auto on_a = connect_soon(a, "uma", key);
  auto on_b = connect_soon(b, "uma", key);
  ASSERT_TRUE(on_a && on_b);
  EXPECT_EQ(usage_of(*on_b).bytes, 0u);
  EXPECT_OP_OK(upload(*on_a, "one.bin", std::string(4321, 'u')));
  Used seen = usage_of(*on_b);
  EXPECT_EQ(seen.bytes, 4321u);
  EXPECT_EQ(seen.files, 1u);
  // A removal on B is seen on A.
  EXPECT_OP_OK(call_op(*on_b, "remove", R"({"path":"one.bin"})"));
  seen = usage_of(*on_a);
  EXPECT_EQ(seen.bytes, 0u);
  EXPECT_EQ(seen.files, 0u);
}

TEST_F(PgShared, ReservationsOfAKilledServerAreGivenBackWithinTheLease) {
  ServerProcess a(options(true));
  ServerProcess b(options(false));
  const std::string key = a.add_user("kim");
  auto admin = b.connect("admin", a.admin_key());
  ASSERT_TRUE(admin);
  EXPECT_OP_OK(call_op(*admin, "set_quota", R"({"user":"kim","bytes":100000})"));
  auto on_b = connect_soon(b, "kim", key);
  ASSERT_TRUE(on_b);
  // An upload of 60,000 bytes on A, stopped after 1,000: A holds the room.
  RawConnection raw(a.port());
  ASSERT_TRUE(raw.authenticate("kim", key));
  ASSERT_TRUE(raw.send(frame_of(request_json(1, "upload", R"({"path":"big.bin"})", 60000)) +
                       std::string(1000, 'k')));
  auto give_up = Clock::now() + 5s;
  while (reserved_in_db("kim") != "60000" && Clock::now() < give_up) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(reserved_in_db("kim"), "60000");
  a.kill();
  const auto killed = Clock::now();
  // The room is still taken: B refuses what would not fit beside it.
  EXPECT_OP_ERR(upload(*on_b, "other.bin", std::string(50000, 'o')), "quota_exceeded");
  // Given back within the lease (10 s) and one heartbeat (2 s) of A's last heartbeat, which
  // was at most 2 s before the kill; 15 s allows for a loaded machine.
  give_up = killed + 25s;
  while (reserved_in_db("kim") != "0" && Clock::now() < give_up) {
    std::this_thread::sleep_for(100ms);
  }
  const auto took = Clock::now() - killed;
  EXPECT_EQ(reserved_in_db("kim"), "0");
  EXPECT_LE(took, 15s) << std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
  EXPECT_OP_OK(upload(*on_b, "other.bin", std::string(50000, 'o')));
  EXPECT_NE(b.log().find("reservation(s) of dead nodes given back"), std::string::npos) << b.log();
  // The reaped row is kept for a late commit, with no room.
  EXPECT_EQ(pg_->query("SELECT count(*) FROM opserver_reservations WHERE reaped IS NOT NULL "
                       "AND bytes = 0")[0][0],
            "1");
}

TEST_F(PgShared, PostgresDownRefusesNewReservationsAndACommitInFlightCountsOnceItIsBack) {
  ServerProcess a(options(true));
  const std::string key = a.add_user("pat");
  auto c = connect_soon(a, "pat", key);
  ASSERT_TRUE(c);
  EXPECT_OP_OK(upload(*c, "first.bin", std::string(100, 'p')));
  // An upload that has its reservation when PostgreSQL stops, finished while it is down.
  RawConnection raw(a.port());
  ASSERT_TRUE(raw.authenticate("pat", key));
  ASSERT_TRUE(raw.send(frame_of(request_json(1, "upload", R"({"path":"second.bin"})", 2000)) +
                       std::string(1000, 's')));
  auto give_up = Clock::now() + 5s;
  while (reserved_in_db("pat") != "2000" && Clock::now() < give_up) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(reserved_in_db("pat"), "2000");
  pg_->stop();
  ASSERT_TRUE(raw.send(std::string(1000, 's')));
  auto reply = raw.read_frame();
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->find(R"("ok":true)"), std::string::npos) << *reply;
  // A new upload needs a reservation: unavailable, and nothing written.
  EXPECT_OP_ERR(upload(*c, "third.bin", std::string(100, 't')), "unavailable");
  EXPECT_FALSE(fs::exists(storage() / "pat" / "third.bin"));
  EXPECT_OP_ERR(call_op(*c, "usage", "{}"), "unavailable");
  pg_->start();
  // The kept commit reaches the database (the heartbeat thread, every 2 s).
  give_up = Clock::now() + 15s;
  Used u;
  do {
    std::this_thread::sleep_for(200ms);
    u = usage_of(*c);
  } while ((!u.ok || u.bytes != 2100) && Clock::now() < give_up);
  EXPECT_EQ(u.bytes, 2100u);
  EXPECT_EQ(u.files, 2u);
  EXPECT_EQ(u.reserved, 0u);
  const Walk disk = walk(storage() / "pat");
  EXPECT_EQ(disk.bytes, u.bytes);
  EXPECT_OP_OK(upload(*c, "third.bin", std::string(100, 't')));
}

TEST_F(PgShared, AHeldReservationOutlivesItsServerAndEndsOnTheOther) {
  // The file operations and the resumable ones.
  const std::string ops = with_resumable_ops(file_ops_json(OPS_PLUGIN_DIR));
  ServerOptions oa = options(true);
  oa.ops_json = ops;
  ServerOptions ob = options(false);
  ob.ops_json = ops;
  ServerProcess a(oa);
  ServerProcess b(ob);
  const std::string key = a.add_user("hana");
  auto admin = a.connect_admin();
  ASSERT_TRUE(admin);
  EXPECT_OP_OK(call_op(*admin, "set_quota", R"({"user":"hana","bytes":1000})"));
  std::string id;
  {
    auto on_a = connect_soon(a, "hana", key);
    ASSERT_TRUE(on_a);
    Outcome open = call_op(*on_a, "upload_open", R"({"path":"r.bin","size":800})");
    ASSERT_TRUE(open.ok) << open.code << " " << open.message;
    id = open.result()["upload"].GetString();
    EXPECT_OP_OK(call_op(*on_a, "upload_append", "{\"upload\":" + jstr(id) + ",\"offset\":0}",
                         std::string(800, 'r')));
  }
  // A stops (cleanly: it gives back its calls' reservations, not the held one).
  a.stop();
  auto rows = pg_->query("SELECT node, tag, bytes FROM opserver_reservations");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0], std::nullopt);
  EXPECT_EQ(rows[0][2], "800");
  auto on_b = connect_soon(b, "hana", key);
  ASSERT_TRUE(on_b);
  EXPECT_EQ(usage_of(*on_b).reserved, 800u);
  EXPECT_OP_ERR(upload(*on_b, "p.bin", std::string(300, 'p')), "quota_exceeded");
  // Committed on B: the held room becomes the file.
  Outcome committed = call_op(*on_b, "upload_commit", "{\"upload\":" + jstr(id) + "}");
  ASSERT_TRUE(committed.ok) << committed.code << " " << committed.message;
  Used u = usage_of(*on_b);
  EXPECT_EQ(u.bytes, 800u);
  EXPECT_EQ(u.files, 1u);
  EXPECT_EQ(u.reserved, 0u);
  EXPECT_EQ(pg_->query("SELECT count(*) FROM opserver_reservations")[0][0], "0");
  // A again: the same figures.
  a.restart();
  auto again = connect_soon(a, "hana", key);
  ASSERT_TRUE(again);
  EXPECT_EQ(usage_of(*again).bytes, 800u);
}

TEST_F(PgShared, ABanOnOneServerRefusesTheAddressOnTheOtherUntilItExpires) {
  const std::string defender =
      R"(, "defender": {"enabled": true, "threshold": 3, "observation_s": 60, "ban_time_s": 8})";
  ServerProcess a(options(true, defender));
  ServerProcess b(options(false, defender));
  // 127.0.0.2 is welcome on B before.
  int fd = connect_from("127.0.0.2", b.port());
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(read_frame_from(fd).has_value());
  ::close(fd);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(failed_login_from("127.0.0.2", a.port())) << i;
  const auto banned = Clock::now();
  EXPECT_FALSE(failed_login_from("127.0.0.2", a.port()));
  // B refuses it at accept within a second, having never seen it fail.
  bool refused_on_b = false;
  while (!refused_on_b && Clock::now() - banned < 1s) {
    fd = connect_from("127.0.0.2", b.port());
    ASSERT_GE(fd, 0);
    refused_on_b = !read_frame_from(fd).has_value();
    ::close(fd);
  }
  EXPECT_TRUE(refused_on_b);
  EXPECT_NE(b.log().find("defender: 127.0.0.2 banned for"), std::string::npos) << b.log();
  // Other addresses go on; the ban is in the database.
  EXPECT_TRUE(b.connect("admin", a.admin_key()));
  EXPECT_EQ(pg_->query("SELECT bans FROM opserver_bans")[0][0], "1");
  // A server started later learns the running ban at start.
  ServerProcess c(options(false, defender));
  ASSERT_LT(Clock::now() - banned, 6s) << "server C started too late to see the ban running";
  bool refused_on_c = false;
  const auto c_started = Clock::now();
  while (!refused_on_c && Clock::now() - c_started < 1s) {
    fd = connect_from("127.0.0.2", c.port());
    ASSERT_GE(fd, 0);
    refused_on_c = !read_frame_from(fd).has_value();
    ::close(fd);
  }
  EXPECT_TRUE(refused_on_c);
  // Expired (8 s): welcome again on B.
  std::this_thread::sleep_until(banned + 8500ms);
  fd = connect_from("127.0.0.2", b.port());
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(read_frame_from(fd).has_value());
  ::close(fd);
}

}  // namespace
}  // namespace ops::test
