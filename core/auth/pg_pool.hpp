// A small pool of PostgreSQL connections for statements that many handler threads run at
// once (the shared usage ledger: a reservation and a commit per upload). A thread takes a
// connection for one statement (or one short transaction) and gives it back; connections
// are opened on demand, at most `idle_max` are kept open while unused. While the database
// cannot be reached, connecting backs off from 100 ms to 2 s and acquire() fails at once
// with `unavailable` in between: a down database never makes each call wait for a connect.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "auth/pg_connection.hpp"

namespace ops::core {

class PgPool {
 public:
  PgPool(std::string conninfo, std::size_t idle_max);
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  // One connection, back to the pool on destruction unless it was found broken.
  class Lease {
   public:
    Lease(PgPool* pool, PgConn conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&& other) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    PGconn* get() const { return conn_.get(); }
    // Runs one statement; a lost connection is closed instead of going back to the pool.
    Result<PgResult> exec(const char* sql, const std::vector<PgParam>& params, const char* what);
    // Not given back: closed (e.g. a transaction left half-way; closing rolls it back).
    void discard() { conn_.reset(); }

   private:
    PgPool* pool_;
    PgConn conn_;
  };

  Result<Lease> acquire();
  // Runs one statement on a pooled connection.
  Result<PgResult> exec(const char* sql, const std::vector<PgParam>& params, const char* what);

 private:
  using Clock = std::chrono::steady_clock;
  void give_back(PgConn conn);

  std::string conninfo_;
  std::size_t idle_max_;
  std::mutex mutex_;
  std::vector<PgConn> idle_;
  Clock::time_point next_connect_{};
  std::chrono::milliseconds backoff_{0};
};

}  // namespace ops::core
