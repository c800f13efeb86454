// The PostgreSQL user store (server.json "user_store": {"postgresql": ..., "key_file": ...}):
// several server nodes share one database of users. Keys are sealed at rest
// (auth/key_sealer.hpp); the schema is auth/pg_schema.hpp's.
//
// Writes are single statements, so each is one transaction that also sends the change
// (NOTIFY opserver_users) on commit: register is INSERT ... ON CONFLICT DO NOTHING, so of
// concurrent registers of one name on any nodes exactly one succeeds.
//
// Reads come from an in-memory copy of the whole table, kept current by a listener thread
// on a connection of its own (LISTEN opserver_users): every notification re-reads that
// user's row. A handshake therefore costs no round trip. Rules that keep the copy from
// ever serving a replaced key:
//  - the listener LISTENs before it loads the table, so no change falls in between;
//  - while the listener is not connected the copy counts as stale: key_for asks the
//    database directly (and fails, like a wrong key, if it cannot), find() and names()
//    fall back to the copy only when the database cannot be reached (limits, not keys);
//  - a name this node is changing, or has changed but not yet heard back about, is read
//    from the database too. A name the copy lacks is unknown to key_for (no query: an
//    unknown name must cost a handshake what a known one does), so a user registered on
//    another node logs in here once the notification has arrived; find() asks the
//    database on a miss (callers are authenticated; a register elsewhere is seen at once);
//  - a rekey or removal by another node calls the RevokedHandler (the server closes the
//    user's connections) after the copy has the new state; after a reconnect, so does
//    every user whose key changed or who vanished while the listener was away.
// Statements use one command connection under a mutex; a connection the database ended
// (a restart) is replaced before the next statement, and reconnecting backs off from
// 100 ms to 2 s. Meanwhile calls answer `unavailable`. A handshake that must read its key
// from the database (key_for on an I/O thread) only uses a connection that is already
// up and waits at most 200 ms for it: it never blocks an I/O thread on a connect.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "auth/key_sealer.hpp"
#include "auth/pg_connection.hpp"
#include "auth/user_store.hpp"

namespace ops::core {

class PgUserStore final : public UserStore {
 public:
  PgUserStore(std::string conninfo, KeySealer sealer, std::filesystem::path state_dir,
              std::filesystem::path storage_dir);
  ~PgUserStore() override;

  // Connects, checks the schema version (`opserver db migrate` first), bootstraps admin
  // like the file store, starts the listener and waits (up to 5 s) for its first load.
  Status open(bool bootstrap_admin,
              std::optional<std::filesystem::path>* admin_key_path = nullptr) override;
  std::optional<std::string> key_for(std::string_view user) override;
  std::optional<UserRecord> find(std::string_view user) override;
  Status add(const std::string& name, const std::string& key,
             const LimitChange& limits = {}) override;
  Status remove(const std::string& name) override;
  Status rekey(const std::string& name, const std::string& key) override;
  Result<UserRecord> set_limits(const std::string& name, const LimitChange& change) override;
  std::vector<std::string> names() override;
  void on_revoked_elsewhere(RevokedHandler handler) override;

  // For tests and metrics: whether the in-memory copy is current (listener connected).
  bool cache_fresh();

 private:
  using Users = std::map<std::string, UserRecord, std::less<>>;
  using Clock = std::chrono::steady_clock;

  // The command connection, (re)connected if needed; caller holds command_mutex_.
  Result<PGconn*> command_locked();
  // Runs one statement on the command connection; `sent`: it reached the connection.
  Result<PgResult> command(const char* sql, const std::vector<PgParam>& params, const char* what,
                           bool* sent = nullptr);
  // The user's row straight from the database: nullopt inside for no such user.
  Result<std::optional<UserRecord>> fetch(PGconn* conn, std::string_view name);
  // A write of `name` by this node: marks it in flight, runs `sql`, then marks it awaiting
  // its own notification (if the statement changed a row) or done.
  Result<PgResult> write(const std::string& name, const char* sql,
                         const std::vector<PgParam>& params, const char* what);
  bool read_from_cache(std::string_view name);  // caller holds cache_mutex_ (shared)
  std::optional<UserRecord> decode(const PGresult* r, int row, std::string_view name);

  void listen_loop();
  // One listening session; returns when the connection is lost or on stop.
  void listen_session(PGconn* conn);
  bool wait_or_stop(std::chrono::milliseconds delay);  // false: stopping
  void revoked(const std::string& name);

  std::string conninfo_;
  KeySealer sealer_;
  std::filesystem::path state_dir_;
  std::filesystem::path storage_dir_;
  std::string node_id_;  // random per process: tells our own notifications from others'

  std::timed_mutex command_mutex_;
  PgConn command_;
  Clock::time_point next_connect_{};
  std::chrono::milliseconds connect_backoff_{0};

  std::shared_mutex cache_mutex_;
  Users cache_;
  bool fresh_ = false;
  std::map<std::string, int, std::less<>> in_flight_;  // local writes running, by name
  // Local writes whose notification the listener has not heard yet (counted from before
  // the statement runs), by name.
  std::map<std::string, int, std::less<>> awaiting_;
  std::condition_variable_any fresh_changed_;

  std::mutex handler_mutex_;
  RevokedHandler handler_;

  std::mutex stop_mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  int wake_fd_ = -1;  // eventfd: wakes the listener's poll at stop
  std::thread listener_;
};

}  // namespace ops::core
