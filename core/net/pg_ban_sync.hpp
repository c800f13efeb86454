// Defender bans shared by the nodes of a cluster (with the PostgreSQL user store): a ban
// one node's defender starts is written to opserver_bans (schema version 2) and announced
// with NOTIFY opserver_bans; every node LISTENs and copies it into its own defender, so
// the address is refused at accept on every node within milliseconds. The accept path
// itself never touches the database: it reads the defender's memory as before.
//
// One thread and one connection per node. The defender's ban handler only queues the ban
// (it runs on an I/O thread); the thread writes it. At (re)connection the thread LISTENs,
// then loads every ban still running (LISTEN first: none falls in between). Expiries are
// absolute times in the database, sent as the time remaining, so the nodes' clocks do not
// matter. Rows expired for a day are deleted. Failure scores stay per node: an address
// failing on several nodes is banned everywhere as soon as one node's count reaches the
// threshold. While the database cannot be reached, bans stay local and are written (at
// most kMaxQueued) once it is back.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "auth/pg_connection.hpp"
#include "net/defender.hpp"

namespace ops::core {

class PgBanSync {
 public:
  static constexpr std::size_t kMaxQueued = 10000;

  PgBanSync(std::string conninfo, Defender& defender);
  ~PgBanSync();  // stops the thread (destroy it only once no I/O thread runs)
  PgBanSync(const PgBanSync&) = delete;
  PgBanSync& operator=(const PgBanSync&) = delete;

  // Sets the defender's ban handler and starts the thread.
  Status start();

 private:
  struct Ban {
    Defender::Address address;
    std::chrono::seconds length;
    unsigned bans;
  };
  void run();
  // One connected session; returns when the connection is lost or at stop.
  void session(PGconn* conn);
  bool write_queued(PGconn* conn);  // false: connection lost
  void receive(PGconn* conn);
  bool stopping();

  std::string conninfo_;
  Defender& defender_;
  std::string node_;
  std::mutex mutex_;
  std::deque<Ban> queue_;
  bool stopping_ = false;
  int wake_fd_ = -1;
  std::thread thread_;
};

}  // namespace ops::core
