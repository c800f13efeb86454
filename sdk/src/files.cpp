// File helpers shared by the storage plugins. See files.hpp.
#include "opserver/files.hpp"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE (glibc, _GNU_SOURCE)
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "opserver/proof.hpp"

namespace ops::sdk {

std::optional<EntryInfo> entry_info(const struct stat& st) noexcept {
  EntryInfo info;
  if (S_ISREG(st.st_mode)) {
    info.size = static_cast<std::uint64_t>(st.st_size);
  } else if (S_ISDIR(st.st_mode)) {
    info.dir = true;
  } else {
    return std::nullopt;
  }
  info.mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec);
  return info;
}

namespace {

// I/O errors while reading a file the user asked about are the storage's fault, not the
// user's: `unavailable` rather than error_from_errno's `internal`.
Error read_error(int err, std::string_view user_path) {
  if (err == EIO)
    return Error{ErrorCode::unavailable, "i/o error reading " + std::string(user_path)};
  return error_from_errno(err, user_path);
}

}  // namespace

Result<std::string> sha256_of_fd(int fd, std::string_view user_path) {
  constexpr std::size_t kChunk = std::size_t{256} << 10;
  proof::Sha256 sha;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::unique_ptr<unsigned char[]> buf(new unsigned char[kChunk]);
  off_t offset = 0;
  while (true) {
    ssize_t n = ::pread(fd, buf.get(), kChunk, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return read_error(errno, user_path);
    }
    if (n == 0) break;
    sha.update(buf.get(), static_cast<std::size_t>(n));
    offset += n;
  }
  std::string hex = sha.hex();
  if (hex.empty()) return fail(ErrorCode::internal, "cannot compute sha256");
  return hex;
}

Status fsync_dir(int dir_fd, std::string_view user_path) {
  if (::fsync(dir_fd) == 0) return ok_status();
  std::string where = user_path.empty() ? std::string("(root)") : std::string(user_path);
  return fail(ErrorCode::unavailable,
              "the change could not be made durable in " + where + " (its state is unknown)");
}

int rename_noreplace(int from_dir, const char* from, int to_dir, const char* to) noexcept {
  if (::renameat2(from_dir, from, to_dir, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  // No RENAME_NOREPLACE here (or EINVAL for a directory moved below itself, which the
  // fallbacks below report again by themselves).
  struct stat st {};
  if (::fstatat(from_dir, from, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  if (!S_ISDIR(st.st_mode)) {
    // link(2) fails with EEXIST atomically; then the old name goes.
    if (::linkat(from_dir, from, to_dir, to, 0) != 0) return errno;
    if (::unlinkat(from_dir, from, 0) != 0) {
      int err = errno;
      ::unlinkat(to_dir, to, 0);  // undo: the file keeps its old name only
      return err;
    }
    return 0;
  }
  // A directory cannot be linked. mkdirat is exclusive, and rename(2) may replace an
  // empty directory: claim `to` with a placeholder, then rename onto it.
  if (::mkdirat(to_dir, to, 0750) != 0) return errno;
  if (::renameat(from_dir, from, to_dir, to) != 0) {
    int err = errno;
    ::unlinkat(to_dir, to, AT_REMOVEDIR);
    return err;
  }
  return 0;
}

Result<MadeDir> make_dirs_beneath(int root_dir, std::string_view path) {
  if (Status v = validate_path(path); !v) return std::move(v).error();
  auto root = open_dir_beneath(root_dir, "", false);
  if (!root) return std::move(root).error();
  MadeDir out;
  out.dir = std::move(*root);
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    const std::string name(path.substr(start, slash - start));
    const std::string_view so_far = path.substr(0, slash);
    out.created = false;
    if (::mkdirat(out.dir.get(), name.c_str(), 0750) == 0) {
      out.created = true;
      if (Status synced = fsync_dir(out.dir.get(), path.substr(0, start == 0 ? 0 : start - 1));
          !synced) {
        return std::move(synced).error();
      }
    } else if (errno != EEXIST) {
      return error_from_errno(errno, so_far);
    }
    // EEXIST: a directory (fine, perhaps a concurrent creator's), or a file or symlink
    // that the open below refuses.
    int next;
    do {
      next = ::openat(out.dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    } while (next < 0 && errno == EINTR);
    if (next < 0) {
      int err = errno;
      struct stat st {};
      if ((err == ENOTDIR || err == ELOOP) &&
          ::fstatat(out.dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        err = S_ISLNK(st.st_mode) ? ELOOP : ENOTDIR;
      }
      return error_from_errno(err, so_far);
    }
    out.dir.reset(next);
    start = slash + 1;
  }
  return out;
}

}  // namespace ops::sdk
