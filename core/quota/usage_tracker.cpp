#include "quota/usage_tracker.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <vector>

namespace ops::core {

namespace {

// Depth-first, one open directory per level: the depth of a user's tree is bounded by
// §5's 4096-byte paths (at most 2048 levels), and the walk holds no name lists.
void count_into(int dir_fd, Usage& out) {
  DIR* dir = ::fdopendir(dir_fd);  // takes dir_fd
  if (dir == nullptr) {
    ::close(dir_fd);
    return;
  }
  while (dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    if (e->d_type == DT_DIR) {
      int sub = ::openat(::dirfd(dir), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0) count_into(sub, out);
      continue;
    }
    if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) continue;  // symlinks, devices...
    struct stat st {};
    if (::fstatat(::dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISREG(st.st_mode)) {
      out.files += 1;
      out.bytes += static_cast<std::uint64_t>(st.st_size);
    } else if (S_ISDIR(st.st_mode)) {  // DT_UNKNOWN filesystems
      int sub = ::openat(::dirfd(dir), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0) count_into(sub, out);
    }
  }
  ::closedir(dir);
}

// value - deficit changes by exactly `delta`; value never goes below zero.
void add_signed(std::uint64_t& value, std::uint64_t& deficit, std::int64_t delta) {
  if (delta >= 0) {
    const std::uint64_t plus = static_cast<std::uint64_t>(delta);
    const std::uint64_t repaid = std::min(plus, deficit);
    deficit -= repaid;
    value += plus - repaid;
    return;
  }
  const std::uint64_t minus = static_cast<std::uint64_t>(-(delta + 1)) + 1;
  if (minus > value) {
    deficit += minus - value;
    value = 0;
  } else {
    value -= minus;
  }
}

}  // namespace

Usage count_tree(int dir_fd) {
  Usage out;
  int fd = ::dup(dir_fd);
  if (fd >= 0) count_into(fd, out);
  return out;
}

std::shared_ptr<UsageTracker::UserState> UsageTracker::state(const std::string& user, bool create) {
  std::lock_guard lock(map_mutex_);
  auto it = users_.find(user);
  if (it != users_.end()) return it->second;
  if (!create) return nullptr;
  auto s = std::make_shared<UserState>();
  users_.emplace(user, s);
  return s;
}

void UsageTracker::count_locked(const std::string& user, UserState& s) {
  if (s.counted) return;
  auto started = std::chrono::steady_clock::now();
  int fd = ::openat(storage_fd_, user.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  Usage counted;
  if (fd >= 0) {
    counted = count_tree(fd);
    ::close(fd);
  }
  s.usage.bytes = counted.bytes;
  s.usage.files = counted.files;
  s.counted = true;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  started)
                .count();
  spdlog::info("usage of {} counted: {} files, {} bytes, in {} ms", user, counted.files,
               counted.bytes, ms);
}

void UsageTracker::apply(UserState& s, std::int64_t bytes_delta, std::int64_t files_delta) {
  add_signed(s.usage.bytes, s.deficit.bytes, bytes_delta);
  add_signed(s.usage.files, s.deficit.files, files_delta);
}

void UsageTracker::unreserve(Usage& u, const Amount& a) {
  u.reserved_bytes -= std::min(u.reserved_bytes, a.bytes);
  u.reserved_files -= std::min(u.reserved_files, a.files);
}

Usage UsageTracker::usage(const std::string& user) {
  auto s = state(user, true);
  std::lock_guard lock(s->mutex);
  count_locked(user, *s);
  return s->usage;
}

std::optional<Usage> UsageTracker::usage_if_counted(const std::string& user) {
  auto s = state(user, false);
  if (!s) return std::nullopt;
  std::unique_lock lock(s->mutex, std::try_to_lock);
  if (!lock.owns_lock() || !s->counted) return std::nullopt;
  return s->usage;
}

Result<std::uint64_t> UsageTracker::reserve(const std::string& user, std::uint64_t bytes,
                                            std::uint64_t files, const QuotaLimits& limits) {
  auto s = state(user, true);
  std::lock_guard lock(s->mutex);
  count_locked(user, *s);
  Usage& u = s->usage;
  // Compared without overflow: the declared payload may be as large as 2^53-1.
  auto over = [](std::uint64_t used, std::uint64_t want, std::optional<std::uint64_t> limit) {
    return want > 0 && limit && (used > *limit || want > *limit - used);
  };
  if (over(u.bytes + u.reserved_bytes, bytes, limits.bytes)) {
    return fail(ErrorCode::quota_exceeded, "quota exceeded: " + std::to_string(bytes) +
                                               " more bytes would pass the limit of " +
                                               std::to_string(*limits.bytes) + " (in use " +
                                               std::to_string(u.bytes) + ", reserved " +
                                               std::to_string(u.reserved_bytes) + ")");
  }
  if (over(u.files + u.reserved_files, files, limits.files)) {
    return fail(ErrorCode::quota_exceeded, "quota exceeded: " + std::to_string(files) +
                                               " more files would pass the limit of " +
                                               std::to_string(*limits.files) + " (in use " +
                                               std::to_string(u.files) + ")");
  }
  std::uint64_t id;
  {
    std::lock_guard map_lock(map_mutex_);
    id = next_id_++;
  }
  u.reserved_bytes += bytes;
  u.reserved_files += files;
  s->reservations.emplace(id, Amount{bytes, files});
  return id;
}

bool UsageTracker::commit(const std::string& user, std::uint64_t id, std::int64_t bytes_delta,
                          std::int64_t files_delta) {
  auto s = state(user, false);
  if (!s) return false;
  std::lock_guard lock(s->mutex);
  auto it = s->reservations.find(id);
  if (it == s->reservations.end()) return false;
  unreserve(s->usage, it->second);
  s->reservations.erase(it);
  apply(*s, bytes_delta, files_delta);
  return true;
}

bool UsageTracker::release(const std::string& user, std::uint64_t id) {
  return commit(user, id, 0, 0);
}

bool UsageTracker::hold(const std::string& user, std::uint64_t id, const std::string& tag) {
  auto s = state(user, false);
  if (!s) return false;
  std::lock_guard lock(s->mutex);
  auto it = s->reservations.find(id);
  if (it == s->reservations.end()) return false;
  Amount& held = s->held[tag];
  held.bytes += it->second.bytes;
  held.files += it->second.files;
  s->reservations.erase(it);  // the room stays reserved, now under `tag`
  return true;
}

bool UsageTracker::commit_held(const std::string& user, const std::string& tag,
                               std::int64_t bytes_delta, std::int64_t files_delta) {
  auto s = state(user, false);
  if (!s) return false;
  std::lock_guard lock(s->mutex);
  auto it = s->held.find(tag);
  if (it == s->held.end()) {
    // Held room is kept in memory only: after a restart the tag is unknown, but the
    // change itself (a committed upload) still counts.
    if (s->counted) apply(*s, bytes_delta, files_delta);
    return false;
  }
  unreserve(s->usage, it->second);
  s->held.erase(it);
  apply(*s, bytes_delta, files_delta);
  return true;
}

bool UsageTracker::release_held(const std::string& user, const std::string& tag) {
  return commit_held(user, tag, 0, 0);
}

void UsageTracker::adjust(const std::string& user, std::int64_t bytes_delta,
                          std::int64_t files_delta) {
  auto s = state(user, false);
  if (!s) return;
  std::lock_guard lock(s->mutex);
  if (s->counted) apply(*s, bytes_delta, files_delta);
}

void UsageTracker::forget(const std::string& user) {
  std::lock_guard lock(map_mutex_);
  users_.erase(user);
}

}  // namespace ops::core
