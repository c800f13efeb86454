// The file user store: <state dir>/users.json (mode 0600), written atomically under a file
// lock so the running server, the `register` operation and `opserver user ...` run
// offline can all change it safely. Each user also gets <storage dir>/<name>/.
// Thread-safe: lookups take a shared lock; the file is re-read when it changed on disk.
#pragma once

#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <shared_mutex>

#include "auth/user_store.hpp"

namespace ops::core {

class FileUserStore final : public UserStore {
 public:
  FileUserStore(std::filesystem::path state_dir, std::filesystem::path storage_dir);

  Status open(bool bootstrap_admin,
              std::optional<std::filesystem::path>* admin_key_path = nullptr) override;
  // Re-reads the file first if it changed on disk.
  std::optional<std::string> key_for(std::string_view user) override;
  std::optional<UserRecord> find(std::string_view user) override;
  bool answers_from_memory() const noexcept override { return true; }
  Status add(const std::string& name, const std::string& key,
             const LimitChange& limits = {}) override;
  Status remove(const std::string& name) override;
  Status rekey(const std::string& name, const std::string& key) override;
  Result<UserRecord> set_limits(const std::string& name, const LimitChange& change) override;
  std::vector<std::string> names() override;

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
