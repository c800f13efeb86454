#include "auth/file_user_store.hpp"

#include <fcntl.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "opserver/proof.hpp"
#include "proto/strict_json.hpp"

namespace ops::core {
namespace fs = std::filesystem;

namespace {

// An exclusive flock on the store's lock file for as long as it lives.
class FileLock {
 public:
  explicit FileLock(const fs::path& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (fd_ >= 0) {
      while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
      }
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

Status sys_error(const std::string& what) {
  // Logged by the caller; host paths never reach a client (register maps to a code).
  return fail(errno == ENOSPC ? ErrorCode::unavailable : ErrorCode::internal,
              what + ": " + std::strerror(errno));
}

Status fsync_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return sys_error("open " + dir.string());
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return sys_error("fsync " + dir.string());
  return ok_status();
}

constexpr const char* kLimitNames[] = {"quota_bytes", "quota_files", "upload_bytes_per_second",
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

void apply(UserRecord& record, const LimitChange& change) {
  for (int i = 0; i < 4; ++i) {
    if (*change_field(change, i)) *limit_field(record, i) = **change_field(change, i);
  }
}

}  // namespace

FileUserStore::FileUserStore(fs::path state_dir, fs::path storage_dir)
    : state_dir_(std::move(state_dir)),
      storage_dir_(std::move(storage_dir)),
      file_(state_dir_ / "users.json"),
      lock_file_(state_dir_ / "users.lock") {}

Status FileUserStore::open(bool bootstrap_admin, std::optional<fs::path>* admin_key_path) {
  std::error_code ec;
  fs::create_directories(state_dir_, ec);
  if (ec)
    return fail(ErrorCode::internal, "cannot create " + state_dir_.string() + ": " + ec.message());
  fs::permissions(state_dir_, fs::perms::owner_all, fs::perm_options::replace, ec);

  std::unique_lock lock(mutex_);
  FileLock file_lock(lock_file_);
  if (!file_lock.ok()) return sys_error("lock " + lock_file_.string());
  if (Status st = reload_locked(); !st) return st;
  if (!bootstrap_admin || !users_.empty()) return ok_status();

  // First start: create admin and hand its key over through a 0600 file, never the log.
  std::string key = proof::random_hex(32);
  fs::path key_path = state_dir_ / "admin.key";
  fs::path tmp = state_dir_ / "admin.key.tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return sys_error("create " + tmp.string());
  std::string line = key + "\n";
  bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                 ::fsync(fd) == 0;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), key_path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return sys_error("write " + key_path.string());
  }
  Users users;
  users["admin"].key = key;
  if (Status st = write_locked(users); !st) return st;
  ::mkdir((storage_dir_ / "admin").c_str(), 0750);  // like every user directory
  users_ = std::move(users);
  if (admin_key_path) *admin_key_path = key_path;
  return ok_status();
}

bool FileUserStore::changed_on_disk() const {
  struct stat now {};
  if (::stat(file_.c_str(), &now) != 0) return seen_.st_ino != 0;
  return now.st_ino != seen_.st_ino || now.st_size != seen_.st_size ||
         now.st_mtim.tv_sec != seen_.st_mtim.tv_sec || now.st_mtim.tv_nsec != seen_.st_mtim.tv_nsec;
}

Status FileUserStore::reload_locked() {
  int fd = ::open(file_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) return sys_error("open " + file_.string());
    users_.clear();
    seen_ = {};
    return ok_status();
  }
  struct stat st {};
  ::fstat(fd, &st);
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  text.resize(got);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();

  rapidjson::Document doc;
  JsonError error;
  if (!parse_strict_json(text, doc, error) || !doc.IsObject() || !doc.HasMember("users") ||
      !doc["users"].IsObject()) {
    return fail(ErrorCode::internal, file_.string() + ": the user store is corrupt");
  }
  Users users;
  for (auto it = doc["users"].MemberBegin(); it != doc["users"].MemberEnd(); ++it) {
    const rapidjson::Value& v = it->value;
    if (!v.IsObject() || !v.HasMember("key") || !v["key"].IsString()) {
      return fail(ErrorCode::internal, file_.string() + ": the user store is corrupt");
    }
    UserRecord record;
    record.key.assign(v["key"].GetString(), v["key"].GetStringLength());
    // A limit member absent: the server's default; null: no limit; else a count.
    for (int i = 0; i < 4; ++i) {
      auto m = v.FindMember(kLimitNames[i]);
      if (m == v.MemberEnd()) continue;
      if (m->value.IsNull()) {
        *limit_field(record, i) = UserLimit::none();
      } else if (m->value.IsUint64()) {
        *limit_field(record, i) = UserLimit::of(m->value.GetUint64());
      } else {
        return fail(ErrorCode::internal, file_.string() + ": the user store is corrupt");
      }
    }
    users.emplace(std::string(it->name.GetString(), it->name.GetStringLength()), std::move(record));
  }
  users_ = std::move(users);
  seen_ = st;
  return ok_status();
}

Status FileUserStore::write_locked(const Users& users) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("users");
  w.StartObject();
  for (const auto& [name, record] : users) {
    w.Key(name.c_str(), static_cast<rapidjson::SizeType>(name.size()));
    w.StartObject();
    w.Key("key");
    w.String(record.key.c_str(), static_cast<rapidjson::SizeType>(record.key.size()));
    UserRecord copy = record;
    for (int i = 0; i < 4; ++i) {
      const UserLimit& limit = *limit_field(copy, i);
      if (!limit.own) continue;  // absent: the server's default
      w.Key(kLimitNames[i]);
      if (limit.value) {
        w.Uint64(*limit.value);
      } else {
        w.Null();
      }
    }
    w.EndObject();
  }
  w.EndObject();
  w.EndObject();
  std::string text(buffer.GetString(), buffer.GetSize());
  text += '\n';

  // Write a temporary file, fsync, rename over, fsync the directory: a crash leaves the
  // old store or the new one, never half of either.
  fs::path tmp = state_dir_ / "users.json.tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return sys_error("create " + tmp.string());
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Status st = sys_error("write " + tmp.string());
      ::close(fd);
      ::unlink(tmp.c_str());
      return st;
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    Status st = sys_error("fsync " + tmp.string());
    ::close(fd);
    ::unlink(tmp.c_str());
    return st;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), file_.c_str()) != 0) {
    Status st = sys_error("rename " + tmp.string());
    ::unlink(tmp.c_str());
    return st;
  }
  if (Status st = fsync_dir(state_dir_); !st) return st;
  ::stat(file_.c_str(), &seen_);
  return ok_status();
}

void FileUserStore::refresh() {
  bool stale;
  {
    std::shared_lock lock(mutex_);
    stale = changed_on_disk();
  }
  if (stale) {
    std::unique_lock lock(mutex_);
    if (changed_on_disk()) (void)reload_locked();  // a bad file keeps the last good copy
  }
}

std::optional<std::string> FileUserStore::key_for(std::string_view user) {
  refresh();
  std::shared_lock lock(mutex_);
  auto it = users_.find(user);
  if (it == users_.end()) return std::nullopt;
  return it->second.key;
}

std::optional<UserRecord> FileUserStore::find(std::string_view user) {
  refresh();
  std::shared_lock lock(mutex_);
  auto it = users_.find(user);
  if (it == users_.end()) return std::nullopt;
  return it->second;
}

template <class Edit>
Status FileUserStore::change(Edit&& edit) {
  std::unique_lock lock(mutex_);
  FileLock file_lock(lock_file_);
  if (!file_lock.ok()) return sys_error("lock " + lock_file_.string());
  if (Status st = reload_locked(); !st) return st;
  Users next = users_;
  if (Status st = edit(next); !st) return st;
  if (Status st = write_locked(next); !st) return st;
  users_ = std::move(next);
  return ok_status();
}

Status FileUserStore::add(const std::string& name, const std::string& key,
                          const LimitChange& limits) {
  if (!is_valid_user_name(name)) {
    return fail(ErrorCode::invalid_args, "user names must match ^[a-z_][a-z0-9_.-]{0,31}$");
  }
  if (!is_valid_key(key)) {
    return fail(ErrorCode::invalid_args,
                "a key is 1 to 1024 bytes of UTF-8 without control characters");
  }
  return change([&](Users& users) -> Status {
    if (users.contains(name))
      return fail(ErrorCode::already_exists, "user already exists: " + name);
    // The directory first: a crash between the two steps leaves an empty directory that a
    // later add of the same name reuses, never a user without a directory.
    fs::path dir = storage_dir_ / name;
    if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
      return sys_error("mkdir " + dir.string());
    }
    if (Status st = fsync_dir(storage_dir_); !st) return st;  // the new entry is durable too
    UserRecord& record = users[name];
    record.key = key;
    apply(record, limits);
    return ok_status();
  });
}

Status FileUserStore::remove(const std::string& name) {
  return change([&](Users& users) -> Status {
    auto it = users.find(name);
    if (it == users.end()) return fail(ErrorCode::not_found, "no such user: " + name);
    users.erase(it);
    return ok_status();
  });
}

Status FileUserStore::rekey(const std::string& name, const std::string& key) {
  if (!is_valid_key(key)) {
    return fail(ErrorCode::invalid_args,
                "a key is 1 to 1024 bytes of UTF-8 without control characters");
  }
  return change([&](Users& users) -> Status {
    auto it = users.find(name);
    if (it == users.end()) return fail(ErrorCode::not_found, "no such user: " + name);
    it->second.key = key;
    return ok_status();
  });
}

Result<UserRecord> FileUserStore::set_limits(const std::string& name, const LimitChange& limits) {
  UserRecord result;
  Status st = change([&](Users& users) -> Status {
    auto it = users.find(name);
    if (it == users.end()) return fail(ErrorCode::not_found, "no such user: " + name);
    apply(it->second, limits);
    result = it->second;
    return ok_status();
  });
  if (!st) return st.error();
  return result;
}

std::vector<std::string> FileUserStore::names() {
  refresh();
  std::shared_lock lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, record] : users_) out.push_back(name);
  return out;
}

}  // namespace ops::core
