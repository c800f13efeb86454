// The user key store: <state dir>/users.json (mode 0600), written atomically under a file
// lock so the running server, the `register` operation and `opserver user ...` run
// offline can all change it safely. Each user also gets <storage dir>/<name>/.
// Thread-safe: lookups take a shared lock; the file is re-read when it changed on disk.
#pragma once

#include <sys/stat.h>
#include <filesystem>
#include <map>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "opserver/error.hpp"

namespace ops::core {

// §5: ^[a-z_][a-z0-9_.-]{0,31}$
bool is_valid_user_name(std::string_view name) noexcept;
// Keys: 1 to 1024 bytes of UTF-8 without control characters (our decision; see
// docs/PROTOCOL.md). Generated keys are 64 lowercase hex characters.
bool is_valid_key(std::string_view key) noexcept;

class UserStore {
 public:
  UserStore(std::filesystem::path state_dir, std::filesystem::path storage_dir);

  // Creates the state directory (0700) if needed and reads the store. With
  // `bootstrap_admin`, an empty store gets `admin` with a generated key, written to
  // <state dir>/admin.key (0600); returns that file's path in `admin_key_path`.
  Status open(bool bootstrap_admin, std::optional<std::filesystem::path>* admin_key_path = nullptr);

  // The user's key, or nullopt. Re-reads the file first if it changed on disk.
  std::optional<std::string> key_for(std::string_view user);

  // Adds a user (name and key checked), creating its storage directory. Atomic: on any
  // failure the store is unchanged. already_exists for a taken name.
  Status add(const std::string& name, const std::string& key);
  // Removes a user from the store; its files are left in place.
  Status remove(const std::string& name);
  std::vector<std::string> names();

  const std::filesystem::path& file() const noexcept { return file_; }

 private:
  Status reload_locked();  // caller holds mutex_ exclusively
  Status write_locked(const std::map<std::string, std::string>& users);
  bool changed_on_disk() const;  // caller holds mutex_ (either way)
  void refresh();

  std::filesystem::path state_dir_;
  std::filesystem::path storage_dir_;
  std::filesystem::path file_;
  std::filesystem::path lock_file_;
  std::shared_mutex mutex_;
  std::map<std::string, std::string, std::less<>> users_;
  struct stat seen_ {};
};

}  // namespace ops::core
