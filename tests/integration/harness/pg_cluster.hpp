// A real, throwaway PostgreSQL 15 cluster for the PostgreSQL user store's tests: initdb in a
// fresh directory under /tmp, postgres listening only on a unix socket in that directory
// (no TCP port to collide on), fsync off for speed, every statement logged (log()), one
// database "opserver". Run as
// `nobody` when the tests run as root (postgres refuses root). Everything is removed on
// destruction. No mock: the server under test talks to this postgres through libpq.
#pragma once

#include <libpq-fe.h>
#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ops::test {

class PgCluster {
 public:
  // initdb + start + CREATE DATABASE; throws std::runtime_error (with postgres' log) if any
  // step fails. Skips nothing: a missing postgresql-15 is a failure (scripts/setup installs it).
  PgCluster();
  ~PgCluster();
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  // libpq connection string for the test database.
  std::string conninfo() const;
  // Fast shutdown (SIGINT), waiting for postgres to exit; start() brings it back on the
  // same socket and data.
  void stop();
  void start();
  bool running() const { return pid_ > 0; }

  // Runs `sql` on a fresh connection; rows of text columns (nullopt for NULL). Throws on error.
  using Rows = std::vector<std::vector<std::optional<std::string>>>;
  Rows query(const std::string& sql, const std::vector<std::string>& params = {}) const;

  std::string log() const;

  static bool available();  // the postgres binaries are installed

 private:
  std::filesystem::path dir_;
  pid_t pid_ = -1;
};

}  // namespace ops::test
