#include "auth/pg_connection.hpp"

#include <poll.h>

#include <cstring>

namespace ops::core {
namespace {

bool unavailable_state(const char* sqlstate) {
  if (sqlstate == nullptr) return true;  // no server answer at all: the connection failed
  std::string_view s(sqlstate);
  // 08: connection exception; 53: insufficient resources; 57P01-03: shutdown, crash
  // shutdown, cannot connect now; 40001/40P01: serialization failure, deadlock (retryable).
  return s.starts_with("08") || s.starts_with("53") || s == "57P01" || s == "57P02" ||
         s == "57P03" || s == "40001" || s == "40P01";
}

std::string one_line(const char* text) {
  std::string s = text ? text : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (char& c : s) {
    if (c == '\n') c = ' ';
  }
  return s;
}

}  // namespace

Result<PgConn> pg_connect(const std::string& conninfo) {
  // Later keywords win, and "dbname" is expanded in place: the defaults come first so that
  // the operator's string overrides any of them.
  const char* keys[] = {
      "connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval",
      "keepalives_count", "application_name", "dbname",          nullptr};
  const char* values[] = {"5", "1", "10", "5", "3", "opserver", conninfo.c_str(), nullptr};
  PgConn conn(PQconnectdbParams(keys, values, 1));
  if (!conn) return fail(ErrorCode::unavailable, "PostgreSQL: out of memory");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return fail(ErrorCode::unavailable,
                "cannot connect to PostgreSQL: " + one_line(PQerrorMessage(conn.get())));
  }
  return conn;
}

Result<PgResult> pg_exec(PGconn* conn, const char* sql, const std::vector<PgParam>& params,
                         const char* what) {
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
  for (const PgParam& p : params) {
    values.push_back(p.value ? p.value->data() : nullptr);
    lengths.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
    formats.push_back(p.binary ? 1 : 0);
  }
  PgResult r(PQexecParams(conn, sql, static_cast<int>(params.size()), nullptr, values.data(),
                          lengths.data(), formats.data(), 0));
  ExecStatusType status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return r;
  const char* state = r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
  std::string message = r ? one_line(PQresultErrorMessage(r.get())) : "";
  if (message.empty()) message = one_line(PQerrorMessage(conn));
  bool lost = PQstatus(conn) != CONNECTION_OK || unavailable_state(state);
  return fail(lost ? ErrorCode::unavailable : ErrorCode::internal,
              std::string(what) + ": PostgreSQL: " + message);
}

bool pg_usable(PGconn* conn) {
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) return false;
  // An idle connection has nothing to read; anything readable (an error message before the
  // server closed, or EOF) means the server has ended this session.
  pollfd p{PQsocket(conn), POLLIN, 0};
  if (p.fd < 0) return false;
  int n = ::poll(&p, 1, 0);
  if (n == 0) return true;
  if (PQconsumeInput(conn) == 0) return false;
  return PQstatus(conn) == CONNECTION_OK && PQisBusy(conn) == 0 &&
         (p.revents & (POLLHUP | POLLERR)) == 0;
}

std::string pg_bytea(const PGresult* r, int row, int col) {
  std::size_t len = 0;
  unsigned char* raw =
      PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(r, row, col)), &len);
  if (raw == nullptr) return {};
  std::string out(reinterpret_cast<const char*>(raw), len);
  PQfreemem(raw);
  return out;
}

std::optional<std::string> pg_text(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return std::nullopt;
  return std::string(PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col)));
}

}  // namespace ops::core
