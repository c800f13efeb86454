// stat (OPS/1 §10): one entry as `list` reports it, optionally with the file's SHA-256.
//
// Decisions:
//  - `path` absent or "" is the user's root (a "dir").
//  - `type`, `size` and `mtime` come from the same SDK function `list` uses
//    (ops::sdk::entry_info), so the two always agree.
//  - A symlink anywhere on the path, the last component included, is `forbidden` and
//    never followed; a fifo, socket or device planted on disk is `forbidden` ("not a
//    regular file"), as in `download`.
//  - With "sha256": true a file's whole content is hashed each time (no cache: a cached
//    hash could go stale through a change the server does not see); a directory has no
//    `sha256` member. The file is inspected through an O_PATH descriptor first, so a
//    planted device is never opened for reading.
#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <string>

#include "opserver/files.hpp"
#include "opserver/json_result.hpp"
#include "opserver/paths.hpp"
#include "opserver/plugin.hpp"

namespace {

using ops::ErrorCode;
using ops::Status;
using ops::sdk::Call;

constexpr const char* kSchema = R"json({
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "properties": {
    "path": {"type": "string", "maxLength": 4096, "default": "",
             "description": "the file or directory, relative to yours (default: yours)"},
    "sha256": {"type": "boolean", "default": false,
               "description": "add the file's SHA-256 (hex)"}
  },
  "additionalProperties": false
})json";

Status handle_stat(Call& call, const rapidjson::Value& args) {
  const std::string path = ops::sdk::arg_string(args, "path");
  const bool want_sha = ops::sdk::arg_bool(args, "sha256", false);

  ops::sdk::Fd fd;
  if (path.empty()) {
    auto root = ops::sdk::open_dir_beneath(call.user_dir(), "", false);
    if (!root) return std::move(root).error();
    fd = std::move(*root);
  } else {
    auto opened = ops::sdk::open_beneath(call.user_dir(), path, O_PATH);
    if (!opened) return std::move(opened).error();
    fd = std::move(*opened);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ops::sdk::error_from_errno(errno, path);
  auto info = ops::sdk::entry_info(st);
  if (!info) return ops::fail(ErrorCode::forbidden, "not a regular file: " + path);

  std::string digest;
  if (want_sha && !info->dir) {
    // Re-open for reading by name, and make sure it is still the file looked at above;
    // the size and mtime reported are those of the file hashed.
    auto file = ops::sdk::open_beneath(call.user_dir(), path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    if (!file) return std::move(file).error();
    struct stat again {};
    if (::fstat(file->get(), &again) != 0) return ops::sdk::error_from_errno(errno, path);
    if (again.st_dev != st.st_dev || again.st_ino != st.st_ino || !S_ISREG(again.st_mode)) {
      return ops::fail(ErrorCode::conflict, "the file changed while it was read: " + path);
    }
    auto hashed = ops::sdk::sha256_of_fd(file->get(), path);
    if (!hashed) return std::move(hashed).error();
    digest = std::move(*hashed);
    info = ops::sdk::entry_info(again);
  }
  ops::sdk::JsonResult out;
  out.str("path", path).str("type", info->type()).u64("size", info->size).i64("mtime", info->mtime);
  if (!digest.empty()) out.str("sha256", digest);
  return call.send_result(out.done());
}

}  // namespace

OPS_EXPORT_PLUGIN("stat", "1.0.0",
                  OPS_OPERATION("stat",
                                "Describe one file or directory (type, size, mtime; optionally "
                                "its SHA-256)",
                                "1.0.0", OPS_PAYLOAD_NONE, kSchema, handle_stat))
