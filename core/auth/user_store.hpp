// The user store seam: where users, their keys and their limits live. Two implementations:
// FileUserStore (auth/file_user_store.hpp: <state dir>/users.json, the default) and
// PgUserStore (auth/pg_user_store.hpp: PostgreSQL, shared by several server nodes).
// make_user_store (auth/user_store_factory.hpp) picks one from server.json's "user_store".
// Every implementation is thread-safe and creates <storage dir>/<name>/ for a new user.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
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
  virtual ~UserStore() = default;

  // Makes the store ready (creates or connects, reads). With `bootstrap_admin`, an empty
  // store gets `admin` with a generated key, written to <state dir>/admin.key (0600);
  // returns that file's path in `admin_key_path`.
  virtual Status open(bool bootstrap_admin,
                      std::optional<std::filesystem::path>* admin_key_path = nullptr) = 0;

  // The user's key, or nullopt (no such user, or the store cannot tell right now: a
  // handshake then fails like one with a wrong key). Never a key that was replaced.
  virtual std::optional<std::string> key_for(std::string_view user) = 0;
  // Everything the store keeps about `user`, or nullopt.
  virtual std::optional<UserRecord> find(std::string_view user) = 0;
  // True if find() and key_for() answer from this process's memory (at most a stat of a
  // local file), so an I/O thread may call them.
  virtual bool answers_from_memory() const noexcept { return false; }

  // Adds a user (name and key checked), creating its storage directory, with `limits`
  // applied. Atomic: on any failure the store is unchanged. already_exists for a taken
  // name; unavailable when the store cannot be reached.
  virtual Status add(const std::string& name, const std::string& key,
                     const LimitChange& limits = {}) = 0;
  // Removes a user from the store (not_found if unknown); its files are left in place.
  virtual Status remove(const std::string& name) = 0;
  // Replaces a user's key (checked like add's); the old key stops working at once.
  virtual Status rekey(const std::string& name, const std::string& key) = 0;
  // Changes a user's limits; returns the record as stored. not_found if unknown.
  virtual Result<UserRecord> set_limits(const std::string& name, const LimitChange& change) = 0;
  virtual std::vector<std::string> names() = 0;

  // Called (on a thread of the store's) when another process sharing the store rekeyed or
  // removed `user`, after the store stopped accepting the old key: the server closes that
  // user's connections. Set once by UserServices; an empty function unsets it, and no call
  // is running once that returns. The file store has no such peers and never calls it.
  using RevokedHandler = std::function<void(const std::string& user)>;
  virtual void on_revoked_elsewhere(RevokedHandler handler) { (void)handler; }
};

// Shared by the implementations: the key rule's message.
inline constexpr const char* kKeyRuleMessage =
    "a key is 1 to 1024 bytes of UTF-8 without control characters";
inline constexpr const char* kNameRuleMessage = "user names must match ^[a-z_][a-z0-9_.-]{0,31}$";

}  // namespace ops::core
