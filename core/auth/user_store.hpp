// The user key store: <state dir>/users.json (mode 0600), written atomically under a file
// lock so the running server, the `register` operation and `opserver user ...` run
// offline can all change it safely. Each user also gets <storage dir>/<name>/.
// Thread-safe: lookups take a shared lock; the file is re-read when it changed on disk.
#pragma once

#include <sys/stat.h>
#include <cstdint>
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

// One per-user limit in the store: absent (the server's default applies), explicitly
// none ("null" in users.json: no limit whatever the default), or a value.
struct UserLimit {
  bool own = false;                    // false: the server's default applies
  std::optional<std::uint64_t> value;  // with `own`: nullopt means no limit

  static UserLimit server_default() { return {}; }
  static UserLimit none() { return {true, std::nullopt}; }
  static UserLimit of(std::uint64_t v) { return {true, v}; }
  // The limit in force, given the server's default.
  std::optional<std::uint64_t> effective(std::optional<std::uint64_t> fallback) const {
    return own ? value : fallback;
  }
  bool operator==(const UserLimit&) const = default;
};

// What users.json keeps about one user.
struct UserRecord {
  std::string key;
  UserLimit quota_bytes;
  UserLimit quota_files;
  // Payload bytes per second through the host API, each direction (see core/net/bandwidth).
  UserLimit upload_rate;
  UserLimit download_rate;
};

// A change of limits: a member left empty stays as it is.
struct LimitChange {
  std::optional<UserLimit> quota_bytes;
  std::optional<UserLimit> quota_files;
  std::optional<UserLimit> upload_rate;
  std::optional<UserLimit> download_rate;
};

class UserStore {
 public:
  UserStore(std::filesystem::path state_dir, std::filesystem::path storage_dir);

  // Creates the state directory (0700) if needed and reads the store. With
  // `bootstrap_admin`, an empty store gets `admin` with a generated key, written to
  // <state dir>/admin.key (0600); returns that file's path in `admin_key_path`.
  Status open(bool bootstrap_admin, std::optional<std::filesystem::path>* admin_key_path = nullptr);

  // The user's key, or nullopt. Re-reads the file first if it changed on disk.
  std::optional<std::string> key_for(std::string_view user);

  // Everything the store keeps about `user`, or nullopt. Re-reads like key_for.
  std::optional<UserRecord> find(std::string_view user);

  // Adds a user (name and key checked), creating its storage directory, with `limits`
  // applied. Atomic: on any failure the store is unchanged. already_exists for a taken name.
  Status add(const std::string& name, const std::string& key, const LimitChange& limits = {});
  // Removes a user from the store (not_found if unknown); its files are left in place.
  Status remove(const std::string& name);
  // Replaces a user's key (checked like add's); the old key stops working at once.
  Status rekey(const std::string& name, const std::string& key);
  // Changes a user's limits; returns the record as stored. not_found if unknown.
  Result<UserRecord> set_limits(const std::string& name, const LimitChange& change);
  std::vector<std::string> names();

  const std::filesystem::path& file() const noexcept { return file_; }

 private:
  Status reload_locked();  // caller holds mutex_ exclusively
  using Users = std::map<std::string, UserRecord, std::less<>>;
  Status write_locked(const Users& users);
  // Takes both locks, re-reads, lets `edit` change a copy, and writes it: every change
  // goes through here, so every change is atomic and durable.
  template <class Edit>
  Status change(Edit&& edit);
  bool changed_on_disk() const;  // caller holds mutex_ (either way)
  void refresh();

  std::filesystem::path state_dir_;
  std::filesystem::path storage_dir_;
  std::filesystem::path file_;
  std::filesystem::path lock_file_;
  std::shared_mutex mutex_;
  Users users_;
  struct stat seen_ {};
};

}  // namespace ops::core
