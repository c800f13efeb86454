// File helpers shared by the storage plugins (upload, download, list, stat, mkdir, move,
// remove): what a directory entry looks like to OPS/1, SHA-256 of an open file, durable
// directory changes, and an exclusive rename. Stateless; safe from any thread.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "opserver/error.hpp"
#include "opserver/paths.hpp"

namespace ops::sdk {

// One entry as `list` and `stat` report it: only regular files and directories have a
// type; `size` is 0 for a directory; `mtime` is whole seconds since the Unix epoch.
struct EntryInfo {
  bool dir = false;
  std::uint64_t size = 0;
  std::int64_t mtime = 0;
  const char* type() const noexcept { return dir ? "dir" : "file"; }
};
// nullopt for a symlink, fifo, socket or device (not something OPS/1 shows).
std::optional<EntryInfo> entry_info(const struct stat& st) noexcept;

// SHA-256 of the whole file open as `fd` (read with pread from offset 0, so the fd's own
// offset is untouched), as 64 lowercase hex digits. Errors name `user_path`.
Result<std::string> sha256_of_fd(int fd, std::string_view user_path);

// fsync(2) of a directory, so that entries created, renamed or removed in it survive a
// crash. A failure is `unavailable` naming `user_path` (the directory's state is then
// unknown; it is never retried, see fsyncgate).
Status fsync_dir(int dir_fd, std::string_view user_path);

// Renames `from` (in from_dir) to `to` (in to_dir) unless `to` exists, atomically: of
// concurrent callers naming one new `to`, exactly one succeeds. Uses
// renameat2(RENAME_NOREPLACE); where the filesystem lacks it (EINVAL, ENOSYS) a file is
// linked then unlinked, and a directory is renamed onto an empty placeholder directory
// made with mkdirat (which is exclusive, and which rename(2) may replace). Returns 0 or
// an errno (EEXIST when `to` exists).
int rename_noreplace(int from_dir, const char* from, int to_dir, const char* to) noexcept;

// Opens the directory `path` beneath `root_dir`, making whatever is missing one
// component at a time (mode 0750), each under its parent's fd with O_NOFOLLOW, and
// fsyncing every parent it adds an entry to, so the new directories are durable.
// `created` tells whether the last component was made by this call. Errors: as
// open_dir_beneath (a file in the way is conflict, a symlink forbidden).
struct MadeDir {
  Fd dir;
  bool created = false;
};
Result<MadeDir> make_dirs_beneath(int root_dir, std::string_view path);

}  // namespace ops::sdk
