#include "isolation/confinement.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ops::isolation {
namespace {

Error os_error(const std::string& what) {
  return Error{ErrorCode::internal, what + ": " + std::strerror(errno)};
}

Status set_limit(int resource, rlim_t value, const char* name) {
  rlimit limit{value, value};
  if (::setrlimit(resource, &limit) != 0) return os_error(std::string("setrlimit ") + name);
  return ok_status();
}

// Rights Landlock knows at each ABI version (linux/landlock.h).
std::uint64_t handled_rights(int abi) {
  std::uint64_t rights =
      LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |
      LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
      LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
      LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
      LANDLOCK_ACCESS_FS_MAKE_SYM;
#ifdef LANDLOCK_ACCESS_FS_REFER
  if (abi >= 2) rights |= LANDLOCK_ACCESS_FS_REFER;
#endif
#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
  if (abi >= 3) rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
#endif
  return rights;
}

Status add_rule(int ruleset, const std::string& path, std::uint64_t rights) {
  int fd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
  if (fd < 0) return os_error("landlock: open " + path);
  landlock_path_beneath_attr rule{};
  rule.allowed_access = rights;
  rule.parent_fd = fd;
  const long rc = ::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
  ::close(fd);
  if (rc != 0) return os_error("landlock: add rule for " + path);
  return ok_status();
}

}  // namespace

Status apply_limits(const ProcessLimits& limits) {
  if (Status st = set_limit(RLIMIT_CORE, 0, "RLIMIT_CORE"); !st) return st;
  if (limits.memory_bytes) {
    if (Status st = set_limit(RLIMIT_AS, *limits.memory_bytes, "RLIMIT_AS"); !st) return st;
  }
  if (limits.open_files) {
    if (Status st = set_limit(RLIMIT_NOFILE, *limits.open_files, "RLIMIT_NOFILE"); !st) return st;
  }
  return ok_status();
}

Status become_user(const std::string& user) {
  errno = 0;
  const passwd* pw = ::getpwnam(user.c_str());
  if (pw == nullptr) return Error{ErrorCode::internal, "run_as: no such user \"" + user + "\""};
  const uid_t uid = pw->pw_uid;
  const gid_t gid = pw->pw_gid;
  if (::setgroups(0, nullptr) != 0) return os_error("run_as: setgroups");
  if (::setgid(gid) != 0) return os_error("run_as: setgid");
  if (::setuid(uid) != 0) return os_error("run_as: setuid");
  if (::setuid(0) == 0) return Error{ErrorCode::internal, "run_as: could regain root"};
  return ok_status();
}

Status bind_to_parent(long parent) {
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return os_error("prctl PDEATHSIG");
  // The server may have gone between the spawn and the prctl: then nobody would kill us.
  if (::getppid() != parent) return Error{ErrorCode::internal, "the server is gone"};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return os_error("prctl NO_NEW_PRIVS");
  return ok_status();
}

Result<int> restrict_filesystem(const std::string& writable_root, bool read_everywhere) {
  const long abi =
      ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 0) {
    if (errno == ENOSYS || errno == EOPNOTSUPP) return 0;
    return os_error("landlock: version");
  }
  const std::uint64_t rights = handled_rights(static_cast<int>(abi));
  landlock_ruleset_attr attr{};
  attr.handled_access_fs = rights;
  const int ruleset =
      static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0));
  if (ruleset < 0) return os_error("landlock: create ruleset");
  Status st = add_rule(ruleset, writable_root, rights);
  if (st && read_everywhere) {
    st = add_rule(
        ruleset, "/",
        LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_EXECUTE);
    // Programs (shells above all) write to /dev/null as a matter of course.
    if (st) {
      std::uint64_t dev_null = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE;
#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
      if (abi >= 3) dev_null |= LANDLOCK_ACCESS_FS_TRUNCATE;
#endif
      st = add_rule(ruleset, "/dev/null", dev_null);
    }
  }
  if (st && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) st = os_error("prctl NO_NEW_PRIVS");
  if (st && ::syscall(SYS_landlock_restrict_self, ruleset, 0) != 0) {
    st = os_error("landlock: restrict");
  }
  ::close(ruleset);
  if (!st) return st.error();
  return static_cast<int>(abi);
}

void limit_cpu_from_now(std::uint64_t seconds) {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const rlim_t used = static_cast<rlim_t>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + 1);
  // Only the soft limit: an unprivileged process could never raise a lowered hard limit for
  // the next call. Plugin code that ignores SIGXCPU is still bounded by the call's deadline,
  // at which the server kills the worker.
  rlimit limit{};
  ::getrlimit(RLIMIT_CPU, &limit);
  limit.rlim_cur = used + seconds;
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_cur > limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
  }
  ::setrlimit(RLIMIT_CPU, &limit);
}

}  // namespace ops::isolation
