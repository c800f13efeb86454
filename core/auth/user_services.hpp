// Everything the server does about users beyond keys: quotas and usage, the sessions of
// each user, bandwidth limits, and the user-admin operations that combine them
// (unregister, rekey, set_quota). The host API's user and quota services call these;
// Server owns one instance and sessions reach it through ServerContext::services.
//
// Unregister, in this order, each step durable before the next:
//  1. new sessions of the user are refused (UserSessions::disable; a handshake that
//     checked the key a moment earlier is refused too) and its open connections are
//     closed, mid-request too;
//  2. its storage directory is renamed into this server's own part of the scratch area
//     (<storage>/.ops-tmp/node-<id>/unregistered-*), so no later user of the same name ever
//     sees it, and no other server sharing the storage ever deletes it at the same time;
//  3. the user leaves users.json: its key stops working;
//  4. its usage is forgotten, and a background thread deletes the moved directory.
// A crash between 2 and 3 leaves the user with an empty directory (the unregister was
// not answered and can be repeated), never a directory without a user. Leftover
// unregistered-* trees are deleted in the background at the next start (NodeScratch), or
// by another server once this one is gone for good (storage/node_scratch.hpp).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "auth/user_store.hpp"
#include "net/bandwidth.hpp"
#include "net/user_sessions.hpp"
#include "quota/usage_ledger.hpp"

namespace ops::core {

class Connection;

struct UserDefaults {
  std::optional<std::uint64_t> quota_bytes;
  std::optional<std::uint64_t> quota_files;
  std::optional<std::uint64_t> upload_rate;
  std::optional<std::uint64_t> download_rate;
  // Rates are raised to at least twice this (payload_min_rate), so that the server's own
  // minimum-rate rule never cuts off a transfer it is itself slowing down.
  std::uint64_t min_rate = 0;
};

// Deletes directory trees in this server's scratch directory on a thread of its own.
class TrashCollector {
 public:
  explicit TrashCollector(int scratch_fd);
  ~TrashCollector();  // stops after the tree in progress; the rest waits for the next start
  void remove_later(std::string name);

 private:
  void run();
  int scratch_fd_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::string> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

// Removes the tree `name` under `dir_fd`, never following a symlink. True if it is gone.
bool remove_tree(int dir_fd, const std::string& name);

class UserServices {
 public:
  // `scratch_fd`: this server's own scratch directory (NodeScratch::fd()). `usage`: where
  // usage and reservations are kept (quota/usage_ledger.hpp); null: this process's memory
  // (MemoryUsageLedger).
  UserServices(UserStore& users, int storage_fd, int scratch_fd, UserDefaults defaults,
               std::unique_ptr<UsageLedger> usage = nullptr);
  ~UserServices();
  UserServices(const UserServices&) = delete;
  UserServices& operator=(const UserServices&) = delete;

  UserStore& store() noexcept { return users_; }
  UserSessions& sessions() noexcept { return sessions_; }
  UsageLedger& usage() noexcept { return *usage_; }
  BandwidthLimits& bandwidth() noexcept { return bandwidth_; }

  // The limits in force for a user (its own, else the server's defaults).
  QuotaLimits quota_for(const std::string& user);
  std::optional<std::uint64_t> rate_for(const std::string& user,
                                        BandwidthLimits::Direction direction);

  // find(), not key_for(): a shared store that cannot be reached answers from its last copy.
  bool exists(const std::string& user) { return users_.find(user).has_value(); }
  Status create_user(const std::string& name, const std::string& key, const LimitChange& limits);
  Status remove_user(const std::string& name);
  Status rekey_user(const std::string& name, const std::string& key, const Connection* except);
  Result<UserRecord> set_limits(const std::string& name, const LimitChange& change);
  // {"user","bytes","files","reserved_bytes","quota_bytes","quota_files"}; not_found.
  Result<std::string> usage_json(const std::string& user);
  // usage_json's answer if it can be had without waiting (the user store answers from
  // memory and the user's usage is counted already, or there is no such user); nullopt
  // when only usage_json can answer. For serving `get_usage` on an I/O thread.
  std::optional<Result<std::string>> usage_json_now(const std::string& user);

 private:
  // Renames <storage>/<name> into the scratch directory and queues it for deletion.
  Status move_aside(const std::string& name);
  std::string usage_text(const std::string& user, const Usage& usage);

  UserStore& users_;
  int storage_fd_;
  int scratch_fd_;
  UserDefaults defaults_;
  UserSessions sessions_;
  std::unique_ptr<UsageLedger> usage_;
  BandwidthLimits bandwidth_;
  std::mutex admin_mutex_;  // one create/remove at a time in this process
  TrashCollector trash_;
};

// What one plugin call holds of its user's services: the quota reservations it has not
// ended (released when the call ends, whatever path the handler took) and the bandwidth
// buckets, looked up at the first payload transfer. Used by the one thread running the
// handler; destroyed after the handler returns.
struct CallUserState {
  CallUserState() = default;
  CallUserState(const CallUserState&) = delete;
  CallUserState& operator=(const CallUserState&) = delete;
  ~CallUserState();

  UserServices* services = nullptr;
  std::string user;
  std::vector<std::uint64_t> reservations;
  bool rates_loaded = false;
  std::shared_ptr<TokenBucket> upload;
  std::shared_ptr<TokenBucket> download;

  bool holds(std::uint64_t token) const;
  void forget(std::uint64_t token);
  void load_rates();
};

}  // namespace ops::core
