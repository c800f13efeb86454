// mkdir (OPS/1 §10): creates a directory, and with `parents` (the default) its missing
// parents.
//
// Decisions:
//  - An existing directory is success with "created": false; `created` is true only when
//    this call made the last component. A file in the way (at the path or among its
//    parents) is `conflict`; a symlink in the way is `forbidden`, never followed.
//  - Without `parents` a missing parent is `not_found`.
//  - New directories get mode 0750, like the user directories, and each directory that
//    gains an entry is fsynced before the answer, so an acknowledged mkdir survives a
//    crash. A failure part-way (a failed fsync) removes the directories this call made,
//    so a failed mkdir leaves nothing behind.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

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
    "path": {"type": "string", "minLength": 1, "maxLength": 4096,
             "description": "the directory to create, relative to your directory"},
    "parents": {"type": "boolean", "default": true,
                "description": "create missing parent directories too"}
  },
  "required": ["path"],
  "additionalProperties": false
})json";

// Without `parents`: only the last component may be made.
ops::Result<bool> make_leaf(int root, const std::string& path) {
  auto opened = ops::sdk::open_parent_beneath(root, path, /*create_missing=*/false);
  if (!opened) return std::move(opened).error();
  const int parent = opened->parent.get();
  const char* leaf = opened->leaf.c_str();
  if (::mkdirat(parent, leaf, 0750) == 0) {
    if (Status synced = ops::sdk::fsync_dir(parent, path); !synced) {
      ::unlinkat(parent, leaf, AT_REMOVEDIR);  // a failed mkdir leaves nothing
      return std::move(synced).error();
    }
    return true;
  }
  if (errno != EEXIST) return ops::sdk::error_from_errno(errno, path);
  struct stat st {};
  if (::fstatat(parent, leaf, &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ops::sdk::error_from_errno(errno, path);
  }
  if (S_ISDIR(st.st_mode)) return false;
  if (S_ISLNK(st.st_mode)) return ops::sdk::error_from_errno(ELOOP, path);
  return ops::sdk::error_from_errno(ENOTDIR, path);  // a file in the way: conflict
}

Status handle_mkdir(Call& call, const rapidjson::Value& args) {
  const std::string path = ops::sdk::arg_string(args, "path");
  const bool parents = ops::sdk::arg_bool(args, "parents", true);
  if (path.empty()) return ops::fail(ErrorCode::invalid_args, "path is required");
  bool created = false;
  if (parents) {
    // What this call creates goes again if it fails part-way (a failed fsync), so a
    // failed mkdir leaves nothing behind.
    auto missing = ops::sdk::missing_prefixes(call.user_dir(), path);
    if (!missing) return std::move(missing).error();
    ops::sdk::CreatedDirs undo(call.user_dir(), std::move(*missing));
    auto made = ops::sdk::make_dirs_beneath(call.user_dir(), path);
    if (!made) return std::move(made).error();
    undo.keep();
    created = made->created;
  } else {
    auto made = make_leaf(call.user_dir(), path);
    if (!made) return std::move(made).error();
    created = *made;
  }
  return call.send_result(
      ops::sdk::JsonResult().str("path", path).boolean("created", created).done());
}

}  // namespace

OPS_EXPORT_PLUGIN("mkdir", "1.0.0",
                  OPS_OPERATION("mkdir", "Create a directory (and its missing parents)", "1.0.0",
                                OPS_PAYLOAD_NONE, kSchema, handle_mkdir))
