// The usage seam: where per-user usage and quota reservations (OPS/1 §10) are kept.
// Two implementations:
//  - MemoryUsageLedger (quota/memory_usage_ledger.hpp): one process's memory, the
//    UsageTracker; used with the file user store (one node);
//  - PgUsageLedger (quota/pg_usage_ledger.hpp): PostgreSQL, shared by every node of a
//    cluster; used with the PostgreSQL user store.
// make_usage_ledger (quota/usage_ledger_factory.hpp) picks one. The quota LIMITS are not
// here: they are user attributes in the user store (UserServices::quota_for).
// Every implementation is thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include <optional>
#include "opserver/error.hpp"

#include "quota/usage_tracker.hpp"

namespace ops::core {

class UsageLedger {
 public:
  virtual ~UsageLedger() = default;

  // The user's usage (counted from disk the first time it is needed); `unavailable` when
  // a shared ledger cannot be reached.
  virtual Result<Usage> usage(const std::string& user) = 0;
  // The user's usage when it can be had without waiting (counted already, kept in this
  // process's memory); nullopt otherwise. For answering on an I/O thread.
  virtual std::optional<Usage> usage_if_known(const std::string& /*user*/) { return std::nullopt; }
  // Takes room for `bytes` and `files` more if that keeps the user within `limits`,
  // counting usage and every open reservation (of every node, for a shared ledger), in one
  // step: concurrent reservations can never together pass a limit. A dimension asked for
  // 0 is never refused. Returns the reservation's id (never 0); quota_exceeded, or
  // `unavailable` when a shared ledger cannot be reached (nothing is taken then).
  virtual Result<std::uint64_t> reserve(const std::string& user, std::uint64_t bytes,
                                        std::uint64_t files, const QuotaLimits& limits) = 0;
  // Ends reservation `id`: its room is given back and usage changes by the actual deltas.
  // False if `id` is unknown. A shared ledger that cannot be reached keeps the commit and
  // applies it once it can (a commit is applied exactly once).
  virtual bool commit(const std::string& user, std::uint64_t id, std::int64_t bytes_delta,
                      std::int64_t files_delta) = 0;
  bool release(const std::string& user, std::uint64_t id) { return commit(user, id, 0, 0); }
  // Keeps reservation `id` beyond the call that made it, under `tag` (a resumable upload's
  // id); a tag already held grows by the reservation. not_found if `id` is unknown;
  // `unavailable` (the reservation unchanged) if a shared ledger cannot be reached.
  virtual Status hold(const std::string& user, std::uint64_t id, const std::string& tag) = 0;
  // Ends the reservation held under `tag` with the actual deltas. False if the tag is unknown.
  virtual bool commit_held(const std::string& user, const std::string& tag,
                           std::int64_t bytes_delta, std::int64_t files_delta) = 0;
  bool release_held(const std::string& user, const std::string& tag) {
    return commit_held(user, tag, 0, 0);
  }
  // Changes usage after something already happened (a removal, a shrink). Never refused.
  virtual void adjust(const std::string& user, std::int64_t bytes_delta,
                      std::int64_t files_delta) = 0;
  // Drops what is known about `user` (unregistered), its reservations included: a later
  // user of that name is counted afresh, and late commits of the old one change nothing.
  virtual void forget(const std::string& user) = 0;
};

}  // namespace ops::core
