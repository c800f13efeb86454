// sdk/src/paths.cpp: the §5/§7 path rules at their boundaries, and confinement beneath a
// root directory against real symlinks, with openat2 and with the O_NOFOLLOW walk that
// replaces it where openat2 is missing (forced here with a seccomp filter).
#include "opserver/paths.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "syscall_failure.hpp"

namespace {

namespace fs = std::filesystem;
using ops::ErrorCode;
using ops::sdk::error_from_errno;
using ops::sdk::open_beneath;
using ops::sdk::open_dir_beneath;
using ops::sdk::open_parent_beneath;
using ops::sdk::validate_path;

std::string repeat(const std::string& s, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += s;
  return out;
}

// A path of exactly `bytes` bytes made of valid components (200-byte ones, then the rest).
std::string path_of_bytes(std::size_t bytes) {
  std::string out;
  while (bytes - out.size() > 255) out += std::string(200, 'x') + '/';
  out += std::string(bytes - out.size(), 'y');
  return out;
}

struct PathCase {
  std::string name;
  std::string path;
  bool valid;
};

std::vector<PathCase> path_cases() {
  const std::string four = "\xF0\x9F\x98\x80";  // U+1F600, 4 bytes
  return {
      {"single", "a", true},
      {"nested", "a/b/c.txt", true},
      {"dot_inside", "a.b", true},
      {"leading_dot", ".hidden", true},
      {"three_dots", "...", true},
      {"dotdot_prefix", "..a", true},
      {"dotdot_suffix", "a..", true},
      {"space_and_backslash", "a b\\c", true},
      {"utf8_two_byte", "caf\xC3\xA9", true},
      {"utf8_three_byte", "\xE6\x97\xA5\xE6\x9C\xAC/\xD1\x84", true},
      {"utf8_four_byte", four, true},
      {"c1_control_is_allowed", "\xC2\x80", true},  // §7 names only U+0000-U+001F, U+007F
      {"max_bmp", "\xEF\xBF\xBF", true},
      {"max_code_point", "\xF4\x8F\xBF\xBF", true},
      {"component_255", std::string(255, 'x'), true},
      {"component_255_multibyte", repeat(four, 63) + "abc", true},
      {"path_4096", path_of_bytes(4096), true},
      {"deep", repeat("a/", 2047) + "a", true},  // 4095 bytes

      {"empty", "", false},
      {"dot", ".", false},
      {"dotdot", "..", false},
      {"dot_component", "a/./b", false},
      {"dotdot_component", "a/../b", false},
      {"trailing_dotdot", "a/..", false},
      {"leading_dot_component", "./a", false},
      {"double_slash", "a//b", false},
      {"absolute", "/etc/passwd", false},
      {"slash_only", "/", false},
      {"trailing_slash", "a/", false},
      {"component_256", std::string(256, 'x'), false},
      {"component_256_multibyte", repeat(four, 64), false},
      {"inner_component_256", "a/" + std::string(256, 'x') + "/b", false},
      {"path_4097", path_of_bytes(4097), false},
      {"nul", std::string("a\0b", 3), false},
      {"nul_at_end", std::string("a\0", 2), false},
      {"soh", "a\x01", false},
      {"newline", "a\nb", false},
      {"tab", "a\tb", false},
      {"unit_separator", "\x1f", false},
      {"del", "a\x7f", false},
      {"escape", "\x1b[2J", false},
      {"byte_ff", "\xFF", false},
      {"lone_continuation", "\x80", false},
      {"overlong_slash_2", "\xC0\xAF", false},
      {"overlong_c1", "\xC1\xBF", false},
      {"overlong_3", "\xE0\x80\xAF", false},
      {"overlong_4", "\xF0\x80\x80\xAF", false},
      {"overlong_nul", "\xC0\x80", false},
      {"surrogate_low_end", "\xED\xA0\x80", false},
      {"surrogate_high_end", "\xED\xBF\xBF", false},
      {"above_max", "\xF4\x90\x80\x80", false},
      {"five_byte_form", "\xF8\x88\x80\x80\x80", false},
      {"truncated_two", "\xC3", false},
      {"truncated_three", "a\xE6\x97", false},
      {"truncated_four_then_ascii", "\xF0\x9F\x98z", false},
  };
}

class ValidatePath : public ::testing::TestWithParam<PathCase> {};

TEST_P(ValidatePath, FollowsTheRules) {
  const PathCase& c = GetParam();
  ops::Status s = validate_path(c.path);
  EXPECT_EQ(s.ok(), c.valid) << c.name << " (" << c.path.size() << " bytes)";
  if (!s.ok()) {
    EXPECT_EQ(s.error().code, ErrorCode::invalid_args);
    EXPECT_FALSE(s.error().message.empty());
  }
}

INSTANTIATE_TEST_SUITE_P(Table, ValidatePath, ::testing::ValuesIn(path_cases()),
                         [](const ::testing::TestParamInfo<PathCase>& info) {
                           return info.param.name;
                         });

TEST(PathHelpers, LengthHelpersAreExact) {
  EXPECT_EQ(path_of_bytes(4096).size(), 4096u);
  EXPECT_EQ(path_of_bytes(4097).size(), 4097u);
  EXPECT_EQ(repeat("\xF0\x9F\x98\x80", 64).size(), 256u);
}

TEST(ErrorFromErrno, MapsToProtocolCodes) {
  struct Row {
    int err;
    ErrorCode code;
  };
  const Row rows[] = {
      {ENOENT, ErrorCode::not_found},      {ENOTDIR, ErrorCode::conflict},
      {EISDIR, ErrorCode::conflict},       {ELOOP, ErrorCode::forbidden},
      {EXDEV, ErrorCode::forbidden},       {ENOSPC, ErrorCode::unavailable},
      {EACCES, ErrorCode::forbidden},      {ENAMETOOLONG, ErrorCode::invalid_args},
      {EEXIST, ErrorCode::already_exists}, {EIO, ErrorCode::internal},
  };
  for (const Row& row : rows) {
    ops::Error e = error_from_errno(row.err, "dir/file.txt");
    EXPECT_EQ(e.code, row.code) << "errno " << row.err;
  }
  EXPECT_NE(error_from_errno(ENOENT, "dir/file.txt").message.find("dir/file.txt"),
            std::string::npos);
  EXPECT_NE(error_from_errno(ELOOP, "x").message.find("symbolic link"), std::string::npos);
  EXPECT_EQ(error_from_errno(ENOSPC, "x").message, "no space left");
}

// A root (the "user directory") and, beside it, an outside directory that nothing may
// reach through the root:
//   root/file.txt, root/sub/inner.txt, root/sub/deeper/
//   root/link_dir -> <outside>   root/link_file -> <outside>/secret.txt
//   root/sub/up -> ..            root/rel_link -> file.txt
int run_without_openat2(const std::function<int()>& body, int err = ENOSYS);

class Beneath : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ops-paths-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_path_ = base_ / "root";
    outside_ = base_ / "outside";
    fs::create_directories(root_path_ / "sub" / "deeper");
    fs::create_directories(outside_);
    write(outside_ / "secret.txt", "secret");
    write(root_path_ / "file.txt", "hello");
    write(root_path_ / "sub" / "inner.txt", "inner");
    fs::create_directory_symlink(outside_, root_path_ / "link_dir");
    fs::create_symlink(outside_ / "secret.txt", root_path_ / "link_file");
    fs::create_directory_symlink("..", root_path_ / "sub" / "up");
    fs::create_symlink("file.txt", root_path_ / "rel_link");
    root_ = ::open(root_path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(root_, 0);
  }
  void TearDown() override {
    if (root_ >= 0) ::close(root_);
    std::error_code ec;
    fs::remove_all(base_, ec);
  }
  static void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }
  static std::string read_fd(int fd) {
    std::string out;
    char buf[256];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    return out;
  }
  std::vector<std::string> outside_names() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(outside_)) names.push_back(e.path().filename());
    return names;
  }

  // Every confinement check, as one function so it runs with openat2 and without.
  // Returns a description of the first failure, or "" when all pass.
  std::string confinement_failures() const {
    std::ostringstream bad;
    auto expect_code = [&](const char* what, const auto& result, ErrorCode code) {
      if (result.ok()) {
        bad << what << ": succeeded; ";
      } else if (result.error().code != code) {
        bad << what << ": " << ops::wire_name(result.error().code) << " (" << result.error().message
            << "); ";
      }
    };
    {
      auto f = open_beneath(root_, "file.txt", O_RDONLY);
      if (!f || read_fd(f->get()) != "hello") bad << "file.txt not readable; ";
    }
    {
      auto f = open_beneath(root_, "sub/inner.txt", O_RDONLY);
      if (!f || read_fd(f->get()) != "inner") bad << "sub/inner.txt not readable; ";
    }
    expect_code("link_file", open_beneath(root_, "link_file", O_RDONLY), ErrorCode::forbidden);
    expect_code("rel_link", open_beneath(root_, "rel_link", O_RDONLY), ErrorCode::forbidden);
    expect_code("link_dir/secret.txt", open_beneath(root_, "link_dir/secret.txt", O_RDONLY),
                ErrorCode::forbidden);
    expect_code("sub/up/file.txt", open_beneath(root_, "sub/up/file.txt", O_RDONLY),
                ErrorCode::forbidden);
    expect_code("dir link_dir", open_dir_beneath(root_, "link_dir", false), ErrorCode::forbidden);
    expect_code("dir sub/up", open_dir_beneath(root_, "sub/up", false), ErrorCode::forbidden);
    expect_code("create through link_dir",
                open_beneath(root_, "link_dir/new.txt", O_WRONLY | O_CREAT | O_EXCL, 0644),
                ErrorCode::forbidden);
    expect_code("create onto link_file",
                open_beneath(root_, "link_file", O_WRONLY | O_CREAT | O_TRUNC, 0644),
                ErrorCode::forbidden);
    expect_code("mkdir through link_dir", open_dir_beneath(root_, "link_dir/made/deep", true),
                ErrorCode::forbidden);
    expect_code("parent through link_dir", open_parent_beneath(root_, "link_dir/x", true),
                ErrorCode::forbidden);
    expect_code("file as dir", open_beneath(root_, "file.txt/x", O_RDONLY), ErrorCode::conflict);
    expect_code("dir of a file", open_dir_beneath(root_, "file.txt", false), ErrorCode::conflict);
    expect_code("mkdir under a file", open_dir_beneath(root_, "file.txt/x", true),
                ErrorCode::conflict);
    expect_code("missing", open_beneath(root_, "missing.txt", O_RDONLY), ErrorCode::not_found);
    expect_code("missing dir", open_dir_beneath(root_, "nope/deeper", false), ErrorCode::not_found);
    expect_code("invalid", open_beneath(root_, "../root/file.txt", O_RDONLY),
                ErrorCode::invalid_args);
    expect_code("absolute", open_beneath(root_, outside_.string() + "/secret.txt", O_RDONLY),
                ErrorCode::invalid_args);
    return bad.str();
  }

  fs::path base_, root_path_, outside_;
  int root_ = -1;
};

TEST_F(Beneath, ConfinesWithOpenat2) {
  EXPECT_EQ(confinement_failures(), "");
  EXPECT_TRUE(outside_names() == std::vector<std::string>{"secret.txt"});
  std::ifstream secret(outside_ / "secret.txt");
  std::string text((std::istreambuf_iterator<char>(secret)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "secret");
}

// Runs `body` in a child process in which openat2 fails with ENOSYS, as on kernels before
// 5.6, or with EPERM, as under older container seccomp profiles; returns the child's exit
// status.
int run_without_openat2(const std::function<int()>& body, int err) {
  return ops::test::run_with_syscall_failing(SYS_openat2, err, [&] {
    if (::syscall(SYS_openat2, AT_FDCWD, ".", nullptr, 0) != -1 || errno != err) return 102;
    return body();
  });
}

TEST_F(Beneath, FallsBackWhenSeccompAnswersEperm) {
  int rc = run_without_openat2(
      [&] {
        std::string failures = confinement_failures();
        if (!failures.empty()) {
          std::fprintf(stderr, "walk (EPERM): %s\n", failures.c_str());
          return 1;
        }
        return 0;
      },
      EPERM);
  EXPECT_EQ(rc, 0);
}

TEST_F(Beneath, ConfinesWithTheComponentWalk) {
  int rc = run_without_openat2([&] {
    std::string failures = confinement_failures();
    if (!failures.empty()) {
      std::fprintf(stderr, "walk: %s\n", failures.c_str());
      return 1;
    }
    auto made = open_dir_beneath(root_, "w1/w2/w3", true);
    return made.ok() ? 0 : 2;
  });
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(fs::is_directory(root_path_ / "w1" / "w2" / "w3"));
  EXPECT_TRUE(outside_names() == std::vector<std::string>{"secret.txt"});
}

// "d" flips between a real directory and a symlink to the outside while we open through
// it: with either resolver nothing outside is ever opened or created. Returns 0 if so.
int swap_race(int root, const fs::path& root_path, const fs::path& outside) {
  fs::create_directories(root_path / "d");
  std::ofstream(root_path / "d" / "x") << "inside";
  std::ofstream(outside / "x") << "outside";
  fs::create_directory_symlink(outside, root_path / "swap");
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    while (!stop) ::renameat2(root, "d", root, "swap", RENAME_EXCHANGE);
  });
  int bad = 0, opened = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    auto f = open_beneath(root, "d/x", O_RDONLY);
    if (f.ok()) {
      ++opened;
      char buf[16] = {};
      if (::pread(f->get(), buf, sizeof buf - 1, 0) != 6 || std::string(buf) != "inside") ++bad;
    } else {
      ++refused;
    }
    auto created = open_beneath(root, "d/new" + std::to_string(i % 50), O_WRONLY | O_CREAT, 0600);
    auto dir = open_dir_beneath(root, "d/sub", true);
    (void)created;
    (void)dir;
  }
  stop = true;
  flipper.join();
  std::size_t outside_entries = 0;
  for (const auto& e : fs::directory_iterator(outside)) {
    (void)e;
    ++outside_entries;
  }
  // outside holds secret.txt and x only.
  if (outside_entries != 2) bad += 1000;
  if (opened == 0 || refused == 0) bad += 10000;  // the race did not happen
  return bad == 0 ? 0 : 1;
}

TEST_F(Beneath, SwapRaceWithOpenat2) {
  EXPECT_EQ(swap_race(root_, root_path_, outside_), 0);
}

TEST_F(Beneath, SwapRaceWithTheComponentWalk) {
  EXPECT_EQ(run_without_openat2([&] { return swap_race(root_, root_path_, outside_); }), 0);
  std::size_t outside_entries = std::distance(fs::directory_iterator(outside_), {});
  EXPECT_EQ(outside_entries, 2u);
}

TEST_F(Beneath, CreatesMissingDirectories) {
  auto made = open_dir_beneath(root_, "new/a/b", true);
  ASSERT_TRUE(made.ok()) << made.error().message;
  EXPECT_TRUE(fs::is_directory(root_path_ / "new" / "a" / "b"));
  // Existing directories are fine, as are concurrent creators (EEXIST tolerated).
  auto again = open_dir_beneath(root_, "new/a/b/c", true);
  ASSERT_TRUE(again.ok()) << again.error().message;
  auto existing = open_dir_beneath(root_, "sub", true);
  EXPECT_TRUE(existing.ok());
  // Without create_missing nothing is made.
  auto missing = open_dir_beneath(root_, "absent/x", false);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
  EXPECT_FALSE(fs::exists(root_path_ / "absent"));
}

// 4096 bytes is legal (§5) but one more than the kernel's PATH_MAX allows with the NUL.
TEST_F(Beneath, TheLongestLegalPathOpens) {
  const std::string longest = path_of_bytes(4096);
  auto made = open_dir_beneath(root_, longest, true);
  ASSERT_TRUE(made.ok()) << made.error().message;
  auto again = open_beneath(root_, longest, O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(again.ok()) << again.error().message;
  const std::string file_path = longest.substr(0, 4019) + "/" + std::string(76, 'f');
  ASSERT_EQ(file_path.size(), 4096u);
  auto file = open_beneath(root_, file_path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  EXPECT_TRUE(file.ok()) << file.error().message;
  auto parent = open_parent_beneath(root_, longest, false);
  ASSERT_TRUE(parent.ok()) << parent.error().message;
  EXPECT_EQ(parent->leaf, longest.substr(longest.rfind('/') + 1));
  int rc = run_without_openat2(
      [&] { return open_beneath(root_, longest, O_RDONLY | O_DIRECTORY).ok() ? 0 : 1; });
  EXPECT_EQ(rc, 0);
}

TEST_F(Beneath, MkdirStopsAtAFileInTheMiddle) {
  auto made = open_dir_beneath(root_, "sub/inner.txt/x/y", true);
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.error().code, ErrorCode::conflict);
  EXPECT_TRUE(fs::is_regular_file(root_path_ / "sub" / "inner.txt"));
}

TEST_F(Beneath, ParentAndLeaf) {
  auto top = open_parent_beneath(root_, "file.txt", false);
  ASSERT_TRUE(top.ok());
  EXPECT_EQ(top->leaf, "file.txt");
  struct stat a {
  }, b{};
  ASSERT_EQ(::fstat(top->parent.get(), &a), 0);
  ASSERT_EQ(::fstat(root_, &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_NE(top->parent.get(), root_);

  auto nested = open_parent_beneath(root_, "sub/deeper/x.bin", false);
  ASSERT_TRUE(nested.ok());
  EXPECT_EQ(nested->leaf, "x.bin");
  ASSERT_EQ(::fstat(nested->parent.get(), &a), 0);
  EXPECT_TRUE(S_ISDIR(a.st_mode));

  auto missing = open_parent_beneath(root_, "nope/x.bin", false);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
  EXPECT_NE(missing.error().message.find("nope/x.bin"), std::string::npos);

  auto created = open_parent_beneath(root_, "made/here/x.bin", true);
  ASSERT_TRUE(created.ok());
  EXPECT_TRUE(fs::is_directory(root_path_ / "made" / "here"));
  EXPECT_FALSE(fs::exists(root_path_ / "made" / "here" / "x.bin"));

  auto bad = open_parent_beneath(root_, "a//b", true);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::invalid_args);
}

// "" opens the root as a new open file description: reading it (readdir) must not move
// the offset of the caller's fd, which other calls may share.
TEST_F(Beneath, EmptyPathOpensTheRootIndependently) {
  auto dir = open_dir_beneath(root_, "", false);
  ASSERT_TRUE(dir.ok());
  EXPECT_NE(dir->get(), root_);
  DIR* d = ::fdopendir(dir->release());
  ASSERT_NE(d, nullptr);
  while (::readdir(d) != nullptr) {
  }
  ::closedir(d);
  EXPECT_EQ(::lseek(root_, 0, SEEK_CUR), 0);
  EXPECT_GE(::fcntl(root_, F_GETFD), 0);  // still open
}

TEST_F(Beneath, AddsCloexecAndNofollow) {
  auto f = open_beneath(root_, "file.txt", O_RDONLY);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(::fcntl(f->get(), F_GETFD) & FD_CLOEXEC);
}

TEST(Fd, OwnsAndMoves) {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    ops::sdk::Fd a(raw);
    ops::sdk::Fd b(std::move(a));
    EXPECT_FALSE(a.valid());
    EXPECT_EQ(b.get(), raw);
    ops::sdk::Fd c;
    c = std::move(b);
    EXPECT_EQ(c.get(), raw);
    EXPECT_GE(::fcntl(raw, F_GETFD), 0);
  }
  EXPECT_EQ(::fcntl(raw, F_GETFD), -1);  // closed by the destructor
  EXPECT_EQ(errno, EBADF);
}

}  // namespace
