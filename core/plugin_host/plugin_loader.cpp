#include "plugin_host/plugin_loader.hpp"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <boost/dll/shared_library.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

namespace ops::core {
namespace fs = std::filesystem;
namespace dll = boost::dll;

namespace {

std::string last_dlerror() {
  const char* text = ::dlerror();
  return text ? text : "unknown dlopen error";
}

Error plugin_error(const fs::path& file, const std::string& reason) {
  return Error{ErrorCode::internal, "plugin " + file.string() + ": " + reason};
}

Result<std::vector<LoadedOperation>> load_one(const fs::path& file) {
  auto library = std::make_shared<dll::shared_library>();
  boost::dll::fs::error_code ec;
  ::dlerror();  // clear any stale message
  library->load(file, dll::load_mode::rtld_now | dll::load_mode::rtld_local, ec);
  if (ec || !library->is_loaded()) return plugin_error(file, "cannot load: " + last_dlerror());

  // Compatibility first, reading data only, like nginx's module signature check.
  if (!library->has(OPS_PLUGIN_STAMP_SYMBOL)) {
    return plugin_error(file, "not an opserver plugin: missing symbol " OPS_PLUGIN_STAMP_SYMBOL);
  }
  const auto& stamp = library->get<const ops_plugin_stamp_v1>(OPS_PLUGIN_STAMP_SYMBOL);
  if (stamp.abi_version != OPS_PLUGIN_ABI_VERSION) {
    return plugin_error(file, "built for plugin ABI version " + std::to_string(stamp.abi_version) +
                                  ", this server expects version " +
                                  std::to_string(OPS_PLUGIN_ABI_VERSION));
  }
  std::string signature = stamp.build_signature ? stamp.build_signature : "(none)";
  // Same architecture, and the same C++ library ABI unless the plugin is plain C.
  bool compatible = signature == OPS_BUILD_SIGNATURE || signature == OPS_BUILD_SIGNATURE_ARCH "c";
  if (!compatible) {
    return plugin_error(file, "is not binary compatible: built as \"" + signature +
                                  "\", this server is \"" OPS_BUILD_SIGNATURE "\"");
  }
  if (!library->has(OPS_PLUGIN_ENTRY_SYMBOL)) {
    return plugin_error(file, "missing entry symbol " OPS_PLUGIN_ENTRY_SYMBOL);
  }
  auto entry = library->get<const ops_plugin_v1*()>(OPS_PLUGIN_ENTRY_SYMBOL);
  const ops_plugin_v1* plugin = entry();
  if (plugin == nullptr) return plugin_error(file, "the entry returned no descriptor");
  if (plugin->abi_version != OPS_PLUGIN_ABI_VERSION) {
    return plugin_error(file, "descriptor is for plugin ABI version " +
                                  std::to_string(plugin->abi_version) + ", this server expects " +
                                  std::to_string(OPS_PLUGIN_ABI_VERSION));
  }
  if (plugin->struct_size < sizeof(ops_plugin_v1) || plugin->name == nullptr ||
      (plugin->op_count > 0 && plugin->ops == nullptr)) {
    return plugin_error(file, "malformed plugin descriptor");
  }

  std::vector<LoadedOperation> out;
  for (std::size_t i = 0; i < plugin->op_count; ++i) {
    const ops_op_v1* op = &plugin->ops[i];
    if (op->struct_size < sizeof(ops_op_v1) || op->name == nullptr || op->name[0] == '\0' ||
        op->call == nullptr || op->args_schema == nullptr || op->payload < OPS_PAYLOAD_NONE ||
        op->payload > OPS_PAYLOAD_OUT) {
      return plugin_error(file, "malformed operation #" + std::to_string(i));
    }
    out.push_back(
        LoadedOperation{op, plugin->name, plugin->version ? plugin->version : "0", file, library});
  }
  return out;
}

// --- who may change the code (case 105) ---

std::string mode_text(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

// An extended access ACL exists (named users or groups). ENODATA, ENOTSUP: none.
bool has_extended_acl_at(const fs::path& path) {
  return ::lgetxattr(path.c_str(), "system.posix_acl_access", nullptr, 0) > 0;
}
bool has_extended_acl_fd(int fd) {
  return ::fgetxattr(fd, "system.posix_acl_access", nullptr, 0) > 0;
}

std::string trust_problem(const struct stat& st, bool extended_acl) {
  const uid_t uid = ::geteuid();
  return plugin_trust_problem(st, uid, extended_acl,
                              [uid](gid_t gid) { return group_members_are_trusted(gid, uid); });
}

// The passwd and group lookups want a caller's buffer; ERANGE means a larger one.
template <class Lookup>
int with_buffer(std::vector<char>& buffer, Lookup lookup) {
  for (;;) {
    int rc = lookup(buffer.data(), buffer.size());
    if (rc != ERANGE || buffer.size() >= (std::size_t{1} << 24)) return rc;
    buffer.resize(buffer.size() * 2);
  }
}

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

// The .so names in the directory open as `dir_fd` (regular files and symlinks; what a
// symlink leads to is decided later), sorted for a stable order of messages.
Result<std::vector<std::string>> list_libraries(int dir_fd, const fs::path& dir) {
  int fd = ::dup(dir_fd);
  DIR* stream = fd >= 0 ? ::fdopendir(fd) : nullptr;
  if (stream == nullptr) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    return Error{ErrorCode::internal,
                 "plugin directory " + dir.string() + ": cannot list it: " + std::strerror(err)};
  }
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(stream)) {
    std::string name = entry->d_name;
    if (fs::path(name).extension() == ".so") names.push_back(std::move(name));
  }
  ::closedir(stream);
  std::sort(names.begin(), names.end());
  return names;
}

// Checks one .so found in the checked directory. Returns true if it is to be loaded, false
// if it is no regular file (skipped, as always: a directory or a dangling symlink named
// *.so), or the refusal.
Result<bool> check_library(int dir_fd, const fs::path& file) {
  const std::string name = file.filename().string();
  struct stat st {};
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    const int err = errno;
    return plugin_error(file, std::string("cannot inspect it: ") + std::strerror(err));
  }
  auto refuse = [&](const std::string& what, const std::string& problem) {
    return plugin_error(file, what + problem + "; refusing to load it");
  };
  if (S_ISREG(st.st_mode)) {
    std::string problem = trust_problem(st, (st.st_mode & S_IWGRP) && has_extended_acl_at(file));
    if (!problem.empty()) return refuse("is ", problem);
    return true;
  }
  if (!S_ISLNK(st.st_mode)) return false;
  // A symlink (libfoo.so -> libfoo.so.1, or into another tree): sshd checks the file it
  // resolves to and that file's directory, and so do we. The link itself lives in the
  // checked directory, so only a trusted user could have made it.
  std::error_code ec;
  const fs::path target = fs::canonical(file, ec);
  struct stat tst {};
  if (ec || ::stat(target.c_str(), &tst) != 0 || !S_ISREG(tst.st_mode)) return false;
  if (std::string problem =
          trust_problem(tst, (tst.st_mode & S_IWGRP) && has_extended_acl_at(target));
      !problem.empty()) {
    return refuse("its target " + target.string() + " is ", problem);
  }
  const fs::path parent = target.parent_path();
  int parent_fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (parent_fd < 0) {
    const int err = errno;
    return plugin_error(file, "cannot open the directory of its target " + parent.string() + ": " +
                                  std::strerror(err));
  }
  FdCloser close_parent(parent_fd);
  struct stat pst {};
  if (::fstat(parent_fd, &pst) != 0) {
    const int err = errno;
    return plugin_error(file, "cannot inspect the directory of its target " + parent.string() +
                                  ": " + std::strerror(err));
  }
  if (std::string problem =
          trust_problem(pst, (pst.st_mode & S_IWGRP) && has_extended_acl_fd(parent_fd));
      !problem.empty()) {
    return refuse("its target's directory " + parent.string() + " is ", problem);
  }
  return true;
}

}  // namespace

std::string plugin_trust_problem(const struct stat& st, uid_t server_uid, bool extended_acl,
                                 const std::function<bool(gid_t)>& group_is_trusted) {
  if (st.st_uid != 0 && st.st_uid != server_uid) {
    return "owned by uid " + std::to_string(st.st_uid) +
           ", not by root or the server's user (uid " + std::to_string(server_uid) + ")";
  }
  if (st.st_mode & S_IWOTH) return "writable by others (mode " + mode_text(st.st_mode) + ")";
  if (st.st_mode & S_IWGRP) {
    if (extended_acl) {
      return "writable through a POSIX ACL entry (mode " + mode_text(st.st_mode) +
             ", the group bits are the ACL mask)";
    }
    if (!group_is_trusted(st.st_gid)) {
      return "writable by its group (gid " + std::to_string(st.st_gid) +
             "), which has members other than root and the server's user (mode " +
             mode_text(st.st_mode) + ")";
    }
  }
  return {};
}

bool group_members_are_trusted(gid_t gid, uid_t uid) {
  auto trusted = [uid](uid_t member) { return member == 0 || member == uid; };
  std::vector<char> buffer(16384);
  group gr{};
  group* found = nullptr;
  int rc = with_buffer(buffer, [&](char* data, std::size_t size) {
    return ::getgrgid_r(gid, &gr, data, size, &found);
  });
  if (rc != 0 || found == nullptr) return false;
  int members = 0;
  // Listed members. gr.gr_mem points into `buffer`, which the lookups below must not reuse.
  std::vector<char> pw_buffer(16384);
  for (char** name = gr.gr_mem; name != nullptr && *name != nullptr; ++name) {
    passwd pw{};
    passwd* user = nullptr;
    rc = with_buffer(pw_buffer, [&](char* data, std::size_t size) {
      return ::getpwnam_r(*name, &pw, data, size, &user);
    });
    if (rc != 0 || user == nullptr || !trusted(user->pw_uid)) return false;
    ++members;
  }
  // Members by their login group: every account in the passwd database (start-up only;
  // getpwent's position is process-wide).
  bool ok = true;
  ::setpwent();
  for (;;) {
    passwd pw{};
    passwd* user = nullptr;
    rc = with_buffer(pw_buffer, [&](char* data, std::size_t size) {
      return ::getpwent_r(&pw, data, size, &user);
    });
    if (rc == ENOENT || (rc == 0 && user == nullptr)) break;
    if (rc != 0) {
      ok = false;  // cannot tell who is in the group
      break;
    }
    if (user->pw_gid == gid) {
      if (!trusted(user->pw_uid)) {
        ok = false;
        break;
      }
      ++members;
    }
  }
  ::endpwent();
  // A group without members is typically one a setgid program writes with.
  return ok && members > 0;
}

Result<std::vector<LoadedOperation>> load_plugins(const fs::path& dir) {
  // The directory is checked on a descriptor, and listed and inspected through it, so
  // what was checked is what is read.
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return Error{ErrorCode::internal, "plugin directory " + dir.string() + " does not exist"};
    }
    return Error{ErrorCode::internal,
                 "plugin directory " + dir.string() + ": cannot open it: " + std::strerror(err)};
  }
  FdCloser close_dir(dir_fd);
  struct stat st {};
  if (::fstat(dir_fd, &st) != 0) {
    const int err = errno;
    return Error{ErrorCode::internal,
                 "plugin directory " + dir.string() + ": cannot inspect it: " + std::strerror(err)};
  }
  if (std::string problem =
          trust_problem(st, (st.st_mode & S_IWGRP) && has_extended_acl_fd(dir_fd));
      !problem.empty()) {
    return Error{ErrorCode::internal, "plugin directory " + dir.string() + " is " + problem +
                                          "; refusing to load plugins from it"};
  }
  auto names = list_libraries(dir_fd, dir);
  if (!names) return names.error();
  std::vector<fs::path> files;
  for (const std::string& name : *names) {
    const fs::path file = dir / name;
    auto load = check_library(dir_fd, file);
    if (!load) return load.error();
    if (*load) files.push_back(file);
  }

  std::vector<LoadedOperation> all;
  std::map<std::string, fs::path> provider;
  for (const fs::path& file : files) {
    auto loaded = load_one(file);
    if (!loaded) return loaded.error();
    for (LoadedOperation& op : *loaded) {
      auto [it, inserted] = provider.emplace(op.op->name, file);
      if (!inserted) {
        return Error{ErrorCode::internal, std::string("operation \"") + op.op->name +
                                              "\" is provided twice: by " + it->second.string() +
                                              " and by " + file.string()};
      }
      all.push_back(std::move(op));
    }
  }
  return all;
}

}  // namespace ops::core
