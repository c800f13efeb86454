// The four standard plugin .so files driven directly through a fake host (no server, no
// sockets), for what the real server cannot easily be made to do: a payload that stops
// at an exact byte, a filesystem without renameat2(RENAME_NOREPLACE) (forced with a
// seccomp filter, so the link(2) fallback is exercised), and every result byte for byte.
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <rapidjson/document.h>
#include <stdio.h>  // renameat2
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "opserver/plugin_abi.h"
#include "opserver/proof.hpp"
#include "opserver/testing/fake_host.hpp"
#include "syscall_failure.hpp"

namespace fs = std::filesystem;

namespace {

// The plugin's first operation (each standard plugin has one), through the SDK's fake host.
const ops_op_v1* load(const std::string& name) {
  std::string error;
  const ops_op_v1* op = ops::testing::load_operation(
      std::string(OPS_PLUGIN_DIR) + "/lib" + name + ".so", name, &error);
  if (op == nullptr) ADD_FAILURE() << error;
  return op;
}

class PluginsDirect : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ops-fake-host-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    fs::create_directories(base_ / "alice");
    fs::create_directories(base_ / ".ops-tmp");
    fs::create_directories(base_ / "outside");
    user_ = ::open((base_ / "alice").c_str(), O_RDONLY | O_DIRECTORY);
    scratch_ = ::open((base_ / ".ops-tmp").c_str(), O_RDONLY | O_DIRECTORY);
  }
  void TearDown() override {
    ::close(user_);
    ::close(scratch_);
    fs::remove_all(base_);
  }
  ops_call make() {
    ops_call c;
    c.user_dir = user_;
    c.scratch = scratch_;
    return c;
  }
  int run(const std::string& op, ops_call& c, const std::string& args) {
    const ops_op_v1* o = load(op);
    int rc = ops::testing::invoke(*o, c, args);
    return rc;
  }
  ops_call upload(const std::string& args, const std::string& payload, int* rc = nullptr) {
    ops_call c = make();
    c.payload = payload;
    int r = run("upload", c, args);
    if (rc) *rc = r;
    return c;
  }
  std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }
  bool scratch_empty() { return fs::is_empty(base_ / ".ops-tmp"); }

  fs::path base_;
  int user_ = -1, scratch_ = -1;
};

TEST_F(PluginsDirect, UploadBasics) {
  int rc;
  auto c = upload(R"({"path":"a/b/c.txt"})", "hello", &rc);
  EXPECT_EQ(rc, OPS_OK) << c.message;
  EXPECT_EQ(c.result, std::string(R"({"path":"a/b/c.txt","size":5,"sha256":")") +
                          ops::proof::sha256_hex("hello") + "\"}");
  EXPECT_EQ(read(base_ / "alice/a/b/c.txt"), "hello");
  EXPECT_TRUE(scratch_empty());

  c = upload(R"({"path":"a/b/c.txt"})", "again", &rc);
  EXPECT_EQ(rc, OPS_ALREADY_EXISTS);
  EXPECT_EQ(c.pos, 0u);  // refused before reading
  c = upload(R"({"path":"a/b/c.txt","overwrite":true})", "again", &rc);
  EXPECT_EQ(rc, OPS_OK) << c.message;
  EXPECT_EQ(read(base_ / "alice/a/b/c.txt"), "again");

  c = upload(R"({"path":"a/b"})", "x", &rc);
  EXPECT_EQ(rc, OPS_CONFLICT) << c.message;
  c = upload(R"({"path":"a/b","overwrite":true})", "x", &rc);
  EXPECT_EQ(rc, OPS_CONFLICT) << c.message;
  c = upload(R"({"path":"a/b/c.txt/d"})", "x", &rc);
  EXPECT_EQ(rc, OPS_CONFLICT) << c.message;
  c = upload(R"({"path":"a//b"})", "x", &rc);
  EXPECT_EQ(rc, OPS_INVALID_ARGS) << c.message;
  c = upload(R"({"path":"empty"})", "", &rc);
  EXPECT_EQ(rc, OPS_OK) << c.message;
  EXPECT_TRUE(fs::is_regular_file(base_ / "alice/empty"));
  EXPECT_TRUE(scratch_empty());
}

TEST_F(PluginsDirect, UploadChecksumAndVanish) {
  int rc;
  std::string good = ops::proof::sha256_hex("data");
  auto c = upload(R"({"path":"x/f","sha256":")" + std::string(64, '0') + "\"}", "data", &rc);
  EXPECT_EQ(rc, OPS_CHECKSUM_MISMATCH);
  EXPECT_FALSE(fs::exists(base_ / "alice/x"));  // no parent left behind either
  EXPECT_TRUE(scratch_empty());
  std::string upper = good;
  for (auto& ch : upper) ch = static_cast<char>(toupper(ch));
  c = upload(R"({"path":"x/f","sha256":")" + upper + "\"}", "data", &rc);
  EXPECT_EQ(rc, OPS_OK) << c.message;

  std::string big(3 << 20, 'z');
  for (std::int64_t at : {0L, 1L << 20, (3L << 20) - 1}) {
    ops_call v = make();
    v.payload = big;
    v.fail_at = at;
    rc = run("upload", v, R"({"path":"vanish/f"})");
    EXPECT_EQ(rc, OPS_UNAVAILABLE);
    EXPECT_FALSE(fs::exists(base_ / "alice/vanish"));
    EXPECT_TRUE(scratch_empty());
  }
}

TEST_F(PluginsDirect, UploadSymlinks) {
  fs::create_directory_symlink(base_ / "outside", base_ / "alice/ln");
  std::ofstream(base_ / "outside/t") << "keep";
  fs::create_symlink(base_ / "outside/t", base_ / "alice/lf");
  int rc;
  auto c = upload(R"({"path":"ln/new"})", "x", &rc);
  EXPECT_EQ(rc, OPS_FORBIDDEN) << c.message;
  c = upload(R"({"path":"lf","overwrite":true})", "x", &rc);
  EXPECT_EQ(rc, OPS_FORBIDDEN) << c.message;
  c = upload(R"({"path":"lf"})", "x", &rc);
  EXPECT_EQ(rc, OPS_FORBIDDEN) << c.message;
  EXPECT_EQ(read(base_ / "outside/t"), "keep");
  EXPECT_EQ(std::distance(fs::directory_iterator(base_ / "outside"), {}), 1);
}

TEST_F(PluginsDirect, ConcurrentCreateOneWins) {
  std::atomic<int> ok{0}, exists{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 20; ++i) {
    ts.emplace_back([&, i] {
      int rc;
      upload(R"({"path":"race/f"})", "body" + std::to_string(i), &rc);
      if (rc == OPS_OK) ++ok;
      if (rc == OPS_ALREADY_EXISTS) ++exists;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(exists, 19);
  EXPECT_TRUE(scratch_empty());
}

TEST_F(PluginsDirect, Download) {
  std::ofstream(base_ / "alice/f") << "0123456789";
  auto dl = [&](const std::string& args, int* rc) {
    ops_call c = make();
    *rc = run("download", c, args);
    return c;
  };
  int rc;
  auto c = dl(R"({"path":"f"})", &rc);
  EXPECT_EQ(rc, OPS_OK);
  EXPECT_EQ(c.result, R"({"path":"f","size":10,"offset":0,"length":10})");
  EXPECT_EQ(c.out, "0123456789");
  c = dl(R"({"path":"f","offset":3,"length":4})", &rc);
  EXPECT_EQ(c.out, "3456");
  c = dl(R"({"path":"f","offset":8,"length":100})", &rc);
  EXPECT_EQ(c.result, R"({"path":"f","size":10,"offset":8,"length":2})");
  c = dl(R"({"path":"f","offset":10})", &rc);
  EXPECT_EQ(rc, OPS_OK);
  EXPECT_EQ(c.result_payload, 0u);
  c = dl(R"({"path":"f","offset":11})", &rc);
  EXPECT_EQ(rc, OPS_INVALID_ARGS);
  fs::create_directory(base_ / "alice/d");
  c = dl(R"({"path":"d"})", &rc);
  EXPECT_EQ(rc, OPS_CONFLICT);
  c = dl(R"({"path":"nope"})", &rc);
  EXPECT_EQ(rc, OPS_NOT_FOUND);
  ::mkfifo((base_ / "alice/fifo").c_str(), 0644);
  c = dl(R"({"path":"fifo"})", &rc);
  EXPECT_EQ(rc, OPS_FORBIDDEN);
  fs::create_symlink(base_ / "alice/f", base_ / "alice/sl");
  c = dl(R"({"path":"sl"})", &rc);
  EXPECT_EQ(rc, OPS_FORBIDDEN);
}

TEST_F(PluginsDirect, List) {
  fs::create_directories(base_ / "alice/d/e");
  std::ofstream(base_ / "alice/b.txt") << "12";
  std::ofstream(base_ / "alice/d/e/f") << "123";
  std::ofstream(base_ / "alice/a.b") << "";
  fs::create_directory_symlink(base_ / "outside", base_ / "alice/link");
  std::ofstream(base_ / "alice/bad\xff") << "";
  ::mkfifo((base_ / "alice/fifo").c_str(), 0644);
  ops_call c = make();
  ASSERT_EQ(run("list", c, "{}"), OPS_OK) << c.message;
  rapidjson::Document d;
  d.Parse(c.result.c_str());
  ASSERT_TRUE(d.IsObject());
  ASSERT_EQ(d["entries"].Size(), 3u);
  EXPECT_STREQ(d["entries"][0]["name"].GetString(), "a.b");
  EXPECT_STREQ(d["entries"][1]["name"].GetString(), "b.txt");
  EXPECT_EQ(d["entries"][1]["size"].GetUint64(), 2u);
  EXPECT_STREQ(d["entries"][2]["type"].GetString(), "dir");
  EXPECT_FALSE(d["truncated"].GetBool());

  c = make();
  ASSERT_EQ(run("list", c, R"({"recursive":true})"), OPS_OK) << c.message;
  d.Parse(c.result.c_str());
  ASSERT_EQ(d["entries"].Size(), 5u);
  EXPECT_STREQ(d["entries"][4]["name"].GetString(), "d/e/f");

  c = make();
  c.settings = R"({"max_list_entries":2})";
  ASSERT_EQ(run("list", c, R"({"recursive":true})"), OPS_OK) << c.message;
  d.Parse(c.result.c_str());
  ASSERT_EQ(d["entries"].Size(), 2u);
  EXPECT_TRUE(d["truncated"].GetBool());
  EXPECT_STREQ(d["entries"][1]["name"].GetString(), "b.txt");

  c = make();
  EXPECT_EQ(run("list", c, R"({"path":"b.txt"})"), OPS_CONFLICT);
  c = make();
  EXPECT_EQ(run("list", c, R"({"path":"link"})"), OPS_FORBIDDEN);
  c = make();
  EXPECT_EQ(run("list", c, R"({"path":"nope"})"), OPS_NOT_FOUND);
  c = make();
  ASSERT_EQ(run("list", c, R"({"path":"d"})"), OPS_OK);
  EXPECT_EQ(c.result.substr(0, 35), R"({"path":"d","entries":[{"name":"e",)");
}

TEST_F(PluginsDirect, ListBigDirectoryIsCapped) {
  fs::create_directories(base_ / "alice/many");
  for (int i = 0; i < 5000; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "many/%05d-%s", 4999 - i, std::string(40, 'n').c_str());
    std::ofstream(base_ / "alice" / name);
  }
  ops_call c = make();
  c.settings = R"({"max_list_entries":1500})";
  ASSERT_EQ(run("list", c, R"({"recursive":true})"), OPS_OK);
  rapidjson::Document d;
  d.Parse(c.result.c_str());
  ASSERT_EQ(d["entries"].Size(), 1500u);
  EXPECT_STREQ(d["entries"][0]["name"].GetString(), "many");
  EXPECT_EQ(std::string(d["entries"][1]["name"].GetString()).substr(0, 10), "many/00000");
  EXPECT_EQ(std::string(d["entries"][1499]["name"].GetString()).substr(0, 10), "many/01498");
  EXPECT_TRUE(d["truncated"].GetBool());

  c = make();
  c.settings = R"({"max_list_bytes":10000})";
  ASSERT_EQ(run("list", c, R"({"path":"many"})"), OPS_OK);
  EXPECT_LE(c.result.size(), 10000u);
  d.Parse(c.result.c_str());
  ASSERT_TRUE(d.IsObject());
  EXPECT_TRUE(d["truncated"].GetBool());
  EXPECT_GT(d["entries"].Size(), 50u);
}

TEST_F(PluginsDirect, Register) {
  ops_call c = make();
  ASSERT_EQ(run("register", c, R"({"user":"bob"})"), OPS_OK);
  ASSERT_EQ(c.created.size(), 1u);
  EXPECT_EQ(c.created[0].second.size(), 64u);
  EXPECT_EQ(c.result, R"({"user":"bob","key":")" + c.created[0].second + "\"}");
  c = make();
  ASSERT_EQ(run("register", c, R"({"user":"bob","key":"s3cret \u00e9"})"), OPS_OK);
  EXPECT_EQ(c.created[0].second, "s3cret \xc3\xa9");
  c = make();
  EXPECT_EQ(run("register", c, R"({"user":"bob","key":"a\nb"})"), OPS_INVALID_ARGS);
  c = make();
  EXPECT_EQ(run("register", c, R"({"user":"Bob"})"), OPS_INVALID_ARGS);
  c = make();
  c.create_user_rc = OPS_ALREADY_EXISTS;
  EXPECT_EQ(run("register", c, R"({"user":"bob"})"), OPS_ALREADY_EXISTS);
}

using ops::test::run_without_rename_noreplace;

TEST_F(PluginsDirect, LinkFallbackStillLetsExactlyOneCreatorWin) {
  int rc = run_without_rename_noreplace([&] {
    std::atomic<int> ok{0}, exists{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 20; ++i) {
      ts.emplace_back([&, i] {
        int r;
        upload(R"({"path":"linked/f"})", "body" + std::to_string(i), &r);
        if (r == OPS_OK) ++ok;
        if (r == OPS_ALREADY_EXISTS) ++exists;
      });
    }
    for (auto& t : ts) t.join();
    if (ok != 1 || exists != 19) return 1;
    if (!scratch_empty()) return 2;  // the temporary name was unlinked after link()
    int r;
    upload(R"({"path":"linked/f","overwrite":true})", "replaced", &r);
    if (r != OPS_OK || read(base_ / "alice/linked/f") != "replaced") return 3;
    return 0;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(fs::hard_link_count(base_ / "alice/linked/f"), 1u);
}

// Runs `body` in a child process where syscall `nr` fails with `err` (for write: only on
// descriptors above 2, so the test's own output still works); returns the exit status.
int run_with_failing_syscall(long nr, int err, const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    const bool fd_filter = nr == SYS_write;
    std::vector<sock_filter> f = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<std::uint32_t>(nr), 0,
                 static_cast<unsigned char>(fd_filter ? 3 : 1)),
    };
    if (fd_filter) {
      f.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[0])));
      f.push_back(BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, 2, 0, 1));
    }
    f.push_back(BPF_STMT(BPF_RET | BPF_K,
                         SECCOMP_RET_ERRNO | (static_cast<std::uint32_t>(err) & SECCOMP_RET_DATA)));
    f.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    sock_fprog prog{static_cast<unsigned short>(f.size()), f.data()};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(100);
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) ::_exit(101);
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200;
}

// ENOSPC from fallocate (the early reservation) or from write, and EIO from fsync: the
// upload fails with the right code, no temporary file or new directory is left, and an
// existing file is untouched. A failed fsync is never reported as success (fsyncgate).
TEST_F(PluginsDirect, StorageFailuresLeaveNothingBehind) {
  std::ofstream(base_ / "alice/old") << "old";
  struct Case {
    const char* name;
    long nr;
    int err;
    int code;
  };
  for (const Case& k : {Case{"fallocate ENOSPC", SYS_fallocate, ENOSPC, OPS_UNAVAILABLE},
                        Case{"write ENOSPC", SYS_write, ENOSPC, OPS_UNAVAILABLE},
                        Case{"write EIO", SYS_write, EIO, OPS_INTERNAL},
                        Case{"fsync EIO", SYS_fsync, EIO, OPS_INTERNAL}}) {
    SCOPED_TRACE(k.name);
    int rc = run_with_failing_syscall(k.nr, k.err, [&] {
      const std::string body(3 << 20, 'b');
      int r1, r2;
      auto a = upload(R"({"path":"new/dir/f"})", body, &r1);
      auto b = upload(R"({"path":"old","overwrite":true})", body, &r2);
      if (r1 != k.code || r2 != k.code) {
        std::fprintf(stderr, "%s: got %d (%s) and %d (%s)\n", k.name, r1, a.message.c_str(), r2,
                     b.message.c_str());
        return 1;
      }
      if (k.err == ENOSPC && a.message != "no space left") return 2;
      return 0;
    });
    EXPECT_EQ(rc, 0);
    EXPECT_TRUE(scratch_empty());
    EXPECT_FALSE(fs::exists(base_ / "alice/new"));
    EXPECT_EQ(read(base_ / "alice/old"), "old");
  }
}

}  // namespace
