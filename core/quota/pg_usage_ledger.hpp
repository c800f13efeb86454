// The shared usage ledger (used with the PostgreSQL user store): every node of a cluster
// keeps usage and reservations in PostgreSQL (schema version 2, auth/pg_schema.hpp), so a
// quota holds across nodes.
//
// Per user, one row of opserver_usage: bytes and files in use, and the sum of the open
// reservations. A reservation is ONE statement: an UPDATE of that row that adds the room
// only if usage + open reservations + the new room stay within the limit, and the INSERT
// of the reservation's row (opserver_reservations) from the UPDATE's result. The row lock
// serializes concurrent reservations of a user on every node; one transaction, so a
// reservation is either taken and recorded or nothing happened. A commit is one statement
// too: DELETE of the reservation's row and UPDATE of the usage row by the room it held
// and the actual deltas; the DELETE makes a repeated commit (after a lost answer) change
// nothing. Round trips per upload: 2 (reserve, commit), once the user is counted.
//
// Counting: a user without a row is counted from disk once for the whole cluster (not once
// per node and start, as the in-memory tracker does), by the first node that needs it,
// on a connection of its own, in a transaction holding an advisory lock on the user's name:
// other nodes needing the same user wait for that lock and then find the row. The cost: one
// walk of the user's tree (about 4 s per million files on a local disk) during which the
// user's first reservations on every node wait, and one transaction open as long.
// Deleting a user's row (SQL) makes the next use count again.
//
// Nodes that die: every reservation made by a call names its node; each node heartbeats
// (opserver_nodes) every 2 s, and each node, every 2 s, gives back the room of the
// reservations of nodes whose heartbeat is older than 10 s (kLease), marking those rows
// `reaped` (room 0) rather than deleting them, so a commit from a node that was only cut
// off for a while still counts its file; reaped rows are deleted after an hour. So a
// SIGKILLed node's reservations are returned 10 to 12 s after its last heartbeat. A node
// reaps only once its own heartbeat has been succeeding for kLease, so that after a
// PostgreSQL outage the nodes coming back do not reap one another. Held reservations (a
// resumable upload's, by tag) name no node: they outlive restarts and can be committed
// or released from any node. A clean stop gives back this node's reservations at once.
//
// PostgreSQL unreachable: reserve, hold and usage answer `unavailable` and take nothing.
// Commits and adjustments that cannot be sent are kept in memory (at most kMaxPending)
// and sent by the heartbeat thread once the database is back; commits exactly once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "auth/pg_pool.hpp"
#include "quota/usage_ledger.hpp"

namespace ops::core {

class PgUsageLedger final : public UsageLedger {
 public:
  static constexpr std::chrono::seconds kHeartbeat{2};
  static constexpr std::chrono::seconds kLease{10};
  static constexpr std::size_t kMaxPending = 100000;

  // `storage_fd`: the storage root, borrowed (users' directories are counted below it).
  PgUsageLedger(std::string conninfo, int storage_fd);
  // Stops the heartbeat, gives back this node's open reservations, removes its node row.
  ~PgUsageLedger() override;

  // Registers this node and starts the heartbeat thread. `unavailable` if unreachable.
  Status start();
  const std::string& node_id() const { return node_; }

  Result<Usage> usage(const std::string& user) override;
  Result<std::uint64_t> reserve(const std::string& user, std::uint64_t bytes, std::uint64_t files,
                                const QuotaLimits& limits) override;
  bool commit(const std::string& user, std::uint64_t id, std::int64_t bytes_delta,
              std::int64_t files_delta) override;
  Status hold(const std::string& user, std::uint64_t id, const std::string& tag) override;
  bool commit_held(const std::string& user, const std::string& tag, std::int64_t bytes_delta,
                   std::int64_t files_delta) override;
  void adjust(const std::string& user, std::int64_t bytes_delta, std::int64_t files_delta) override;
  void forget(const std::string& user) override;

  // For tests: changes waiting for the database.
  std::size_t pending();

 private:
  // A change that could not reach the database, sent again by the heartbeat thread.
  struct Pending {
    enum class Kind { commit, commit_held, adjust } kind;
    std::string user;
    std::uint64_t id = 0;
    std::string tag;
    std::int64_t bytes = 0;
    std::int64_t files = 0;
  };

  // Counts the user's tree into a new row unless it has one (see above).
  Status count_if_absent(const std::string& user);
  // Runs `p` on `conn` (nullptr: a pooled connection); the number of rows it found.
  Result<long> apply(const Pending& p, PGconn* conn);
  // Applies `p`, or keeps it for later when the database cannot be reached.
  bool apply_or_keep(Pending p);
  void keep(Pending p);

  void housekeeping();
  // One round on the node's own connection: heartbeat, pending changes, reaping.
  void tick(PgConn& conn, std::optional<std::chrono::steady_clock::time_point>& up_since,
            int round);
  // Gives back the room of the reservations of dead nodes (node empty) or of `node`.
  Result<PgResult> reap(PGconn* conn, const std::optional<std::string>& node);

  std::string conninfo_;
  int storage_fd_;
  std::string node_;
  PgPool pool_;

  std::mutex pending_mutex_;
  std::deque<Pending> pending_;

  std::mutex stop_mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace ops::core
