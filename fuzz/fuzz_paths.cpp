// Fuzz target: the path validator and the confined opens of the SDK (§5, §7). A fixed tree
// under a temporary root holds files, directories and symlinks pointing outside and
// inside; the input is a path (after one selector byte). Properties: validate_path accepts
// exactly the paths the rules allow (checked independently here), and any descriptor the
// open functions return refers to something inside the root: never the outside, never
// through a symlink.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "opserver/paths.hpp"

namespace {

namespace fs = std::filesystem;

void check(bool ok) {
  if (!ok) std::abort();
}

struct Tree {
  fs::path base;
  fs::path root;  // the "user directory"
  int root_fd = -1;

  Tree() {
    std::string templ = (fs::temp_directory_path() / "opsfuzz-paths-XXXXXX").string();
    check(::mkdtemp(templ.data()) != nullptr);
    base = fs::canonical(templ);
    root = base / "root";
    fs::create_directories(root / "dir" / "sub");
    fs::create_directories(base / "outside");
    std::ofstream(root / "file") << "inside";
    std::ofstream(root / "dir" / "f") << "inside";
    std::ofstream(base / "outside" / "secret") << "outside";
    fs::create_symlink(base / "outside", root / "out");
    fs::create_symlink("../outside/secret", root / "dir" / "up");
    fs::create_symlink("dir", root / "in");
    fs::create_symlink("/etc", root / "etc");
    root_fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    check(root_fd >= 0);
  }
};

Tree& tree() {
  static Tree* t = new Tree();
  return *t;
}

// The §5/§7 rules, written out independently of the SDK.
bool valid_by_rules(std::string_view p) {
  if (p.empty() || p.size() > 4096 || p.front() == '/') return false;
  std::size_t start = 0;
  while (true) {
    std::size_t slash = p.find('/', start);
    std::string_view c = p.substr(start, slash == std::string_view::npos ? p.npos : slash - start);
    if (c.empty() || c == "." || c == ".." || c.size() > 255) return false;
    for (unsigned char ch : c) {
      if (ch < 0x20 || ch == 0x7f) return false;
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return true;  // UTF-8 validity is checked on top, by the SDK only
}

// The descriptor's target lies inside the root (or is the root).
void check_inside(int fd) {
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  char buf[8192];
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  check(n > 0);
  std::string target(buf, static_cast<std::size_t>(n));
  const std::string root = tree().root.string();
  check(target == root || target.rfind(root + "/", 0) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  Tree& t = tree();
  const std::uint8_t selector = data[0];
  std::string_view path(reinterpret_cast<const char*>(data) + 1, size - 1);

  ops::Status valid = ops::sdk::validate_path(path);
  if (valid) check(valid_by_rules(path));
  if (!valid) check(valid.error().code == ops::ErrorCode::invalid_args);

  switch (selector % 4) {
    case 0:
    case 1: {
      int flags = selector % 4 == 0 ? O_RDONLY : O_RDONLY | O_DIRECTORY;
      auto fd = ops::sdk::open_beneath(t.root_fd, path, flags);
      if (fd) {
        check(valid.ok());
        check_inside(fd->get());
      }
      break;
    }
    case 2: {
      auto fd = ops::sdk::open_dir_beneath(t.root_fd, path, false);
      if (fd) check_inside(fd->get());
      break;
    }
    case 3: {
      auto pl = ops::sdk::open_parent_beneath(t.root_fd, path, false);
      if (pl) {
        check(valid.ok());
        check_inside(pl->parent.get());
        check(!pl->leaf.empty() && pl->leaf.find('/') == std::string::npos);
      }
      break;
    }
  }
  return 0;
}
