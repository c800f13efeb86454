// Concurrent clients on one path (OPS/1 §5, §7): of 20 creators of one new path exactly
// one wins; 20 concurrent overwrites leave exactly one complete body; downloads during
// overwrites see the old or the new content, never a mix; of 50 registrations of one name
// exactly one wins.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <set>
#include <thread>
#include <vector>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/proof.hpp"
#include "scratch_util.hpp"

namespace ops::test {
namespace {

// A body of `size` bytes that differs from every other `seed`'s everywhere.
std::string body_for(int seed, std::size_t size) {
  std::string out(size, '\0');
  std::uint32_t x = 2463534242u ^ static_cast<std::uint32_t>(seed * 7919 + 1);
  for (std::size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<char>(x);
  }
  out.replace(0, 8, "seed" + std::to_string(1000 + seed));  // recognisable prefix
  return out;
}

class Concurrency : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess();
    key_ = new std::string(server_->add_user("carol"));
  }
  static void TearDownTestSuite() {
    delete server_;
    delete key_;
  }
  // One connection per thread, all made before the barrier so the requests collide.
  static std::vector<std::unique_ptr<client::Client>> clients(int n) {
    std::vector<std::unique_ptr<client::Client>> out;
    for (int i = 0; i < n; ++i) out.push_back(server_->connect("carol", *key_));
    return out;
  }
  fs::path home() const { return server_->storage_dir() / "carol"; }

  static ServerProcess* server_;
  static std::string* key_;
};
ServerProcess* Concurrency::server_ = nullptr;
std::string* Concurrency::key_ = nullptr;

TEST_F(Concurrency, TwentyCreatorsOfOneNewPathExactlyOneWins) {
  constexpr int kN = 20;
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    const std::string path = "race" + std::to_string(round) + "/same.bin";
    auto cs = clients(kN);
    std::barrier start(kN);
    std::vector<Outcome> results(kN);
    std::vector<std::thread> threads;
    for (int i = 0; i < kN; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        results[i] = upload(*cs[i], path, body_for(i, 256 * 1024));
      });
    }
    for (auto& t : threads) t.join();
    int ok = 0, exists = 0, winner = -1;
    for (int i = 0; i < kN; ++i) {
      if (results[i].ok) {
        ++ok;
        winner = i;
      } else if (results[i].code == "already_exists") {
        ++exists;
      } else {
        ADD_FAILURE() << i << ": " << results[i].code << " " << results[i].message;
      }
    }
    EXPECT_EQ(ok, 1);
    EXPECT_EQ(exists, kN - 1);
    ASSERT_GE(winner, 0);
    EXPECT_TRUE(read_file(home() / path) == body_for(winner, 256 * 1024));
  }
  EXPECT_TRUE(scratch_clean(server_->storage_dir()));
}

TEST_F(Concurrency, TwentyOverwritersLeaveExactlyOneCompleteBody) {
  constexpr int kN = 20;
  constexpr std::size_t kSize = 2 * 1024 * 1024;
  auto cs = clients(kN);
  std::set<std::string> sums;
  for (int i = 0; i < kN; ++i) sums.insert(proof::sha256_hex(body_for(100 + i, kSize)));
  std::barrier start(kN);
  std::vector<Outcome> results(kN);
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = upload(*cs[i], "shared.bin", body_for(100 + i, kSize), ",\"overwrite\":true");
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kN; ++i) EXPECT_OP_OK(results[i]);
  const std::string final_body = read_file(home() / "shared.bin");
  EXPECT_EQ(final_body.size(), kSize);
  EXPECT_TRUE(sums.count(proof::sha256_hex(final_body))) << "a torn or unknown body";
  EXPECT_TRUE(scratch_clean(server_->storage_dir()));
}

TEST_F(Concurrency, DownloadsDuringOverwritesSeeOldOrNewNeverAMix) {
  constexpr std::size_t kSize = 4 * 1024 * 1024;
  const std::string a = body_for(201, kSize), b = body_for(202, kSize);
  auto writer = server_->connect("carol", *key_);
  ASSERT_TRUE(upload(*writer, "flip.bin", a, ",\"overwrite\":true").ok);

  std::atomic<bool> stop{false}, writer_done{false};
  std::atomic<int> writes{0};
  std::thread w([&] {
    for (int i = 0; !stop.load(); ++i) {
      auto r = upload(*writer, "flip.bin", i % 2 ? a : b, ",\"overwrite\":true");
      if (!r.ok) {
        ADD_FAILURE() << r.code << " " << r.message;
        break;
      }
      writes.fetch_add(1);
    }
    writer_done = true;
  });
  constexpr int kReaders = 3;
  std::vector<std::thread> readers;
  std::atomic<int> reads{0}, bad{0};
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&] {
      auto c = server_->connect("carol", *key_);
      while (writes.load() < 20 && !writer_done.load()) {
        auto d = download(*c, "flip.bin");
        if (!d.ok || (d.payload != a && d.payload != b)) bad.fetch_add(1);
        reads.fetch_add(1);
      }
    });
  }
  for (auto& t : readers) t.join();
  stop = true;
  w.join();
  std::cout << "[ flip ] writes=" << writes.load() << " reads=" << reads.load() << "\n";
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0);
}

TEST_F(Concurrency, ConcurrentCreatorsOfNewDirectoriesAllSucceed) {
  constexpr int kN = 16;
  auto cs = clients(kN);
  std::barrier start(kN);
  std::vector<Outcome> results(kN);
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = upload(*cs[i], "tree/a/b/c/f" + std::to_string(i), "x");
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_OP_OK(r);
  EXPECT_EQ(tree(home() / "tree/a/b/c").size(), static_cast<std::size_t>(kN));
}

TEST_F(Concurrency, FiftyRegistrationsOfOneNameExactlyOneWins) {
  constexpr int kN = 50;
  std::vector<std::unique_ptr<client::Client>> admins;
  for (int i = 0; i < kN; ++i) admins.push_back(server_->connect_admin());
  std::barrier start(kN);
  std::vector<Outcome> results(kN);
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      results[i] = call_op(*admins[i], "register", R"({"user":"dave"})");
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, exists = 0;
  std::string key;
  for (const auto& r : results) {
    if (r.ok) {
      ++ok;
      key = r.result()["key"].GetString();
    } else if (r.code == "already_exists") {
      ++exists;
    } else {
      ADD_FAILURE() << r.code << " " << r.message;
    }
  }
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(exists, kN - 1);
  EXPECT_TRUE(fs::is_directory(server_->storage_dir() / "dave"));
  auto dave = server_->connect("dave", key);
  ASSERT_TRUE(dave);
  EXPECT_OP_OK(upload(*dave, "mine", "x"));
}

}  // namespace
}  // namespace ops::test
