#include "auth/pg_pool.hpp"

#include <spdlog/spdlog.h>

namespace ops::core {
PgPool::PgPool(std::string conninfo, std::size_t idle_max)
    : conninfo_(std::move(conninfo)), idle_max_(idle_max) {}

PgPool::Lease::~Lease() {
  if (conn_ && pool_) pool_->give_back(std::move(conn_));
}

Result<PgResult> PgPool::Lease::exec(const char* sql, const std::vector<PgParam>& params,
                                     const char* what) {
  auto r = pg_exec(conn_.get(), sql, params, what);
  if (!r && PQstatus(conn_.get()) != CONNECTION_OK) conn_.reset();
  return r;
}

Result<PgPool::Lease> PgPool::acquire() {
  {
    std::lock_guard lock(mutex_);
    while (!idle_.empty()) {
      PgConn conn = std::move(idle_.back());
      idle_.pop_back();
      if (pg_usable(conn.get())) return Lease(this, std::move(conn));
    }
    if (Clock::now() < next_connect_) {
      return fail(ErrorCode::unavailable, "the database is unreachable; retrying");
    }
  }
  auto conn = pg_connect(conninfo_);
  std::lock_guard lock(mutex_);
  if (!conn) {
    backoff_ = std::min(kPgReconnectLongest, std::max(kPgReconnectFirst, backoff_ * 2));
    next_connect_ = Clock::now() + backoff_;
    return std::move(conn).error();
  }
  backoff_ = std::chrono::milliseconds(0);
  next_connect_ = {};
  return Lease(this, std::move(*conn));
}

Result<PgResult> PgPool::exec(const char* sql, const std::vector<PgParam>& params,
                              const char* what) {
  auto lease = acquire();
  if (!lease) return std::move(lease).error();
  return lease->exec(sql, params, what);
}

void PgPool::give_back(PgConn conn) {
  if (PQstatus(conn.get()) != CONNECTION_OK || PQtransactionStatus(conn.get()) != PQTRANS_IDLE) {
    return;  // closed: broken, or a transaction left open (closing rolls it back)
  }
  std::lock_guard lock(mutex_);
  if (idle_.size() < idle_max_) idle_.push_back(std::move(conn));
}

}  // namespace ops::core
