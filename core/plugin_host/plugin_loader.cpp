#include "plugin_host/plugin_loader.hpp"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <boost/dll/shared_library.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

#include "plugin_host/lifecycle.hpp"
#include "plugin_host/op_hooks.hpp"

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

FileIdentity identity_of(const struct stat& st) {
  return FileIdentity{st.st_dev, st.st_ino, st.st_size,
                      std::int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec,
                      std::int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec};
}

// Where a library is loaded from: its own path, or a fresh copy (see load_plugins with a
// PluginReload) whose descriptor the library owns.
struct LoadFrom {
  fs::path path;
  int owned_fd = -1;
};

// A library whose load path is /proc/self/fd/N: closes N only once the library is really
// gone. dlclose may keep it (a GNU unique symbol pins a C++ library); then N stays open, or
// a later load given the same name would get this library back.
std::shared_ptr<dll::shared_library> make_library(const LoadFrom& from) {
  if (from.owned_fd < 0) return std::make_shared<dll::shared_library>();
  return std::shared_ptr<dll::shared_library>(
      new dll::shared_library, [fd = from.owned_fd, path = from.path](dll::shared_library* lib) {
        const bool was_loaded = lib->is_loaded();
        delete lib;
        if (was_loaded) {
          if (void* still = ::dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD)) {
            ::dlclose(still);
            return;
          }
        }
        ::close(fd);
      });
}

Result<std::vector<LoadedOperation>> load_one(const fs::path& file, const LoadFrom& from) {
  auto library = make_library(from);
  boost::dll::fs::error_code ec;
  ::dlerror();  // clear any stale message
  library->load(from.path, dll::load_mode::rtld_now | dll::load_mode::rtld_local, ec);
  if (ec || !library->is_loaded()) return plugin_error(file, "cannot load: " + last_dlerror());

  // Compatibility first, reading data only, like nginx's module signature check.
  if (!library->has(OPS_PLUGIN_STAMP_SYMBOL)) {
    return plugin_error(file, "not an opserver plugin: missing symbol " OPS_PLUGIN_STAMP_SYMBOL);
  }
  const auto& stamp = library->get<const ops_plugin_stamp_v1>(OPS_PLUGIN_STAMP_SYMBOL);
  if (stamp.abi_version != OPS_PLUGIN_ABI_VERSION) {
    return plugin_error(file, "built for plugin ABI version " + std::to_string(stamp.abi_version) +
                                  ", this server expects version " +
                                  std::to_string(OPS_PLUGIN_ABI_VERSION) + " (any minor; it has " +
                                  std::to_string(OPS_PLUGIN_ABI_VERSION) + "." +
                                  std::to_string(OPS_PLUGIN_ABI_MINOR) + ")");
  }
  // Any minor of this major loads (docs/PLUGINS.md, ABI versioning): members beyond a
  // struct's struct_size read as absent (op_hooks.hpp).
  spdlog::debug("plugin {}: ABI {}.{}", file.string(), stamp.abi_version, stamp_minor(stamp));
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
  // The array's stride is the size of the struct the plugin was built with (its first
  // element's struct_size), not this server's sizeof(ops_op_v1): a plugin built against an
  // older minor has shorter elements.
  const std::size_t stride = plugin->op_count > 0 ? plugin->ops[0].struct_size : 0;
  for (std::size_t i = 0; i < plugin->op_count; ++i) {
    const auto* op =
        reinterpret_cast<const ops_op_v1*>(reinterpret_cast<const char*>(plugin->ops) + i * stride);
    if (stride < kOpSizeV1_0 || op->struct_size != stride || op->name == nullptr ||
        op->name[0] == '\0' || op->call == nullptr || op->args_schema == nullptr ||
        op->payload < OPS_PAYLOAD_NONE || op->payload > OPS_PAYLOAD_OUT) {
      return plugin_error(file, "malformed operation #" + std::to_string(i));
    }
    out.push_back(LoadedOperation{op, plugin->name, plugin->version ? plugin->version : "0", file,
                                  library, FileIdentity{},
                                  std::make_shared<OpLifecycle>(op, library)});
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

namespace {

// Copies the .so (its target, for a symlink) into an anonymous memory file, from a
// descriptor checked like the file itself, and returns the path to load it from.
Result<LoadFrom> fresh_copy(const fs::path& file) {
  const int src = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (src < 0) {
    const int err = errno;
    return plugin_error(file, std::string("cannot open it: ") + std::strerror(err));
  }
  FdCloser close_src(src);
  struct stat st {};
  if (::fstat(src, &st) != 0 || !S_ISREG(st.st_mode)) {
    return plugin_error(file, "is no longer a regular file");
  }
  // What is copied is what is checked: the file may have been swapped since the listing.
  if (std::string problem = trust_problem(st, (st.st_mode & S_IWGRP) && has_extended_acl_fd(src));
      !problem.empty()) {
    return plugin_error(file, "is " + problem + "; refusing to load it");
  }
  const std::string name = "opserver-plugin:" + file.filename().string();
  const int mem = ::memfd_create(name.c_str(), MFD_CLOEXEC);
  if (mem < 0) {
    const int err = errno;
    return plugin_error(file, std::string("cannot make a copy to load: ") + std::strerror(err));
  }
  off_t offset = 0;
  while (offset < st.st_size) {
    const ssize_t n = ::sendfile(mem, src, &offset, static_cast<std::size_t>(st.st_size - offset));
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      ::close(mem);
      return plugin_error(file, std::string("cannot copy it to load: ") + std::strerror(err));
    }
  }
  return LoadFrom{"/proc/self/fd/" + std::to_string(mem), mem};
}

// The directory plugins are loaded from must be safe to load code from (case 105).
Status check_plugin_dir(int dir_fd, const fs::path& dir) {
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
  return ok_status();
}

Result<std::vector<LoadedOperation>> load_directory(const fs::path& dir, const PluginReload* reload,
                                                    const std::set<std::string>& skip) {
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
  if (Status trusted = check_plugin_dir(dir_fd, dir); !trusted) return trusted.error();
  auto names = list_libraries(dir_fd, dir);
  if (!names) return names.error();
  std::vector<fs::path> files;
  for (const std::string& name : *names) {
    if (skip.count(name)) continue;
    const fs::path file = dir / name;
    auto load = check_library(dir_fd, file);
    if (!load) return load.error();
    if (*load) files.push_back(file);
  }

  std::vector<LoadedOperation> all;
  std::map<std::string, fs::path> provider;
  for (const fs::path& file : files) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) {
      const int err = errno;
      return plugin_error(file, std::string("cannot inspect it: ") + std::strerror(err));
    }
    const FileIdentity identity = identity_of(st);
    std::vector<LoadedOperation> reused;
    if (reload != nullptr && reload->previous != nullptr) {
      for (const LoadedOperation& op : *reload->previous) {
        if (op.file == file && op.identity == identity) reused.push_back(op);
      }
    }
    Result<std::vector<LoadedOperation>> loaded = std::move(reused);
    if (loaded->empty()) {
      LoadFrom from{file};
      if (reload != nullptr) {
        auto copy = fresh_copy(file);
        if (!copy) return copy.error();
        from = *copy;
      }
      loaded = load_one(file, from);
    }
    if (!loaded) return loaded.error();
    for (LoadedOperation& op : *loaded) {
      op.identity = identity;
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

}  // namespace

Result<std::vector<LoadedOperation>> load_plugins(const fs::path& dir) {
  return load_directory(dir, nullptr, {});
}

Result<std::vector<LoadedOperation>> load_plugins(const fs::path& dir,
                                                  const std::set<std::string>& skip) {
  return load_directory(dir, nullptr, skip);
}

Result<std::vector<LoadedOperation>> load_plugins(const fs::path& dir, const PluginReload& reload) {
  return load_directory(dir, &reload, reload.skip);
}

Result<std::vector<LoadedOperation>> load_plugin_file(const fs::path& file) {
  const fs::path dir = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    const int err = errno;
    return Error{ErrorCode::internal,
                 "plugin directory " + dir.string() + ": cannot open it: " + std::strerror(err)};
  }
  FdCloser close_dir(dir_fd);
  if (Status trusted = check_plugin_dir(dir_fd, dir); !trusted) return trusted.error();
  auto load = check_library(dir_fd, file);
  if (!load) return load.error();
  if (!*load) return plugin_error(file, "is not a regular file");
  return load_one(file, LoadFrom{file});
}

}  // namespace ops::core
