// Small RAII layer over libpq (the PostgreSQL C client library) for the PostgreSQL user
// store: connections with the server's defaults, statements with text parameters, and
// errors mapped to OPS/1 codes (a lost or unreachable database is `unavailable`).
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "opserver/error.hpp"

namespace ops::core {

// How long to wait before reconnecting to a PostgreSQL that went away: from the first to
// the longest wait, doubling in between (every connection of the store, pool and listeners).
inline constexpr std::chrono::milliseconds kPgReconnectFirst{100};
inline constexpr std::chrono::milliseconds kPgReconnectLongest{2000};

struct PgConnFree {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using PgConn = std::unique_ptr<PGconn, PgConnFree>;

struct PgResultFree {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, PgResultFree>;

// Connects with `conninfo` (a libpq key=value string or URI). Defaults the operator's string
// may override: connect_timeout=5, TCP keepalives after 10 s idle (a dead peer is noticed
// within about 25 s), application_name=opserver. Fails with `unavailable`.
Result<PgConn> pg_connect(const std::string& conninfo);

// One parameter: text, NULL (nullopt), or binary bytes (bytea).
struct PgParam {
  std::optional<std::string> value;
  bool binary = false;
  static PgParam text(std::string v) { return {std::move(v), false}; }
  static PgParam bytes(std::string v) { return {std::move(v), true}; }
  static PgParam null() { return {std::nullopt, false}; }
};

// Runs one statement (text results). An error result becomes an Error: `unavailable` when
// the connection is lost or the server is shutting down, starting or overloaded,
// `internal` otherwise; `what` prefixes the message.
Result<PgResult> pg_exec(PGconn* conn, const char* sql, const std::vector<PgParam>& params,
                         const char* what);

// False when the connection is known to be unusable: libpq says so, or the server has
// closed its end (a restart, a fast shutdown) since the last statement. Never blocks.
bool pg_usable(PGconn* conn);

// A bytea column in text form ("\x…") as bytes.
std::string pg_bytea(const PGresult* r, int row, int col);
// A text column; nullopt for NULL.
std::optional<std::string> pg_text(const PGresult* r, int row, int col);

}  // namespace ops::core
