// Per-user storage usage and quota reservations (OPS/1 §10).
//
// Usage is recounted, not stored: the first time a user's usage is needed after a start
// (a reservation, a usage query, an adjustment), its directory is walked once and the
// regular files and their sizes counted (docs/OPERATIONS.md has the cost: 0.78 s for
// 200,000 files here, so about 4 s per million with a warm cache). From then on the
// count is kept in memory and changed only through this class: reservations made before
// bytes are written, commits after a file is published, and adjustments after a removal.
// So nothing can go stale on disk, a crash loses nothing, and the only cost is one walk
// per user per start.
//
// Concurrency: one mutex per user guards that user's counters, so a reservation checks
// and takes room in one step: two concurrent uploads cannot together pass a quota.
// Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "opserver/error.hpp"

namespace ops::core {

struct QuotaLimits {
  std::optional<std::uint64_t> bytes;  // nullopt: no limit
  std::optional<std::uint64_t> files;
};

struct Usage {
  std::uint64_t bytes = 0;  // sum of the sizes of the user's regular files
  std::uint64_t files = 0;  // number of the user's regular files (directories not counted)
  std::uint64_t reserved_bytes = 0;
  std::uint64_t reserved_files = 0;
};

// The regular files below `dir_fd` and their sizes; symlinks and special files are not
// followed nor counted. Exposed for tests and the recount benchmark.
Usage count_tree(int dir_fd);

class UsageTracker {
 public:
  // `storage_fd`: the storage root (each user's directory is <root>/<name>); borrowed.
  explicit UsageTracker(int storage_fd) : storage_fd_(storage_fd) {}

  // The user's usage, counted from disk the first time.
  Usage usage(const std::string& user);
  // The user's usage if it is counted already and nobody holds its counters this
  // instant; never counts and never waits (for an I/O thread).
  std::optional<Usage> usage_if_counted(const std::string& user);

  // Takes room for `bytes` more bytes and `files` more files if that keeps the user
  // within `limits` (counting usage and every open reservation); else quota_exceeded.
  // A dimension asked for 0 is never refused, so shrinking and replacing with a smaller
  // file always pass. Returns the reservation's id (never 0).
  Result<std::uint64_t> reserve(const std::string& user, std::uint64_t bytes, std::uint64_t files,
                                const QuotaLimits& limits);
  // Ends reservation `id`: its room is given back and usage changes by the actual
  // deltas. False if `id` is unknown (already ended, or the user was forgotten).
  bool commit(const std::string& user, std::uint64_t id, std::int64_t bytes_delta,
              std::int64_t files_delta);
  bool release(const std::string& user, std::uint64_t id);
  // Keeps reservation `id` beyond the call that made it, under `tag` (e.g. a resumable
  // upload's id). A tag already held grows by the reservation. False if `id` is unknown.
  bool hold(const std::string& user, std::uint64_t id, const std::string& tag);
  bool commit_held(const std::string& user, const std::string& tag, std::int64_t bytes_delta,
                   std::int64_t files_delta);
  bool release_held(const std::string& user, const std::string& tag);
  // Changes usage after something already happened (a removal, a shrink). Never refused.
  // A user not counted yet is left alone: the count, when it happens, sees the change.
  void adjust(const std::string& user, std::int64_t bytes_delta, std::int64_t files_delta);
  // Drops what is known about `user` (unregistered): a later user of that name is
  // counted afresh, and late commits of the old one's calls change nothing.
  void forget(const std::string& user);

 private:
  struct Amount {
    std::uint64_t bytes = 0;
    std::uint64_t files = 0;
  };
  struct UserState {
    std::mutex mutex;
    bool counted = false;
    Usage usage;
    // What decreases took below zero and usage could not show: the removal of a file
    // whose creation is committed a moment later (a remove racing an upload). Increases
    // pay it back first, so the deltas add up in any order.
    Amount deficit;
    std::map<std::uint64_t, Amount> reservations;
    std::map<std::string, Amount> held;
  };

  std::shared_ptr<UserState> state(const std::string& user, bool create);
  void count_locked(const std::string& user, UserState& s);  // holds s.mutex
  static void apply(UserState& s, std::int64_t bytes_delta, std::int64_t files_delta);
  static void unreserve(Usage& u, const Amount& a);

  int storage_fd_;
  std::mutex map_mutex_;
  std::unordered_map<std::string, std::shared_ptr<UserState>> users_;
  std::uint64_t next_id_ = 1;  // under map_mutex_
};

}  // namespace ops::core
