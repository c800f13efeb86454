// upload (OPS/1 §5, §7): stores the request payload as a file under the caller's directory.
//
// The way a file is published, and why (every step but 2 is the SDK's publish.hpp, shared
// with upload_commit of resumable uploads):
//  1. Cheap refusals come first, before any payload byte is read (the host discards what
//     is left unread): a bad path, a file or symlink where a parent directory is needed,
//     an existing file without `overwrite`, a directory or symlink at the path, or no
//     room on the disk for the declared size. (A payload over the operation's
//     "max_payload" in ops.json is refused by the host before this handler runs.)
//  2. The bytes stream through a 1 MiB buffer into a temporary file in this server's own
//     scratch directory (node_scratch_dir): server-private, on the same filesystem,
//     unreachable by any user path (§7), emptied when this server starts again (so a crash
//     leaves no orphan visible anywhere) and by no other server sharing the storage while
//     this one runs. SHA-256 is
//     computed on the way. Memory does not grow with the file.
//  3. fsync(file). A failed fsync fails the upload; it is never retried (fsyncgate).
//  4. Missing parent directories are created only now, so a failed upload leaves no empty
//     directories behind either.
//  5. Publish: with `overwrite`, the new file replaces the old one atomically (readers see
//     the old or the new content, never a mix; a hard link to an outside file is
//     replaced, not written through), by RENAME_EXCHANGE so that the usage change counts
//     the file really replaced. Without it, renameat2(RENAME_NOREPLACE), or
//     link(2) where the filesystem lacks it, so that of concurrent creators of one new
//     path exactly one wins (§7) and the others get `already_exists`.
//  6. fsync(parent directory), and only then the `ok` answer: an acknowledged upload
//     survives a crash.
// Any failure before step 5 removes the temporary file and leaves the old file untouched.
//
// Quota (§10): before the temporary file is made and before any payload byte is read, the
// growth is reserved from the declared size (ops::sdk::QuotaReservation): the new size
// less the size of the file it replaces, and one file unless it replaces one. Past the
// quota the answer is quota_exceeded and nothing is left behind. Once the file is
// published (even if the directory fsync after it fails), the actual change is committed;
// any failure before releases the reservation (the object's destructor).
#include <fcntl.h>
#include <openssl/evp.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
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

#include "opserver/paths.hpp"
#include "opserver/plugin.hpp"
#include "opserver/proof.hpp"
#include "opserver/publish.hpp"

namespace {

using ops::ErrorCode;
using ops::Status;
using ops::sdk::Call;

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

struct EvpCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
};
using EvpCtx = std::unique_ptr<EVP_MD_CTX, EvpCtxDeleter>;

using ops::sdk::storage_error;

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

std::string lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The size of the regular file an overwrite would replace (0 and false: none), looked up
// in the parent step 1 opened, so no further open is made.
Status replaced_file(const ops::sdk::PublishTarget& target, const std::string& path, bool& replaces,
                     std::uint64_t& old_size) {
  replaces = false;
  old_size = 0;
  if (!target.opened) return ops::ok_status();
  struct stat st {};
  if (::fstatat(target.opened->parent.get(), target.opened->leaf.c_str(), &st,
                AT_SYMLINK_NOFOLLOW) != 0) {
    return errno == ENOENT ? ops::ok_status() : storage_error(errno, path);
  }
  replaces = S_ISREG(st.st_mode);
  old_size = replaces ? static_cast<std::uint64_t>(st.st_size) : 0;
  return ops::ok_status();
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

  // Step 1.
  auto target = ops::sdk::check_publish_target(root, path, overwrite);
  if (!target) return std::move(target).error();

  // Quota (§10), from the declared size, before the temporary file is made and before a
  // payload byte is read: an overwrite counts only its growth and adds no file.
  bool replaces = false;
  std::uint64_t old_size = 0;
  if (overwrite) {
    if (Status st = replaced_file(*target, path, replaces, old_size); !st) return st;
  }
  auto room = ops::sdk::QuotaReservation::reserve(call, size > old_size ? size - old_size : 0,
                                                  replaces ? 0 : 1);
  if (!room) return std::move(room).error();

  // Step 2: the temporary file.
  // This server's own scratch directory: no other server sharing the storage touches it.
  auto created = ops::sdk::ScratchFile::create(call, call.node_scratch_dir(), "upload-", path);
  if (!created) return std::move(created).error();
  ops::sdk::ScratchFile tmp = std::move(*created);

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
  if (Status synced = tmp.sync_and_close(path); !synced) return synced;

  // Steps 4 to 6. A rename moved the temporary name away; after link() it still exists and
  // ScratchFile removes it.
  ops::sdk::PublishOutcome outcome;
  Status published =
      ops::sdk::publish_file(call, root, tmp.dir(), tmp.name(), path, overwrite, *target, outcome);
  if (outcome.source_consumed) tmp.mark_published();
  // Once the file is under its name it counts, even if the answer is a failure (a
  // directory fsync that failed after the rename), and it counts against what the rename
  // really replaced: the file seen in step 1 may have been removed or replaced since.
  if (outcome.visible) {
    room->commit(
        static_cast<std::int64_t>(size) - static_cast<std::int64_t>(outcome.replaced_bytes),
        outcome.replaced ? 0 : 1);
  }
  if (!published) return published;

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
