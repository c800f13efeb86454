// upload (OPS/1 §5, §7): stores the request payload as a file under the caller's directory.
//
// The way a file is published, and why:
//  1. Cheap refusals come first, before any payload byte is read (the host discards what
//     is left unread): a bad path, a file or symlink where a parent directory is needed,
//     an existing file without `overwrite`, a directory or symlink at the path, or no
//     room on the disk for the declared size. (A payload over the operation's
//     "max_payload" in ops.json is refused by the host before this handler runs.)
//  2. The bytes stream through a 1 MiB buffer into a temporary file in the host's scratch
//     directory: server-private, on the same filesystem, unreachable by any user path
//     (§7), emptied at start-up (so a crash leaves no orphan visible anywhere). SHA-256 is
//     computed on the way. Memory does not grow with the file.
//  3. fsync(file). A failed fsync fails the upload; it is never retried (fsyncgate).
//  4. Missing parent directories are created only now, so a failed upload leaves no empty
//     directories behind either.
//  5. Publish: with `overwrite`, rename(2) replaces the old file atomically (readers see
//     the old or the new content, never a mix; a hard link to an outside file is
//     replaced, not written through). Without it, renameat2(RENAME_NOREPLACE), or
//     link(2) where the filesystem lacks it, so that of concurrent creators of one new
//     path exactly one wins (§7) and the others get `already_exists`.
//  6. fsync(parent directory), and only then the `ok` answer: an acknowledged upload
//     survives a crash.
// Any failure before step 5 removes the temporary file and leaves the old file untouched.
//
// Quota (§10): before the temporary file is made and before any payload byte is read, the
// growth is reserved from the declared size (ops::sdk::QuotaReservation): the new size
// less the size of the file it replaces, and one file unless it replaces one. Past the
// quota the answer is quota_exceeded and nothing is left behind. After publishing, the
// actual change is committed, measured against what was at the path just before the
// rename; any failure releases the reservation (the object's destructor).
#include <fcntl.h>
#include <openssl/evp.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <stdio.h>  // renameat2, RENAME_NOREPLACE (glibc, _GNU_SOURCE)
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "opserver/paths.hpp"
#include "opserver/plugin.hpp"
#include "opserver/proof.hpp"

namespace {

using ops::ErrorCode;
using ops::Status;
using ops::sdk::Call;
using ops::sdk::Fd;

constexpr std::size_t kChunk = std::size_t{1} << 20;

constexpr const char* kSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "path": {"type": "string", "minLength": 1, "maxLength": 4096,
             "description": "where to store the file, relative to your directory"},
    "overwrite": {"type": "boolean", "default": false,
                  "description": "replace an existing file"},
    "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$",
               "description": "expected SHA-256 of the payload, hex"}
  },
  "required": ["path"],
  "additionalProperties": false
})json";

// The temporary file in the scratch directory; removed unless it was published.
class TempFile {
 public:
  TempFile(int scratch_dir, std::string name, Fd fd)
      : scratch_dir_(scratch_dir), name_(std::move(name)), fd_(std::move(fd)) {}
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    fd_.reset();
    if (!published_) ::unlinkat(scratch_dir_, name_.c_str(), 0);
  }

  int fd() const noexcept { return fd_.get(); }
  const std::string& name() const noexcept { return name_; }
  // Closes the file, reporting what close(2) reports (a late write-back error counts).
  int close() noexcept { return ::close(fd_.release()); }
  void mark_published() noexcept { published_ = true; }

 private:
  int scratch_dir_;
  std::string name_;
  Fd fd_;
  bool published_ = false;
};

struct EvpCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
};
using EvpCtx = std::unique_ptr<EVP_MD_CTX, EvpCtxDeleter>;

// Errors from storing the bytes. The user's path is named; the scratch file never is.
ops::Error storage_error(int err, const std::string& path) {
  if (err == EXDEV) {
    // Not a symlink here: rename across filesystems means the host's scratch directory is
    // misconfigured. The user can do nothing about it.
    return ops::fail(ErrorCode::internal, "server storage is misconfigured");
  }
  return ops::sdk::error_from_errno(err, path);
}

Status write_all(int fd, const unsigned char* data, std::size_t size, const std::string& path) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return storage_error(errno, path);
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return ops::ok_status();
}

// Looks at what is at the leaf now, so the common refusals happen before the payload.
// The publish step re-decides atomically; this check only saves the client the upload.
// `*replaced` gets the size of the file an overwrite would replace (nullopt: none).
Status check_leaf(int parent, const std::string& leaf, bool overwrite, const std::string& path,
                  std::optional<std::uint64_t>* replaced) {
  struct stat st {};
  if (::fstatat(parent, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return ops::ok_status();
    return storage_error(errno, path);
  }
  if (S_ISLNK(st.st_mode)) return storage_error(ELOOP, path);
  if (S_ISDIR(st.st_mode)) return ops::fail(ErrorCode::conflict, "is a directory: " + path);
  if (!S_ISREG(st.st_mode)) return ops::fail(ErrorCode::conflict, "not a regular file: " + path);
  if (!overwrite) {
    return ops::fail(ErrorCode::already_exists,
                     "file already exists: " + path + " (set overwrite to replace it)");
  }
  *replaced = static_cast<std::uint64_t>(st.st_size);
  return ops::ok_status();
}

// The regular file at `leaf` now, for the quota's count of an overwrite (nullopt: none).
std::optional<std::uint64_t> regular_file_size(int parent, const std::string& leaf) {
  struct stat st {};
  if (::fstatat(parent, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
    return std::nullopt;
  }
  return static_cast<std::uint64_t>(st.st_size);
}

// Publishes without replacing: exactly one of several concurrent creators wins. Returns 0
// or an errno; `*linked` tells whether the temporary name still exists (link fallback).
int publish_noreplace(int scratch, const std::string& tmp, int parent, const std::string& leaf,
                      bool* linked) {
  *linked = false;
  if (::renameat2(scratch, tmp.c_str(), parent, leaf.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  // The filesystem lacks RENAME_NOREPLACE: link(2) also fails with EEXIST atomically. The
  // temporary name is unlinked afterwards by TempFile.
  if (::linkat(scratch, tmp.c_str(), parent, leaf.c_str(), 0) != 0) return errno;
  *linked = true;
  return 0;
}

// After parent directories may have been created: a new directory entry is durable only
// once the directory holding it is synced. Syncs the user root and each proper prefix of
// `dir_path` ("a" for "a/b"); the caller syncs `dir_path` itself after the rename.
Status sync_ancestors(int root, const std::string& dir_path, const std::string& path) {
  std::string prefix;  // "" is the user root
  std::size_t pos = 0;
  while (true) {
    auto dir = ops::sdk::open_dir_beneath(root, prefix, false);
    if (!dir) return std::move(dir).error();
    if (::fsync(dir->get()) != 0) return storage_error(errno, path);
    std::size_t slash = dir_path.find('/', pos);
    if (slash == std::string::npos) break;
    prefix = dir_path.substr(0, slash);
    pos = slash + 1;
  }
  return ops::ok_status();
}

// The prefixes of `dir_path` ("a", "a/b", ...) that do not exist yet: the directories
// this upload is about to create. Any other failure to look is the upload's failure.
ops::Result<std::vector<std::string>> missing_prefixes(int root, const std::string& dir_path) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  for (;;) {
    std::size_t slash = dir_path.find('/', pos);
    std::string prefix = dir_path.substr(0, slash);
    if (out.empty()) {
      auto dir = ops::sdk::open_dir_beneath(root, prefix, false);
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

// Removes, deepest first, the directories this upload created, unless the upload was
// published. rmdir refuses a directory that is no longer empty, so whatever another
// upload has put there meanwhile stays. (Another upload may still be about to rename
// into one of them; it then fails with not_found, which a retry fixes. §5 asks that a
// failed upload leave nothing behind; that rare cost buys it.)
class CreatedDirs {
 public:
  CreatedDirs(int root, std::vector<std::string> dirs) : root_(root), dirs_(std::move(dirs)) {}
  CreatedDirs(const CreatedDirs&) = delete;
  CreatedDirs& operator=(const CreatedDirs&) = delete;
  ~CreatedDirs() {
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
      std::size_t slash = it->rfind('/');
      std::string parent = slash == std::string::npos ? std::string() : it->substr(0, slash);
      std::string leaf = slash == std::string::npos ? *it : it->substr(slash + 1);
      // A failure partway through step 4 leaves the deeper ones uncreated: skip those
      // (ENOENT) and go on to their parents; stop at anything else (not empty: in use).
      auto dir = ops::sdk::open_dir_beneath(root_, parent, false);
      if (!dir) {
        if (dir.error().code == ErrorCode::not_found) continue;
        return;
      }
      if (::unlinkat(dir->get(), leaf.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) return;
    }
  }
  void keep() noexcept { dirs_.clear(); }

 private:
  int root_;
  std::vector<std::string> dirs_;
};

std::string lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

Status handle_upload(Call& call, const rapidjson::Value& args) {
  const rapidjson::Value& path_value = args["path"];
  const std::string path(path_value.GetString(), path_value.GetStringLength());
  bool overwrite = false;
  if (auto it = args.FindMember("overwrite"); it != args.MemberEnd() && it->value.IsBool()) {
    overwrite = it->value.GetBool();
  }
  std::optional<std::string> expected;
  if (auto it = args.FindMember("sha256"); it != args.MemberEnd() && it->value.IsString()) {
    expected = lowercase(std::string(it->value.GetString(), it->value.GetStringLength()));
    if (expected->size() != 64 ||
        expected->find_first_not_of("0123456789abcdef") != std::string::npos) {
      return ops::fail(ErrorCode::invalid_args, "sha256 must be 64 hex digits");
    }
  }

  if (Status v = ops::sdk::validate_path(path); !v) return v;
  const std::uint64_t size = call.payload_size();
  const int root = call.user_dir();
  const std::size_t slash = path.rfind('/');
  const std::string dir_path = slash == std::string::npos ? std::string() : path.substr(0, slash);

  // A missing parent is created after the payload has arrived (step 4); anything else in
  // the way is refused now.
  auto opened = ops::sdk::open_parent_beneath(root, path, /*create_missing=*/false);
  bool parent_missing = false;
  std::optional<std::uint64_t> replaced;
  if (!opened) {
    if (opened.error().code != ErrorCode::not_found) return std::move(opened).error();
    parent_missing = true;
  } else if (Status leaf_ok =
                 check_leaf(opened->parent.get(), opened->leaf, overwrite, path, &replaced);
             !leaf_ok) {
    return leaf_ok;
  }

  // Quota, from the declared size, before a payload byte is read.
  auto room = ops::sdk::QuotaReservation::reserve(
      call, replaced ? (size > *replaced ? size - *replaced : 0) : size, replaced ? 0 : 1);
  if (!room) return std::move(room).error();

  // Step 2: the temporary file.
  const int scratch = call.scratch_dir();
  std::string tmp_name = "upload-" + ops::proof::random_hex(16);
  int raw = ::openat(scratch, tmp_name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0640);
  if (raw < 0) {
    int err = errno;
    call.log(OPS_LOG_ERROR, std::string("cannot create a temporary file: ") + strerror(err));
    if (err == ENOSPC || err == EDQUOT) return ops::sdk::error_from_errno(err, path);
    return ops::fail(ErrorCode::internal, "cannot create a temporary file");
  }
  TempFile tmp(scratch, tmp_name, Fd(raw));

  // Reserve the space now so a full disk is known before the client sends everything.
  // Filesystems without fallocate just skip this; ENOSPC then surfaces from write().
  if (size > 0 && size <= static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) &&
      ::fallocate(tmp.fd(), FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(size)) != 0 &&
      (errno == ENOSPC || errno == EDQUOT || errno == EFBIG)) {
    return storage_error(errno, path);
  }

  EvpCtx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return ops::fail(ErrorCode::internal, "cannot compute sha256");
  }
  std::unique_ptr<unsigned char[]> buf(new unsigned char[kChunk]);
  std::uint64_t received = 0;
  while (true) {
    std::int64_t n = call.read_payload(buf.get(), kChunk);
    if (n == 0) break;
    if (n < 0) return ops::fail(ErrorCode::unavailable, "payload did not arrive");
    if (static_cast<std::uint64_t>(n) > size - received) {
      return ops::fail(ErrorCode::internal, "payload longer than declared");  // host bug
    }
    if (EVP_DigestUpdate(ctx.get(), buf.get(), static_cast<std::size_t>(n)) != 1) {
      return ops::fail(ErrorCode::internal, "cannot compute sha256");
    }
    if (Status w = write_all(tmp.fd(), buf.get(), static_cast<std::size_t>(n), path); !w) return w;
    received += static_cast<std::uint64_t>(n);
  }
  buf.reset();
  if (received != size) return ops::fail(ErrorCode::unavailable, "payload did not arrive");

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &digest_len) != 1 || digest_len != 32) {
    return ops::fail(ErrorCode::internal, "cannot compute sha256");
  }
  const std::string actual = ops::proof::to_hex(digest, digest_len);
  if (expected && *expected != actual) {
    return ops::fail(ErrorCode::checksum_mismatch,
                     "sha256 mismatch: expected " + *expected + ", received " + actual);
  }

  // Step 3.
  if (::fsync(tmp.fd()) != 0 || tmp.close() != 0) return storage_error(errno, path);

  // Step 4.
  std::vector<std::string> to_create;
  if (parent_missing) {
    auto missing = missing_prefixes(root, dir_path);
    if (!missing) return std::move(missing).error();
    to_create = std::move(*missing);
  }
  CreatedDirs created(root, std::move(to_create));
  if (parent_missing) {
    opened = ops::sdk::open_parent_beneath(root, path, /*create_missing=*/true);
    if (!opened) return std::move(opened).error();
    if (Status synced = sync_ancestors(root, dir_path, path); !synced) return synced;
  }
  const int parent = opened->parent.get();
  const std::string& leaf = opened->leaf;

  // Step 5.
  int err = 0;
  bool linked = false;
  const std::optional<std::uint64_t> old_file =
      overwrite ? regular_file_size(parent, leaf) : std::nullopt;
  if (overwrite) {
    if (::renameat(scratch, tmp.name().c_str(), parent, leaf.c_str()) != 0) err = errno;
  } else {
    err = publish_noreplace(scratch, tmp.name(), parent, leaf, &linked);
  }
  if (err == EEXIST && !overwrite) {
    // Another creator won, or the path is a directory now: say which.
    struct stat st {};
    if (::fstatat(parent, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
      return ops::fail(ErrorCode::conflict, "is a directory: " + path);
    }
    return ops::fail(ErrorCode::already_exists,
                     "file already exists: " + path + " (set overwrite to replace it)");
  }
  if (err == EISDIR || err == ENOTEMPTY || (err == EEXIST && overwrite)) {
    return ops::fail(ErrorCode::conflict, "is a directory: " + path);
  }
  if (err != 0) return storage_error(err, path);
  // A rename moved the temporary name away; after link() it still exists and TempFile
  // removes it.
  if (!linked) tmp.mark_published();
  created.keep();
  room->commit(static_cast<std::int64_t>(size) - static_cast<std::int64_t>(old_file.value_or(0)),
               old_file ? 0 : 1);

  // Step 6. The file is visible now; if its directory entry cannot be made durable the
  // client is told the upload failed (it may then see the file, or not after a crash).
  if (::fsync(parent) != 0) {
    int sync_err = errno;
    call.log(OPS_LOG_ERROR, std::string("fsync of a directory failed: ") + strerror(sync_err));
    return ops::fail(ErrorCode::unavailable,
                     "the file could not be made durable: " + path + " (its state is unknown)");
  }

  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> w(out);
  w.StartObject();
  w.Key("path");
  w.String(path.data(), static_cast<rapidjson::SizeType>(path.size()));
  w.Key("size");
  w.Uint64(size);
  w.Key("sha256");
  w.String(actual.data(), static_cast<rapidjson::SizeType>(actual.size()));
  w.EndObject();
  return call.send_result(std::string_view(out.GetString(), out.GetSize()));
}

}  // namespace

OPS_EXPORT_PLUGIN("upload", "1.0.0",
                  OPS_OPERATION("upload",
                                "Store the request payload as a file (atomic; creates parent "
                                "directories)",
                                "1.0.0", OPS_PAYLOAD_IN, kSchema, handle_upload))
