#include "auth/pg_user_store.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "auth/pg_schema.hpp"
#include "opserver/proof.hpp"

namespace ops::core {
namespace fs = std::filesystem;
namespace {

// How long a handshake waits for the command connection before giving up.
constexpr auto kHandshakeWait = std::chrono::milliseconds(200);

constexpr const char* kColumns =
    "name, key_sealed, quota_bytes, quota_files, upload_bytes_per_second, "
    "download_bytes_per_second";
constexpr const char* kLimitColumns[] = {"quota_bytes", "quota_files", "upload_bytes_per_second",
                                         "download_bytes_per_second"};

UserLimit* limit_field(UserRecord& r, int i) {
  UserLimit* fields[] = {&r.quota_bytes, &r.quota_files, &r.upload_rate, &r.download_rate};
  return fields[i];
}
const std::optional<UserLimit>* change_field(const LimitChange& c, int i) {
  const std::optional<UserLimit>* fields[] = {&c.quota_bytes, &c.quota_files, &c.upload_rate,
                                              &c.download_rate};
  return fields[i];
}

// A limit as its column: NULL for the server's default, -1 for none, else the value.
PgParam limit_param(const UserLimit& limit) {
  if (!limit.own) return PgParam::null();
  return PgParam::text(limit.value ? std::to_string(*limit.value) : "-1");
}

std::optional<UserLimit> limit_of(const std::optional<std::string>& column) {
  if (!column) return UserLimit::server_default();
  if (*column == "-1") return UserLimit::none();
  try {
    std::size_t used = 0;
    unsigned long long v = std::stoull(*column, &used);
    if (used != column->size()) return std::nullopt;
    return UserLimit::of(v);
  } catch (...) {
    return std::nullopt;
  }
}

std::string notification(const std::string& node, const char* kind, const std::string& name) {
  return node + " " + kind + " " + name;
}

Status fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return fail(ErrorCode::internal, "open " + dir.string() + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0)
    return fail(ErrorCode::internal, "fsync " + dir.string() + ": " + std::strerror(errno));
  return ok_status();
}

}  // namespace

PgUserStore::PgUserStore(std::string conninfo, KeySealer sealer, fs::path state_dir,
                         fs::path storage_dir)
    : conninfo_(std::move(conninfo)),
      sealer_(std::move(sealer)),
      state_dir_(std::move(state_dir)),
      storage_dir_(std::move(storage_dir)),
      node_id_(proof::random_hex(8)) {}

PgUserStore::~PgUserStore() {
  {
    std::lock_guard lock(stop_mutex_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (wake_fd_ >= 0) {
    std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
  if (listener_.joinable()) listener_.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

Result<PGconn*> PgUserStore::command_locked() {
  if (command_ && pg_usable(command_.get())) return command_.get();
  command_.reset();
  const auto now = Clock::now();
  if (now < next_connect_) {
    return fail(ErrorCode::unavailable, "the user database is unreachable; retrying");
  }
  auto conn = pg_connect(conninfo_);
  if (!conn) {
    connect_backoff_ =
        std::min(kPgReconnectLongest, std::max(kPgReconnectFirst, connect_backoff_ * 2));
    next_connect_ = now + connect_backoff_;
    spdlog::warn("user store: {}", conn.error().message);
    return std::move(conn).error();
  }
  connect_backoff_ = std::chrono::milliseconds(0);
  command_ = std::move(*conn);
  return command_.get();
}

Result<PgResult> PgUserStore::command(const char* sql, const std::vector<PgParam>& params,
                                      const char* what, bool* sent) {
  std::lock_guard lock(command_mutex_);
  auto conn = command_locked();
  if (!conn) return std::move(conn).error();
  if (sent) *sent = true;
  auto r = pg_exec(*conn, sql, params, what);
  if (!r && PQstatus(*conn) != CONNECTION_OK) command_.reset();
  return r;
}

std::optional<UserRecord> PgUserStore::decode(const PGresult* r, int row, std::string_view name) {
  UserRecord record;
  auto key = sealer_.open(name, pg_bytea(r, row, 1));
  if (!key) {
    spdlog::error(
        "user store: the key of user {} does not open with the key file (a key "
        "file that does not match the database, or a row altered or copied); "
        "the user cannot log in",
        name);
    return std::nullopt;
  }
  record.key = std::move(*key);
  for (int i = 0; i < 4; ++i) {
    auto limit = limit_of(pg_text(r, row, 2 + i));
    if (!limit) return std::nullopt;
    *limit_field(record, i) = *limit;
  }
  return record;
}

Result<std::optional<UserRecord>> PgUserStore::fetch(PGconn* conn, std::string_view name) {
  const std::string sql =
      std::string("SELECT ") + kColumns + " FROM opserver_users WHERE name = $1";
  auto r = pg_exec(conn, sql.c_str(), {PgParam::text(std::string(name))}, "reading a user");
  if (!r) return std::move(r).error();
  if (PQntuples(r->get()) == 0) return std::optional<UserRecord>();
  return decode(r->get(), 0, name);
}

Status PgUserStore::open(bool bootstrap_admin, std::optional<fs::path>* admin_key_path) {
  std::error_code ec;
  fs::create_directories(state_dir_, ec);
  if (ec) {
    return fail(ErrorCode::internal, "cannot create " + state_dir_.string() + ": " + ec.message());
  }
  fs::permissions(state_dir_, fs::perms::owner_all, fs::perm_options::replace, ec);
  {
    std::lock_guard lock(command_mutex_);
    auto conn = command_locked();
    if (!conn) return std::move(conn).error();
    auto version = pg_schema_version(*conn);
    if (!version) return std::move(version).error();
    if (*version != kPgSchemaVersion) {
      return fail(ErrorCode::invalid_args,
                  "the user database's schema is version " + std::to_string(*version) +
                      ", this opserver needs " + std::to_string(kPgSchemaVersion) +
                      (*version < kPgSchemaVersion ? ": run `opserver db migrate` first"
                                                   : ": upgrade opserver"));
    }
  }
  if (bootstrap_admin) {
    // First start of the whole cluster: admin, only if the table is empty. The key file is
    // written before the row exists, so a failure leaves no admin whose key nobody has;
    // a node that loses the race removes its file again.
    std::string key = proof::random_hex(32);
    fs::path key_path = state_dir_ / "admin.key";
    fs::path tmp = state_dir_ / "admin.key.tmp";
    auto empty =
        command("SELECT NOT EXISTS (SELECT 1 FROM opserver_users)", {}, "checking for users");
    if (!empty) return std::move(empty).error();
    if (std::string(PQgetvalue(empty->get(), 0, 0)) == "t") {
      int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0)
        return fail(ErrorCode::internal, "create " + tmp.string() + ": " + std::strerror(errno));
      std::string line = key + "\n";
      bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                     ::fsync(fd) == 0;
      ::close(fd);
      if (!written) {
        ::unlink(tmp.c_str());
        return fail(ErrorCode::internal, "write " + tmp.string());
      }
      const std::string sql =
          "WITH ins AS (INSERT INTO opserver_users (name, key_sealed) SELECT 'admin', $1 "
          "WHERE NOT EXISTS (SELECT 1 FROM opserver_users) ON CONFLICT (name) DO NOTHING "
          "RETURNING name) SELECT pg_notify('" +
          std::string(kPgUsersChannel) + "', $2) FROM ins";
      auto r = command(sql.c_str(),
                       {PgParam::bytes(sealer_.seal("admin", key)),
                        PgParam::text(notification(node_id_, "add", "admin"))},
                       "creating admin");
      if (!r) {
        ::unlink(tmp.c_str());
        return std::move(r).error();
      }
      if (PQntuples(r->get()) == 1) {
        if (::rename(tmp.c_str(), key_path.c_str()) != 0) {
          return fail(ErrorCode::internal, "rename " + tmp.string() + ": " + std::strerror(errno));
        }
        (void)fsync_dir(state_dir_);
        ::mkdir((storage_dir_ / "admin").c_str(), 0750);
        if (admin_key_path) *admin_key_path = key_path;
      } else {
        ::unlink(tmp.c_str());
      }
    }
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0)
    return fail(ErrorCode::internal, std::string("eventfd: ") + std::strerror(errno));
  listener_ = std::thread([this] { listen_loop(); });
  std::shared_lock lock(cache_mutex_);
  fresh_changed_.wait_for(lock, std::chrono::seconds(5), [this] { return fresh_; });
  return ok_status();
}

bool PgUserStore::read_from_cache(std::string_view name) {
  return fresh_ && !in_flight_.contains(name) && !awaiting_.contains(name);
}

std::optional<std::string> PgUserStore::key_for(std::string_view user) {
  {
    std::shared_lock lock(cache_mutex_);
    if (read_from_cache(user)) {
      // A miss is answered from the copy too, without asking the database: a query only
      // for unknown names would tell them apart by timing (the handshake does the same
      // work for both; core/auth/handshake.cpp). A user registered on another server a
      // moment ago can log in here once the notification has arrived (milliseconds).
      auto it = cache_.find(user);
      if (it == cache_.end()) return std::nullopt;
      return it->second.key;
    }
  }
  // Often on an I/O thread (a handshake): never connect from here (a connect may take
  // connect_timeout) and never wait long for the connection. Cannot tell: the handshake
  // fails like one with a wrong key.
  std::unique_lock lock(command_mutex_, std::defer_lock);
  if (!lock.try_lock_for(kHandshakeWait)) return std::nullopt;
  if (!command_ || !pg_usable(command_.get())) return std::nullopt;
  auto record = fetch(command_.get(), user);
  if (!record || !*record) return std::nullopt;
  return (*record)->key;
}

std::optional<UserRecord> PgUserStore::find(std::string_view user) {
  {
    std::shared_lock lock(cache_mutex_);
    if (read_from_cache(user)) {
      auto it = cache_.find(user);
      if (it != cache_.end()) return it->second;
      // A miss may be a user registered elsewhere a moment ago: ask the database.
    }
  }
  {
    std::lock_guard lock(command_mutex_);
    auto conn = command_locked();
    if (conn) {
      auto record = fetch(*conn, user);
      if (record) return *record;
    }
  }
  // The database cannot be reached: the last limits known (never used for a key).
  std::shared_lock lock(cache_mutex_);
  auto it = cache_.find(user);
  if (it == cache_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> PgUserStore::names() {
  auto r = command("SELECT name FROM opserver_users ORDER BY name", {}, "listing users");
  std::vector<std::string> out;
  if (r) {
    for (int i = 0; i < PQntuples(r->get()); ++i) out.emplace_back(PQgetvalue(r->get(), i, 0));
    return out;
  }
  std::shared_lock lock(cache_mutex_);
  for (const auto& [name, record] : cache_) out.push_back(name);
  return out;
}

Result<PgResult> PgUserStore::write(const std::string& name, const char* sql,
                                    const std::vector<PgParam>& params, const char* what) {
  // Both marks go up before the statement: its notification may reach the listener before
  // this thread runs again, and must find the mark it takes down.
  {
    std::unique_lock lock(cache_mutex_);
    ++in_flight_[name];
    ++awaiting_[name];
  }
  bool sent = false;
  auto r = command(sql, params, what, &sent);
  std::unique_lock lock(cache_mutex_);
  if (--in_flight_[name] == 0) in_flight_.erase(name);
  // A row changed (the listener will hear it back), or the statement went out and its
  // outcome is unknown (the connection broke): the name stays marked until the listener
  // hears it or reloads everything. A statement that changed nothing or was refused sends
  // no notification: take the mark down here.
  bool notifies = r ? PQntuples(r->get()) > 0 : sent && r.error().code == ErrorCode::unavailable;
  if (!notifies) {
    auto it = awaiting_.find(name);
    if (it != awaiting_.end() && --it->second == 0) awaiting_.erase(it);
  }
  return r;
}

Status PgUserStore::add(const std::string& name, const std::string& key,
                        const LimitChange& limits) {
  if (!is_valid_user_name(name)) return fail(ErrorCode::invalid_args, kNameRuleMessage);
  if (!is_valid_key(key)) return fail(ErrorCode::invalid_args, kKeyRuleMessage);
  // The directory first, like the file store: a user never exists without one.
  fs::path dir = storage_dir_ / name;
  if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return fail(errno == ENOSPC ? ErrorCode::unavailable : ErrorCode::internal,
                "mkdir " + dir.string() + ": " + std::strerror(errno));
  }
  if (Status st = fsync_dir(storage_dir_); !st) return st;
  UserRecord record;
  record.key = key;
  for (int i = 0; i < 4; ++i) {
    if (*change_field(limits, i)) *limit_field(record, i) = **change_field(limits, i);
  }
  const std::string sql =
      "WITH ins AS (INSERT INTO opserver_users (name, key_sealed, quota_bytes, quota_files, "
      "upload_bytes_per_second, download_bytes_per_second) VALUES ($1, $2, $3, $4, $5, $6) "
      "ON CONFLICT (name) DO NOTHING RETURNING name) SELECT pg_notify('" +
      std::string(kPgUsersChannel) + "', $7) FROM ins";
  auto r = write(name, sql.c_str(),
                 {PgParam::text(name), PgParam::bytes(sealer_.seal(name, key)),
                  limit_param(record.quota_bytes), limit_param(record.quota_files),
                  limit_param(record.upload_rate), limit_param(record.download_rate),
                  PgParam::text(notification(node_id_, "add", name))},
                 "creating user");
  if (!r) return std::move(r).error();
  if (PQntuples(r->get()) == 0)
    return fail(ErrorCode::already_exists, "user already exists: " + name);
  return ok_status();
}

Status PgUserStore::remove(const std::string& name) {
  const std::string sql =
      "WITH del AS (DELETE FROM opserver_users WHERE name = $1 RETURNING name) "
      "SELECT pg_notify('" +
      std::string(kPgUsersChannel) + "', $2) FROM del";
  auto r = write(name, sql.c_str(),
                 {PgParam::text(name), PgParam::text(notification(node_id_, "remove", name))},
                 "removing user");
  if (!r) return std::move(r).error();
  if (PQntuples(r->get()) == 0) return fail(ErrorCode::not_found, "no such user: " + name);
  return ok_status();
}

Status PgUserStore::rekey(const std::string& name, const std::string& key) {
  if (!is_valid_key(key)) return fail(ErrorCode::invalid_args, kKeyRuleMessage);
  const std::string sql =
      "WITH up AS (UPDATE opserver_users SET key_sealed = $2, updated = now() WHERE name = $1 "
      "RETURNING name) SELECT pg_notify('" +
      std::string(kPgUsersChannel) + "', $3) FROM up";
  auto r = write(name, sql.c_str(),
                 {PgParam::text(name), PgParam::bytes(sealer_.seal(name, key)),
                  PgParam::text(notification(node_id_, "rekey", name))},
                 "rekeying user");
  if (!r) return std::move(r).error();
  if (PQntuples(r->get()) == 0) return fail(ErrorCode::not_found, "no such user: " + name);
  return ok_status();
}

Result<UserRecord> PgUserStore::set_limits(const std::string& name, const LimitChange& change) {
  std::string sets = "updated = now()";
  std::vector<PgParam> params = {PgParam::text(name),
                                 PgParam::text(notification(node_id_, "limits", name))};
  for (int i = 0; i < 4; ++i) {
    if (!*change_field(change, i)) continue;
    params.push_back(limit_param(**change_field(change, i)));
    sets +=
        std::string(", ") + kLimitColumns[i] + " = $" + std::to_string(params.size()) + "::numeric";
  }
  const std::string sql = "WITH up AS (UPDATE opserver_users SET " + sets +
                          " WHERE name = $1 RETURNING " + kColumns + ") SELECT up.*, pg_notify('" +
                          std::string(kPgUsersChannel) + "', $2) FROM up";
  auto r = write(name, sql.c_str(), params, "changing limits");
  if (!r) return std::move(r).error();
  if (PQntuples(r->get()) == 0) return fail(ErrorCode::not_found, "no such user: " + name);
  auto record = decode(r->get(), 0, name);
  if (!record) return fail(ErrorCode::internal, "the user's row does not decode: " + name);
  return *record;
}

void PgUserStore::on_revoked_elsewhere(RevokedHandler handler) {
  std::lock_guard lock(handler_mutex_);
  handler_ = std::move(handler);
}

void PgUserStore::revoked(const std::string& name) {
  std::lock_guard lock(handler_mutex_);
  if (handler_) handler_(name);
}

bool PgUserStore::cache_fresh() {
  std::shared_lock lock(cache_mutex_);
  return fresh_;
}

bool PgUserStore::wait_or_stop(std::chrono::milliseconds delay) {
  std::unique_lock lock(stop_mutex_);
  return !stop_cv_.wait_for(lock, delay, [this] { return stopping_; });
}

void PgUserStore::listen_loop() {
  auto backoff = kPgReconnectFirst;
  bool warned = false;
  while (true) {
    {
      std::lock_guard lock(stop_mutex_);
      if (stopping_) return;
    }
    auto conn = pg_connect(conninfo_);
    if (!conn) {
      if (!warned) spdlog::warn("user store listener: {}", conn.error().message);
      warned = true;
      if (!wait_or_stop(backoff)) return;
      backoff = std::min(kPgReconnectLongest, backoff * 2);
      continue;
    }
    if (warned) spdlog::info("user store listener: connected again; reloading users");
    warned = false;
    backoff = kPgReconnectFirst;
    listen_session(conn->get());
    {
      std::lock_guard lock(stop_mutex_);
      if (stopping_) return;
    }
    {
      std::unique_lock lock(cache_mutex_);
      if (fresh_) {
        spdlog::warn(
            "user store listener: connection lost; keys are read from the database until it "
            "is back");
      }
      fresh_ = false;
    }
    fresh_changed_.notify_all();
  }
}

void PgUserStore::listen_session(PGconn* conn) {
  // LISTEN before the load: a change committed in between is both loaded and notified.
  const std::string listen = std::string("LISTEN ") + kPgUsersChannel;
  if (!pg_exec(conn, listen.c_str(), {}, "listening")) return;
  const std::string all = std::string("SELECT ") + kColumns + " FROM opserver_users";
  auto r = pg_exec(conn, all.c_str(), {}, "loading users");
  if (!r) return;
  Users loaded;
  for (int i = 0; i < PQntuples(r->get()); ++i) {
    std::string name = PQgetvalue(r->get(), i, 0);
    if (auto record = decode(r->get(), i, name))
      loaded.emplace(std::move(name), std::move(*record));
  }
  std::vector<std::string> gone;  // changed or removed while nobody was listening
  {
    std::unique_lock lock(cache_mutex_);
    for (const auto& [name, old] : cache_) {
      auto it = loaded.find(name);
      if (it == loaded.end() || it->second.key != old.key) gone.push_back(name);
    }
    cache_ = std::move(loaded);
    // Everything committed before the load is in it; statements still running may yet
    // notify (if they commit after the LISTEN).
    awaiting_ = in_flight_;
    fresh_ = true;
  }
  fresh_changed_.notify_all();
  for (const std::string& name : gone) revoked(name);

  pollfd fds[2] = {{PQsocket(conn), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (true) {
    int n = ::poll(fds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || fds[1].revents != 0) return;  // stop
    if (PQconsumeInput(conn) == 0 || PQstatus(conn) != CONNECTION_OK) return;
    while (PGnotify* note = PQnotifies(conn)) {
      std::istringstream in(note->extra ? note->extra : "");
      PQfreemem(note);
      std::string node, kind, name;
      if (!(in >> node >> kind >> name)) continue;
      auto row = fetch(conn, name);
      if (!row) return;  // lost: reconnect and reload everything
      {
        std::unique_lock lock(cache_mutex_);
        if (*row) {
          cache_[name] = std::move(**row);
        } else {
          cache_.erase(name);
        }
        if (node == node_id_) {
          auto it = awaiting_.find(name);
          if (it != awaiting_.end() && --it->second == 0) awaiting_.erase(it);
        }
      }
      // Another node replaced the key or removed the user: close its connections here.
      if (node != node_id_ && (kind == "rekey" || kind == "remove")) revoked(name);
    }
  }
}

}  // namespace ops::core
