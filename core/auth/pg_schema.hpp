// The PostgreSQL user store's schema, versioned in table opserver_schema (one row: the
// version). `opserver db migrate` brings a database to kPgSchemaVersion, one migration at a
// time, all in one transaction under an advisory lock: two nodes migrating at once are
// serialized, a failure changes nothing, and running it again does nothing.
// The server refuses to start on a database whose version is not kPgSchemaVersion.
//
// Version 1:
//   opserver_users (name text PRIMARY KEY, key_sealed bytea NOT NULL (auth/key_sealer.hpp),
//                   quota_bytes, quota_files, upload_bytes_per_second,
//                   download_bytes_per_second numeric(20,0): NULL = the server's default,
//                   -1 = no limit, else the limit; created, updated timestamptz)
// Every change to opserver_users sends NOTIFY opserver_users, payload "NODE KIND NAME"
// (KIND: add, rekey, remove, limits), in the changing transaction.
//
// Version 2 (quota/pg_usage_ledger.hpp, net/pg_ban_sync.hpp):
//   opserver_usage (user_name PRIMARY KEY, bytes, files: what the user's files take, counted
//                   from disk once when the row is absent; reserved_bytes, reserved_files:
//                   the sum of the user's open reservations)
//   opserver_nodes (node PRIMARY KEY, started, heartbeat): one row per running server
//   opserver_reservations (id bigserial, user_name, node: the server whose call holds it,
//                   or tag: a held reservation (resumable upload), never both; bytes, files;
//                   reaped: set when its node was found dead and its room given back)
//   opserver_bans (address bytea(16) PRIMARY KEY, banned_until, bans): defender bans;
//                   each new or longer ban sends NOTIFY opserver_bans, "NODE HEX MS BANS".
#pragma once

#include <libpq-fe.h>

#include <string>

#include "opserver/error.hpp"

namespace ops::core {

inline constexpr int kPgSchemaVersion = 2;
inline constexpr const char* kPgUsersChannel = "opserver_users";
inline constexpr const char* kPgBansChannel = "opserver_bans";

// The database's schema version; 0 for a database never migrated.
Result<int> pg_schema_version(PGconn* conn);

// Migrates to kPgSchemaVersion. Returns the version found before ("from") for the report.
Result<int> pg_migrate(PGconn* conn);

}  // namespace ops::core
