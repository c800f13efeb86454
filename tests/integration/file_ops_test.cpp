// The file operations of OPS/1 §10 (remove, move, mkdir, stat) and the §10 additions to
// list (paging) and download (sha256), against the real server and plugins. Trees that
// OPS/1 cannot make (symlinks, very deep chains) are planted on disk by the test.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/paths.hpp"
#include "opserver/proof.hpp"

namespace ops::test {
namespace {

// prefix + n, spelled so that GCC 12 does not warn (-Wrestrict false positive on
// "literal" + std::string&&).
std::string numbered(const char* prefix, long n) {
  std::string out(prefix);
  out += std::to_string(n);
  return out;
}

// Every operation enabled; `list_settings` is list's "settings" object, if any.
std::string ops_json(const std::string& list_settings = "") {
  std::string list_extra;
  if (!list_settings.empty()) list_extra = std::string(", \"settings\": ").append(list_settings);
  return file_ops_json(OPS_PLUGIN_DIR, "", list_extra);
}

class FileOps : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerOptions options;
    options.ops_json = ops_json();
    server_ = new ServerProcess(options);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    static std::atomic<int> counter{0};
    user_ = numbered("fo", counter++);
    key_ = server_->add_user(user_);
    ASSERT_FALSE(key_.empty());
    client_ = server_->connect(user_, key_);
    ASSERT_TRUE(client_);
  }
  fs::path home() const { return server_->storage_dir() / user_; }
  client::Client& c() { return *client_; }

  static ServerProcess* server_;
  std::string user_, key_;
  std::unique_ptr<client::Client> client_;
};
ServerProcess* FileOps::server_ = nullptr;

Outcome remove_op(client::Client& c, const std::string& path, bool recursive = false) {
  return call_op(c, "remove",
                 jobj({{"path", jstr(path)}, {"recursive", recursive ? "true" : "false"}}));
}
Outcome move_op(client::Client& c, const std::string& from, const std::string& to,
                bool overwrite = false) {
  return call_op(
      c, "move",
      jobj({{"from", jstr(from)}, {"to", jstr(to)}, {"overwrite", overwrite ? "true" : "false"}}));
}
Outcome mkdir_op(client::Client& c, const std::string& path, const std::string& extra = "") {
  return call_op(c, "mkdir", "{\"path\":" + jstr(path) + extra + "}");
}
Outcome stat_op(client::Client& c, const std::string& path, bool sha = false) {
  return call_op(c, "stat", jobj({{"path", jstr(path)}, {"sha256", sha ? "true" : "false"}}));
}

// ---------------------------------------------------------------------------------------
// mkdir

TEST_F(FileOps, MkdirCreatesReportsExistingAndMakesParents) {
  auto made = mkdir_op(c(), "a/b/c");
  ASSERT_TRUE(made.ok) << made.message;
  EXPECT_STREQ(made.result()["path"].GetString(), "a/b/c");
  EXPECT_TRUE(made.result()["created"].GetBool());
  EXPECT_TRUE(fs::is_directory(home() / "a/b/c"));
  auto again = mkdir_op(c(), "a/b/c");
  ASSERT_TRUE(again.ok);
  EXPECT_FALSE(again.result()["created"].GetBool());
  auto parent = mkdir_op(c(), "a/b", R"(,"parents":false)");
  ASSERT_TRUE(parent.ok);
  EXPECT_FALSE(parent.result()["created"].GetBool());
  auto leaf = mkdir_op(c(), "a/b/d", R"(,"parents":false)");
  ASSERT_TRUE(leaf.ok);
  EXPECT_TRUE(leaf.result()["created"].GetBool());
  EXPECT_TRUE(fs::is_directory(home() / "a/b/d"));
}

TEST_F(FileOps, MkdirRefusals) {
  EXPECT_OP_ERR(mkdir_op(c(), "x/y", R"(,"parents":false)"), "not_found");
  EXPECT_FALSE(fs::exists(home() / "x"));
  ASSERT_TRUE(upload(c(), "f", "data").ok);
  EXPECT_OP_ERR(mkdir_op(c(), "f"), "conflict");
  EXPECT_OP_ERR(mkdir_op(c(), "f", R"(,"parents":false)"), "conflict");
  EXPECT_OP_ERR(mkdir_op(c(), "f/sub"), "conflict");
  EXPECT_OP_ERR(mkdir_op(c(), "f/sub", R"(,"parents":false)"), "conflict");
  EXPECT_OP_ERR(mkdir_op(c(), ""), "invalid_args");
  EXPECT_OP_ERR(call_op(c(), "mkdir", "{}"), "invalid_args");
  EXPECT_OP_ERR(mkdir_op(c(), "a/../b"), "invalid_args");
  EXPECT_OP_ERR(mkdir_op(c(), "/abs"), "invalid_args");
  // A symlink in the way is never followed.
  TempDir outside;
  fs::create_symlink(outside.path(), home() / "link");
  EXPECT_OP_ERR(mkdir_op(c(), "link/inner"), "forbidden");
  EXPECT_OP_ERR(mkdir_op(c(), "link"), "forbidden");
  EXPECT_TRUE(fs::is_empty(outside.path()));
}

// ---------------------------------------------------------------------------------------
// stat

TEST_F(FileOps, StatAgreesWithListAndHashesFiles) {
  const std::string body = "hello, stat";
  ASSERT_TRUE(upload(c(), "d/f.txt", body).ok);
  auto listed = call_op(c(), "list", R"({"path":"d"})");
  ASSERT_TRUE(listed.ok);
  const rapidjson::Document listing = listed.result();
  const auto& entry = listing["entries"][0];

  auto st = stat_op(c(), "d/f.txt");
  ASSERT_TRUE(st.ok) << st.message;
  auto r = st.result();
  EXPECT_STREQ(r["path"].GetString(), "d/f.txt");
  EXPECT_STREQ(r["type"].GetString(), "file");
  EXPECT_EQ(r["size"].GetUint64(), body.size());
  EXPECT_EQ(r["mtime"].GetInt64(), entry["mtime"].GetInt64());
  EXPECT_FALSE(r.HasMember("sha256"));

  auto hashed = stat_op(c(), "d/f.txt", true);
  ASSERT_TRUE(hashed.ok);
  EXPECT_EQ(std::string(hashed.result()["sha256"].GetString()), proof::sha256_hex(body));

  // Changing the file changes the hash (nothing stale).
  ASSERT_TRUE(upload(c(), "d/f.txt", "other", R"(,"overwrite":true)").ok);
  auto rehashed = stat_op(c(), "d/f.txt", true);
  ASSERT_TRUE(rehashed.ok);
  EXPECT_EQ(std::string(rehashed.result()["sha256"].GetString()), proof::sha256_hex("other"));

  auto dir = stat_op(c(), "d", true);
  ASSERT_TRUE(dir.ok);
  EXPECT_STREQ(dir.result()["type"].GetString(), "dir");
  EXPECT_EQ(dir.result()["size"].GetUint64(), 0u);
  EXPECT_FALSE(dir.result().HasMember("sha256"));

  auto root = call_op(c(), "stat", "{}");
  ASSERT_TRUE(root.ok) << root.message;
  EXPECT_STREQ(root.result()["path"].GetString(), "");
  EXPECT_STREQ(root.result()["type"].GetString(), "dir");

  auto empty = upload(c(), "empty", "");
  ASSERT_TRUE(empty.ok);
  auto e = stat_op(c(), "empty", true);
  ASSERT_TRUE(e.ok);
  EXPECT_EQ(std::string(e.result()["sha256"].GetString()), proof::sha256_hex(""));
}

TEST_F(FileOps, StatRefusals) {
  EXPECT_OP_ERR(stat_op(c(), "missing"), "not_found");
  EXPECT_OP_ERR(stat_op(c(), "a//b"), "invalid_args");
  TempDir outside;
  write_file(outside.path() / "secret", "s");
  fs::create_symlink(outside.path() / "secret", home() / "link");
  fs::create_symlink(outside.path(), home() / "dirlink");
  EXPECT_OP_ERR(stat_op(c(), "link", true), "forbidden");
  EXPECT_OP_ERR(stat_op(c(), "dirlink/secret", true), "forbidden");
  ASSERT_EQ(::mkfifo((home() / "fifo").c_str(), 0600), 0);
  EXPECT_OP_ERR(stat_op(c(), "fifo", true), "forbidden");
}

// ---------------------------------------------------------------------------------------
// remove

TEST_F(FileOps, RemoveFilesAndDirectories) {
  ASSERT_TRUE(upload(c(), "f", "x").ok);
  auto rf = remove_op(c(), "f");
  ASSERT_TRUE(rf.ok) << rf.message;
  EXPECT_STREQ(rf.result()["path"].GetString(), "f");
  EXPECT_EQ(rf.result()["removed"].GetUint64(), 1u);
  EXPECT_FALSE(fs::exists(home() / "f"));

  ASSERT_TRUE(mkdir_op(c(), "empty").ok);
  auto re = remove_op(c(), "empty");
  ASSERT_TRUE(re.ok);
  EXPECT_EQ(re.result()["removed"].GetUint64(), 1u);

  ASSERT_TRUE(upload(c(), "t/a", "1").ok);
  ASSERT_TRUE(upload(c(), "t/b/c", "2").ok);
  ASSERT_TRUE(upload(c(), "t/b/d/e", "3").ok);
  ASSERT_TRUE(upload(c(), "keep", "k").ok);
  EXPECT_OP_ERR(remove_op(c(), "t"), "conflict");
  EXPECT_TRUE(fs::exists(home() / "t/b/d/e"));
  auto rt = remove_op(c(), "t", true);
  ASSERT_TRUE(rt.ok) << rt.message;
  EXPECT_EQ(rt.result()["removed"].GetUint64(), 6u);  // t, a, b, c, d (t/b/d), e
  EXPECT_EQ(tree(home()), std::vector<std::string>{"keep"});

  EXPECT_OP_ERR(remove_op(c(), "missing"), "not_found");
  EXPECT_OP_ERR(remove_op(c(), "keep/under"), "conflict");
  EXPECT_OP_ERR(remove_op(c(), ""), "invalid_args");
  EXPECT_OP_ERR(remove_op(c(), "", true), "invalid_args");
  EXPECT_OP_ERR(call_op(c(), "remove", "{}"), "invalid_args");
  EXPECT_OP_ERR(call_op(c(), "remove", R"({"recursive":true})"), "invalid_args");
  EXPECT_OP_ERR(remove_op(c(), "../" + user_), "invalid_args");
  EXPECT_TRUE(fs::is_directory(home()));
}

// Symlinks and special files planted in the tree go as entries; what they point to stays.
TEST_F(FileOps, RemoveNeverFollowsPlantedSymlinks) {
  TempDir outside;
  fs::create_directories(outside.path() / "dir");
  write_file(outside.path() / "dir/precious", "p");
  write_file(outside.path() / "file", "f");
  ASSERT_TRUE(upload(c(), "t/inner/x", "x").ok);
  fs::create_symlink(outside.path() / "dir", home() / "t/dirlink");
  fs::create_symlink(outside.path() / "dir", home() / "t/inner/dirlink2");
  fs::create_symlink(outside.path() / "file", home() / "t/filelink");
  fs::create_symlink(outside.path() / "dir", home() / "toplink");
  ASSERT_EQ(::mkfifo((home() / "t/fifo").c_str(), 0600), 0);

  // Through a symlink: refused.
  EXPECT_OP_ERR(remove_op(c(), "toplink/precious"), "forbidden");
  EXPECT_OP_ERR(remove_op(c(), "t/dirlink/precious", true), "forbidden");
  // The symlink itself: removed, not followed.
  auto one = remove_op(c(), "toplink", true);
  ASSERT_TRUE(one.ok) << one.message;
  EXPECT_EQ(one.result()["removed"].GetUint64(), 1u);
  EXPECT_FALSE(fs::exists(fs::symlink_status(home() / "toplink")));

  auto all = remove_op(c(), "t", true);
  ASSERT_TRUE(all.ok) << all.message;
  // t, inner, x, dirlink, dirlink2, filelink, fifo
  EXPECT_EQ(all.result()["removed"].GetUint64(), 7u);
  EXPECT_FALSE(fs::exists(fs::symlink_status(home() / "t")));
  EXPECT_EQ(read_file(outside.path() / "dir/precious"), "p");
  EXPECT_EQ(read_file(outside.path() / "file"), "f");
}

// Sets or clears the immutable attribute (chattr +i): even root cannot unlink such a
// file, which gives a real failure part-way through a recursive remove.
bool set_immutable(const fs::path& p, bool on) {
  int fd = ::open(p.c_str(), O_RDONLY | O_NONBLOCK);
  if (fd < 0) return false;
  int flags = 0;
  bool ok = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
  if (ok) {
    flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
    ok = ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
  }
  ::close(fd);
  return ok;
}

// A recursive remove that fails part-way answers the failure's code and says how much it
// had removed; the rest, the failing file included, is still there.
TEST_F(FileOps, RemoveThatFailsPartWaySaysWhatItRemoved) {
  constexpr int kFiles = 100;
  fs::create_directories(home() / "t");
  for (int i = 0; i < kFiles; ++i) write_file(home() / "t" / numbered("f", i), "x");
  write_file(home() / "t/stuck", "s");
  if (!set_immutable(home() / "t/stuck", true)) {
    GTEST_SKIP() << "cannot set the immutable attribute here (needs CAP_LINUX_IMMUTABLE)";
  }
  auto removed = remove_op(c(), "t", true);
  set_immutable(home() / "t/stuck", false);
  EXPECT_OP_ERR(removed, "forbidden");
  EXPECT_TRUE(fs::exists(home() / "t/stuck"));
  int left = 0;
  for (int i = 0; i < kFiles; ++i) left += fs::exists(home() / "t" / numbered("f", i)) ? 1 : 0;
  const int gone = kFiles - left;
  if (gone > 0) {
    EXPECT_NE(removed.message.find("; " + std::to_string(gone) +
                                   " entries under t were removed before the failure"),
              std::string::npos)
        << removed.message;
  } else {
    EXPECT_EQ(removed.message.find("removed before"), std::string::npos) << removed.message;
  }
  EXPECT_EQ(removed.message.find(server_->storage_dir().string()), std::string::npos);
  // Once the file can go, the same request finishes the job.
  auto rest = remove_op(c(), "t", true);
  ASSERT_TRUE(rest.ok) << rest.message;
  EXPECT_EQ(rest.result()["removed"].GetUint64(), static_cast<std::uint64_t>(left + 2));
}

std::size_t entries_below(const fs::path& dir) {
  std::size_t n = 0;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::end(it); ++it) ++n;
  return n;
}

// An I/O error part-way (an unlink fails with EIO, through the fault shim) is
// `unavailable`, and the message counts what had gone; a retry finishes the job.
TEST(RemoveFaults, AnIoErrorPartWayIsUnavailableAndSaysWhatWasRemoved) {
  TempDir work;
  const fs::path control = work.path() / "control";
  const fs::path log = work.path() / "log";
  ServerOptions o;
  o.ops_json = ops_json();
  o.env = {{"LD_PRELOAD", OPS_FAULT_SHIM},
           {"OPS_FAULT_CONTROL", control.string()},
           {"OPS_FAULT_LOG", log.string()}};
  const char* asan = std::getenv("ASAN_OPTIONS");
  o.env.emplace_back("ASAN_OPTIONS", std::string(asan ? asan : "") + ":verify_asan_link_order=0");
  ServerProcess server(o);
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  const fs::path top = server.storage_dir() / "admin" / "t";
  fs::create_directories(top / "sub");
  for (int i = 0; i < 10; ++i) write_file(top / numbered("f", i), "x");
  for (int i = 0; i < 3; ++i) write_file(top / "sub" / numbered("g", i), "y");
  ASSERT_EQ(entries_below(top), 14u);

  // The 1st unlink call is remove's rmdir of "t" itself (refused: not empty), then three
  // entries go, then the 5th call fails.
  write_file(control, "unlink:5:EIO");
  auto failed = remove_op(*c, "t", true);
  fs::remove(control);
  EXPECT_OP_ERR(failed, "unavailable");
  EXPECT_NE(failed.message.find("; 3 entries under t were removed before the failure"),
            std::string::npos)
      << failed.message;
  EXPECT_EQ(read_file(log), "unlink 5 EIO\n");
  EXPECT_EQ(entries_below(top), 11u);

  auto rest = remove_op(*c, "t", true);
  ASSERT_TRUE(rest.ok) << rest.message;
  EXPECT_EQ(rest.result()["removed"].GetUint64(), 12u);
  EXPECT_FALSE(fs::exists(top));
}

// While a recursive remove runs, another thread keeps replacing directories of the tree
// with symlinks to an outside directory. Whatever it meets, the remove never leaves the
// tree: the outside files all survive.
TEST_F(FileOps, RemoveWhileDirectoriesAreSwappedForSymlinks) {
  TempDir outside;
  for (int i = 0; i < 50; ++i) write_file(outside.path() / numbered("o", i), "o");
  for (int round = 0; round < 3; ++round) {
    const fs::path top = home() / "t";
    for (int i = 0; i < 60; ++i) {
      fs::path d = top / numbered("d", i);
      fs::create_directories(d / "sub");
      for (int j = 0; j < 10; ++j) write_file(d / "sub" / numbered("f", j), "x");
    }
    std::atomic<bool> stop{false};
    std::thread swapper([&] {
      int n = 0;
      while (!stop.load()) {
        std::error_code ec;
        fs::path d = top / numbered("d", n % 60) / "sub";
        fs::path aside = top / numbered("aside", n);
        fs::rename(d, aside, ec);
        if (!ec) fs::create_symlink(outside.path(), d, ec);
        ++n;
      }
    });
    auto removed = remove_op(c(), "t", true);
    stop = true;
    swapper.join();
    // The swapper may add entries behind the walk (conflict) or lose its race; either
    // way nothing outside is touched. Clean up what is left for the next round.
    if (!removed.ok) {
      EXPECT_TRUE(removed.code == "conflict" || removed.code == "not_found") << removed.message;
      auto rest = remove_op(c(), "t", true);
      EXPECT_TRUE(rest.ok || rest.code == "not_found") << rest.message;
    }
    EXPECT_FALSE(fs::exists(fs::symlink_status(top)));
    std::size_t survivors = 0;
    for (const auto& e : fs::directory_iterator(outside.path())) {
      (void)e;
      ++survivors;
    }
    EXPECT_EQ(survivors, 50u);
  }
}

// A chain 2,000 directories deep (planted; deeper than §5 paths reach) is removed with
// the server's descriptors staying few.
TEST_F(FileOps, DeepTreeIsRemovedWithBoundedDescriptors) {
  constexpr int kDepth = 2000;
  ASSERT_TRUE(mkdir_op(c(), "deep").ok);
  {
    int fd = ::open((home() / "deep").c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(fd, 0);
    for (int i = 0; i < kDepth; ++i) {
      ASSERT_EQ(::mkdirat(fd, "dd", 0750), 0);
      int f = ::openat(fd, "file", O_CREAT | O_WRONLY, 0640);
      ASSERT_GE(f, 0);
      ::close(f);
      int next = ::openat(fd, "dd", O_RDONLY | O_DIRECTORY);
      ::close(fd);
      ASSERT_GE(next, 0);
      fd = next;
    }
    ::close(fd);
  }
  const std::size_t before = server_->open_fds();
  std::atomic<bool> done{false};
  std::atomic<std::size_t> peak{before};
  std::thread sampler([&] {
    while (!done.load()) {
      std::size_t now = server_->open_fds();
      if (now > peak.load()) peak = now;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  auto removed = remove_op(c(), "deep", true);
  done = true;
  sampler.join();
  ASSERT_TRUE(removed.ok) << removed.message;
  // deep itself, kDepth directories and kDepth files.
  EXPECT_EQ(removed.result()["removed"].GetUint64(), 2u * kDepth + 1);
  EXPECT_FALSE(fs::exists(home() / "deep"));
  EXPECT_LT(peak.load(), before + 40) << "descriptors grew with the depth";
}

// ---------------------------------------------------------------------------------------
// move

TEST_F(FileOps, MoveRenamesAndCreatesParents) {
  ASSERT_TRUE(upload(c(), "a.txt", "A").ok);
  auto moved = move_op(c(), "a.txt", "x/y/b.txt");
  ASSERT_TRUE(moved.ok) << moved.message;
  EXPECT_STREQ(moved.result()["from"].GetString(), "a.txt");
  EXPECT_STREQ(moved.result()["to"].GetString(), "x/y/b.txt");
  EXPECT_FALSE(fs::exists(home() / "a.txt"));
  EXPECT_EQ(read_file(home() / "x/y/b.txt"), "A");

  ASSERT_TRUE(upload(c(), "dir/inner", "I").ok);
  ASSERT_TRUE(move_op(c(), "dir", "x/dir2").ok);
  EXPECT_EQ(read_file(home() / "x/dir2/inner"), "I");

  // from == to: nothing changes.
  auto same = move_op(c(), "x/dir2", "x/dir2");
  ASSERT_TRUE(same.ok) << same.message;
  EXPECT_EQ(read_file(home() / "x/dir2/inner"), "I");
  EXPECT_OP_ERR(move_op(c(), "nothing", "nothing"), "not_found");
  EXPECT_OP_ERR(move_op(c(), "nothing", "other"), "not_found");
  EXPECT_FALSE(fs::exists(home() / "other"));
}

TEST_F(FileOps, MoveOverwriteRules) {
  ASSERT_TRUE(upload(c(), "f1", "one").ok);
  ASSERT_TRUE(upload(c(), "f2", "two").ok);
  ASSERT_TRUE(upload(c(), "d1/x", "x").ok);
  ASSERT_TRUE(upload(c(), "d2/y", "y").ok);
  ASSERT_TRUE(mkdir_op(c(), "empty").ok);

  EXPECT_OP_ERR(move_op(c(), "f1", "f2"), "already_exists");
  EXPECT_OP_ERR(move_op(c(), "f1", "d1"), "already_exists");
  EXPECT_OP_ERR(move_op(c(), "d1", "d2"), "already_exists");
  EXPECT_OP_ERR(move_op(c(), "d1", "empty"), "already_exists");
  EXPECT_OP_ERR(move_op(c(), "d1", "f1"), "already_exists");
  EXPECT_EQ(read_file(home() / "f2"), "two");

  EXPECT_OP_ERR(move_op(c(), "f1", "d1", true), "conflict");
  EXPECT_OP_ERR(move_op(c(), "f1", "empty", true), "conflict");
  EXPECT_OP_ERR(move_op(c(), "d1", "d2", true), "conflict");
  EXPECT_OP_ERR(move_op(c(), "d1", "empty", true), "conflict");
  EXPECT_OP_ERR(move_op(c(), "d1", "f1", true), "conflict");
  EXPECT_TRUE(fs::exists(home() / "empty"));
  EXPECT_EQ(read_file(home() / "d2/y"), "y");

  auto replaced = move_op(c(), "f1", "f2", true);
  ASSERT_TRUE(replaced.ok) << replaced.message;
  EXPECT_EQ(read_file(home() / "f2"), "one");
  EXPECT_FALSE(fs::exists(home() / "f1"));
}

TEST_F(FileOps, MoveRefusals) {
  ASSERT_TRUE(upload(c(), "d/sub/f", "x").ok);
  EXPECT_OP_ERR(move_op(c(), "d", "d/sub/inside"), "invalid_args");
  EXPECT_OP_ERR(move_op(c(), "d", "d/new"), "invalid_args");
  EXPECT_OP_ERR(move_op(c(), "d/sub/f", "d/sub/f/g"), "conflict");
  EXPECT_OP_ERR(move_op(c(), "d/sub/f", "d/sub/f/g/h"), "conflict");
  EXPECT_FALSE(fs::exists(home() / "d/new"));
  EXPECT_OP_ERR(move_op(c(), "", "x"), "invalid_args");
  EXPECT_OP_ERR(move_op(c(), "d", ""), "invalid_args");
  EXPECT_OP_ERR(move_op(c(), "d", "../x"), "invalid_args");
  EXPECT_OP_ERR(call_op(c(), "move", R"({"from":"d"})"), "invalid_args");
  ASSERT_TRUE(upload(c(), "plain", "p").ok);
  EXPECT_OP_ERR(move_op(c(), "d", "plain/d"), "conflict");
  // "d" and "d2" share a prefix but "d2" is not below "d".
  ASSERT_TRUE(move_op(c(), "d", "d2").ok);
  // Symlinks are neither moved nor followed.
  TempDir outside;
  fs::create_symlink(outside.path(), home() / "link");
  EXPECT_OP_ERR(move_op(c(), "link", "moved"), "forbidden");
  EXPECT_OP_ERR(move_op(c(), "d2", "link/d2"), "forbidden");
  EXPECT_OP_ERR(move_op(c(), "plain", "link", true), "conflict");
  EXPECT_TRUE(fs::is_empty(outside.path()));
  EXPECT_TRUE(fs::is_symlink(home() / "link"));
}

// Of concurrent moves of different files onto one new path, exactly one succeeds.
TEST_F(FileOps, ConcurrentMovesOntoOneTargetExactlyOneWins) {
  constexpr int kMovers = 6;
  std::vector<std::unique_ptr<client::Client>> clients;
  for (int i = 0; i < kMovers; ++i) {
    clients.push_back(server_->connect(user_, key_));
    ASSERT_TRUE(clients.back());
  }
  for (int round = 0; round < 5; ++round) {
    const std::string target = numbered("target", round);
    for (int i = 0; i < kMovers; ++i) {
      ASSERT_TRUE(upload(c(), numbered("src", i), numbered("mover", i)).ok);
    }
    std::atomic<int> wins{0}, exists{0};
    std::atomic<int> winner{-1};
    std::vector<std::thread> threads;
    for (int i = 0; i < kMovers; ++i) {
      threads.emplace_back([&, i] {
        auto r = move_op(*clients[i], numbered("src", i), target);
        if (r.ok) {
          ++wins;
          winner = i;
        } else if (r.code == "already_exists") {
          ++exists;
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(wins.load(), 1);
    EXPECT_EQ(exists.load(), kMovers - 1);
    ASSERT_GE(winner.load(), 0);
    EXPECT_EQ(read_file(home() / target), numbered("mover", winner.load()));
    for (int i = 0; i < kMovers; ++i) {
      EXPECT_EQ(fs::exists(home() / numbered("src", i)), i != winner.load());
      std::error_code ec;
      fs::remove(home() / numbered("src", i), ec);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Naughty names (the Big List of Naughty Strings) survive mkdir, move and stat.

std::vector<std::string> naughty_names() {
  std::vector<std::string> out;
  std::ifstream in(std::string(OPS_CORPORA_DIR) + "/blns/blns.txt", std::ios::binary);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    out.push_back(line);
  }
  // Also when the corpus is not on this machine.
  for (const char* s :
       {"\xc2\xa0", "ｔｅｓｔ", "😍", "' OR 1=1 --", "<script>alert(1)</script>", "${HOME}",
        "$(touch x)", "nul", "CON", "...", " ", "\\", "a\"b", "\xe2\x80\xae",
        "\xef\xbb\xbf"
        "bom",
        "%00",
        "\xf0\x9f\x91\xa9\xe2\x80\x8d"
        "\xf0\x9f\x92\xbb"}) {
    out.emplace_back(s);
  }
  std::vector<std::string> valid;
  std::set<std::string> seen;
  for (const auto& s : out) {
    if (s.find('/') != std::string::npos || !sdk::validate_path(s).ok()) continue;
    if (seen.insert(s).second) valid.push_back(s);
  }
  return valid;
}

TEST_F(FileOps, NaughtyNamesSurviveMkdirMoveAndStat) {
  const auto names = naughty_names();
  ASSERT_GT(names.size(), 10u);
  std::size_t i = 0;
  for (const auto& name : names) {
    SCOPED_TRACE(name);
    auto made = mkdir_op(c(), "m/" + name);
    ASSERT_TRUE(made.ok) << made.message;
    EXPECT_EQ(std::string(made.result()["path"].GetString()), "m/" + name);
    ASSERT_TRUE(fs::is_directory(home() / "m" / name));
    const std::string file = numbered("f", i++);
    ASSERT_TRUE(upload(c(), file, name).ok);
    auto moved = move_op(c(), file, "m/" + name + "/" + name);
    ASSERT_TRUE(moved.ok) << moved.message;
    EXPECT_EQ(read_file(home() / "m" / name / name), name);
    auto st = stat_op(c(), "m/" + name + "/" + name, true);
    ASSERT_TRUE(st.ok) << st.message;
    EXPECT_EQ(std::string(st.result()["path"].GetString()), "m/" + name + "/" + name);
    EXPECT_EQ(st.result()["size"].GetUint64(), name.size());
    EXPECT_EQ(std::string(st.result()["sha256"].GetString()), proof::sha256_hex(name));
  }
  auto gone = remove_op(c(), "m", true);
  ASSERT_TRUE(gone.ok) << gone.message;
  EXPECT_EQ(gone.result()["removed"].GetUint64(), 2 * names.size() + 1);
}

// ---------------------------------------------------------------------------------------
// download sha256

TEST_F(FileOps, DownloadSha256IsOfTheWholeFile) {
  const std::string body = "0123456789abcdefghij";
  ASSERT_TRUE(upload(c(), "f", body).ok);
  auto part = download(c(), "f", R"(,"offset":5,"length":4,"sha256":true)");
  ASSERT_TRUE(part.ok) << part.message;
  EXPECT_EQ(part.payload, "5678");
  EXPECT_EQ(part.result()["length"].GetUint64(), 4u);
  EXPECT_EQ(std::string(part.result()["sha256"].GetString()), proof::sha256_hex(body));
  auto plain = download(c(), "f");
  ASSERT_TRUE(plain.ok);
  EXPECT_FALSE(plain.result().HasMember("sha256"));
  EXPECT_OP_ERR(download(c(), "f", R"(,"sha256":"yes")"), "invalid_args");
}

// ---------------------------------------------------------------------------------------
// list paging

// Follows `next` from page to page; fails the test on a malformed page.
std::vector<std::string> page_all(client::Client& c, const std::string& extra, int limit,
                                  std::size_t* pages = nullptr) {
  std::vector<std::string> all;
  std::string after;
  bool have_after = false;
  for (int guard = 0; guard < 100000; ++guard) {
    std::string args = "{\"limit\":" + std::to_string(limit) + extra;
    if (have_after) args += ",\"after\":" + jstr(after);
    args += "}";
    auto page = call_op(c, "list", args);
    EXPECT_TRUE(page.ok) << page.code << ": " << page.message;
    if (!page.ok) break;
    if (pages) ++*pages;
    auto names = names_of(page);
    auto r = page.result();
    all.insert(all.end(), names.begin(), names.end());
    if (!r["truncated"].GetBool()) {
      EXPECT_FALSE(r.HasMember("next"));
      break;
    }
    EXPECT_EQ(names.size(), static_cast<std::size_t>(limit));
    EXPECT_TRUE(r.HasMember("next"));
    if (!r.HasMember("next")) break;
    after = r["next"].GetString();
    EXPECT_EQ(after, names.back());
    have_after = true;
  }
  return all;
}

// Paging a directory of 100,000 entries (§10): every entry exactly once, in byte order,
// with the server's memory bounded by the page, not the directory. The figures are
// printed for docs/RELIABILITY.md.
TEST_F(FileOps, PagingOverAHundredThousandEntriesKeepsMemoryBounded) {
  const fs::path dir = home() / "huge";
  fs::create_directories(dir);
  std::vector<std::string> expected;
  expected.reserve(100000);
  for (int i = 0; i < 100000; ++i) {
    std::string name = numbered("entry-", (i * 7919) % 100000);
    int fd = ::open((dir / name).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ::close(fd);
    expected.push_back(std::move(name));
  }
  std::sort(expected.begin(), expected.end());
  const std::uint64_t rss_before = server_->rss_bytes();
  const auto started = std::chrono::steady_clock::now();
  std::size_t pages = 0;
  auto got = page_all(c(), ",\"path\":\"huge\"", 5000, &pages);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const std::uint64_t rss_after = server_->rss_bytes();
  EXPECT_EQ(got, expected);
  EXPECT_EQ(pages, 20u);
  const std::int64_t growth =
      static_cast<std::int64_t>(rss_after) - static_cast<std::int64_t>(rss_before);
  std::printf(
      "[ figures  ] 100,000 entries in %zu pages of 5,000: %.2f s, server RSS %.1f -> %.1f MiB "
      "(%+.1f MiB)\n",
      pages, seconds, rss_before / 1048576.0, rss_after / 1048576.0, growth / 1048576.0);
  EXPECT_LT(growth, 64 << 20) << "paging holds the whole directory in memory";
  fs::remove_all(dir);
}

TEST_F(FileOps, PagingReturnsEveryEntryOnceInByteOrder) {
  fs::create_directories(home() / "many");
  std::vector<std::string> expected;
  for (int i = 0; i < 3000; ++i) {
    std::string name = numbered("n", (i * 7919) % 3000);
    if (i % 3 == 0) name += ".txt";
    if (i % 500 == 0) name = "\xc3\xa9" + name;  // bytes above ASCII sort last
    write_file(home() / "many" / name, "");
    expected.push_back(name);
  }
  std::sort(expected.begin(), expected.end());
  std::size_t pages = 0;
  auto got = page_all(c(), ",\"path\":\"many\"", 257, &pages);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(pages, (3000 + 256) / 257);

  // `after` is a position, not necessarily an existing name.
  auto from_mid = call_op(c(), "list", R"({"path":"many","after":"n2999~","limit":3})");
  ASSERT_TRUE(from_mid.ok);
  auto first = std::upper_bound(expected.begin(), expected.end(), std::string("n2999~"));
  EXPECT_EQ(names_of(from_mid), std::vector<std::string>(first, first + 3));
  auto last =
      call_op(c(), "list", jobj({{"path", jstr("many")}, {"after", jstr(expected.back())}}));
  ASSERT_TRUE(last.ok);
  EXPECT_TRUE(names_of(last).empty());
  EXPECT_FALSE(last.result()["truncated"].GetBool());

  EXPECT_OP_ERR(call_op(c(), "list", R"({"limit":0})"), "invalid_args");
  EXPECT_OP_ERR(call_op(c(), "list", R"({"limit":-1})"), "invalid_args");
  EXPECT_OP_ERR(call_op(c(), "list", R"({"after":5})"), "invalid_args");
}

TEST_F(FileOps, RecursivePagingUsesWholeRelativePaths) {
  for (const char* p : {"a", "a.txt", "a/b", "a/b/c", "a/z", "a-", "b/x", "b/y/z", "c"}) {
    std::string path = p;
    if (path == "a" || path == "a/b" || path == "b" || path == "b/y") continue;
    ASSERT_TRUE(upload(c(), path, "x").ok);
  }
  ASSERT_TRUE(mkdir_op(c(), "a/empty").ok);
  auto full = call_op(c(), "list", R"({"recursive":true})");
  ASSERT_TRUE(full.ok);
  auto expected = names_of(full);
  EXPECT_EQ(expected, (std::vector<std::string>{"a", "a-", "a.txt", "a/b", "a/b/c", "a/empty",
                                                "a/z", "b", "b/x", "b/y", "b/y/z", "c"}));
  for (int limit : {1, 2, 3, 5}) {
    SCOPED_TRACE(limit);
    EXPECT_EQ(page_all(c(), ",\"recursive\":true", limit), expected);
  }
  auto inside = call_op(c(), "list", R"({"recursive":true,"after":"a/b"})");
  ASSERT_TRUE(inside.ok);
  EXPECT_EQ(names_of(inside),
            (std::vector<std::string>{"a/b/c", "a/empty", "a/z", "b", "b/x", "b/y", "b/y/z", "c"}));
}

TEST(ListPaging, LimitAboveTheMaximumIsTheMaximum) {
  ServerOptions options;
  options.ops_json = ops_json(R"({"max_list_entries": 10})");
  ServerProcess server(options);
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  fs::path home = server.storage_dir() / "admin";
  for (int i = 0; i < 25; ++i) write_file(home / numbered("f", 100 + i), "");
  auto big = call_op(*c, "list", R"({"limit":1000000})");
  ASSERT_TRUE(big.ok) << big.message;
  EXPECT_EQ(names_of(big).size(), 10u);
  EXPECT_TRUE(big.result()["truncated"].GetBool());
  EXPECT_STREQ(big.result()["next"].GetString(), "f109");
  // Without limit: the old behaviour, plus `next`.
  auto plain = call_op(*c, "list", "{}");
  ASSERT_TRUE(plain.ok);
  EXPECT_EQ(names_of(plain).size(), 10u);
  std::vector<std::string> all;
  for (int i = 0; i < 25; ++i) all.push_back(numbered("f", 100 + i));
  EXPECT_EQ(page_all(*c, "", 10), all);
}

// A page is also cut to fit one frame; `next` then continues where it stopped.
TEST(ListPaging, PagesCutByTheByteBudgetContinueExactly) {
  ServerProcess server([] {
    ServerOptions options;
    options.ops_json = ops_json();
    return options;
  }());
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  fs::path home = server.storage_dir() / "admin";
  std::vector<std::string> expected;
  for (int i = 0; i < 6000; ++i) {
    char prefix[16];
    std::snprintf(prefix, sizeof prefix, "%05d", i);
    expected.push_back(prefix + std::string(195, 'n'));
    write_file(home / expected.back(), "");
  }
  std::size_t pages = 0;
  std::vector<std::string> all;
  std::string after;
  while (true) {
    auto page = call_op(*c, "list", "{\"limit\":10000,\"after\":" + jstr(after) + "}");
    ASSERT_TRUE(page.ok) << page.message;
    ++pages;
    EXPECT_LT(page.result_json.size(), 1u << 20);
    auto names = names_of(page);
    all.insert(all.end(), names.begin(), names.end());
    if (!page.result()["truncated"].GetBool()) break;
    after = page.result()["next"].GetString();
  }
  EXPECT_EQ(all, expected);
  EXPECT_GT(pages, 1u);
}

}  // namespace
}  // namespace ops::test
