// Publishing a finished file under a user's path (OPS/1 §5, §7, §11), the one way shared by
// `upload` and `upload_commit`: the bytes sit in a server-private file (the scratch
// directory, unreachable by any user path) on the user directories' filesystem, and
//  1. cheap refusals come first (check_publish_target): a bad path, a file or symlink where a
//     parent directory is needed, an existing file without `overwrite`, a directory or
//     symlink at the path;
//  2. the private file is fsynced and closed (ScratchFile::sync_and_close; a failed fsync is
//     never retried: fsyncgate);
//  3. missing parent directories are created only now (publish_file), so a failed publish
//     leaves no empty directories behind;
//  4. with `overwrite`, rename(2) replaces the old file atomically; without it,
//     renameat2(RENAME_NOREPLACE), or link(2) where the filesystem lacks it, so that of
//     concurrent creators of one new path exactly one wins (§7: `already_exists`);
//  5. the parent directory is fsynced before the caller answers `ok`.
// Any failure before step 4 leaves the private file where it was and the old file untouched.
// Stateless; any thread. Every message names the user's path, never a host path.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "opserver/error.hpp"
#include "opserver/paths.hpp"
#include "opserver/plugin.hpp"

namespace ops::sdk {

// An errno from storing bytes: the user's path is named; EXDEV (scratch on another
// filesystem) is a server misconfiguration, `internal`.
Error storage_error(int err, const std::string& path);

// A new file in a server-private directory; unlinked on destruction unless published.
class ScratchFile {
 public:
  // Creates "<prefix><random hex>" in `dir` (O_EXCL, mode 0640). Errors name `path`.
  static Result<ScratchFile> create(Call& call, int dir, const std::string& prefix,
                                    const std::string& path);
  ScratchFile(ScratchFile&&) noexcept;
  ScratchFile& operator=(ScratchFile&&) = delete;
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  ~ScratchFile();

  int fd() const noexcept { return fd_.get(); }
  int dir() const noexcept { return dir_; }
  const std::string& name() const noexcept { return name_; }
  // Step 2: fsync, then close (a late write-back error reported by close counts too).
  Status sync_and_close(const std::string& path);
  // The name was renamed away (or linked and must stay): do not unlink it.
  void mark_published() noexcept { published_ = true; }

 private:
  ScratchFile(int dir, std::string name, Fd fd)
      : dir_(dir), name_(std::move(name)), fd_(std::move(fd)) {}
  int dir_;
  std::string name_;
  Fd fd_;
  bool published_ = false;
};

// What step 1 found out about the destination; handed to publish_file.
struct PublishTarget {
  std::optional<ParentAndLeaf> opened;  // the parent directory, when it exists
  bool parent_missing = false;          // some parent directory is still to be created
};

// Step 1. `path` must have passed validate_path. The publish re-decides atomically; this
// check only spares the client a transfer that is bound to fail.
Result<PublishTarget> check_publish_target(int root, const std::string& path, bool overwrite);

// What publish_file did, also when it failed.
struct PublishOutcome {
  bool visible = false;          // the file is under its name (step 4 happened)
  bool source_consumed = false;  // rename moved the source name away; after link(2) it
                                 // still exists and the caller removes it
  // With `overwrite`: the regular file the publish replaced, if any, and its size. Taken
  // from the very file the rename displaced, not from a look before it, so the user's
  // usage stays exact when another request removed or replaced that file meanwhile.
  bool replaced = false;
  std::uint64_t replaced_bytes = 0;
};

// Steps 3 to 5: publishes the closed, fsynced file `source_name` in `source_dir` (on the
// user root's filesystem) as `path` beneath `root`. Errors: already_exists (another file
// won, or one exists without overwrite), conflict (a directory is in the way), not_found,
// unavailable (I/O, no space), internal. A step-5 failure is `unavailable` with
// `outcome.visible` set: the file is under its name, its durability unknown.
Status publish_file(Call& call, int root, int source_dir, const std::string& source_name,
                    const std::string& path, bool overwrite, PublishTarget& target,
                    PublishOutcome& outcome);

// Held while an operation looks at what a path holds and then replaces or takes it away
// (upload and move with overwrite, remove of one file), so the usage change it reports is
// the size of the very file it displaced: `move` must rename(2) (atomic for readers) after
// a look, and without this lock a concurrent upload or remove between the look and the
// rename would be counted twice. One lock for the whole server and its worker processes:
// flock(2) on the scratch directory (nothing is created); held for two system calls.
// held() is false when it could not be taken (the directory cannot be opened): the
// operation should then fail `unavailable` rather than risk a wrong count.
class ReplaceLock {
 public:
  explicit ReplaceLock(int scratch_dir);
  ~ReplaceLock();
  // True when the operation may go on: the lock is held, or this filesystem cannot lock a
  // directory at all (then it goes on unlocked).
  bool held() const noexcept { return fd_ >= 0 || unlocked_; }
  int error() const noexcept { return error_; }  // the errno when not held

 private:
  int error_ = 0;
  bool unlocked_ = false;

 public:
  ReplaceLock(const ReplaceLock&) = delete;
  ReplaceLock& operator=(const ReplaceLock&) = delete;

 private:
  int fd_ = -1;
};

// Renames the file `source` in `source_dir` over `leaf` in `parent` (which may hold a
// file, or nothing) and says exactly what it replaced: whether a regular file, and its
// size. Taken from the very entry the rename displaced, not from a look before it, so
// usage stays exact when another request removes or replaces that file meanwhile. A
// directory at `leaf` is refused (EISDIR). Returns 0 or an errno.
int replace_file(int source_dir, const std::string& source, int parent, const std::string& leaf,
                 bool& replaced, std::uint64_t& replaced_bytes);

// The prefixes of `dir_path` ("a", "a/b", ...) beneath `root` that do not exist yet: the
// directories a publish (or a move) is about to create. Any other failure to look is an
// error.
Result<std::vector<std::string>> missing_prefixes(int root, const std::string& dir_path);

// Removes, deepest first, the directories an operation created, unless keep() was called
// (it succeeded). rmdir refuses a directory that is no longer empty, so whatever another
// request has put there meanwhile stays. (Another upload may still be about to rename into
// one of them; it then fails with not_found, which a retry fixes. §5 asks that a failed
// upload leave nothing behind; that rare cost buys it.)
class CreatedDirs {
 public:
  CreatedDirs(int root, std::vector<std::string> dirs) : root_(root), dirs_(std::move(dirs)) {}
  CreatedDirs(const CreatedDirs&) = delete;
  CreatedDirs& operator=(const CreatedDirs&) = delete;
  ~CreatedDirs();
  void keep() noexcept { dirs_.clear(); }

 private:
  int root_;
  std::vector<std::string> dirs_;
};

}  // namespace ops::sdk
