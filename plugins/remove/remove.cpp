// remove (OPS/1 §10): removes a file, an empty directory, or with `recursive` a whole tree.
//
// Decisions:
//  - `path` is required and never the user's root ("" is invalid_args). A symlink, fifo,
//    socket or device planted on disk is removed as an entry (unlinkat), never followed.
//    A symlink among the parents of `path` is refused (forbidden), as everywhere.
//  - A non-empty directory without `recursive` is `conflict`.
//  - `removed` counts every file, directory and other entry removed, the tree's top
//    included.
//  - The recursive walk is iterative. Each directory is opened relative to its parent's
//    fd with O_DIRECTORY | O_NOFOLLOW and each entry is removed with unlinkat relative to
//    the fd of the directory holding it, so no path is ever resolved through a name that
//    could be swapped for a symlink: a directory replaced by a symlink while the walk runs
//    is met as a symlink and unlinked as an entry, and the walk never leaves the tree.
//    (The walk follows directories, not names: a directory that the same user moves
//    elsewhere with `move` while the walk is inside it is still emptied. Nothing outside
//    the user's directory can be reached that way either.)
//  - Descriptors stay bounded whatever the depth: open directory streams are kept only
//    for the deepest kWindow levels below the top. A level whose stream was closed is
//    re-opened, when the walk climbs back to it, by walking down by name from the nearest
//    open ancestor (O_NOFOLLOW at every step), re-opening a whole window at once, so a
//    chain N deep costs O(N^2 / kWindow) opens. Memory is the names of the current chain.
//  - A failure part-way answers the failure's code (`unavailable` for an I/O error) and the
//    message says how many entries had been removed.
//  - A single file is renamed into this server's scratch directory, measured there and
//    unlinked, so the usage change is the size of exactly the file that left even when
//    an upload replaces it at the same moment (take_out_entry).
//  - The directory that held `path` is fsynced before the answer.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "opserver/files.hpp"
#include "opserver/json_result.hpp"
#include "opserver/paths.hpp"
#include "opserver/plugin.hpp"
#include "opserver/proof.hpp"
#include "opserver/publish.hpp"

namespace {

using ops::ErrorCode;
using ops::Status;
using ops::sdk::Call;
using ops::sdk::Fd;

constexpr const char* kSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "path": {"type": "string", "minLength": 1, "maxLength": 4096,
             "description": "the file or directory to remove, relative to your directory"},
    "recursive": {"type": "boolean", "default": false,
                  "description": "remove a non-empty directory with everything in it"}
  },
  "required": ["path"],
  "additionalProperties": false
})json";

// Open directory streams kept below the top of the tree.
constexpr std::size_t kWindow = 16;
// How often the walk re-reads a directory that gained entries while it was emptied.
constexpr std::size_t kMaxRescans = 1000;
constexpr int kMaxTopAttempts = 100;

struct DirCloser {
  void operator()(DIR* d) const noexcept { ::closedir(d); }
};
using DirStream = std::unique_ptr<DIR, DirCloser>;

int open_subdir(int parent, const std::string& name) {
  int fd;
  do {
    fd = ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

DirStream stream_of(int fd) {
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) ::close(fd);
  return DirStream(d);
}

// One directory of the chain being emptied: its name in its parent, and its stream while
// it is inside the window.
struct Level {
  std::string name;
  DirStream dir;
};

class TreeRemover {
 public:
  explicit TreeRemover(std::uint64_t& removed) : removed_(removed) {}

  // Regular files removed and their bytes, for the user's usage.
  std::uint64_t freed_bytes = 0;
  std::uint64_t freed_files = 0;

  // Empties the directory open as `top` (owned here). Returns 0 or an errno.
  int empty_tree(Fd top) {
    DirStream top_stream = stream_of(top.release());
    if (!top_stream) return errno;
    chain_.push_back(Level{std::string(), std::move(top_stream)});
    while (!chain_.empty()) {
      if (!chain_.back().dir) {
        if (int err = reopen_window(); err != 0) return err;
      }
      DIR* d = chain_.back().dir.get();
      const int fd = ::dirfd(d);
      errno = 0;
      dirent* de = ::readdir(d);
      if (de == nullptr) {
        if (errno != 0) return errno;
        // This directory is empty now: remove it from its parent, unless it is the top
        // (the caller removes that one).
        if (chain_.size() == 1) return 0;
        std::string name = std::move(chain_.back().name);
        chain_.pop_back();
        if (!chain_.back().dir) {
          if (int err = reopen_window(); err != 0) return err;
        }
        DIR* parent = chain_.back().dir.get();
        if (::unlinkat(::dirfd(parent), name.c_str(), AT_REMOVEDIR) == 0) {
          ++removed_;
        } else if (errno == ENOTEMPTY || errno == EEXIST) {
          // Something was put into it meanwhile: read the parent again from its start
          // so the directory is met (and emptied) again; give up past a bound, so a
          // writer that never stops cannot keep the walk busy forever.
          if (++rescans_ > kMaxRescans) return ENOTEMPTY;
          ::rewinddir(parent);
        } else if (errno != ENOENT) {
          return errno;
        }
        continue;
      }
      const std::string name = de->d_name;
      if (name == "." || name == "..") continue;
      if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) {
        if (int err = unlink_entry(fd, name); err != 0) return err;
        continue;
      }
      // A directory, or unknown: open it without following. A symlink (or anything not a
      // directory, perhaps swapped in just now) is removed as an entry.
      int sub = open_subdir(fd, name);
      if (sub < 0) {
        if (errno == ENOTDIR || errno == ELOOP) {
          if (int err = unlink_entry(fd, name); err != 0) return err;
          continue;
        }
        if (errno == ENOENT) continue;
        return errno;
      }
      DirStream stream = stream_of(sub);
      if (!stream) return errno;
      chain_.push_back(Level{name, std::move(stream)});
      trim_window();
    }
    return 0;
  }

 private:
  int unlink_entry(int dir_fd, const std::string& name) {
    // The size first, for the user's usage (§10 counts regular files and their bytes).
    struct stat st {};
    const bool regular =
        ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
    if (::unlinkat(dir_fd, name.c_str(), 0) == 0) {
      ++removed_;
      if (regular) {
        freed_bytes += static_cast<std::uint64_t>(st.st_size);
        ++freed_files;
      }
      return 0;
    }
    if (errno == ENOENT) return 0;  // gone meanwhile
    if (errno == EISDIR) {
      // A directory swapped in after readdir: empty it on a later pass of this level.
      return 0;
    }
    return errno;
  }

  // Closes the stream just above the window (the top, chain_[0], always stays open).
  void trim_window() {
    if (chain_.size() <= kWindow + 1) return;
    chain_[chain_.size() - 1 - kWindow].dir.reset();
  }

  // The deepest level has no stream: walk down by name from the nearest open ancestor,
  // keeping the last kWindow levels open. A re-opened stream starts from its beginning;
  // what was removed is gone, so it only sees what is left.
  int reopen_window() {
    std::size_t open = chain_.size() - 1;
    while (!chain_[open].dir) --open;
    const std::size_t keep_from = chain_.size() > kWindow ? chain_.size() - kWindow : 1;
    Fd walking;
    int cur = ::dirfd(chain_[open].dir.get());
    for (std::size_t i = open + 1; i < chain_.size(); ++i) {
      int next = open_subdir(cur, chain_[i].name);
      if (next < 0) return errno == ELOOP ? ENOTDIR : errno;
      if (i >= keep_from) {
        chain_[i].dir = stream_of(next);
        if (!chain_[i].dir) return errno;
        cur = ::dirfd(chain_[i].dir.get());
      } else {
        walking.reset(next);
        cur = walking.get();
      }
    }
    return 0;
  }

  std::uint64_t& removed_;
  std::vector<Level> chain_;
  std::size_t rescans_ = 0;
};

// Takes a file (or planted symlink or special file) out of the user's tree and says what
// it was: the entry is renamed into this server's scratch directory first and looked at
// there, so the usage change is the size of the very file that left (another request may
// replace the file between a look and an unlink), then unlinked. A directory that took its
// place meanwhile is put back: EISDIR, for the caller's directory branch. Scratch on
// another filesystem (EXDEV, a misconfiguration) falls back to a look and an unlink.
// Returns 0 or an errno; `regular` and `size` describe what went.
int take_out_entry(Call& call, int parent, const std::string& leaf, bool& regular,
                   std::uint64_t& size) {
  regular = false;
  size = 0;
  // The lock is the one every server sharing the storage takes (on the shared scratch
  // directory); the file goes aside into this server's own part of it (node_scratch_dir),
  // which no other server empties.
  const int scratch = call.node_scratch_dir();
  ops::sdk::ReplaceLock lock(call.scratch_dir());  // publish.hpp: against a move's look-then-rename
  if (!lock.held()) return lock.error();
  const std::string aside = "remove-" + ops::proof::random_hex(16);
  struct stat st {};
  if (::renameat(parent, leaf.c_str(), scratch, aside.c_str()) != 0) {
    if (errno != EXDEV) return errno;
    if (::fstatat(parent, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
    if (S_ISDIR(st.st_mode)) return EISDIR;
    if (::unlinkat(parent, leaf.c_str(), 0) != 0) return errno;
  } else {
    if (::fstatat(scratch, aside.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
      if (ops::sdk::rename_noreplace(scratch, aside.c_str(), parent, leaf.c_str()) == 0) {
        return EISDIR;
      }
      call.log(OPS_LOG_ERROR, "a directory removed from under a file's name could not be put back");
      return EIO;
    }
    if (::unlinkat(scratch, aside.c_str(), 0) != 0) {
      // Out of the user's tree already; this server's next start empties its directory.
      call.log(OPS_LOG_WARN, std::string("cannot unlink a removed file: ") + strerror(errno));
    }
  }
  regular = S_ISREG(st.st_mode);
  size = regular ? static_cast<std::uint64_t>(st.st_size) : 0;
  return 0;
}

ops::Error removal_error(int err, const std::string& path, std::uint64_t removed) {
  ops::Error e;
  if (err == EIO) {
    e = ops::Error{ErrorCode::unavailable, "i/o error removing " + path};
  } else if (err == ENOTEMPTY || err == EEXIST) {
    e = ops::Error{ErrorCode::conflict, "entries kept being added to " + path};
  } else {
    e = ops::sdk::error_from_errno(err, path);
  }
  if (removed > 0) {
    e.message += "; " + std::to_string(removed) + " entries under " + path +
                 " were removed before the failure, the rest remains";
  }
  return e;
}

Status handle_remove(Call& call, const rapidjson::Value& args) {
  const std::string path = ops::sdk::arg_string(args, "path");
  const bool recursive = ops::sdk::arg_bool(args, "recursive", false);
  if (path.empty()) {
    return ops::fail(ErrorCode::invalid_args, "path is required (your root cannot be removed)");
  }
  auto opened = ops::sdk::open_parent_beneath(call.user_dir(), path, /*create_missing=*/false);
  if (!opened) return std::move(opened).error();
  const int parent = opened->parent.get();
  const std::string& leaf = opened->leaf;

  struct stat st {};
  if (::fstatat(parent, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ops::sdk::error_from_errno(errno, path);
  }
  std::uint64_t removed = 0;
  bool is_dir = S_ISDIR(st.st_mode);
  if (!is_dir) {
    // A file, or a planted symlink or special file: the entry itself goes.
    bool regular = false;
    std::uint64_t size = 0;
    const int err = take_out_entry(call, parent, leaf, regular, size);
    if (err == EISDIR) {
      is_dir = true;  // a directory took the file's place meanwhile
    } else if (err != 0) {
      return removal_error(err, path, 0);
    } else {
      removed = 1;
      if (regular) call.usage_adjust(-static_cast<std::int64_t>(size), -1);
    }
  }
  if (is_dir) {
    if (::unlinkat(parent, leaf.c_str(), AT_REMOVEDIR) != 0) {
      int err = errno;
      if (err != ENOTEMPTY && err != EEXIST) return removal_error(err, path, 0);
      if (!recursive) {
        return ops::fail(ErrorCode::conflict, "directory not empty: " + path +
                                                  " (set recursive to remove it and everything "
                                                  "in it)");
      }
      // Empty the tree, then remove its top; if entries arrived meanwhile, go again
      // (a bounded number of times).
      for (int attempt = 0;; ++attempt) {
        int top = open_subdir(parent, leaf);
        if (top < 0) {
          int open_err = errno == ELOOP ? ENOTDIR : errno;
          ::fsync(parent);
          return removal_error(open_err, path, removed);
        }
        TreeRemover remover(removed);
        const int walk_err = remover.empty_tree(Fd(top));
        // What went is gone whether or not the walk finished.
        call.usage_adjust(-static_cast<std::int64_t>(remover.freed_bytes),
                          -static_cast<std::int64_t>(remover.freed_files));
        if (walk_err != 0) {
          ::fsync(parent);
          return removal_error(walk_err, path, removed);
        }
        if (::unlinkat(parent, leaf.c_str(), AT_REMOVEDIR) == 0) break;
        int rm_err = errno;
        if ((rm_err == ENOTEMPTY || rm_err == EEXIST) && attempt < kMaxTopAttempts) continue;
        ::fsync(parent);
        return removal_error(rm_err, path, removed);
      }
    }
    ++removed;
  }
  if (Status synced = ops::sdk::fsync_dir(parent, path); !synced) return synced;
  return call.send_result(ops::sdk::JsonResult().str("path", path).u64("removed", removed).done());
}

}  // namespace

OPS_EXPORT_PLUGIN("remove", "1.0.0",
                  OPS_OPERATION("remove",
                                "Remove a file or an empty directory, or a whole tree with "
                                "recursive",
                                "1.0.0", OPS_PAYLOAD_NONE, kSchema, handle_remove))
