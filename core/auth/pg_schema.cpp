#include "auth/pg_schema.hpp"

#include "auth/pg_connection.hpp"

namespace ops::core {
namespace {

// Migration N takes version N-1 to N. Only ever append.
constexpr const char* kMigrations[] = {
    // 1: users and their sealed keys.
    R"sql(
CREATE TABLE opserver_users (
  name text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_.-]{0,31}$'),
  key_sealed bytea NOT NULL,
  quota_bytes numeric(20,0) CHECK (quota_bytes >= -1),
  quota_files numeric(20,0) CHECK (quota_files >= -1),
  upload_bytes_per_second numeric(20,0) CHECK (upload_bytes_per_second >= -1),
  download_bytes_per_second numeric(20,0) CHECK (download_bytes_per_second >= -1),
  created timestamptz NOT NULL DEFAULT now(),
  updated timestamptz NOT NULL DEFAULT now()
))sql",
    // 2: usage and reservations shared by the nodes, the nodes' heartbeats, defender bans.
    R"sql(
CREATE TABLE opserver_usage (
  user_name text PRIMARY KEY,
  bytes bigint NOT NULL,
  files bigint NOT NULL,
  reserved_bytes bigint NOT NULL DEFAULT 0 CHECK (reserved_bytes >= 0),
  reserved_files bigint NOT NULL DEFAULT 0 CHECK (reserved_files >= 0),
  counted timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE opserver_nodes (
  node text PRIMARY KEY,
  started timestamptz NOT NULL DEFAULT now(),
  heartbeat timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE opserver_reservations (
  id bigserial PRIMARY KEY,
  user_name text NOT NULL,
  node text,
  tag text,
  bytes bigint NOT NULL CHECK (bytes >= 0),
  files bigint NOT NULL CHECK (files >= 0),
  created timestamptz NOT NULL DEFAULT now(),
  reaped timestamptz,
  CHECK ((node IS NULL) <> (tag IS NULL))
);
CREATE UNIQUE INDEX opserver_reservations_held ON opserver_reservations (user_name, tag)
  WHERE tag IS NOT NULL;
CREATE INDEX opserver_reservations_node ON opserver_reservations (node) WHERE node IS NOT NULL;
CREATE INDEX opserver_reservations_user ON opserver_reservations (user_name);
CREATE TABLE opserver_bans (
  address bytea PRIMARY KEY CHECK (length(address) = 16),
  banned_until timestamptz NOT NULL,
  bans integer NOT NULL CHECK (bans > 0)
))sql",
};
static_assert(std::size(kMigrations) == kPgSchemaVersion);

// pg_advisory_xact_lock key: "opsr" in ASCII, so unrelated applications sharing the
// database are unlikely to collide with it.
constexpr const char* kLockKey = "1869640562";

}  // namespace

Result<int> pg_schema_version(PGconn* conn) {
  auto exists = pg_exec(conn, "SELECT to_regclass('opserver_schema') IS NOT NULL", {},
                        "reading the schema version");
  if (!exists) return std::move(exists).error();
  if (std::string(PQgetvalue(exists->get(), 0, 0)) != "t") return 0;
  auto version = pg_exec(conn, "SELECT coalesce(max(version), 0) FROM opserver_schema", {},
                         "reading the schema version");
  if (!version) return std::move(version).error();
  return std::stoi(PQgetvalue(version->get(), 0, 0));
}

Result<int> pg_migrate(PGconn* conn) {
  auto begin = pg_exec(conn, "BEGIN", {}, "migrating");
  if (!begin) return std::move(begin).error();
  auto rollback = [conn] { PQclear(PQexec(conn, "ROLLBACK")); };
  const std::string lock = std::string("SELECT pg_advisory_xact_lock(") + kLockKey + ")";
  for (const char* sql :
       {lock.c_str(), "CREATE TABLE IF NOT EXISTS opserver_schema (version integer NOT NULL)"}) {
    if (auto r = pg_exec(conn, sql, {}, "migrating"); !r) {
      rollback();
      return std::move(r).error();
    }
  }
  auto from = pg_schema_version(conn);
  if (!from) {
    rollback();
    return std::move(from).error();
  }
  if (*from > kPgSchemaVersion) {
    rollback();
    return fail(ErrorCode::invalid_args,
                "the database's schema is version " + std::to_string(*from) +
                    ", newer than this opserver's (" + std::to_string(kPgSchemaVersion) +
                    "): upgrade opserver");
  }
  for (int v = *from + 1; v <= kPgSchemaVersion; ++v) {
    // The simple query protocol (PQexec): a migration may hold several statements.
    PgResult r(PQexec(conn, kMigrations[v - 1]));
    if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
      const std::string message = std::string("migrating to version ") + std::to_string(v) +
                                  ": PostgreSQL: " + PQerrorMessage(conn);
      rollback();
      return fail(ErrorCode::internal, message);
    }
  }
  const std::string set_version =
      "DELETE FROM opserver_schema; INSERT INTO opserver_schema VALUES (" +
      std::to_string(kPgSchemaVersion) + ")";
  PgResult set(PQexec(conn, set_version.c_str()));
  if (!set || PQresultStatus(set.get()) != PGRES_COMMAND_OK) {
    rollback();
    return fail(ErrorCode::internal, std::string("migrating: PostgreSQL: ") + PQerrorMessage(conn));
  }
  if (auto r = pg_exec(conn, "COMMIT", {}, "migrating"); !r) return std::move(r).error();
  return *from;
}

}  // namespace ops::core
