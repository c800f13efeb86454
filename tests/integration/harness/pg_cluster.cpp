#include "harness/pg_cluster.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace ops::test {
namespace fs = std::filesystem;
namespace {

const fs::path kBin = "/usr/lib/postgresql/15/bin";

// When root: postgres' own user for the cluster (it refuses to run as root).
struct RunAs {
  uid_t uid = ::geteuid();
  gid_t gid = ::getegid();
  bool drop = false;
};
RunAs run_as() {
  RunAs r;
  if (::geteuid() != 0) return r;
  const passwd* pw = ::getpwnam("nobody");
  if (pw == nullptr) throw std::runtime_error("no user nobody to run postgres as");
  r.uid = pw->pw_uid;
  r.gid = pw->pw_gid;
  r.drop = true;
  return r;
}

// Forks and execs `argv` as the cluster's user, output appended to `log`. Returns the pid.
pid_t spawn(const std::vector<std::string>& argv, const fs::path& log) {
  RunAs who = run_as();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null >= 0) ::dup2(null, 0);
    if (who.drop &&
        (::setgroups(0, nullptr) != 0 || ::setgid(who.gid) != 0 || ::setuid(who.uid) != 0)) {
      ::_exit(126);
    }
    // A test that crashes or is killed takes its postgres along (set after setuid, which
    // clears it).
    ::prctl(PR_SET_PDEATHSIG, SIGQUIT);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

}  // namespace

bool PgCluster::available() {
  return fs::exists(kBin / "postgres") && fs::exists(kBin / "initdb");
}

PgCluster::PgCluster() {
  char tmpl[] = "/tmp/ops-pg-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  RunAs who = run_as();
  if (who.drop && ::chown(dir_.c_str(), who.uid, who.gid) != 0) {
    throw std::runtime_error("chown " + dir_.string() + " failed");
  }
  int status = wait_for(spawn({(kBin / "initdb").string(), "-D", (dir_ / "data").string(), "-U",
                               "ops", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"},
                              dir_ / "initdb.log"));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::ifstream in(dir_ / "initdb.log");
    std::stringstream ss;
    ss << in.rdbuf();
    throw std::runtime_error("initdb failed: " + ss.str());
  }
  start();
  query("CREATE DATABASE opserver");
}

PgCluster::~PgCluster() {
  if (pid_ > 0) {
    ::kill(pid_, SIGQUIT);  // immediate shutdown: nothing to keep
    wait_for(pid_);
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string PgCluster::conninfo() const {
  return "host=" + dir_.string() + " port=5432 dbname=opserver user=ops";
}

void PgCluster::start() {
  if (pid_ > 0) return;
  pid_ = spawn({(kBin / "postgres").string(), "-D", (dir_ / "data").string(), "-k", dir_.string(),
                "-c", "listen_addresses=", "-c", "fsync=off", "-c", "full_page_writes=off", "-c",
                "synchronous_commit=off", "-c", "max_connections=40", "-c", "shared_buffers=16MB",
                "-c", "log_statement=all"},
               dir_ / "postgres.log");
  const std::string info =
      "host=" + dir_.string() + " port=5432 dbname=postgres user=ops connect_timeout=2";
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (PQping(info.c_str()) != PQPING_OK) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("postgres exited at start: " + log());
    }
    if (std::chrono::steady_clock::now() > give_up) {
      throw std::runtime_error("postgres did not start within 30 s: " + log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void PgCluster::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGINT);  // fast shutdown: sessions are ended, like a restart would
  wait_for(pid_);
  pid_ = -1;
}

PgCluster::Rows PgCluster::query(const std::string& sql,
                                 const std::vector<std::string>& params) const {
  const std::string db = sql.starts_with("CREATE DATABASE") ? "postgres" : "opserver";
  const std::string info = "host=" + dir_.string() + " port=5432 dbname=" + db + " user=ops";
  PGconn* conn = PQconnectdb(info.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string why = PQerrorMessage(conn);
    PQfinish(conn);
    throw std::runtime_error("connect: " + why);
  }
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  PGresult* r = PQexecParams(conn, sql.c_str(), static_cast<int>(params.size()), nullptr,
                             values.data(), nullptr, nullptr, 0);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::string why = PQresultErrorMessage(r);
    PQclear(r);
    PQfinish(conn);
    throw std::runtime_error(sql + ": " + why);
  }
  Rows rows;
  for (int i = 0; i < PQntuples(r); ++i) {
    auto& row = rows.emplace_back();
    for (int j = 0; j < PQnfields(r); ++j) {
      if (PQgetisnull(r, i, j)) {
        row.emplace_back(std::nullopt);
      } else {
        row.emplace_back(std::string(PQgetvalue(r, i, j), PQgetlength(r, i, j)));
      }
    }
  }
  PQclear(r);
  PQfinish(conn);
  return rows;
}

std::string PgCluster::log() const {
  std::ifstream in(dir_ / "postgres.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace ops::test
