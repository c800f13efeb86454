#include "auth/user_services.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "opserver/proof.hpp"
#include "quota/memory_usage_ledger.hpp"

namespace ops::core {

namespace {

constexpr const char* kTrashPrefix = "unregistered-";

Status sys_error(const std::string& what) {
  return fail(errno == ENOSPC ? ErrorCode::unavailable : ErrorCode::internal,
              what + ": " + std::strerror(errno));
}

}  // namespace

bool remove_tree(int dir_fd, const std::string& name) {
  if (::unlinkat(dir_fd, name.c_str(), 0) == 0 || errno == ENOENT) return true;
  if (errno != EISDIR && errno != EPERM) return false;
  int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    ::close(fd);
    return false;
  }
  std::vector<std::string> entries;  // read first: removing while reading may skip names
  while (dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      entries.emplace_back(e->d_name);
    }
  }
  for (const auto& entry : entries) remove_tree(::dirfd(dir), entry);
  ::closedir(dir);
  return ::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT;
}

TrashCollector::TrashCollector(int scratch_fd)
    : scratch_fd_(scratch_fd), thread_([this] { run(); }) {}

TrashCollector::~TrashCollector() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void TrashCollector::remove_later(std::string name) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(name));
  }
  wake_.notify_all();
}

void TrashCollector::run() {
  for (;;) {
    std::string name;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      name = std::move(queue_.front());
      queue_.pop_front();
    }
    if (!remove_tree(scratch_fd_, name)) {
      spdlog::warn("could not delete the storage of an unregistered user ({}): {}", name,
                   std::strerror(errno));
    }
  }
}

UserServices::UserServices(UserStore& users, int storage_fd, int scratch_fd, UserDefaults defaults,
                           std::unique_ptr<UsageLedger> usage)
    : users_(users),
      storage_fd_(storage_fd),
      scratch_fd_(scratch_fd),
      defaults_(defaults),
      usage_(usage ? std::move(usage) : std::make_unique<MemoryUsageLedger>(storage_fd)),
      trash_(scratch_fd) {
  // A store shared by several servers (PostgreSQL) reports rekeys and removals made by the
  // others: their old key no longer holds, so this server closes the user's connections.
  users_.on_revoked_elsewhere([this](const std::string& user) {
    std::size_t closed = sessions_.close_user(user, nullptr);
    if (closed > 0) {
      spdlog::info("user {} rekeyed or unregistered on another server; {} connection(s) closed",
                   user, closed);
    }
  });
}

UserServices::~UserServices() {
  users_.on_revoked_elsewhere(nullptr);
}

QuotaLimits UserServices::quota_for(const std::string& user) {
  auto record = users_.find(user);
  if (!record) return {defaults_.quota_bytes, defaults_.quota_files};
  return {record->quota_bytes.effective(defaults_.quota_bytes),
          record->quota_files.effective(defaults_.quota_files)};
}

std::optional<std::uint64_t> UserServices::rate_for(const std::string& user,
                                                    BandwidthLimits::Direction direction) {
  auto record = users_.find(user);
  const bool up = direction == BandwidthLimits::Direction::upload;
  std::optional<std::uint64_t> fallback = up ? defaults_.upload_rate : defaults_.download_rate;
  std::optional<std::uint64_t> rate =
      record ? (up ? record->upload_rate : record->download_rate).effective(fallback) : fallback;
  if (!rate || *rate == 0) return std::nullopt;
  return std::max(*rate, 2 * defaults_.min_rate);
}

Status UserServices::move_aside(const std::string& name) {
  std::string trash = kTrashPrefix + name + "-" + proof::random_hex(8);
  if (::renameat(storage_fd_, name.c_str(), scratch_fd_, trash.c_str()) != 0) {
    if (errno == ENOENT) return ok_status();
    return sys_error("move the storage of " + name + " aside");
  }
  // Both directory entries durable: the name is gone from the storage root for good.
  if (::fsync(storage_fd_) != 0 || ::fsync(scratch_fd_) != 0) {
    return sys_error("fsync after moving the storage of " + name);
  }
  trash_.remove_later(std::move(trash));
  return ok_status();
}

Status UserServices::create_user(const std::string& name, const std::string& key,
                                 const LimitChange& limits) {
  std::lock_guard lock(admin_mutex_);
  if (Status st = users_.add(name, key, limits); !st) return st;
  // A fresh count: whatever was known about an earlier user of this name is gone. After
  // the add, not before: a shared ledger must not lose the usage of a user of that name
  // who exists (a register that ends in already_exists).
  usage_->forget(name);
  return ok_status();
}

Status UserServices::remove_user(const std::string& name) {
  std::lock_guard lock(admin_mutex_);
  if (!users_.key_for(name)) return fail(ErrorCode::not_found, "no such user: " + name);
  // No new session for the user from here on, and none of the old ones left.
  sessions_.disable(name);
  struct Enable {
    UserSessions& s;
    const std::string& n;
    ~Enable() { s.enable(n); }
  } enable_at_end{sessions_, name};
  std::size_t closed = sessions_.close_user(name, nullptr);
  // The files first, then the user: a crash in between leaves a user with an empty
  // directory (the unregister was not answered; it can be repeated), never a directory
  // without a user that a later registration of the name would inherit.
  if (Status moved = move_aside(name); !moved) return moved;
  if (Status removed = users_.remove(name); !removed) return removed;
  // A request of a closed session that was already past its checks may have created
  // the directory again (empty) meanwhile: move that aside too.
  if (Status again = move_aside(name); !again) {
    spdlog::warn("unregister {}: {}", name, again.error().message);
  }
  usage_->forget(name);
  spdlog::info("user {} unregistered; {} connection(s) closed", name, closed);
  return ok_status();
}

Status UserServices::rekey_user(const std::string& name, const std::string& key,
                                const Connection* except) {
  if (Status st = users_.rekey(name, key); !st) return st;
  std::size_t closed = sessions_.close_user(name, except);
  spdlog::info("user {} rekeyed; {} other connection(s) closed", name, closed);
  return ok_status();
}

Result<UserRecord> UserServices::set_limits(const std::string& name, const LimitChange& change) {
  return users_.set_limits(name, change);
}

Result<std::string> UserServices::usage_json(const std::string& user) {
  if (!exists(user)) return fail(ErrorCode::not_found, "no such user: " + user);
  auto counted = usage_->usage(user);
  if (!counted) return std::move(counted).error();
  return usage_text(user, *counted);
}

std::optional<Result<std::string>> UserServices::usage_json_now(const std::string& user) {
  if (!users_.answers_from_memory()) return std::nullopt;
  if (!exists(user))
    return Result<std::string>(fail(ErrorCode::not_found, "no such user: " + user));
  auto known = usage_->usage_if_known(user);
  if (!known) return std::nullopt;
  return Result<std::string>(usage_text(user, *known));
}

std::string UserServices::usage_text(const std::string& user, const Usage& u) {
  QuotaLimits q = quota_for(user);
  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> w(out);
  w.StartObject();
  w.Key("user");
  w.String(user.c_str(), static_cast<rapidjson::SizeType>(user.size()));
  w.Key("bytes");
  w.Uint64(u.bytes);
  w.Key("files");
  w.Uint64(u.files);
  w.Key("reserved_bytes");
  w.Uint64(u.reserved_bytes);
  w.Key("quota_bytes");
  q.bytes ? w.Uint64(*q.bytes) : w.Null();
  w.Key("quota_files");
  q.files ? w.Uint64(*q.files) : w.Null();
  w.EndObject();
  return std::string(out.GetString(), out.GetSize());
}

CallUserState::~CallUserState() {
  if (services == nullptr) return;
  for (std::uint64_t token : reservations) services->usage().release(user, token);
}

bool CallUserState::holds(std::uint64_t token) const {
  return std::find(reservations.begin(), reservations.end(), token) != reservations.end();
}

void CallUserState::forget(std::uint64_t token) {
  std::erase(reservations, token);
}

void CallUserState::load_rates() {
  if (rates_loaded || services == nullptr) return;
  rates_loaded = true;
  using Direction = BandwidthLimits::Direction;
  upload = services->bandwidth().bucket(user, Direction::upload,
                                        services->rate_for(user, Direction::upload));
  download = services->bandwidth().bucket(user, Direction::download,
                                          services->rate_for(user, Direction::download));
}

}  // namespace ops::core
