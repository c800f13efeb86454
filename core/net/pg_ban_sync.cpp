#include "net/pg_ban_sync.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "auth/pg_schema.hpp"
#include "opserver/proof.hpp"

namespace ops::core {
namespace {

constexpr int kPurgeEveryMs = 60'000;

constexpr const char* kRecord =
    "WITH up AS (INSERT INTO opserver_bans AS b (address, banned_until, bans) "
    "VALUES ($1::bytea, now() + $2::bigint * interval '1 second', $3::integer) "
    "ON CONFLICT (address) DO UPDATE SET banned_until = greatest(b.banned_until, "
    "excluded.banned_until), bans = greatest(b.bans, excluded.bans) "
    "RETURNING address, banned_until, bans) "
    "SELECT pg_notify($4::text, $5::text || ' ' || encode(address, 'hex') || ' ' || "
    "(extract(epoch FROM banned_until - now()) * 1000)::bigint || ' ' || bans) FROM up";

constexpr const char* kLoad =
    "SELECT encode(address, 'hex'), (extract(epoch FROM banned_until - now()) * 1000)::bigint, "
    "bans FROM opserver_bans WHERE banned_until > now()";

constexpr const char* kPurge =
    "/* opserver housekeeping */ DELETE FROM opserver_bans "
    "WHERE banned_until < now() - interval '1 day'";

std::optional<Defender::Address> address_of_hex(const std::string& hex) {
  if (hex.size() != 32) return std::nullopt;
  Defender::Address out{};
  for (std::size_t i = 0; i < 16; ++i) {
    unsigned v = 0;
    for (int k = 0; k < 2; ++k) {
      const char c = hex[2 * i + k];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= c - '0';
      else if (c >= 'a' && c <= 'f')
        v |= c - 'a' + 10;
      else
        return std::nullopt;
    }
    out[i] = static_cast<std::uint8_t>(v);
  }
  return out;
}

}  // namespace

PgBanSync::PgBanSync(std::string conninfo, Defender& defender)
    : conninfo_(std::move(conninfo)), defender_(defender), node_(proof::random_hex(8)) {}

PgBanSync::~PgBanSync() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  if (wake_fd_ >= 0) {
    std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

Status PgBanSync::start() {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0)
    return fail(ErrorCode::internal, std::string("eventfd: ") + std::strerror(errno));
  defender_.on_ban(
      [this](const Defender::Address& address, std::chrono::seconds length, unsigned bans) {
        {
          std::lock_guard lock(mutex_);
          if (queue_.size() >= kMaxQueued) return;  // kept local only
          queue_.push_back({address, length, bans});
        }
        std::uint64_t one = 1;
        (void)!::write(wake_fd_, &one, sizeof one);
      });
  thread_ = std::thread([this] { run(); });
  return ok_status();
}

bool PgBanSync::stopping() {
  std::lock_guard lock(mutex_);
  return stopping_;
}

void PgBanSync::run() {
  auto backoff = kPgReconnectFirst;
  bool warned = false;
  while (!stopping()) {
    auto conn = pg_connect(conninfo_);
    if (!conn) {
      if (!warned) spdlog::warn("defender bans: {}", conn.error().message);
      warned = true;
      pollfd wake{wake_fd_, POLLIN, 0};
      ::poll(&wake, 1, static_cast<int>(backoff.count()));
      std::uint64_t n;
      (void)!::read(wake_fd_, &n, sizeof n);
      backoff = std::min(kPgReconnectLongest, backoff * 2);
      continue;
    }
    if (warned) spdlog::info("defender bans: connected again");
    warned = false;
    backoff = kPgReconnectFirst;
    session(conn->get());
  }
}

void PgBanSync::receive(PGconn* conn) {
  while (PGnotify* note = PQnotifies(conn)) {
    std::istringstream in(note->extra ? note->extra : "");
    PQfreemem(note);
    std::string node, hex;
    long long ms = 0;
    unsigned bans = 0;
    if (!(in >> node >> hex >> ms >> bans) || node == node_) continue;
    if (auto address = address_of_hex(hex)) {
      defender_.ban_from_elsewhere(*address, std::chrono::milliseconds(ms), bans);
    }
  }
}

bool PgBanSync::write_queued(PGconn* conn) {
  while (true) {
    Ban ban;
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) return true;
      ban = queue_.front();
    }
    auto r = pg_exec(
        conn, kRecord,
        {PgParam::bytes(std::string(ban.address.begin(), ban.address.end())),
         PgParam::text(std::to_string(ban.length.count())), PgParam::text(std::to_string(ban.bans)),
         PgParam::text(kPgBansChannel), PgParam::text(node_)},
        "recording a ban");
    if (!r && PQstatus(conn) != CONNECTION_OK) return false;
    if (!r) spdlog::error("defender bans: {}", r.error().message);
    std::lock_guard lock(mutex_);
    queue_.pop_front();
  }
}

void PgBanSync::session(PGconn* conn) {
  const std::string listen = std::string("LISTEN ") + kPgBansChannel;
  if (!pg_exec(conn, listen.c_str(), {}, "listening for bans")) return;
  auto loaded = pg_exec(conn, kLoad, {}, "loading bans");
  if (!loaded) return;
  for (int i = 0; i < PQntuples(loaded->get()); ++i) {
    if (auto address = address_of_hex(PQgetvalue(loaded->get(), i, 0))) {
      defender_.ban_from_elsewhere(
          *address, std::chrono::milliseconds(std::atoll(PQgetvalue(loaded->get(), i, 1))),
          static_cast<unsigned>(std::atoi(PQgetvalue(loaded->get(), i, 2))));
    }
  }
  receive(conn);
  int since_purge = kPurgeEveryMs;  // purge once at the start of a session
  pollfd fds[2] = {{PQsocket(conn), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (!stopping()) {
    if (!write_queued(conn)) return;
    receive(conn);  // notifications that arrived with the answers
    if (since_purge >= kPurgeEveryMs) {
      if (!pg_exec(conn, kPurge, {}, "purging bans") && PQstatus(conn) != CONNECTION_OK) return;
      since_purge = 0;
    }
    const auto before = std::chrono::steady_clock::now();
    int n = ::poll(fds, 2, kPurgeEveryMs);
    since_purge += static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now() - before)
                                        .count());
    if (n < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) {
      std::uint64_t value;
      (void)!::read(wake_fd_, &value, sizeof value);
    }
    if (fds[0].revents != 0) {
      if (PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK) return;
      receive(conn);
    }
  }
}

}  // namespace ops::core
