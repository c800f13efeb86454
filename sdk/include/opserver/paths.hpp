// Safe paths for plugins (OPS/1 §5, §7): validate a user-supplied path and open it
// beneath the user's directory so that no symlink and no ".." is ever followed, even
// if the tree changes concurrently (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
// with a per-component O_NOFOLLOW walk where openat2 is missing).
// Stateless; safe from any thread.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "opserver/error.hpp"
#include "opserver/fd.hpp"

namespace ops::sdk {

inline constexpr std::size_t kMaxPathBytes = 4096;
inline constexpr std::size_t kMaxComponentBytes = 255;

// §5/§7: UTF-8; '/'-separated; no empty, "." or ".." component; no leading '/'; no
// control character (U+0000-U+001F, U+007F); each component <= 255 bytes; whole path
// <= 4096 bytes. The empty string is invalid here (callers that accept "the user's root"
// check for it first). Error: invalid_args naming the rule.
Status validate_path(std::string_view path);

// Opens `path` (validated first) beneath `root_dir` with `flags` (O_CLOEXEC and
// O_NOFOLLOW are added). No component, including the last, may be a symlink.
// Errors: invalid_args, not_found, conflict (a file where a directory is needed, or the
// reverse), forbidden (a symlink in the way), unavailable, internal.
Result<Fd> open_beneath(int root_dir, std::string_view path, int flags, mode_t mode = 0);

// Opens the directory at `path` beneath `root_dir`; "" opens the root itself, as a new open
// file description (never a dup, whose readdir offset would be shared with `root_dir`).
// With create_missing, missing directories are made (mode 0750, like the user directories) one
// component at a time, each under the previous one's fd, tolerating concurrent creators.
Result<Fd> open_dir_beneath(int root_dir, std::string_view path, bool create_missing);

// Splits a validated path into its parent directory (opened as above) and last component.
struct ParentAndLeaf {
  Fd parent;
  std::string leaf;
};
Result<ParentAndLeaf> open_parent_beneath(int root_dir, std::string_view path, bool create_missing);

// Maps an errno from a path operation to an OPS/1 error whose message names `path`
// (the user's path, never a host path).
Error error_from_errno(int err, std::string_view path);

}  // namespace ops::sdk
