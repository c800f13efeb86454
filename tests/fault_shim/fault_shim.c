/* fault_shim: an LD_PRELOAD library that makes the Nth call of one kind of I/O fail, the
 * way SQLite's ioerr tests and Beast's fail_count do (reliability.md §3.6, case 94).
 *
 * Which call fails is a spec "KIND:N:ERRNO" (or "KIND:N+:ERRNO": the Nth and every later
 * one), for example "write:3:EIO", "fsync:1:ENOSPC", "rename:1+:EIO". Kinds:
 *   write   write, pwrite, pwrite64, writev to a regular file (sockets and pipes are not
 *           counted, so replies and logs still flow)
 *   fsync   fsync, fdatasync
 *   rename  rename, renameat, renameat2
 *   open    open, open64, openat, openat64, creat and the openat2 system call
 *   link    link, linkat
 *   mkdir   mkdir, mkdirat
 *   unlink  unlink, unlinkat, rmdir (removing files and directories)
 * ERRNO is a name (EIO, ENOSPC, EDQUOT, EMFILE, ENFILE, EROFS, EACCES, EFBIG, ENOMEM) or a
 * number. Several specs may be given, separated by commas; each counts on its own.
 *
 * Where the spec comes from:
 *   OPS_FAULT=<spec>          counted from the start of the process;
 *   OPS_FAULT_CONTROL=<file>  the spec is the file's content, read again at every call
 *                             of a counted kind: no file means no fault, and a changed
 *                             content starts counting afresh. A test starts the server
 *                             once and re-arms it between requests. Takes precedence.
 *   OPS_FAULT_LOG=<file>      each injected fault appends "KIND N ERRNO-NAME\n" here, so a
 *                             test knows whether its fault fired.
 *   OPS_FAULT_TRACE=<file>    every counted call appends "KIND[ DETAIL]\n" here, faults or
 *                             not: "fsync file" / "fsync dir", "rename", "link", "mkdir",
 *                             "unlink", "open", "write" (the order of durability steps,
 *                             case 93).
 * Thread-safe. The shim's own file access goes straight to the system calls. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

enum kind { K_WRITE, K_FSYNC, K_RENAME, K_OPEN, K_LINK, K_MKDIR, K_UNLINK, K_COUNT };
static const char* const kind_names[K_COUNT] = {"write", "fsync", "rename", "open",
                                                "link",  "mkdir", "unlink"};

struct rule {
  int kind;
  unsigned long n;
  int persistent;
  int err;
};

#define MAX_RULES 8
#define MAX_SPEC 256

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char spec_seen[MAX_SPEC]; /* the spec the counters belong to */
static struct rule rules[MAX_RULES];
static int rule_count;
static unsigned long counters[K_COUNT];

static const struct {
  const char* name;
  int value;
} errnos[] = {{"EIO", EIO},       {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT}, {"EMFILE", EMFILE},
              {"ENFILE", ENFILE}, {"EROFS", EROFS},   {"EACCES", EACCES}, {"EFBIG", EFBIG},
              {"ENOMEM", ENOMEM}, {"EPERM", EPERM},   {"EINTR", EINTR},   {"EAGAIN", EAGAIN}};

static int parse_errno(const char* s) {
  for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; ++i) {
    if (strcmp(s, errnos[i].name) == 0) return errnos[i].value;
  }
  int v = atoi(s);
  return v > 0 ? v : EIO;
}

static const char* errno_name(int e) {
  for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; ++i) {
    if (errnos[i].value == e) return errnos[i].name;
  }
  return "E?";
}

/* Parses "kind:N[+]:ERR[,...]" into rules; unknown parts are skipped. */
static void parse_spec(const char* spec) {
  char copy[MAX_SPEC];
  strncpy(copy, spec, sizeof copy - 1);
  copy[sizeof copy - 1] = '\0';
  rule_count = 0;
  char* save = NULL;
  for (char* item = strtok_r(copy, ",\n \t", &save); item && rule_count < MAX_RULES;
       item = strtok_r(NULL, ",\n \t", &save)) {
    char* c1 = strchr(item, ':');
    if (!c1) continue;
    *c1 = '\0';
    char* c2 = strchr(c1 + 1, ':');
    if (!c2) continue;
    *c2 = '\0';
    int kind = -1;
    for (int k = 0; k < K_COUNT; ++k) {
      if (strcmp(item, kind_names[k]) == 0) kind = k;
    }
    if (kind < 0) continue;
    struct rule r;
    r.kind = kind;
    r.n = strtoul(c1 + 1, NULL, 10);
    r.persistent = strchr(c1 + 1, '+') != NULL;
    r.err = parse_errno(c2 + 1);
    if (r.n == 0) continue;
    rules[rule_count++] = r;
  }
}

/* Reads the current spec into `out` ("" when disarmed). */
static void current_spec(char* out, size_t cap) {
  out[0] = '\0';
  const char* control = getenv("OPS_FAULT_CONTROL");
  if (control && *control) {
    int fd = (int)syscall(SYS_openat, AT_FDCWD, control, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = syscall(SYS_read, fd, out, cap - 1);
    syscall(SYS_close, fd);
    out[n > 0 ? n : 0] = '\0';
    return;
  }
  const char* env = getenv("OPS_FAULT");
  if (env) {
    strncpy(out, env, cap - 1);
    out[cap - 1] = '\0';
  }
}

static void log_fault(int kind, unsigned long n, int err) {
  const char* path = getenv("OPS_FAULT_LOG");
  if (!path || !*path) return;
  char line[96];
  int len = snprintf(line, sizeof line, "%s %lu %s\n", kind_names[kind], n, errno_name(err));
  int fd =
      (int)syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  syscall(SYS_write, fd, line, (size_t)len);
  syscall(SYS_close, fd);
}

static void trace(int kind, const char* detail) {
  const char* path = getenv("OPS_FAULT_TRACE");
  if (!path || !*path) return;
  char line[64];
  int len = snprintf(line, sizeof line, "%s%s%s\n", kind_names[kind], detail ? " " : "",
                     detail ? detail : "");
  int fd =
      (int)syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  syscall(SYS_write, fd, line, (size_t)len);
  syscall(SYS_close, fd);
}

/* Counts one call of `kind`; returns the errno to fail it with, or 0 to let it through. */
static int should_fail(int kind) {
  char spec[MAX_SPEC];
  current_spec(spec, sizeof spec);
  pthread_mutex_lock(&lock);
  if (strcmp(spec, spec_seen) != 0) {
    memcpy(spec_seen, spec, sizeof spec_seen);
    memset(counters, 0, sizeof counters);
    parse_spec(spec);
  }
  int err = 0;
  unsigned long n = 0;
  if (rule_count > 0) {
    n = ++counters[kind];
    for (int i = 0; i < rule_count && !err; ++i) {
      const struct rule* r = &rules[i];
      if (r->kind == kind && (n == r->n || (r->persistent && n > r->n))) err = r->err;
    }
  }
  pthread_mutex_unlock(&lock);
  if (err) log_fault(kind, n, err);
  return err;
}

/* The next definition of `name` (libc's, or a sanitizer's interceptor), looked up once. */
#define REAL(name, type)   \
  static type real_##name; \
  if (!real_##name) real_##name = (type)dlsym(RTLD_NEXT, #name)

static int is_regular(int fd) {
  struct stat st;
  return syscall(SYS_fstat, fd, &st) == 0 && S_ISREG(st.st_mode);
}

#define FAIL_IF(kind) FAIL_IF_D(kind, NULL)
#define FAIL_IF_D(kind, detail) \
  do {                          \
    trace(kind, detail);        \
    int e_ = should_fail(kind); \
    if (e_) {                   \
      errno = e_;               \
      return -1;                \
    }                           \
  } while (0)

ssize_t write(int fd, const void* buf, size_t n) {
  REAL(write, __typeof__(&write));
  if (is_regular(fd)) FAIL_IF(K_WRITE);
  return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  REAL(pwrite, __typeof__(&pwrite));
  if (is_regular(fd)) FAIL_IF(K_WRITE);
  return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off_t off) {
  REAL(pwrite64, __typeof__(&pwrite64));
  if (is_regular(fd)) FAIL_IF(K_WRITE);
  return real_pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec* iov, int cnt) {
  REAL(writev, __typeof__(&writev));
  if (is_regular(fd)) FAIL_IF(K_WRITE);
  return real_writev(fd, iov, cnt);
}

static const char* fd_kind(int fd) {
  struct stat st;
  if (syscall(SYS_fstat, fd, &st) != 0) return "?";
  return S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "dir" : "other";
}

int fsync(int fd) {
  REAL(fsync, __typeof__(&fsync));
  FAIL_IF_D(K_FSYNC, fd_kind(fd));
  return real_fsync(fd);
}

int fdatasync(int fd) {
  REAL(fdatasync, __typeof__(&fdatasync));
  FAIL_IF_D(K_FSYNC, fd_kind(fd));
  return real_fdatasync(fd);
}

int rename(const char* a, const char* b) {
  REAL(rename, __typeof__(&rename));
  FAIL_IF(K_RENAME);
  return real_rename(a, b);
}

int renameat(int da, const char* a, int db, const char* b) {
  REAL(renameat, __typeof__(&renameat));
  FAIL_IF(K_RENAME);
  return real_renameat(da, a, db, b);
}

int renameat2(int da, const char* a, int db, const char* b, unsigned flags) {
  REAL(renameat2, __typeof__(&renameat2));
  FAIL_IF(K_RENAME);
  return real_renameat2(da, a, db, b, flags);
}

int link(const char* a, const char* b) {
  REAL(link, __typeof__(&link));
  FAIL_IF(K_LINK);
  return real_link(a, b);
}

int linkat(int da, const char* a, int db, const char* b, int flags) {
  REAL(linkat, __typeof__(&linkat));
  FAIL_IF(K_LINK);
  return real_linkat(da, a, db, b, flags);
}

int mkdir(const char* p, mode_t m) {
  REAL(mkdir, __typeof__(&mkdir));
  FAIL_IF(K_MKDIR);
  return real_mkdir(p, m);
}

int mkdirat(int d, const char* p, mode_t m) {
  REAL(mkdirat, __typeof__(&mkdirat));
  FAIL_IF(K_MKDIR);
  return real_mkdirat(d, p, m);
}

int unlink(const char* p) {
  REAL(unlink, __typeof__(&unlink));
  FAIL_IF(K_UNLINK);
  return real_unlink(p);
}

int unlinkat(int d, const char* p, int flags) {
  REAL(unlinkat, __typeof__(&unlinkat));
  FAIL_IF(K_UNLINK);
  return real_unlinkat(d, p, flags);
}

int rmdir(const char* p) {
  REAL(rmdir, __typeof__(&rmdir));
  FAIL_IF(K_UNLINK);
  return real_rmdir(p);
}

static mode_t mode_arg(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char* p, int flags, ...) {
  REAL(open, __typeof__(&open));
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  FAIL_IF(K_OPEN);
  return real_open(p, flags, m);
}

int open64(const char* p, int flags, ...) {
  REAL(open64, __typeof__(&open64));
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  FAIL_IF(K_OPEN);
  return real_open64(p, flags, m);
}

int openat(int d, const char* p, int flags, ...) {
  REAL(openat, __typeof__(&openat));
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  FAIL_IF(K_OPEN);
  return real_openat(d, p, flags, m);
}

int openat64(int d, const char* p, int flags, ...) {
  REAL(openat64, __typeof__(&openat64));
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  FAIL_IF(K_OPEN);
  return real_openat64(d, p, flags, m);
}

int creat(const char* p, mode_t m) {
  REAL(creat, __typeof__(&creat));
  FAIL_IF(K_OPEN);
  return real_creat(p, m);
}

/* openat2 has no libc wrapper: callers use syscall(2). Every other number goes through. */
long syscall(long number, ...) {
  REAL(syscall, __typeof__(&syscall));
  va_list ap;
  va_start(ap, number);
  long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
  long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
  va_end(ap);
  if (number == SYS_openat2) FAIL_IF(K_OPEN);
  return real_syscall(number, a1, a2, a3, a4, a5, a6);
}
