#include "opserver/publish.hpp"

#include <fcntl.h>
#include <stdio.h>  // renameat
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "opserver/files.hpp"
#include "opserver/proof.hpp"

namespace ops::sdk {

namespace {

// Publishes without replacing: exactly one of several concurrent creators wins
// (files.hpp's rename_noreplace, with its link(2) fallback, which removes the source name
// itself). Returns 0 or an errno; `*linked` (the source name still exists) is always false.
int publish_noreplace(int source_dir, const std::string& source, int parent,
                      const std::string& leaf, bool* linked) {
  *linked = false;
  return rename_noreplace(source_dir, source.c_str(), parent, leaf.c_str());
}

// After parent directories may have been created: a new directory entry is durable only
// once the directory holding it is synced. Syncs the user root and each proper prefix of
// `dir_path` ("a" for "a/b"); the caller syncs `dir_path` itself after the rename.
Status sync_ancestors(int root, const std::string& dir_path, const std::string& path) {
  std::string prefix;  // "" is the user root
  std::size_t pos = 0;
  while (true) {
    auto dir = open_dir_beneath(root, prefix, false);
    if (!dir) return std::move(dir).error();
    if (::fsync(dir->get()) != 0) return storage_error(errno, path);
    std::size_t slash = dir_path.find('/', pos);
    if (slash == std::string::npos) break;
    prefix = dir_path.substr(0, slash);
    pos = slash + 1;
  }
  return ok_status();
}

// Looks at what is at the leaf now, so the common refusals happen before the payload.
Status check_leaf(int parent, const std::string& leaf, bool overwrite, const std::string& path) {
  struct stat st {};
  if (::fstatat(parent, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return ok_status();
    return storage_error(errno, path);
  }
  if (S_ISLNK(st.st_mode)) return storage_error(ELOOP, path);
  if (S_ISDIR(st.st_mode)) return fail(ErrorCode::conflict, "is a directory: " + path);
  if (!S_ISREG(st.st_mode)) return fail(ErrorCode::conflict, "not a regular file: " + path);
  if (!overwrite) {
    return fail(ErrorCode::already_exists,
                "file already exists: " + path + " (set overwrite to replace it)");
  }
  return ok_status();
}

}  // namespace

Result<std::vector<std::string>> missing_prefixes(int root, const std::string& dir_path) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  for (;;) {
    std::size_t slash = dir_path.find('/', pos);
    std::string prefix = dir_path.substr(0, slash);
    if (out.empty()) {
      auto dir = open_dir_beneath(root, prefix, false);
      if (!dir && dir.error().code != ErrorCode::not_found) return std::move(dir).error();
      if (!dir) out.push_back(prefix);
    } else {
      out.push_back(prefix);
    }
    if (slash == std::string::npos) break;
    pos = slash + 1;
  }
  return out;
}

CreatedDirs::~CreatedDirs() {
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    std::size_t slash = it->rfind('/');
    std::string parent = slash == std::string::npos ? std::string() : it->substr(0, slash);
    std::string leaf = slash == std::string::npos ? *it : it->substr(slash + 1);
    // A failure partway through creating them leaves the deeper ones uncreated: skip
    // those (ENOENT) and go on to their parents; stop at anything else (not empty: in use).
    auto dir = open_dir_beneath(root_, parent, false);
    if (!dir) {
      if (dir.error().code == ErrorCode::not_found) continue;
      return;
    }
    if (::unlinkat(dir->get(), leaf.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) return;
  }
}

// RENAME_EXCHANGE swaps the new file in and the old entry out to the source's name, where
// it is looked at and removed. Nothing there: created without replacing; if something
// appears meanwhile, exchange again. A directory swapped out is swapped back and refused
// (EISDIR), as rename(2) would. Without RENAME_EXCHANGE (EINVAL: an old filesystem), a look
// and rename(2).
ReplaceLock::ReplaceLock(int scratch_dir) {
  if (scratch_dir < 0) {
    error_ = EBADF;
    return;
  }
  // The scratch directory itself, opened anew: flock belongs to an open file description,
  // and the host's descriptor is shared by every call of the process.
  fd_ = ::openat(scratch_dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ < 0) error_ = errno;
  while (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    // A filesystem without flock on directories (NFS emulates it with byte-range locks,
    // which a directory cannot take): go on unlocked, with the narrow miscount the lock
    // exists to prevent (docs/SCALING.md), rather than refuse every overwrite.
    ::close(fd_);
    fd_ = -1;
    unlocked_ = true;
    break;
  }
}

ReplaceLock::~ReplaceLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

int replace_file(int source_dir, const std::string& source, int parent, const std::string& leaf,
                 bool& replaced, std::uint64_t& replaced_bytes) {
  replaced = false;
  replaced_bytes = 0;
  auto look = [&](int dir, const std::string& name) {
    struct stat st {};
    if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
      replaced = true;
      replaced_bytes = static_cast<std::uint64_t>(st.st_size);
    }
  };
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (::renameat2(source_dir, source.c_str(), parent, leaf.c_str(), RENAME_EXCHANGE) == 0) {
      struct stat st {};
      if (::fstatat(source_dir, source.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISDIR(st.st_mode)) {
        ::renameat2(source_dir, source.c_str(), parent, leaf.c_str(), RENAME_EXCHANGE);
        return EISDIR;
      }
      look(source_dir, source);
      ::unlinkat(source_dir, source.c_str(), 0);
      return 0;
    }
    const int err = errno;
    if (err == ENOENT) {
      // Nothing to replace (or the parent is gone: rename_noreplace says so again).
      const int created = rename_noreplace(source_dir, source.c_str(), parent, leaf.c_str());
      if (created != EEXIST) return created;
      continue;
    }
    if (err != EINVAL && err != ENOSYS) return err;
    look(parent, leaf);
    if (::renameat(source_dir, source.c_str(), parent, leaf.c_str()) != 0) {
      replaced = false;
      replaced_bytes = 0;
      return errno;
    }
    return 0;
  }
  return EBUSY;
}

Error storage_error(int err, const std::string& path) {
  if (err == EXDEV) {
    // Not a symlink here: rename across filesystems means the host's scratch directory is
    // misconfigured. The user can do nothing about it.
    return fail(ErrorCode::internal, "server storage is misconfigured");
  }
  return error_from_errno(err, path);
}

Result<ScratchFile> ScratchFile::create(Call& call, int dir, const std::string& prefix,
                                        const std::string& path) {
  std::string name = prefix + proof::random_hex(16);
  int raw = ::openat(dir, name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0640);
  if (raw < 0) {
    int err = errno;
    call.log(OPS_LOG_ERROR, std::string("cannot create a temporary file: ") + strerror(err));
    if (err == ENOSPC || err == EDQUOT) return error_from_errno(err, path);
    return fail(ErrorCode::internal, "cannot create a temporary file");
  }
  return ScratchFile(dir, std::move(name), Fd(raw));
}

ScratchFile::ScratchFile(ScratchFile&& other) noexcept
    : dir_(other.dir_),
      name_(std::move(other.name_)),
      fd_(std::move(other.fd_)),
      published_(other.published_) {
  other.published_ = true;  // the moved-from object removes nothing
}

ScratchFile::~ScratchFile() {
  fd_.reset();
  if (!published_) ::unlinkat(dir_, name_.c_str(), 0);
}

Status ScratchFile::sync_and_close(const std::string& path) {
  if (::fsync(fd_.get()) != 0 || ::close(fd_.release()) != 0) return storage_error(errno, path);
  return ok_status();
}

Result<PublishTarget> check_publish_target(int root, const std::string& path, bool overwrite) {
  PublishTarget target;
  // A missing parent is created at publish time; anything else in the way is refused now.
  auto opened = open_parent_beneath(root, path, /*create_missing=*/false);
  if (!opened) {
    if (opened.error().code != ErrorCode::not_found) return std::move(opened).error();
    target.parent_missing = true;
    return target;
  }
  if (Status leaf_ok = check_leaf(opened->parent.get(), opened->leaf, overwrite, path); !leaf_ok) {
    return std::move(leaf_ok).error();
  }
  target.opened = std::move(*opened);
  return target;
}

Status publish_file(Call& call, int root, int source_dir, const std::string& source_name,
                    const std::string& path, bool overwrite, PublishTarget& target,
                    PublishOutcome& outcome) {
  const std::size_t slash = path.rfind('/');
  const std::string dir_path = slash == std::string::npos ? std::string() : path.substr(0, slash);

  // Step 3.
  std::vector<std::string> to_create;
  if (target.parent_missing) {
    auto missing = missing_prefixes(root, dir_path);
    if (!missing) return std::move(missing).error();
    to_create = std::move(*missing);
  }
  CreatedDirs created(root, std::move(to_create));
  if (target.parent_missing) {
    auto opened = open_parent_beneath(root, path, /*create_missing=*/true);
    if (!opened) return std::move(opened).error();
    target.opened = std::move(*opened);
    target.parent_missing = false;
    if (Status synced = sync_ancestors(root, dir_path, path); !synced) return synced;
  }
  const int parent = target.opened->parent.get();
  const std::string& leaf = target.opened->leaf;

  // Step 4.
  int err = 0;
  bool linked = false;
  if (overwrite) {
    ReplaceLock lock(call.scratch_dir());
    err = lock.held() ? replace_file(source_dir, source_name, parent, leaf, outcome.replaced,
                                     outcome.replaced_bytes)
                      : lock.error();
  } else {
    err = publish_noreplace(source_dir, source_name, parent, leaf, &linked);
  }
  if (err == EEXIST && !overwrite) {
    // Another creator won, or the path is a directory now: say which.
    struct stat st {};
    if (::fstatat(parent, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
      return fail(ErrorCode::conflict, "is a directory: " + path);
    }
    return fail(ErrorCode::already_exists,
                "file already exists: " + path + " (set overwrite to replace it)");
  }
  if (err == EISDIR || err == ENOTEMPTY || (err == EEXIST && overwrite)) {
    return fail(ErrorCode::conflict, "is a directory: " + path);
  }
  if (err != 0) return storage_error(err, path);
  outcome.visible = true;
  outcome.source_consumed = !linked;
  created.keep();

  // Step 5. The file is visible now; if its directory entry cannot be made durable the
  // client is told the publish failed (it may then see the file, or not after a crash).
  if (::fsync(parent) != 0) {
    int sync_err = errno;
    call.log(OPS_LOG_ERROR, std::string("fsync of a directory failed: ") + strerror(sync_err));
    return fail(ErrorCode::unavailable,
                "the file could not be made durable: " + path + " (its state is unknown)");
  }
  return ok_status();
}

}  // namespace ops::sdk
