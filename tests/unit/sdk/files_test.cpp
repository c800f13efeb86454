// sdk/src/files.cpp and json_result.hpp: entry types as OPS/1 shows them, SHA-256 of an
// open file, directory fsync, the exclusive rename (and its fallbacks where the
// filesystem lacks RENAME_NOREPLACE, forced with a seccomp filter), durable mkdir -p.
#include "opserver/files.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "opserver/json_result.hpp"
#include "opserver/proof.hpp"
#include "syscall_failure.hpp"

namespace {

namespace fs = std::filesystem;
using ops::ErrorCode;

class Files : public ::testing::Test {
 public:
  static void write(const fs::path& p, const std::string& text) {
    std::ofstream(p, std::ios::binary) << text;
  }
  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ops-files-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_ = ::open(base_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(root_, 0);
  }
  void TearDown() override {
    ::close(root_);
    std::error_code ec;
    fs::remove_all(base_, ec);
  }
  struct stat lstat_of(const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return st;
  }

  fs::path base_;
  int root_ = -1;
};

TEST_F(Files, EntryInfoShowsOnlyFilesAndDirectories) {
  write(base_ / "f", "12345");
  fs::create_directory(base_ / "d");
  fs::create_symlink("f", base_ / "l");
  ASSERT_EQ(::mkfifo((base_ / "p").c_str(), 0600), 0);

  struct stat fst = lstat_of(base_ / "f");
  auto f = ops::sdk::entry_info(fst);
  ASSERT_TRUE(f);
  EXPECT_FALSE(f->dir);
  EXPECT_STREQ(f->type(), "file");
  EXPECT_EQ(f->size, 5u);
  EXPECT_EQ(f->mtime, static_cast<std::int64_t>(fst.st_mtim.tv_sec));

  auto d = ops::sdk::entry_info(lstat_of(base_ / "d"));
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->dir);
  EXPECT_STREQ(d->type(), "dir");
  EXPECT_EQ(d->size, 0u);

  EXPECT_FALSE(ops::sdk::entry_info(lstat_of(base_ / "l")));
  EXPECT_FALSE(ops::sdk::entry_info(lstat_of(base_ / "p")));
}

TEST_F(Files, Sha256OfFdHashesTheWholeFileAndLeavesTheOffset) {
  write(base_ / "abc", "abc");
  int fd = ::open((base_ / "abc").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::lseek(fd, 2, SEEK_SET), 2);
  auto h = ops::sdk::sha256_of_fd(fd, "abc");
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(*h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(::lseek(fd, 0, SEEK_CUR), 2);
  ::close(fd);

  write(base_ / "empty", "");
  fd = ::open((base_ / "empty").c_str(), O_RDONLY);
  auto e = ops::sdk::sha256_of_fd(fd, "empty");
  ASSERT_TRUE(e);
  EXPECT_EQ(*e, ops::proof::sha256_hex(""));
  ::close(fd);

  // Larger than the read chunk, with a length that is not a multiple of it.
  std::string big;
  for (int i = 0; big.size() < (std::size_t{3} << 20) + 17; ++i) big += std::to_string(i);
  write(base_ / "big", big);
  fd = ::open((base_ / "big").c_str(), O_RDONLY);
  auto b = ops::sdk::sha256_of_fd(fd, "big");
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, ops::proof::sha256_hex(big));
  ::close(fd);

  // A descriptor that cannot be read: an error naming the user's path.
  fd = ::open((base_ / "abc").c_str(), O_WRONLY);
  auto bad = ops::sdk::sha256_of_fd(fd, "abc");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("abc"), std::string::npos);
  EXPECT_EQ(bad.error().message.find(base_.string()), std::string::npos);
  ::close(fd);
}

TEST_F(Files, FsyncDir) {
  EXPECT_TRUE(ops::sdk::fsync_dir(root_, ""));
  auto bad = ops::sdk::fsync_dir(-1, "a/b");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::unavailable);
  EXPECT_NE(bad.error().message.find("a/b"), std::string::npos);
}

// The checks of one exclusive rename, run with and without RENAME_NOREPLACE. Returns the
// number of failed checks (so it can be an exit status from a child process).
int exercise_rename_noreplace(int root, const fs::path& base) {
  int failures = 0;
  auto check = [&](bool ok) { failures += ok ? 0 : 1; };
  Files::write(base / "a", "A");
  Files::write(base / "b", "B");
  fs::create_directories(base / "d1/inner");
  fs::create_directories(base / "d2");
  fs::create_directories(base / "empty");

  check(ops::sdk::rename_noreplace(root, "a", root, "b") == EEXIST);
  check(Files::read(base / "b") == "B" && Files::read(base / "a") == "A");
  check(ops::sdk::rename_noreplace(root, "a", root, "c") == 0);
  check(!fs::exists(base / "a") && Files::read(base / "c") == "A");

  check(ops::sdk::rename_noreplace(root, "d1", root, "empty") == EEXIST);
  check(ops::sdk::rename_noreplace(root, "d1", root, "b") == EEXIST);
  check(fs::is_directory(base / "d1/inner") && fs::is_directory(base / "empty"));
  check(ops::sdk::rename_noreplace(root, "d1", root, "d3") == 0);
  check(!fs::exists(base / "d1") && fs::is_directory(base / "d3/inner"));
  // Below itself: refused, and nothing (no placeholder) is left behind.
  check(ops::sdk::rename_noreplace(root, "d3", root, "d3/inner/x") == EINVAL);
  check(!fs::exists(base / "d3/inner/x") && fs::is_directory(base / "d3"));
  check(ops::sdk::rename_noreplace(root, "missing", root, "m2") == ENOENT);
  check(!fs::exists(base / "m2"));
  return failures;
}

TEST_F(Files, RenameNoreplace) {
  EXPECT_EQ(exercise_rename_noreplace(root_, base_), 0);
}

TEST_F(Files, RenameNoreplaceWhereTheFilesystemLacksIt) {
  for (int err : {EINVAL, ENOSYS}) {
    SCOPED_TRACE(err);
    fs::path sub = base_ / std::to_string(err);
    fs::create_directory(sub);
    int dir = ::open(sub.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(dir, 0);
    int rc = ops::test::run_with_syscall_failing(SYS_renameat2, err, [&] {
      if (::syscall(SYS_renameat2, dir, "x", dir, "y", 0) != -1 || errno != err) return 102;
      return exercise_rename_noreplace(dir, sub);
    });
    ::close(dir);
    EXPECT_EQ(rc, 0);
  }
}

TEST_F(Files, MakeDirsBeneath) {
  auto made = ops::sdk::make_dirs_beneath(root_, "a/b/c");
  ASSERT_TRUE(made) << made.error().message;
  EXPECT_TRUE(made->created);
  EXPECT_TRUE(made->dir.valid());
  EXPECT_TRUE(fs::is_directory(base_ / "a/b/c"));
  EXPECT_EQ(fs::status(base_ / "a/b").permissions() & fs::perms::all,
            fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec);

  auto again = ops::sdk::make_dirs_beneath(root_, "a/b/c");
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->created);
  auto parent = ops::sdk::make_dirs_beneath(root_, "a");
  ASSERT_TRUE(parent);
  EXPECT_FALSE(parent->created);

  write(base_ / "file", "f");
  auto file = ops::sdk::make_dirs_beneath(root_, "file/x");
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error().code, ErrorCode::conflict);
  EXPECT_FALSE(ops::sdk::make_dirs_beneath(root_, "file"));

  fs::path outside = base_.string() + "-outside";
  fs::create_directory(outside);
  fs::create_directory_symlink(outside, base_ / "link");
  auto link = ops::sdk::make_dirs_beneath(root_, "link/x");
  ASSERT_FALSE(link);
  EXPECT_EQ(link.error().code, ErrorCode::forbidden);
  EXPECT_TRUE(fs::is_empty(outside));
  fs::remove(outside);

  EXPECT_EQ(ops::sdk::make_dirs_beneath(root_, "").error().code, ErrorCode::invalid_args);
  EXPECT_EQ(ops::sdk::make_dirs_beneath(root_, "a/../x").error().code, ErrorCode::invalid_args);
}

TEST(JsonResult, BuildsOneObject) {
  std::string out = ops::sdk::JsonResult()
                        .str("path", "a\"b")
                        .u64("size", 18446744073709551615u)
                        .i64("mtime", -5)
                        .boolean("created", true)
                        .done();
  EXPECT_EQ(out, R"({"path":"a\"b","size":18446744073709551615,"mtime":-5,"created":true})");
}

TEST(JsonResult, ArgHelpers) {
  rapidjson::Document args;
  args.Parse(R"({"flag":true,"name":"n\u0000x","num":3})");
  EXPECT_TRUE(ops::sdk::arg_bool(args, "flag", false));
  EXPECT_FALSE(ops::sdk::arg_bool(args, "missing", false));
  EXPECT_TRUE(ops::sdk::arg_bool(args, "num", true));  // not a bool: the fallback
  EXPECT_EQ(ops::sdk::arg_string(args, "name"), std::string("n\0x", 3));
  EXPECT_EQ(ops::sdk::arg_string(args, "num", "dflt"), "dflt");
  EXPECT_EQ(ops::sdk::arg_string(args, "missing"), "");
}

}  // namespace

namespace {

TEST(Sha256, PiecesHashLikeTheWhole) {
  const std::string data = "The quick brown fox jumps over the lazy dog";
  for (std::size_t cut : {std::size_t{0}, std::size_t{1}, std::size_t{20}, data.size()}) {
    ops::proof::Sha256 sha;
    sha.update(data.data(), cut);
    sha.update(data.data() + cut, data.size() - cut);
    EXPECT_TRUE(sha.ok());
    EXPECT_EQ(sha.hex(), "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592");
  }
  ops::proof::Sha256 empty;
  EXPECT_EQ(empty.hex(), ops::proof::sha256_hex(""));
}

}  // namespace
