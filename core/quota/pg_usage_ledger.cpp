#include "quota/pg_usage_ledger.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <limits>

#include "opserver/proof.hpp"

namespace ops::core {
namespace {

// Statements that run every heartbeat carry this comment, so that statement counts (the
// cluster test's) can tell them from the work of requests.
#define OPS_HOUSEKEEPING "/* opserver housekeeping */ "

// Room asked for beyond this is beyond any limit (bigint columns; a declared payload is
// at most 2^53 - 1 anyway).
constexpr std::uint64_t kMaxRoom = std::uint64_t{1} << 62;

constexpr const char* kReserve =
    "WITH u AS (UPDATE opserver_usage SET reserved_bytes = reserved_bytes + $2::bigint, "
    "reserved_files = reserved_files + $3::bigint WHERE user_name = $1 "
    "AND ($2::bigint = 0 OR $4::numeric IS NULL OR "
    "bytes::numeric + reserved_bytes + $2::bigint <= $4::numeric) "
    "AND ($3::bigint = 0 OR $5::numeric IS NULL OR "
    "files::numeric + reserved_files + $3::bigint <= $5::numeric) RETURNING user_name) "
    "INSERT INTO opserver_reservations (user_name, node, bytes, files) "
    "SELECT user_name, $6, $2::bigint, $3::bigint FROM u RETURNING id";

constexpr const char* kSelectUsage =
    "SELECT greatest(bytes, 0), greatest(files, 0), reserved_bytes, reserved_files, bytes, files "
    "FROM opserver_usage WHERE user_name = $1";

// Ends a reservation (by id, or the one held under a tag): its row goes, and the usage row
// gives back the room the row held and takes the actual deltas, in one statement.
constexpr const char* kCommit =
    "WITH r AS (DELETE FROM opserver_reservations WHERE id = $1::bigint AND user_name = $2 "
    "AND tag IS NULL RETURNING user_name, bytes, files), "
    "u AS (UPDATE opserver_usage g SET reserved_bytes = greatest(0, g.reserved_bytes - r.bytes), "
    "reserved_files = greatest(0, g.reserved_files - r.files), bytes = g.bytes + $3::bigint, "
    "files = g.files + $4::bigint FROM r WHERE g.user_name = r.user_name RETURNING 1) "
    "SELECT count(*) FROM r";

constexpr const char* kCommitHeld =
    "WITH r AS (DELETE FROM opserver_reservations WHERE user_name = $2 AND tag = $1 "
    "RETURNING user_name, bytes, files), "
    "u AS (UPDATE opserver_usage g SET reserved_bytes = greatest(0, g.reserved_bytes - r.bytes), "
    "reserved_files = greatest(0, g.reserved_files - r.files), bytes = g.bytes + $3::bigint, "
    "files = g.files + $4::bigint FROM r WHERE g.user_name = r.user_name RETURNING 1) "
    "SELECT count(*) FROM r";

constexpr const char* kAdjust =
    "UPDATE opserver_usage SET bytes = bytes + $2::bigint, files = files + $3::bigint "
    "WHERE user_name = $1";

// The reservation leaves its call for a held row under the tag (merged into one that
// exists); the room stays reserved, so the usage row does not change.
constexpr const char* kHold =
    "WITH r AS (DELETE FROM opserver_reservations WHERE id = $1::bigint AND user_name = $2 "
    "AND tag IS NULL RETURNING user_name, bytes, files) "
    "INSERT INTO opserver_reservations AS h (user_name, tag, bytes, files) "
    "SELECT user_name, $3, bytes, files FROM r "
    "ON CONFLICT (user_name, tag) WHERE tag IS NOT NULL DO UPDATE "
    "SET bytes = h.bytes + excluded.bytes, files = h.files + excluded.files RETURNING id";

constexpr const char* kForget =
    "WITH r AS (DELETE FROM opserver_reservations WHERE user_name = $1) "
    "DELETE FROM opserver_usage WHERE user_name = $1";

constexpr const char* kHeartbeatSql = OPS_HOUSEKEEPING
    "INSERT INTO opserver_nodes (node) VALUES ($1) "
    "ON CONFLICT (node) DO UPDATE SET heartbeat = now()";

// $1: the lease; $2: a node (its own reservations, at a clean stop) or NULL (dead nodes).
constexpr const char* kReap = OPS_HOUSEKEEPING
    "WITH dead AS (DELETE FROM opserver_nodes WHERE "
    "($2::text IS NULL AND heartbeat < now() - $1::interval) OR node = $2 RETURNING node), "
    "r AS (SELECT id, user_name, bytes, files FROM opserver_reservations "
    "WHERE node IS NOT NULL AND reaped IS NULL AND (node = $2 OR ($2::text IS NULL AND "
    "node NOT IN (SELECT node FROM opserver_nodes WHERE heartbeat >= now() - $1::interval))) "
    "FOR UPDATE), "
    "z AS (UPDATE opserver_reservations s SET bytes = 0, files = 0, reaped = now() FROM r "
    "WHERE s.id = r.id RETURNING s.id), "
    "sums AS (SELECT user_name, sum(bytes) AS b, sum(files) AS f FROM r GROUP BY user_name), "
    "u AS (UPDATE opserver_usage g SET reserved_bytes = greatest(0, g.reserved_bytes - sums.b), "
    "reserved_files = greatest(0, g.reserved_files - sums.f) FROM sums "
    "WHERE g.user_name = sums.user_name RETURNING 1) "
    "SELECT (SELECT count(*) FROM dead), (SELECT count(*) FROM z), "
    "(SELECT coalesce(sum(b), 0) FROM sums)";

constexpr const char* kPurgeReaped =
    OPS_HOUSEKEEPING "DELETE FROM opserver_reservations WHERE reaped < now() - interval '1 hour'";

// pg_advisory_xact_lock(int, int) key space of the counts: "opsq" in ASCII.
constexpr const char* kCountLock = "SELECT pg_advisory_xact_lock(1869640561, hashtext($1))";

std::string num(std::uint64_t v) {
  return std::to_string(v);
}
std::string num(std::int64_t v) {
  return std::to_string(v);
}
PgParam limit_param(std::optional<std::uint64_t> limit) {
  return limit ? PgParam::text(num(*limit)) : PgParam::null();
}

std::uint64_t column_u64(const PGresult* r, int row, int col) {
  const char* text = PQgetvalue(r, row, col);
  return text[0] == '-' ? 0 : std::strtoull(text, nullptr, 10);
}
std::int64_t column_i64(const PGresult* r, int row, int col) {
  return std::strtoll(PQgetvalue(r, row, col), nullptr, 10);
}

// The in-memory tracker's test, on the row's figures (bytes may be below zero: the removal
// of a file whose creation is committed a moment later).
bool over(std::int64_t used, std::uint64_t reserved, std::uint64_t want,
          std::optional<std::uint64_t> limit) {
  if (want == 0 || !limit) return false;
  const long double total = static_cast<long double>(used) + reserved + want;
  return total > static_cast<long double>(*limit);
}

}  // namespace

PgUsageLedger::PgUsageLedger(std::string conninfo, int storage_fd)
    : conninfo_(conninfo),
      storage_fd_(storage_fd),
      node_(proof::random_hex(8)),
      pool_(std::move(conninfo), 8) {}

PgUsageLedger::~PgUsageLedger() {
  {
    std::lock_guard lock(stop_mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // A clean stop: this node's calls have ended; give back whatever they still hold.
  auto lease = pool_.acquire();
  if (!lease) return;
  if (auto r = reap(lease->get(), node_); !r) {
    spdlog::warn(
        "usage ledger: could not give back this node's reservations at stop ({}); "
        "the other nodes will within {} s",
        r.error().message, kLease.count());
  }
}

Status PgUsageLedger::start() {
  auto r = pool_.exec(kHeartbeatSql, {PgParam::text(node_)}, "registering the node");
  if (!r) return std::move(r).error();
  thread_ = std::thread([this] { housekeeping(); });
  spdlog::info("usage ledger: PostgreSQL, node {}", node_);
  return ok_status();
}

Status PgUsageLedger::count_if_absent(const std::string& user) {
  auto lease = pool_.acquire();
  if (!lease) return std::move(lease).error();
  auto abort = [&](Error e) -> Status {
    lease->discard();  // closing rolls the transaction back and frees the lock
    return e;
  };
  if (auto r = lease->exec("BEGIN", {}, "counting usage"); !r) return abort(std::move(r).error());
  if (auto r = lease->exec(kCountLock, {PgParam::text(user)}, "counting usage"); !r) {
    return abort(std::move(r).error());
  }
  auto present = lease->exec("SELECT 1 FROM opserver_usage WHERE user_name = $1",
                             {PgParam::text(user)}, "counting usage");
  if (!present) return abort(std::move(present).error());
  if (PQntuples(present->get()) == 0) {
    const auto started = std::chrono::steady_clock::now();
    Usage counted;
    int fd = ::openat(storage_fd_, user.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      counted = count_tree(fd);
      ::close(fd);
    }
    // Open reservations the row would otherwise forget (held ones of a user whose row was
    // deleted to be counted again) are summed back in.
    auto r = lease->exec(
        "INSERT INTO opserver_usage (user_name, bytes, files, reserved_bytes, reserved_files) "
        "SELECT $1, $2::bigint, $3::bigint, coalesce(sum(bytes), 0), coalesce(sum(files), 0) "
        "FROM opserver_reservations WHERE user_name = $1",
        {PgParam::text(user), PgParam::text(num(counted.bytes)), PgParam::text(num(counted.files))},
        "counting usage");
    if (!r) return abort(std::move(r).error());
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count();
    spdlog::info("usage of {} counted for the cluster: {} files, {} bytes, in {} ms", user,
                 counted.files, counted.bytes, ms);
  }
  if (auto r = lease->exec("COMMIT", {}, "counting usage"); !r) return abort(std::move(r).error());
  return ok_status();
}

Result<Usage> PgUsageLedger::usage(const std::string& user) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto r = pool_.exec(kSelectUsage, {PgParam::text(user)}, "reading usage");
    if (!r) return std::move(r).error();
    if (PQntuples(r->get()) == 1) {
      return Usage{column_u64(r->get(), 0, 0), column_u64(r->get(), 0, 1),
                   column_u64(r->get(), 0, 2), column_u64(r->get(), 0, 3)};
    }
    if (Status st = count_if_absent(user); !st) return st.error();
  }
  return fail(ErrorCode::internal, "usage of " + user + " could not be read");
}

Result<std::uint64_t> PgUsageLedger::reserve(const std::string& user, std::uint64_t bytes,
                                             std::uint64_t files, const QuotaLimits& limits) {
  if (bytes > kMaxRoom || files > kMaxRoom) {
    if (limits.bytes || limits.files) {
      return fail(ErrorCode::quota_exceeded, "quota exceeded: more than any limit");
    }
    bytes = std::min(bytes, kMaxRoom);
    files = std::min(files, kMaxRoom);
  }
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto r =
        pool_.exec(kReserve,
                   {PgParam::text(user), PgParam::text(num(bytes)), PgParam::text(num(files)),
                    limit_param(limits.bytes), limit_param(limits.files), PgParam::text(node_)},
                   "reserving quota");
    if (!r) return std::move(r).error();
    if (PQntuples(r->get()) == 1) return column_u64(r->get(), 0, 0);
    // Refused, or the user has no row yet: which one?
    auto row = pool_.exec(kSelectUsage, {PgParam::text(user)}, "reading usage");
    if (!row) return std::move(row).error();
    if (PQntuples(row->get()) == 0) {
      if (Status st = count_if_absent(user); !st) return st.error();
      continue;
    }
    const PGresult* u = row->get();
    const std::uint64_t reserved_bytes = column_u64(u, 0, 2);
    const std::uint64_t reserved_files = column_u64(u, 0, 3);
    if (over(column_i64(u, 0, 4), reserved_bytes, bytes, limits.bytes)) {
      return fail(ErrorCode::quota_exceeded,
                  "quota exceeded: " + num(bytes) + " more bytes would pass the limit of " +
                      num(*limits.bytes) + " (in use " + num(column_u64(u, 0, 0)) + ", reserved " +
                      num(reserved_bytes) + ")");
    }
    if (over(column_i64(u, 0, 5), reserved_files, files, limits.files)) {
      return fail(ErrorCode::quota_exceeded,
                  "quota exceeded: " + num(files) + " more files would pass the limit of " +
                      num(*limits.files) + " (in use " + num(column_u64(u, 0, 1)) + ")");
    }
    // Room was freed in between: try again.
  }
  return fail(ErrorCode::unavailable, "quota reservation of " + user + " kept changing; retry");
}

Result<long> PgUsageLedger::apply(const Pending& p, PGconn* conn) {
  const char* sql = nullptr;
  std::vector<PgParam> params;
  const char* what = nullptr;
  switch (p.kind) {
    case Pending::Kind::commit:
      sql = kCommit;
      params = {PgParam::text(num(p.id)), PgParam::text(p.user), PgParam::text(num(p.bytes)),
                PgParam::text(num(p.files))};
      what = "committing quota";
      break;
    case Pending::Kind::commit_held:
      sql = kCommitHeld;
      params = {PgParam::text(p.tag), PgParam::text(p.user), PgParam::text(num(p.bytes)),
                PgParam::text(num(p.files))};
      what = "committing held quota";
      break;
    case Pending::Kind::adjust:
      sql = kAdjust;
      params = {PgParam::text(p.user), PgParam::text(num(p.bytes)), PgParam::text(num(p.files))};
      what = "adjusting usage";
      break;
  }
  auto r = conn ? pg_exec(conn, sql, params, what) : pool_.exec(sql, params, what);
  if (!r) return std::move(r).error();
  if (p.kind == Pending::Kind::adjust) return std::atol(PQcmdTuples(r->get()));
  return static_cast<long>(column_u64(r->get(), 0, 0));
}

void PgUsageLedger::keep(Pending p) {
  std::lock_guard lock(pending_mutex_);
  if (pending_.size() >= kMaxPending) {
    spdlog::error(
        "usage ledger: {} changes wait for the database; the usage of {} will miss "
        "{} bytes",
        pending_.size(), p.user, p.bytes);
    return;
  }
  pending_.push_back(std::move(p));
}

bool PgUsageLedger::apply_or_keep(Pending p) {
  auto r = apply(p, nullptr);
  if (r) return *r > 0;
  if (r.error().code == ErrorCode::unavailable) {
    // Commits are keyed by their reservation's row, so sending one again after a lost
    // answer changes nothing. An adjustment is not: it may count twice in that case.
    spdlog::warn("usage ledger: {}; kept to send again", r.error().message);
    keep(std::move(p));
    return true;
  }
  spdlog::error("usage ledger: {}", r.error().message);
  return false;
}

bool PgUsageLedger::commit(const std::string& user, std::uint64_t id, std::int64_t bytes_delta,
                           std::int64_t files_delta) {
  return apply_or_keep({Pending::Kind::commit, user, id, {}, bytes_delta, files_delta});
}

bool PgUsageLedger::commit_held(const std::string& user, const std::string& tag,
                                std::int64_t bytes_delta, std::int64_t files_delta) {
  return apply_or_keep({Pending::Kind::commit_held, user, 0, tag, bytes_delta, files_delta});
}

void PgUsageLedger::adjust(const std::string& user, std::int64_t bytes_delta,
                           std::int64_t files_delta) {
  apply_or_keep({Pending::Kind::adjust, user, 0, {}, bytes_delta, files_delta});
}

Status PgUsageLedger::hold(const std::string& user, std::uint64_t id, const std::string& tag) {
  auto r = pool_.exec(kHold, {PgParam::text(num(id)), PgParam::text(user), PgParam::text(tag)},
                      "holding quota");
  if (!r) return std::move(r).error();
  if (PQntuples(r->get()) == 0) return fail(ErrorCode::not_found, "no such reservation");
  return ok_status();
}

void PgUsageLedger::forget(const std::string& user) {
  if (auto r = pool_.exec(kForget, {PgParam::text(user)}, "forgetting usage"); !r) {
    spdlog::warn("usage ledger: {}", r.error().message);
  }
}

std::size_t PgUsageLedger::pending() {
  std::lock_guard lock(pending_mutex_);
  return pending_.size();
}

Result<PgResult> PgUsageLedger::reap(PGconn* conn, const std::optional<std::string>& node) {
  const std::string lease = std::to_string(kLease.count()) + " seconds";
  return pg_exec(conn, kReap, {PgParam::text(lease), node ? PgParam::text(*node) : PgParam::null()},
                 "giving back reservations");
}

void PgUsageLedger::tick(PgConn& conn,
                         std::optional<std::chrono::steady_clock::time_point>& up_since,
                         int round) {
  using Clock = std::chrono::steady_clock;
  if (!conn || !pg_usable(conn.get())) {
    conn.reset();
    up_since.reset();
    auto fresh = pg_connect(conninfo_);
    if (!fresh) return;
    conn = std::move(*fresh);
  }
  auto lost = [&](const Error& e) {
    spdlog::warn("usage ledger heartbeat: {}", e.message);
    if (PQstatus(conn.get()) != CONNECTION_OK) conn.reset();
    up_since.reset();
  };
  if (auto r = pg_exec(conn.get(), kHeartbeatSql, {PgParam::text(node_)}, "heartbeat"); !r) {
    return lost(r.error());
  }
  if (!up_since) up_since = Clock::now();
  // Changes kept while the database was away, oldest first.
  while (true) {
    Pending p;
    {
      std::lock_guard lock(pending_mutex_);
      if (pending_.empty()) break;
      p = pending_.front();
    }
    auto r = apply(p, conn.get());
    if (!r && r.error().code == ErrorCode::unavailable) return lost(r.error());
    if (!r) spdlog::error("usage ledger: {}", r.error().message);
    std::lock_guard lock(pending_mutex_);
    pending_.pop_front();
  }
  // Reaping waits until this node has been heartbeating for a lease: after an outage, the
  // others have had time to heartbeat again too.
  if (Clock::now() - *up_since >= kLease) {
    auto r = reap(conn.get(), std::nullopt);
    if (!r) return lost(r.error());
    const std::string nodes = PQgetvalue(r->get(), 0, 0);
    const std::string rows = PQgetvalue(r->get(), 0, 1);
    if (rows != "0" || nodes != "0") {
      spdlog::warn(
          "usage ledger: {} dead node(s) removed; {} reservation(s) of dead nodes "
          "given back ({} bytes)",
          nodes, rows, PQgetvalue(r->get(), 0, 2));
    }
  }
  if (round % 30 == 0) {
    if (auto r = pg_exec(conn.get(), kPurgeReaped, {}, "purging"); !r) return lost(r.error());
  }
}

void PgUsageLedger::housekeeping() {
  PgConn conn;
  // start() has just registered the node: that is its first heartbeat.
  std::optional<std::chrono::steady_clock::time_point> up_since = std::chrono::steady_clock::now();
  for (int round = 1;; ++round) {
    {
      std::unique_lock lock(stop_mutex_);
      if (stop_cv_.wait_for(lock, kHeartbeat, [this] { return stopping_; })) return;
    }
    tick(conn, up_since, round);
  }
}

}  // namespace ops::core
