// move (OPS/1 §10): renames a file or a directory within the caller's directory,
// atomically (one rename(2)).
//
// Decisions:
//  - Missing parent directories of `to` are created (durably, see make_dirs_beneath),
//    after the cheap refusals, and removed again if the move then fails (the SDK's
//    CreatedDirs, as for upload), so a refused or failed move leaves nothing behind.
//  - Without `overwrite`: renameat2(RENAME_NOREPLACE) (with the fallbacks of
//    ops::sdk::rename_noreplace), so an existing `to` is `already_exists` and of
//    concurrent moves onto one new `to` exactly one succeeds.
//  - With `overwrite`: a file replaces a file (rename(2), atomic for readers); any other
//    existing `to` (a directory, or a directory being moved onto a file) is `conflict`.
//  - `from` equal to `to` succeeds without change when `from` exists (`not_found` if not).
//    Moving a directory to a path below itself is `invalid_args`.
//  - Only files and directories move: a symlink or special file planted on disk is
//    `forbidden` as `from` and a `conflict` as an existing `to`.
//  - Both directories whose entries changed are fsynced before the answer.
#include <fcntl.h>
#include <stdio.h>  // renameat
#include <sys/stat.h>

#include <cerrno>
#include <string>
#include <vector>

#include "opserver/files.hpp"
#include "opserver/json_result.hpp"
#include "opserver/paths.hpp"
#include "opserver/plugin.hpp"
#include "opserver/publish.hpp"

namespace {

using ops::ErrorCode;
using ops::Status;
using ops::sdk::Call;

constexpr const char* kSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "from": {"type": "string", "minLength": 1, "maxLength": 4096,
             "description": "the file or directory to move, relative to your directory"},
    "to": {"type": "string", "minLength": 1, "maxLength": 4096,
           "description": "its new path (missing parent directories are created)"},
    "overwrite": {"type": "boolean", "default": false,
                  "description": "let a file replace an existing file"}
  },
  "required": ["from", "to"],
  "additionalProperties": false
})json";

std::string parent_of(const std::string& path) {
  std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

ops::Error exists_error(const std::string& to) {
  return ops::fail(ErrorCode::already_exists,
                   "already exists: " + to + " (set overwrite to replace a file)");
}

// What is at `to` now decides the answer to a refused rename.
ops::Error refused_by_target(int to_parent, const std::string& leaf, const std::string& to,
                             bool overwrite, bool from_is_dir) {
  struct stat st {};
  if (::fstatat(to_parent, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ops::sdk::error_from_errno(errno, to);
  }
  if (!overwrite) return exists_error(to);
  if (S_ISDIR(st.st_mode)) return ops::fail(ErrorCode::conflict, "a directory is at " + to);
  if (from_is_dir) {
    return ops::fail(ErrorCode::conflict, "a directory cannot replace the file at " + to);
  }
  return ops::fail(ErrorCode::conflict, "not a regular file: " + to);
}

Status handle_move(Call& call, const rapidjson::Value& args) {
  const std::string from = ops::sdk::arg_string(args, "from");
  const std::string to = ops::sdk::arg_string(args, "to");
  const bool overwrite = ops::sdk::arg_bool(args, "overwrite", false);
  if (from.empty() || to.empty()) {
    return ops::fail(ErrorCode::invalid_args, "from and to are required (your root cannot move)");
  }
  if (Status v = ops::sdk::validate_path(to); !v) return v;
  const int root = call.user_dir();

  auto src = ops::sdk::open_parent_beneath(root, from, /*create_missing=*/false);
  if (!src) return std::move(src).error();
  struct stat from_st {};
  if (::fstatat(src->parent.get(), src->leaf.c_str(), &from_st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ops::sdk::error_from_errno(errno, from);
  }
  if (S_ISLNK(from_st.st_mode)) return ops::sdk::error_from_errno(ELOOP, from);
  const bool from_is_dir = S_ISDIR(from_st.st_mode);
  if (!from_is_dir && !S_ISREG(from_st.st_mode)) {
    return ops::fail(ErrorCode::forbidden, "not a regular file: " + from);
  }
  auto result = [&] { return ops::sdk::JsonResult().str("from", from).str("to", to).done(); };
  if (from == to) return call.send_result(result());
  if (to.size() > from.size() && to.compare(0, from.size(), from) == 0 && to[from.size()] == '/') {
    if (from_is_dir) {
      return ops::fail(ErrorCode::invalid_args,
                       "cannot move a directory below itself: " + from + " to " + to);
    }
    return ops::fail(ErrorCode::conflict, "a file is where a directory is needed: " + to);
  }

  // The destination's parent: refuse what is in the way before creating anything.
  const std::string to_dir = parent_of(to);
  auto dst = ops::sdk::open_parent_beneath(root, to, /*create_missing=*/false);
  bool to_parent_missing = false;
  if (!dst) {
    if (dst.error().code != ErrorCode::not_found) return std::move(dst).error();
    to_parent_missing = true;
  } else {
    struct stat st {};
    if (::fstatat(dst->parent.get(), dst->leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (!overwrite || from_is_dir || !S_ISREG(st.st_mode)) {
        return refused_by_target(dst->parent.get(), dst->leaf, to, overwrite, from_is_dir);
      }
    } else if (errno != ENOENT) {
      return ops::sdk::error_from_errno(errno, to);
    }
  }
  ops::sdk::Fd to_parent;
  std::string to_leaf;
  // The parents this move creates go again if it fails (a refused or failed move leaves
  // nothing behind).
  std::vector<std::string> to_create;
  if (to_parent_missing) {
    auto missing = ops::sdk::missing_prefixes(root, to_dir);
    if (!missing) return std::move(missing).error();
    to_create = std::move(*missing);
  }
  ops::sdk::CreatedDirs created(root, std::move(to_create));
  if (to_parent_missing) {
    auto made = ops::sdk::make_dirs_beneath(root, to_dir);
    if (!made) return std::move(made).error();
    to_parent = std::move(made->dir);
    to_leaf = to.substr(to_dir.size() + 1);
  } else {
    to_parent = std::move(dst->parent);
    to_leaf = std::move(dst->leaf);
  }

  int err = 0;
  if (overwrite && !from_is_dir) {
    // The file about to be replaced leaves the user's usage (§10). The lock keeps an upload
    // or a remove of the same file from acting between the look and the rename.
    ops::sdk::ReplaceLock lock(call.scratch_dir());
    if (!lock.held()) {
      return ops::fail(ops::ErrorCode::unavailable,
                       "cannot move now: the server's replace lock is unavailable");
    }
    struct stat replaced {};
    const bool replaces =
        ::fstatat(to_parent.get(), to_leaf.c_str(), &replaced, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(replaced.st_mode);
    // rename(2) replaces a file atomically and refuses a directory (EISDIR). (Not
    // ops::sdk::replace_file: its exchange would show the old file under `from` for a
    // moment.)
    if (::renameat(src->parent.get(), src->leaf.c_str(), to_parent.get(), to_leaf.c_str()) != 0) {
      err = errno;
    } else if (replaces) {
      call.usage_adjust(-static_cast<std::int64_t>(replaced.st_size), -1);
    }
  } else {
    err = ops::sdk::rename_noreplace(src->parent.get(), src->leaf.c_str(), to_parent.get(),
                                     to_leaf.c_str());
  }
  if (err == EEXIST || err == ENOTEMPTY || err == EISDIR) {
    return refused_by_target(to_parent.get(), to_leaf, to, overwrite, from_is_dir);
  }
  if (err == EINVAL) {
    return ops::fail(ErrorCode::invalid_args,
                     "cannot move a directory below itself: " + from + " to " + to);
  }
  if (err == ENOENT) return ops::sdk::error_from_errno(err, from);  // moved away meanwhile
  if (err != 0) return ops::sdk::error_from_errno(err, to);
  created.keep();

  if (Status synced = ops::sdk::fsync_dir(to_parent.get(), to_dir); !synced) return synced;
  if (Status synced = ops::sdk::fsync_dir(src->parent.get(), parent_of(from)); !synced) {
    return synced;
  }
  return call.send_result(result());
}

}  // namespace

OPS_EXPORT_PLUGIN("move", "1.0.0",
                  OPS_OPERATION("move",
                                "Rename a file or directory (atomic; creates missing parents of "
                                "the destination)",
                                "1.0.0", OPS_PAYLOAD_NONE, kSchema, handle_move))
