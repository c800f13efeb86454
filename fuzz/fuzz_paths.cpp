// Fuzz target: the path validator and the confined opens of the SDK (§5, §7), and the path
// handling of the §10 operations built on them. A fixed tree under a temporary root holds
// files, directories and symlinks pointing outside and inside; the input is a path (after
// one selector byte), or for a move two paths separated by a NUL byte (no valid path
// holds one). Properties: validate_path accepts exactly the paths the rules allow (checked
// independently here); any descriptor the open functions return refers to something
// inside the root: never the outside, never through a symlink; and the changing cases
// (mkdir with parents, move, recursive remove, the parents a failed operation made and
// takes back) never create, move or remove anything outside the root. Those cases put
// the tree back after each input.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "opserver/files.hpp"
#include "opserver/paths.hpp"
#include "opserver/publish.hpp"

namespace {

namespace fs = std::filesystem;

void check(bool ok) {
  if (!ok) std::abort();
}

struct Tree {
  fs::path base;
  fs::path root;  // the "user directory"
  int root_fd = -1;

  std::string pristine;  // listing() of the tree as built

  Tree() {
    std::string templ = (fs::temp_directory_path() / "opsfuzz-paths-XXXXXX").string();
    check(::mkdtemp(templ.data()) != nullptr);
    base = fs::canonical(templ);
    root = base / "root";
    fs::create_directories(base / "outside");
    std::ofstream(base / "outside" / "secret") << "outside";
    fs::create_directories(root);
    build();
    root_fd = ::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    check(root_fd >= 0);
    pristine = listing(base);
  }

  void build() {
    fs::create_directories(root / "dir" / "sub");
    std::ofstream(root / "file") << "inside";
    std::ofstream(root / "dir" / "f") << "inside";
    fs::create_symlink(base / "outside", root / "out");
    fs::create_symlink("../outside/secret", root / "dir" / "up");
    fs::create_symlink("dir", root / "in");
    fs::create_symlink("/etc", root / "etc");
  }

  // Every entry below `dir`, symlinks not followed, with its type.
  static std::string listing(const fs::path& dir) {
    std::vector<std::string> out;
    for (auto it = fs::recursive_directory_iterator(dir); it != fs::end(it); ++it) {
      out.push_back(it->path().lexically_relative(dir).string() + " " +
                    std::to_string(static_cast<int>(it->symlink_status().type())));
    }
    std::sort(out.begin(), out.end());
    std::string joined;
    for (const auto& e : out) joined += e + "\n";
    return joined;
  }

  // After a changing case: nothing outside the root changed, and the root is as built.
  void check_outside_and_restore() {
    const std::string now = listing(base);
    if (now == pristine) return;
    auto outside_of = [](const std::string& all) {
      std::string out;
      std::size_t pos = 0;
      while (pos < all.size()) {
        std::size_t end = all.find('\n', pos);
        std::string line = all.substr(pos, end - pos);
        if (line.rfind("root/", 0) != 0 && line.rfind("root ", 0) != 0) out += line + "\n";
        pos = end + 1;
      }
      return out;
    };
    check(outside_of(now) == outside_of(pristine));
    std::ifstream secret(base / "outside" / "secret");
    std::string content;
    std::getline(secret, content);
    check(content == "outside");
    for (const auto& e : fs::directory_iterator(root)) fs::remove_all(e.path());
    build();
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

// The changing cases never go through the symlink to /etc: a bug would then change the
// machine before the check could see it. (The read-only cases still try it.)
bool through_etc(std::string_view p) {
  return p == "etc" || p.rfind("etc/", 0) == 0;
}

std::string parent_of(std::string_view p) {
  std::size_t slash = p.rfind('/');
  return slash == std::string_view::npos ? std::string() : std::string(p.substr(0, slash));
}

// Removes the directory open as `dir` and everything in it, each entry relative to its
// directory's fd and never through a symlink (remove's walk, in small).
void empty_dir(int dir) {
  DIR* d = ::fdopendir(::dup(dir));
  check(d != nullptr);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  for (const std::string& n : names) {
    int sub = ::openat(dir, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub >= 0) {
      check_inside(sub);
      empty_dir(sub);
      ::close(sub);
      ::unlinkat(dir, n.c_str(), AT_REMOVEDIR);
    } else {
      ::unlinkat(dir, n.c_str(), 0);
    }
  }
}

// mkdir with parents: make_dirs_beneath; what it returns is inside.
void make_dirs(std::string_view path) {
  auto made = ops::sdk::make_dirs_beneath(tree().root_fd, path);
  if (made) {
    check(ops::sdk::validate_path(path).ok());
    check_inside(made->dir.get());
  }
}

// move: both parents opened beneath the root (the destination's missing parents made, and
// taken back if the rename fails, as the move plugin does), then an exclusive rename.
void move_pair(std::string_view from, std::string_view to) {
  const int root = tree().root_fd;
  auto src = ops::sdk::open_parent_beneath(root, from, false);
  if (!src) return;
  check_inside(src->parent.get());
  if (!ops::sdk::validate_path(to).ok()) return;
  const std::string to_dir = parent_of(to);
  std::vector<std::string> missing;
  if (!to_dir.empty()) {
    auto m = ops::sdk::missing_prefixes(root, to_dir);
    if (!m) return;
    missing = std::move(*m);
  }
  ops::sdk::CreatedDirs created(root, missing);
  auto dst = ops::sdk::open_parent_beneath(root, to, true);
  if (!dst) return;
  check_inside(dst->parent.get());
  if (ops::sdk::rename_noreplace(src->parent.get(), src->leaf.c_str(), dst->parent.get(),
                                 dst->leaf.c_str()) == 0) {
    created.keep();
  }
}

// recursive remove: the parent opened beneath the root, the entry removed relative to it,
// a directory emptied first without following anything.
void remove_tree(std::string_view path) {
  auto pl = ops::sdk::open_parent_beneath(tree().root_fd, path, false);
  if (!pl) return;
  check_inside(pl->parent.get());
  struct stat st {};
  if (::fstatat(pl->parent.get(), pl->leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (!S_ISDIR(st.st_mode)) {
    ::unlinkat(pl->parent.get(), pl->leaf.c_str(), 0);
    return;
  }
  int dir =
      ::openat(pl->parent.get(), pl->leaf.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir < 0) return;
  check_inside(dir);
  empty_dir(dir);
  ::close(dir);
  ::unlinkat(pl->parent.get(), pl->leaf.c_str(), AT_REMOVEDIR);
}

// The parents a failed operation made are taken back: after make_dirs_beneath and a
// CreatedDirs that is not kept, the tree is exactly as before.
void created_dirs_taken_back(std::string_view path) {
  const int root = tree().root_fd;
  const std::string before = Tree::listing(tree().base);
  {
    auto missing = ops::sdk::missing_prefixes(root, std::string(path));
    if (!missing) return;
    ops::sdk::CreatedDirs created(root, std::move(*missing));
    make_dirs(path);
  }
  check(Tree::listing(tree().base) == before);
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

  switch (selector % 8) {
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
    case 4:
    case 5:
    case 6:
    case 7: {
      const std::size_t nul = path.find('\0');
      std::string_view first = path.substr(0, nul);
      if (through_etc(first)) break;
      if (selector % 8 == 4) {
        make_dirs(path);
      } else if (selector % 8 == 5) {
        // "from\0to"; without a NUL, onto "moved" beside the root's entries.
        std::string_view second = nul == std::string_view::npos ? "moved" : path.substr(nul + 1);
        if (through_etc(second)) break;
        move_pair(first, second);
      } else if (selector % 8 == 6) {
        remove_tree(path);
      } else {
        created_dirs_taken_back(path);
      }
      t.check_outside_and_restore();
      break;
    }
  }
  return 0;
}
