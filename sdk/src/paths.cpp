// Safe path resolution beneath a user's directory (OPS/1 §5, §7). See paths.hpp.
//
// The kernel does the confinement: openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS) refuses any symlink and any escape while it resolves, so a tree
// that changes under us (the Samba CVE-2017-2619 swap) cannot redirect an open. Where
// openat2 is missing (ENOSYS: kernels before 5.6, or a seccomp filter) the same rule is
// kept by walking one component at a time, each openat(O_NOFOLLOW) relative to the
// previous directory's fd; a single component never contains '/' or "..", so each step
// stays inside the directory it started from.
#include "opserver/paths.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <vector>

namespace ops::sdk {

// ---------------------------------------------------------------------------------------
// Fd

// ---------------------------------------------------------------------------------------
// Validation

namespace {

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates (U+D800-U+DFFF), nothing past
// U+10FFFF, no truncated sequences. Also rejects the §7 control characters, which are all
// single bytes in UTF-8. Returns a reason, or nullptr when `s` is acceptable.
const char* check_utf8_and_controls(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return "it contains a control character";
      ++i;
      continue;
    }
    std::size_t len;
    std::uint32_t cp;
    std::uint32_t min;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2, cp = c & 0x1fu, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3, cp = c & 0x0fu, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4, cp = c & 0x07u, min = 0x10000;
    } else {
      // 0x80-0xbf: a stray continuation byte; 0xc0/0xc1: always overlong; 0xf5+: > U+10FFFF.
      return "it is not valid UTF-8";
    }
    if (n - i < len) return "it is not valid UTF-8";
    for (std::size_t k = 1; k < len; ++k) {
      unsigned char cc = p[i + k];
      if ((cc & 0xc0u) != 0x80u) return "it is not valid UTF-8";
      cp = (cp << 6) | (cc & 0x3fu);
    }
    if (cp < min) return "it is not valid UTF-8 (overlong encoding)";
    if (cp >= 0xd800 && cp <= 0xdfff) return "it is not valid UTF-8 (surrogate code point)";
    if (cp > 0x10ffff) return "it is not valid UTF-8";
    i += len;
  }
  return nullptr;
}

Error invalid(const char* why) {
  return Error{ErrorCode::invalid_args, std::string("invalid path: ") + why};
}

// Splits a validated path; every element is non-empty and contains no '/'.
std::vector<std::string_view> components(std::string_view path) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    out.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return out;
}

}  // namespace

Status validate_path(std::string_view path) {
  // Messages never quote the path itself: it may not be valid UTF-8 or printable, and the
  // message travels in a JSON response.
  if (path.empty()) return invalid("it is empty");
  if (path.size() > kMaxPathBytes) return invalid("it is longer than 4096 bytes");
  if (path.front() == '/') return invalid("it must be relative (no leading '/')");
  if (const char* why = check_utf8_and_controls(path)) return invalid(why);
  std::size_t start = 0;
  while (true) {
    std::size_t slash = path.find('/', start);
    std::size_t end = slash == std::string_view::npos ? path.size() : slash;
    std::string_view comp = path.substr(start, end - start);
    if (comp.empty()) return invalid("it has an empty component ('//' or a trailing '/')");
    if (comp == ".") return invalid("it has a '.' component");
    if (comp == "..") return invalid("it has a '..' component");
    if (comp.size() > kMaxComponentBytes) return invalid("a component is longer than 255 bytes");
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return ok_status();
}

// ---------------------------------------------------------------------------------------
// Errors

Error error_from_errno(int err, std::string_view path) {
  std::string p(path.empty() ? std::string_view("(root)") : path);
  switch (err) {
    case ENOENT:
      return Error{ErrorCode::not_found, "no such file or directory: " + p};
    case ENOTDIR:
      return Error{ErrorCode::conflict, "a file is where a directory is needed: " + p};
    case EISDIR:
      return Error{ErrorCode::conflict, "is a directory: " + p};
    case ELOOP:
    case EXDEV:
      return Error{ErrorCode::forbidden, "path crosses a symbolic link: " + p};
    case EEXIST:
      return Error{ErrorCode::already_exists, "already exists: " + p};
    case ENOSPC:
    case EDQUOT:
      return Error{ErrorCode::unavailable, "no space left"};
    case EACCES:
    case EPERM:
      return Error{ErrorCode::forbidden, "permission denied: " + p};
    case ENAMETOOLONG:
      return Error{ErrorCode::invalid_args, "path too long: " + p};
    case EROFS:
      return Error{ErrorCode::unavailable, "storage is read-only"};
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EAGAIN:
      return Error{ErrorCode::unavailable, "server is out of resources, retry later"};
    case EFBIG:
      return Error{ErrorCode::payload_too_large, "file too large: " + p};
    default:
      // strerror names the condition, never a host path.
      return Error{ErrorCode::internal, "i/o error on " + p + ": " + std::strerror(err)};
  }
}

// ---------------------------------------------------------------------------------------
// Opening

namespace {

std::atomic<bool> g_openat2_missing{false};

int retry_eintr_openat(int dir, const char* name, int flags, mode_t mode) {
  int fd;
  do {
    fd = ::openat(dir, name, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// A private open file description of `dir` itself. Never dup(): a dup shares the file
// offset, and the host's user_dir fd may be read concurrently (readdir) by other calls.
int reopen_dir(int dir) {
  return retry_eintr_openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
}

// openat2 wants mode == 0 unless a file may be created.
bool may_create(int flags) {
  return (flags & O_CREAT) || ((flags & O_TMPFILE) == O_TMPFILE);
}

// Older container seccomp profiles answer unknown syscalls with EPERM, not ENOSYS. Tell
// that apart from a real EPERM on one file by asking for the plainest openat2 there is.
bool openat2_blocked(int root) {
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC;
  long fd = ::syscall(SYS_openat2, root, ".", &how, sizeof(how));
  if (fd >= 0) {
    ::close(static_cast<int>(fd));
    return false;
  }
  return errno == EPERM || errno == ENOSYS;
}

// Returns an fd, -1 with errno set, or -2 when openat2 is unavailable.
int open_with_openat2(int root, const std::string& path, int flags, mode_t mode) {
  if (g_openat2_missing.load(std::memory_order_relaxed)) return -2;
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags);
  how.mode = may_create(flags) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  for (int attempt = 0;; ++attempt) {
    long fd = ::syscall(SYS_openat2, root, path.c_str(), &how, sizeof(how));
    if (fd >= 0) return static_cast<int>(fd);
    int err = errno;
    if (err == ENOSYS || (err == EPERM && openat2_blocked(root))) {
      g_openat2_missing.store(true, std::memory_order_relaxed);
      return -2;
    }
    // EAGAIN: the kernel saw a concurrent rename during a RESOLVE_BENEATH lookup and
    // refuses to guess; trying again is the documented answer. EINTR: a signal.
    if ((err == EAGAIN || err == EINTR) && attempt < 16) continue;
    errno = err;
    return -1;
  }
}

// The fallback: one component at a time, each with O_NOFOLLOW under the previous fd.
int open_by_walk(int root, std::string_view path, int flags, mode_t mode) {
  std::vector<std::string_view> comps = components(path);
  Fd cur;
  int dir = root;
  for (std::size_t i = 0; i + 1 < comps.size(); ++i) {
    std::string name(comps[i]);
    int next =
        retry_eintr_openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (next < 0) return -1;
    cur.reset(next);
    dir = cur.get();
  }
  std::string leaf(comps.back());
  return retry_eintr_openat(dir, leaf.c_str(), flags, may_create(flags) ? mode : 0);
}

// Both ways of opening report a symlink met with O_DIRECTORY|O_NOFOLLOW as ENOTDIR (the
// kernel checks "is a directory" before "is a symlink"). Tell the user the real reason:
// if the component that stopped us is a symlink, say ELOOP. Only the message depends on
// this; access was refused either way.
int refine_enotdir(int root, std::string_view path) {
  std::vector<std::string_view> comps = components(path);
  Fd cur;
  int dir = root;
  for (std::size_t i = 0; i < comps.size(); ++i) {
    std::string name(comps[i]);
    struct stat st {};
    if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return ENOTDIR;
    if (S_ISLNK(st.st_mode)) return ELOOP;
    if (!S_ISDIR(st.st_mode)) return ENOTDIR;
    if (i + 1 == comps.size()) break;
    int next =
        retry_eintr_openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (next < 0) return ENOTDIR;
    cur.reset(next);
    dir = cur.get();
  }
  return ENOTDIR;
}

// open_beneath without validation, returning an fd or -errno.
int open_beneath_raw(int root, std::string_view path, int flags, mode_t mode) {
  if (path.size() >= PATH_MAX) {
    // §5 allows 4096 bytes, but the kernel takes at most PATH_MAX (4096) including the
    // NUL. Resolve it in two halves split at a '/': the first half beneath `root`, the
    // second beneath that directory, so each step is confined as before.
    std::size_t cut = path.rfind('/', path.size() / 2);
    if (cut == std::string_view::npos || cut == 0) cut = path.find('/', path.size() / 2);
    if (cut == std::string_view::npos) return -ENAMETOOLONG;
    int dir = open_beneath_raw(root, path.substr(0, cut), O_RDONLY | O_DIRECTORY, 0);
    if (dir < 0) return dir;
    Fd holder(dir);
    return open_beneath_raw(dir, path.substr(cut + 1), flags, mode);
  }
  flags |= O_CLOEXEC | O_NOFOLLOW;
  std::string p(path);
  int fd = open_with_openat2(root, p, flags, mode);
  if (fd == -2) fd = open_by_walk(root, path, flags, mode);
  if (fd >= 0) return fd;
  int err = errno;
  if (err == ENOTDIR) err = refine_enotdir(root, path);
  return -err;
}

}  // namespace

Result<Fd> open_beneath(int root_dir, std::string_view path, int flags, mode_t mode) {
  if (Status v = validate_path(path); !v) return std::move(v).error();
  int fd = open_beneath_raw(root_dir, path, flags, mode);
  if (fd < 0) return error_from_errno(-fd, path);
  return Fd(fd);
}

namespace {

// open_dir_beneath on a validated path (or ""), returning an fd or -errno.
int open_dir_raw(int root_dir, std::string_view path, bool create_missing) {
  if (path.empty()) {
    int fd = reopen_dir(root_dir);
    return fd >= 0 ? fd : -errno;
  }
  int fd = open_beneath_raw(root_dir, path, O_RDONLY | O_DIRECTORY, 0);
  if (fd >= 0 || fd != -ENOENT || !create_missing) return fd;

  // Make what is missing, one component at a time, each under the fd of its parent, so
  // no later component is ever resolved through a name someone could swap.
  int first = reopen_dir(root_dir);
  if (first < 0) return -errno;
  Fd cur(first);
  for (std::string_view comp : components(path)) {
    std::string name(comp);
    if (::mkdirat(cur.get(), name.c_str(), 0750) != 0 && errno != EEXIST) return -errno;
    // EEXIST may be a concurrent creator's directory (fine) or a file or symlink (the
    // open below refuses it).
    int next = retry_eintr_openat(cur.get(), name.c_str(),
                                  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
    if (next < 0) {
      int err = errno;
      struct stat st {};
      if (err == ENOTDIR && ::fstatat(cur.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISLNK(st.st_mode)) {
        err = ELOOP;
      }
      return -err;
    }
    cur.reset(next);
  }
  return cur.release();
}

}  // namespace

Result<Fd> open_dir_beneath(int root_dir, std::string_view path, bool create_missing) {
  if (!path.empty()) {
    if (Status v = validate_path(path); !v) return std::move(v).error();
  }
  int fd = open_dir_raw(root_dir, path, create_missing);
  if (fd < 0) return error_from_errno(-fd, path);
  return Fd(fd);
}

Result<ParentAndLeaf> open_parent_beneath(int root_dir, std::string_view path,
                                          bool create_missing) {
  if (Status v = validate_path(path); !v) return std::move(v).error();
  std::size_t slash = path.rfind('/');
  std::string_view dir =
      slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
  std::string_view leaf = slash == std::string_view::npos ? path : path.substr(slash + 1);
  int fd = open_dir_raw(root_dir, dir, create_missing);
  // Errors name the path the user asked for, not just its parent.
  if (fd < 0) return error_from_errno(-fd, path);
  return ParentAndLeaf{Fd(fd), std::string(leaf)};
}

}  // namespace ops::sdk
