#include "storage/node_scratch.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>
#include <stdio.h>  // renameat
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "auth/user_services.hpp"  // remove_tree
#include "opserver/proof.hpp"

namespace ops::core {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kLegacyTrashPrefix = "unregistered-";
constexpr auto kOpenRetryDelay = std::chrono::milliseconds(100);

std::vector<std::string> entries_of(int dir_fd) {
  std::vector<std::string> out;
  int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* dir = fd >= 0 ? ::fdopendir(fd) : nullptr;
  if (dir == nullptr) {
    if (fd >= 0) ::close(fd);
    return out;
  }
  while (dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      out.emplace_back(e->d_name);
    }
  }
  ::closedir(dir);
  return out;
}

std::chrono::milliseconds age_of(const struct timespec& t) {
  const auto then = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec)));
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now() -
                                                               then);
}

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// The entry `name` in `dir` is still the directory `fd` is open on.
bool still_there(int dir, const std::string& name, int fd) {
  struct stat at {
  }, held{};
  return ::fstatat(dir, name.c_str(), &at, AT_SYMLINK_NOFOLLOW) == 0 && ::fstat(fd, &held) == 0 &&
         same_file(at, held);
}

std::string sanitize_host(std::string host) {
  std::string out;
  for (char c : host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    out += ok ? c : '_';
    if (out.size() == 40) break;
  }
  if (out.empty() || out[0] == '.') out.insert(out.begin(), 'h');
  return out;
}

}  // namespace

bool valid_node_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 64 || id[0] == '.') return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

std::string default_node_id(const fs::path& state_dir) {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "host");
  std::error_code ec;
  fs::path absolute = fs::weakly_canonical(fs::absolute(state_dir, ec), ec);
  const std::string text = absolute.string();
  unsigned char digest[SHA256_DIGEST_LENGTH];
  ::SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return sanitize_host(host) + "-" + proof::to_hex(digest, 4);
}

Result<std::unique_ptr<NodeScratch>> NodeScratch::open(int root_fd, const std::string& id,
                                                       ScratchTiming timing) {
  if (!valid_node_id(id)) {
    return fail(ErrorCode::invalid_args,
                "node_id must be 1 to 64 of A-Z a-z 0-9 . _ - and not start with '.': " + id);
  }
  const std::string name = std::string(kNodeDirPrefix) + id;
  const auto give_up = std::chrono::steady_clock::now() + timing.lock_wait;
  for (int attempt = 0; attempt == 0 || std::chrono::steady_clock::now() < give_up; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(kOpenRetryDelay);
    if (::mkdirat(root_fd, name.c_str(), 0700) != 0 && errno != EEXIST) {
      return fail(ErrorCode::internal,
                  "cannot create the scratch directory " + name + ": " + std::strerror(errno));
    }
    Fd dir(::openat(root_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir.valid()) {
      if (errno == ENOENT) continue;  // claimed by another node just now: make a new one
      return fail(ErrorCode::internal,
                  "cannot open the scratch directory " + name + ": " + std::strerror(errno));
    }
    Fd owner(::openat(dir.get(), kNodeOwnerFile, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!owner.valid()) {
      if (errno == ENOENT) continue;
      return fail(ErrorCode::internal,
                  "cannot open " + name + "/" + kNodeOwnerFile + ": " + std::strerror(errno));
    }
    if (::flock(owner.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) continue;  // a node claiming it, or a server using this id
      // No flock on this filesystem: the heartbeat alone keeps others off.
      spdlog::warn("cannot lock {}/{} ({}); relying on its heartbeat alone", name, kNodeOwnerFile,
                   std::strerror(errno));
    }
    // Held now: a fresh heartbeat, then make sure no other node claimed (renamed) the
    // directory between its creation and the lock.
    ::futimens(owner.get(), nullptr);
    if (!still_there(root_fd, name, dir.get())) continue;
    std::unique_ptr<NodeScratch> scratch(
        new NodeScratch(root_fd, id, std::move(dir), std::move(owner), timing));
    // Files of this node's own earlier life (uploads cut short by a crash or a kill):
    // nothing refers to them any more. Directories go in the background (start_janitor).
    std::size_t removed = 0;
    for (const std::string& entry : entries_of(scratch->fd())) {
      if (entry == kNodeOwnerFile) continue;
      if (::unlinkat(scratch->fd(), entry.c_str(), 0) == 0) {
        ++removed;
      } else if (errno == EISDIR || errno == EPERM) {
        scratch->leftovers_.push_back(entry);
      }
    }
    if (removed > 0) spdlog::info("removed {} orphaned temporary file(s) of this node", removed);
    return scratch;
  }
  return fail(ErrorCode::unavailable,
              "the scratch directory " + name +
                  " is locked by another running server: every server sharing a storage "
                  "directory needs its own node_id");
}

NodeScratch::~NodeScratch() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void NodeScratch::start_janitor() {
  thread_ = std::thread([this] { run(); });
}

void NodeScratch::heartbeat() {
  if (::futimens(owner_.get(), nullptr) != 0) {
    spdlog::warn("cannot touch the scratch directory's heartbeat: {}", std::strerror(errno));
  }
}

void NodeScratch::remove_trees(const std::vector<std::string>& names) {
  for (const std::string& entry : names) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    if (!remove_tree(fd(), entry)) {
      spdlog::warn("could not delete {}/{} in the scratch directory: {}", dir_name(), entry,
                   std::strerror(errno));
    }
  }
}

// Renames <root>/<name> into this node's directory as claimed-<name>-<random>: only one of
// several nodes doing this at once succeeds (the others get ENOENT).
std::string NodeScratch::claim(const std::string& name, const std::string& what) {
  const std::string target = std::string(kClaimedPrefix) + name + "-" + proof::random_hex(4);
  if (::renameat(root_fd_, name.c_str(), fd(), target.c_str()) != 0) return "";
  spdlog::info("claimed {} {} from the shared scratch directory; deleting it", what, name);
  return target;
}

std::size_t NodeScratch::collect_stale() {
  std::size_t count = 0;
  std::vector<std::string> claimed;
  const std::string own = dir_name();
  for (const std::string& name : entries_of(root_fd_)) {
    if (name == own) continue;
    struct stat st {};
    if (::fstatat(root_fd_, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (name.starts_with(kNodeDirPrefix) && S_ISDIR(st.st_mode)) {
      // Another node's directory: stale when its lock is free and its heartbeat old.
      Fd dir(::openat(root_fd_, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!dir.valid()) continue;
      Fd owner(::openat(dir.get(), kNodeOwnerFile, O_RDWR | O_NOFOLLOW | O_CLOEXEC));
      struct stat beat {};
      if (owner.valid()) {
        if (::flock(owner.get(), LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) continue;
        if (::fstat(owner.get(), &beat) != 0) continue;
      } else if (::fstat(dir.get(), &beat) != 0) {
        continue;  // no owner file: a crash between mkdir and creating it; the dir's age
      }
      if (age_of(beat.st_mtim) < timing_.stale) continue;
      if (!still_there(root_fd_, name, dir.get())) continue;
      if (auto c = claim(name, "the directory of stopped node"); !c.empty()) claimed.push_back(c);
    } else if (name.starts_with(kLegacyTrashPrefix) && S_ISDIR(st.st_mode)) {
      // An unregistered user's tree moved here by a server of an older version: claimed
      // once it has sat untouched long enough that its own server is not deleting it.
      if (age_of(st.st_ctim) < timing_.stale) continue;
      if (auto c = claim(name, "the unregistered tree"); !c.empty()) claimed.push_back(c);
    } else if (S_ISREG(st.st_mode) && age_of(st.st_mtim) >= timing_.stale) {
      // A temporary file directly in .ops-tmp: written by an older server or by a plugin
      // that does not know node_scratch_dir. Untouched this long, no upload is writing it.
      if (::unlinkat(root_fd_, name.c_str(), 0) == 0) ++count;
    }
  }
  remove_trees(claimed);
  return count + claimed.size();
}

void NodeScratch::run() {
  remove_trees(leftovers_);
  auto next_scan = std::chrono::steady_clock::now();
  auto next_beat = next_scan + timing_.heartbeat;
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_scan) {
      collect_stale();
      next_scan = std::chrono::steady_clock::now() + timing_.scan;
    }
    if (now >= next_beat) {
      heartbeat();
      next_beat = now + timing_.heartbeat;
    }
    std::unique_lock lock(mutex_);
    if (wake_.wait_until(lock, std::min(next_scan, next_beat), [this] { return stopping_; })) {
      return;
    }
  }
}

}  // namespace ops::core
