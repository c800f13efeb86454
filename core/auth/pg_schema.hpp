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
#pragma once

#include <libpq-fe.h>

#include <string>

#include "opserver/error.hpp"

namespace ops::core {

inline constexpr int kPgSchemaVersion = 1;
inline constexpr const char* kPgUsersChannel = "opserver_users";

// The database's schema version; 0 for a database never migrated.
Result<int> pg_schema_version(PGconn* conn);

// Migrates to kPgSchemaVersion. Returns the version found before ("from") for the report.
Result<int> pg_migrate(PGconn* conn);

}  // namespace ops::core
