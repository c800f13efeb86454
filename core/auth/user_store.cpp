#include "auth/user_store.hpp"

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

bool is_valid_user_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > 32) return false;
  char first = name.front();
  if (!((first >= 'a' && first <= 'z') || first == '_')) return false;
  for (char c : name.substr(1)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool is_valid_key(std::string_view key) noexcept {
  if (key.empty() || key.size() > 1024 || !is_valid_utf8(key)) return false;
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

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

}  // namespace

UserStore::UserStore(fs::path state_dir, fs::path storage_dir)
    : state_dir_(std::move(state_dir)),
      storage_dir_(std::move(storage_dir)),
      file_(state_dir_ / "users.json"),
      lock_file_(state_dir_ / "users.lock") {}

Status UserStore::open(bool bootstrap_admin, std::optional<fs::path>* admin_key_path) {
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
  std::map<std::string, std::string> users{{"admin", key}};
  if (Status st = write_locked(users); !st) return st;
  ::mkdir((storage_dir_ / "admin").c_str(), 0750);  // like every user directory
  users_ = {{"admin", key}};
  if (admin_key_path) *admin_key_path = key_path;
  return ok_status();
}

bool UserStore::changed_on_disk() const {
  struct stat now {};
  if (::stat(file_.c_str(), &now) != 0) return seen_.st_ino != 0;
  return now.st_ino != seen_.st_ino || now.st_size != seen_.st_size ||
         now.st_mtim.tv_sec != seen_.st_mtim.tv_sec || now.st_mtim.tv_nsec != seen_.st_mtim.tv_nsec;
}

Status UserStore::reload_locked() {
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
  std::map<std::string, std::string, std::less<>> users;
  for (auto it = doc["users"].MemberBegin(); it != doc["users"].MemberEnd(); ++it) {
    if (!it->value.IsObject() || !it->value.HasMember("key") || !it->value["key"].IsString()) {
      return fail(ErrorCode::internal, file_.string() + ": the user store is corrupt");
    }
    users.emplace(std::string(it->name.GetString(), it->name.GetStringLength()),
                  std::string(it->value["key"].GetString(), it->value["key"].GetStringLength()));
  }
  users_ = std::move(users);
  seen_ = st;
  return ok_status();
}

Status UserStore::write_locked(const std::map<std::string, std::string>& users) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("users");
  w.StartObject();
  for (const auto& [name, key] : users) {
    w.Key(name.c_str(), static_cast<rapidjson::SizeType>(name.size()));
    w.StartObject();
    w.Key("key");
    w.String(key.c_str(), static_cast<rapidjson::SizeType>(key.size()));
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

void UserStore::refresh() {
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

std::optional<std::string> UserStore::key_for(std::string_view user) {
  refresh();
  std::shared_lock lock(mutex_);
  auto it = users_.find(user);
  if (it == users_.end()) return std::nullopt;
  return it->second;
}

Status UserStore::add(const std::string& name, const std::string& key) {
  if (!is_valid_user_name(name)) {
    return fail(ErrorCode::invalid_args, "user names must match ^[a-z_][a-z0-9_.-]{0,31}$");
  }
  if (!is_valid_key(key)) {
    return fail(ErrorCode::invalid_args,
                "a key is 1 to 1024 bytes of UTF-8 without control characters");
  }
  std::unique_lock lock(mutex_);
  FileLock file_lock(lock_file_);
  if (!file_lock.ok()) return sys_error("lock " + lock_file_.string());
  if (Status st = reload_locked(); !st) return st;
  if (users_.contains(name)) return fail(ErrorCode::already_exists, "user already exists: " + name);

  // The directory first: a crash between the two steps leaves an empty directory that a
  // later add of the same name reuses, never a user without a directory.
  fs::path dir = storage_dir_ / name;
  if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) return sys_error("mkdir " + dir.string());
  if (Status st = fsync_dir(storage_dir_); !st) return st;  // the new entry is durable too
  std::map<std::string, std::string> next(users_.begin(), users_.end());
  next.emplace(name, key);
  if (Status st = write_locked(next); !st) return st;
  users_.emplace(name, key);
  return ok_status();
}

Status UserStore::remove(const std::string& name) {
  std::unique_lock lock(mutex_);
  FileLock file_lock(lock_file_);
  if (!file_lock.ok()) return sys_error("lock " + lock_file_.string());
  if (Status st = reload_locked(); !st) return st;
  if (!users_.contains(name)) return fail(ErrorCode::not_found, "no such user: " + name);
  std::map<std::string, std::string> next(users_.begin(), users_.end());
  next.erase(name);
  if (Status st = write_locked(next); !st) return st;
  users_.erase(users_.find(name));
  return ok_status();
}

std::vector<std::string> UserStore::names() {
  refresh();
  std::shared_lock lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, key] : users_) out.push_back(name);
  return out;
}

}  // namespace ops::core
