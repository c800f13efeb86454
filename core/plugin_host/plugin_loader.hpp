// Loads every plugin .so in a directory with Boost.DLL and checks it before trusting it:
// the exported stamp (ABI version, build signature) is read before any plugin code is
// called, symbols are bound at load (RTLD_NOW) so a missing one fails at start-up, and
// each operation name may be provided once. Before any of that, the directory and every
// .so must be safe to load code from (case 105, below). Start-up only; main thread.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "opserver/error.hpp"
#include "opserver/plugin_abi.h"

namespace boost::dll {
class shared_library;
}

namespace ops::core {

class OpLifecycle;

// One operation found in a plugin. `library` keeps the .so mapped for as long as the
// operation (or anything else holding this pointer) lives: unloading first would leave
// `op` and `handler` dangling (Boost.DLL's docs show that crash).
// Which file version a library was loaded from: a reload reuses a library whose file still
// has this identity, and loads any other afresh.
struct FileIdentity {
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  bool operator==(const FileIdentity&) const = default;
};

struct LoadedOperation {
  const ops_op_v1* op = nullptr;
  std::string plugin_name;
  std::string plugin_version;
  std::filesystem::path file;
  std::shared_ptr<boost::dll::shared_library> library;
  FileIdentity identity;  // of `file` (its target, for a symlink) when it was loaded
  // The operation's init/shutdown state (plugin_host/lifecycle.hpp), shared by every copy
  // of this LoadedOperation: a reload that reuses the library reuses it, and its shutdown
  // hook runs when the last copy goes, before the library can be unloaded.
  std::shared_ptr<OpLifecycle> lifecycle;
};

// How a reload loads the directory again (net/reload.cpp).
struct PluginReload {
  // What the last load gave: a .so whose file has the same identity as then is reused as it
  // is (not loaded again: its code and static state stay).
  const std::vector<LoadedOperation>* previous = nullptr;
  // File names in the directory never to load into this process: plugins that run isolated
  // in a worker process (ops.json "isolation": "process"), whose code must not run here.
  std::set<std::string> skip;
};

// Loads all "*.so" files in `dir`. Errors name the file and the reason. `dir` and every
// .so must pass plugin_trust_problem() for the server's effective uid; a symlinked .so is
// followed, and both the file it resolves to and that file's directory must pass.
Result<std::vector<LoadedOperation>> load_plugins(const std::filesystem::path& dir);
// The same, leaving out the files named in `skip` (isolated plugins).
Result<std::vector<LoadedOperation>> load_plugins(const std::filesystem::path& dir,
                                                  const std::set<std::string>& skip);

// Loads one .so after the same checks as load_plugins (its directory and the file must be
// safe to load code from): what the isolated worker host (opserver-plugin-host) runs.
Result<std::vector<LoadedOperation>> load_plugin_file(const std::filesystem::path& file);

// The same checks for a reload. A new or changed .so is not opened at its own path: the
// dynamic loader would hand back the library already loaded from that path (it matches
// names first, then device and inode, so even a file rewritten in place would be missed).
// It is copied, from the descriptor that was checked, into an anonymous memory file
// (memfd_create) and loaded from /proc/self/fd/N; that descriptor stays open for as long
// as the library is loaded, so the name /proc/self/fd/N is never reused by another load.
Result<std::vector<LoadedOperation>> load_plugins(const std::filesystem::path& dir,
                                                  const PluginReload& reload);

// Who may change the code the server loads (sshd's StrictModes; docs/PLUGINS.md): the owner
// must be root or `server_uid`; nobody may write it through "others" (S_IWOTH, sticky bit
// or not); and group write (S_IWGRP) is allowed only if `group_is_trusted(st.st_gid)`.
// With an extended POSIX ACL (`extended_acl`) the group bits are the ACL's mask, so group
// write there means a named user or group may write: refused. Returns why `st` fails,
// worded to follow "is" ("writable by others (mode 0777)"), or an empty string when it
// passes. Pure, so that unit tests can feed it any owner and mode.
std::string plugin_trust_problem(const struct stat& st, uid_t server_uid, bool extended_acl,
                                 const std::function<bool(gid_t)>& group_is_trusted);

// The group test load_plugins() uses: `gid` exists, has at least one member, and every
// member, by its login group (the passwd database) or listed in the group, is root or
// `uid`. That is a user private group (Debian's user-group-modes rule for sshd), so a
// umask of 002 does not lock its owner out; a shared group does not pass.
bool group_members_are_trusted(gid_t gid, uid_t uid);

}  // namespace ops::core
