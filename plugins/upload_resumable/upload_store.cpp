#include "upload_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include "opserver/proof.hpp"
#include "upload_state.hpp"

#include <map>
#include <mutex>

namespace ops::resumable {

namespace {

constexpr const char* kUploadsDir = "uploads";
// A .meta.tmp older than this is left over from a crash inside upload_open.
constexpr std::int64_t kStaleTempMs = 60'000;
constexpr std::int64_t kSweepIntervalMs = 1000;
// A state this young is never pruned: its upload_open may not have written the .meta yet
// when the sweep listed the directory.
constexpr std::int64_t kStateMinAgeMs = 60'000;

std::int64_t mtime_ms(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000;
}

Error internal_storage(const char* what) {
  return fail(ErrorCode::internal, std::string("resumable upload storage: ") + what);
}

Error io_error(int err) {
  if (err == ENOSPC || err == EDQUOT) return fail(ErrorCode::unavailable, "no space left");
  return fail(ErrorCode::unavailable, std::string("storage error: ") + std::strerror(err));
}

// Opens (creating) the directory `name` under `parent`, mode 0700, and makes a new entry
// durable.
Result<sdk::Fd> open_private_dir(int parent, const char* name) {
  bool created = false;
  if (::mkdirat(parent, name, 0700) == 0) {
    created = true;
  } else if (errno != EEXIST) {
    return io_error(errno);
  }
  int fd = ::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return internal_storage("cannot open a directory");
  if (created && ::fsync(parent) != 0) {
    ::close(fd);
    return io_error(errno);
  }
  return sdk::Fd(fd);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::vector<std::string> entries_of(int dir_fd) {
  std::vector<std::string> out;
  int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return out;
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    ::close(fd);
    return out;
  }
  while (dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    out.emplace_back(e->d_name);
  }
  ::closedir(dir);
  return out;
}

Result<UploadMeta> parse_meta(const std::string& text) {
  rapidjson::Document d;
  if (d.Parse(text.c_str(), text.size()).HasParseError() || !d.IsObject()) {
    return internal_storage("unreadable metadata");
  }
  UploadMeta m;
  auto str = [&](const char* k, std::string& out) {
    auto it = d.FindMember(k);
    if (it == d.MemberEnd() || !it->value.IsString()) return false;
    out.assign(it->value.GetString(), it->value.GetStringLength());
    return true;
  };
  if (!str("id", m.id) || !str("user", m.user) || !str("path", m.path)) {
    return internal_storage("incomplete metadata");
  }
  if (auto it = d.FindMember("size"); it != d.MemberEnd() && it->value.IsUint64()) {
    m.size = it->value.GetUint64();
  }
  std::string sha;
  if (str("sha256", sha)) m.sha256 = sha;
  if (auto it = d.FindMember("overwrite"); it != d.MemberEnd() && it->value.IsBool()) {
    m.overwrite = it->value.GetBool();
  }
  if (auto it = d.FindMember("created_ns"); it != d.MemberEnd() && it->value.IsInt64()) {
    m.created_ns = it->value.GetInt64();
  }
  str("home", m.home);
  if (auto it = d.FindMember("expiry_ms"); it != d.MemberEnd() && it->value.IsUint64()) {
    m.expiry_ms = it->value.GetUint64();
  } else {
    return internal_storage("incomplete metadata");
  }
  return m;
}

std::string meta_json(const UploadMeta& m) {
  rapidjson::StringBuffer out;
  rapidjson::Writer<rapidjson::StringBuffer> w(out);
  w.StartObject();
  w.Key("id");
  w.String(m.id.c_str());
  w.Key("user");
  w.String(m.user.c_str());
  w.Key("path");
  w.String(m.path.data(), static_cast<rapidjson::SizeType>(m.path.size()));
  if (m.size) {
    w.Key("size");
    w.Uint64(*m.size);
  }
  if (m.sha256) {
    w.Key("sha256");
    w.String(m.sha256->c_str());
  }
  w.Key("overwrite");
  w.Bool(m.overwrite);
  w.Key("created_ns");
  w.Int64(m.created_ns);
  w.Key("expiry_ms");
  w.Uint64(m.expiry_ms);
  w.Key("home");
  w.String(m.home.c_str());
  w.EndObject();
  return std::string(out.GetString(), out.GetSize());
}

Result<std::string> read_small_file(int dir, const std::string& name) {
  int fd = ::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return fail(ErrorCode::not_found, "no such upload");
    return io_error(errno);
  }
  sdk::Fd owned(fd);
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return io_error(errno);
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > 64 * 1024) return internal_storage("metadata too large");
  }
  return text;
}

// Uploads the sweep removed, by user, whose held quota room is still to be returned: a
// hold can only be released in a call of its own user (the next resumable call drains it).
std::mutex g_expired_mutex;
std::map<std::string, std::vector<std::string>> g_expired;

// Removes one upload's files unless an append holds its partial. For the sweep.
void remove_if_idle(int dir, const std::string& user, const std::string& id) {
  int fd = ::openat(dir, UploadStore::part_name(id).c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) {
    sdk::Fd part(fd);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) return;  // in use: not idle after all
    ::unlinkat(dir, UploadStore::meta_name(id).c_str(), 0);
    ::unlinkat(dir, UploadStore::part_name(id).c_str(), 0);
  } else {
    ::unlinkat(dir, UploadStore::meta_name(id).c_str(), 0);
  }
  ::unlinkat(dir, UploadStore::mark_name(id).c_str(), 0);
  ::fsync(dir);
  drop_state(id);
  std::lock_guard lock(g_expired_mutex);
  g_expired[user].push_back(id);
}

// Expired uploads, orphaned partials and stale temporaries in one user's directory. The
// ids of the uploads it leaves are added to `live`.
void sweep_user_dir(int dir, const std::string& user, std::uint64_t default_expiry_ms,
                    std::int64_t now, std::vector<std::string>& live) {
  for (const std::string& name : entries_of(dir)) {
    struct stat st {};
    if (ends_with(name, ".mark") || ends_with(name, ".mark.tmp")) {
      // A mark whose upload is gone (removed between the mark's write and its removal).
      const std::string id = name.substr(0, name.size() - (ends_with(name, ".tmp") ? 9 : 5));
      if (::fstatat(dir, UploadStore::meta_name(id).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 &&
          ::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          now - mtime_ms(st) > kStaleTempMs) {
        ::unlinkat(dir, name.c_str(), 0);
      }
      continue;
    }
    if (ends_with(name, ".meta.tmp")) {
      if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          now - mtime_ms(st) > kStaleTempMs) {
        ::unlinkat(dir, name.c_str(), 0);
      }
      continue;
    }
    const bool is_meta = ends_with(name, ".meta");
    const bool is_part = ends_with(name, ".part");
    if (!is_meta && !is_part) continue;
    const std::string id = name.substr(0, name.size() - 5);
    if (!valid_id(id)) continue;
    std::uint64_t expiry = default_expiry_ms;
    if (is_part) {
      // Only an orphan (no metadata) is decided from here.
      if (::fstatat(dir, UploadStore::meta_name(id).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        continue;
      }
    } else {
      auto text = read_small_file(dir, name);
      if (!text) continue;
      auto meta = parse_meta(*text);
      if (meta) expiry = meta->expiry_ms;
    }
    std::int64_t touched = 0;
    if (::fstatat(dir, UploadStore::part_name(id).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      touched = mtime_ms(st);
    }  // a .meta without its partial: touched 0, so expired
    if (now - touched > static_cast<std::int64_t>(expiry)) {
      remove_if_idle(dir, user, id);
    } else if (is_meta) {
      live.push_back(id);
    }
  }
}

std::atomic<std::int64_t> g_next_sweep_ms{0};

}  // namespace

bool valid_id(std::string_view id) noexcept {
  if (id.size() != 2 * kIdBytes) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::int64_t now_ms() noexcept {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string rfc3339_utc(std::int64_t ms) {
  std::time_t seconds = static_cast<std::time_t>((ms + 999) / 1000);
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {

// "<dev>:<ino>:<birth ns>" of a directory: a new directory of the same name differs.
std::string identity_of(int dir_fd) {
  struct statx stx {};
  if (::statx(dir_fd, "", AT_EMPTY_PATH, STATX_INO | STATX_BTIME, &stx) != 0) return "";
  std::string id = std::to_string(stx.stx_dev_major) + "." + std::to_string(stx.stx_dev_minor) +
                   ":" + std::to_string(stx.stx_ino);
  if (stx.stx_mask & STATX_BTIME) {
    id += ":" + std::to_string(stx.stx_btime.tv_sec) + "." + std::to_string(stx.stx_btime.tv_nsec);
  }
  return id;
}

}  // namespace

Result<UploadStore> UploadStore::open(int scratch_dir, const std::string& user, int user_dir) {
  std::string home = identity_of(user_dir);
  if (home.empty()) return fail(ErrorCode::unavailable, "your storage directory is not available");
  auto uploads = open_private_dir(scratch_dir, kUploadsDir);
  if (!uploads) return std::move(uploads).error();
  // User names (§5: ^[a-z_][a-z0-9_.-]{0,31}$) are safe single path components.
  auto dir = open_private_dir(uploads->get(), user.c_str());
  if (!dir) return std::move(dir).error();
  return UploadStore(std::move(*uploads), std::move(*dir), user, std::move(home));
}

Status UploadStore::create(UploadMeta& meta) {
  const int dir = user_dir_.get();
  meta.home = home_;
  for (int attempt = 0;; ++attempt) {
    meta.id = proof::random_hex(kIdBytes);  // RAND_bytes
    int fd = ::openat(dir, part_name(meta.id).c_str(),
                      O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0640);
    if (fd >= 0) {
      sdk::Fd part(fd);
      if (::fsync(fd) != 0) break;
      if (Status marked = write_mark(meta.id, 0); !marked) {
        ::unlinkat(dir, part_name(meta.id).c_str(), 0);
        return marked;
      }
      // The metadata makes the upload exist: temporary name, fsync, rename, fsync dir.
      const std::string tmp = meta_name(meta.id) + ".tmp";
      const std::string text = meta_json(meta);
      int mfd =
          ::openat(dir, tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0640);
      if (mfd < 0) break;
      sdk::Fd mowned(mfd);
      if (::write(mfd, text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
          ::fsync(mfd) != 0 || ::renameat(dir, tmp.c_str(), dir, meta_name(meta.id).c_str()) != 0 ||
          ::fsync(dir) != 0) {
        int err = errno;
        ::unlinkat(dir, tmp.c_str(), 0);
        ::unlinkat(dir, meta_name(meta.id).c_str(), 0);
        ::unlinkat(dir, part_name(meta.id).c_str(), 0);
        ::unlinkat(dir, mark_name(meta.id).c_str(), 0);
        return io_error(err);
      }
      return ok_status();
    }
    if (errno != EEXIST || attempt > 3) break;
  }
  int err = errno;
  ::unlinkat(dir, part_name(meta.id).c_str(), 0);
  ::unlinkat(dir, mark_name(meta.id).c_str(), 0);
  return io_error(err);
}

Result<UploadMeta> UploadStore::read_meta(const std::string& id) {
  auto text = read_small_file(user_dir_.get(), meta_name(id));
  if (!text) return std::move(text).error();
  return parse_meta(*text);
}

Result<FoundUpload> UploadStore::find(const std::string& id) {
  // §11: a malformed, unknown, expired or foreign id are all the same not_found.
  const Error gone =
      fail(ErrorCode::not_found, "no such upload: " + (valid_id(id) ? id : "(malformed id)"));
  if (!valid_id(id)) return gone;
  auto meta = read_meta(id);
  if (!meta) {
    if (meta.error().code == ErrorCode::not_found) return gone;
    return std::move(meta).error();
  }
  if (!owned(*meta) || meta->id != id) return gone;
  int fd = ::openat(user_dir_.get(), part_name(id).c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) return io_error(errno);
    // A commit published it and crashed before removing the metadata.
    (void)remove(id);
    return gone;
  }
  FoundUpload found{std::move(*meta), sdk::Fd(fd)};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return io_error(errno);
  found.file_size = static_cast<std::uint64_t>(st.st_size);
  found.touched_ms = mtime_ms(st);
  if (now_ms() > found.expires_ms()) {
    remove_if_idle(user_dir_.get(), user_, id);
    return gone;
  }
  return found;
}

std::vector<UploadMeta> UploadStore::list() {
  std::vector<UploadMeta> out;
  const std::int64_t now = now_ms();
  for (const std::string& name : entries_of(user_dir_.get())) {
    if (!ends_with(name, ".meta")) continue;
    const std::string id = name.substr(0, name.size() - 5);
    if (!valid_id(id)) continue;
    auto meta = read_meta(id);
    if (!meta || !owned(*meta)) continue;
    struct stat st {};
    if (::fstatat(user_dir_.get(), part_name(id).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (now > mtime_ms(st) + static_cast<std::int64_t>(meta->expiry_ms)) {
      remove_if_idle(user_dir_.get(), user_, id);
      continue;
    }
    out.push_back(std::move(*meta));
  }
  return out;
}

Status UploadStore::remove(const std::string& id) {
  const int dir = user_dir_.get();
  // Metadata first: once it is gone the upload no longer exists, whatever else remains.
  if (::unlinkat(dir, meta_name(id).c_str(), 0) != 0 && errno != ENOENT) return io_error(errno);
  if (::unlinkat(dir, part_name(id).c_str(), 0) != 0 && errno != ENOENT) return io_error(errno);
  if (::unlinkat(dir, mark_name(id).c_str(), 0) != 0 && errno != ENOENT) return io_error(errno);
  if (::fsync(dir) != 0) return io_error(errno);
  drop_state(id);
  return ok_status();
}

Status UploadStore::write_mark(const std::string& id, std::uint64_t offset) const {
  const int dir = user_dir_.get();
  const std::string tmp = mark_name(id) + ".tmp";  // one writer: the lock holder
  const std::string text = std::to_string(offset);
  int fd = ::openat(dir, tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0640);
  if (fd < 0) return io_error(errno);
  sdk::Fd owned(fd);
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return io_error(errno == 0 ? EIO : errno);
  }
  // close(2) before the rename: on NFS it sends the bytes to the server (close-to-open), so
  // another client that opens the mark after the rename reads them.
  if (::close(owned.release()) != 0) return io_error(errno);
  if (::renameat(dir, tmp.c_str(), dir, mark_name(id).c_str()) != 0) return io_error(errno);
  return ok_status();
}

std::optional<std::uint64_t> UploadStore::read_mark(const std::string& id) const {
  auto text = read_small_file(user_dir_.get(), mark_name(id));
  if (!text || text->empty() || text->size() > 20) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : *text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return value;
}

Status UploadStore::touch(int part_fd) {
  if (::futimens(part_fd, nullptr) != 0 || ::fsync(part_fd) != 0) return io_error(errno);
  return ok_status();
}

std::vector<std::string> UploadStore::take_expired(const std::string& user) {
  std::lock_guard lock(g_expired_mutex);
  auto it = g_expired.find(user);
  if (it == g_expired.end()) return {};
  std::vector<std::string> ids = std::move(it->second);
  g_expired.erase(it);
  return ids;
}

void UploadStore::sweep_if_due(int scratch_dir, std::uint64_t default_expiry_ms) {
  const std::int64_t now = now_ms();
  std::int64_t due = g_next_sweep_ms.load();
  if (now < due || !g_next_sweep_ms.compare_exchange_strong(due, now + kSweepIntervalMs)) return;
  int fd = ::openat(scratch_dir, kUploadsDir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  sdk::Fd uploads(fd);
  std::vector<std::string> live;
  for (const std::string& user : entries_of(fd)) {
    int ufd = ::openat(fd, user.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (ufd < 0) continue;
    sdk::Fd user_dir(ufd);
    sweep_user_dir(ufd, user, default_expiry_ms, now, live);
  }
  // The in-memory state of uploads that another server committed or aborted (or that
  // expired there) would otherwise stay here for ever.
  keep_only(live, now, kStateMinAgeMs);
}

}  // namespace ops::resumable
