#include "local_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "exit_codes.hpp"

namespace ops::opclient {

namespace {

// The partial file a signal should remove; empty when none. Written only outside
// signal handlers, read only inside one.
char g_cleanup_path[4096 + 64];
volatile std::sig_atomic_t g_cleanup_armed = 0;

void arm_cleanup(const std::string& path) {
  g_cleanup_armed = 0;
  if (path.size() >= sizeof g_cleanup_path) return;
  std::memcpy(g_cleanup_path, path.c_str(), path.size() + 1);
  g_cleanup_armed = 1;
}

void disarm_cleanup() {
  g_cleanup_armed = 0;
}

// The interrupt note; the same discipline as the cleanup path.
char g_note[8192];
std::size_t g_note_len = 0;
volatile std::sig_atomic_t g_note_armed = 0;

extern "C" void on_fatal_signal(int sig) {
  if (g_cleanup_armed) ::unlink(g_cleanup_path);
  if (g_note_armed) {
    ssize_t ignored = ::write(STDERR_FILENO, g_note, g_note_len);  // async-signal-safe
    (void)ignored;
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

std::string error_text(int err) {
  return std::strerror(err);
}

bool local_error(const std::string& message, int& exit_status) {
  print_error(label_for(client::Failure::local), message);
  exit_status = exit_code::kLocal;
  return false;
}

// An unnamed file in $TMPDIR (or /tmp) that disappears when closed.
int anonymous_temp_file() {
  const char* dir = std::getenv("TMPDIR");
  if (dir == nullptr || *dir == '\0') dir = "/tmp";
  int fd = ::open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  std::string pattern = std::string(dir) + "/opclient-XXXXXX";
  fd = ::mkostemp(pattern.data(), O_CLOEXEC);
  if (fd >= 0) ::unlink(pattern.c_str());
  return fd;
}

}  // namespace

void install_signal_cleanup() {
  struct sigaction sa {};
  sa.sa_handler = on_fatal_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  // A closed stdout pipe becomes EPIPE, reported like any other write error.
  std::signal(SIGPIPE, SIG_IGN);
}

void arm_interrupt_note(const std::string& line) {
  g_note_armed = 0;
  if (line.size() + 1 >= sizeof g_note) return;
  std::memcpy(g_note, line.data(), line.size());
  g_note[line.size()] = '\n';
  g_note_len = line.size() + 1;
  g_note_armed = 1;
}

void disarm_interrupt_note() {
  g_note_armed = 0;
}

std::int64_t file_size(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return -1;
  return static_cast<std::int64_t>(st.st_size);
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string base_name(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

// --- Input ---

Input::~Input() {
  if (owned_ && fd_ >= 0) ::close(fd_);
}

bool Input::open(const std::string& path, int& exit_status) {
  name_ = path == "-" ? "stdin" : path;
  struct stat st {};
  if (path == "-") {
    fd_ = STDIN_FILENO;
    owned_ = false;
    if (::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode)) {
      off_t at = ::lseek(fd_, 0, SEEK_CUR);
      if (at >= 0 && at <= st.st_size) {
        start_ = at;
        size_ = static_cast<std::uint64_t>(st.st_size - at);
        return true;
      }
    }
    // A pipe or a terminal: §1 needs the size before the first byte, so spool it.
    int tmp = anonymous_temp_file();
    if (tmp < 0)
      return local_error("cannot create a temporary file for stdin: " + error_text(errno),
                         exit_status);
    std::unique_ptr<char[]> buf(new char[1 << 20]);
    std::uint64_t total = 0;
    for (;;) {
      ssize_t n = ::read(STDIN_FILENO, buf.get(), 1 << 20);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int err = errno;
        ::close(tmp);
        return local_error("cannot read stdin: " + error_text(err), exit_status);
      }
      if (n == 0) break;
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::write(tmp, buf.get() + off, static_cast<std::size_t>(n - off));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
          int err = errno;
          ::close(tmp);
          return local_error("cannot spool stdin to a temporary file: " + error_text(err),
                             exit_status);
        }
        off += w;
      }
      total += static_cast<std::uint64_t>(n);
    }
    fd_ = tmp;
    owned_ = true;
    size_ = total;
    start_ = 0;
    return rewind(exit_status);
  }
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) return local_error("cannot open " + path + ": " + error_text(errno), exit_status);
  owned_ = true;
  if (::fstat(fd_, &st) != 0)
    return local_error("cannot stat " + path + ": " + error_text(errno), exit_status);
  if (S_ISDIR(st.st_mode)) return local_error(path + " is a directory", exit_status);
  if (!S_ISREG(st.st_mode)) {
    return local_error(path + " is not a regular file (use --in - to send a stream)", exit_status);
  }
  size_ = static_cast<std::uint64_t>(st.st_size);
  start_ = 0;
  return true;
}

bool Input::seek(std::uint64_t offset, int& exit_status) {
  if (::lseek(fd_, start_ + static_cast<off_t>(offset), SEEK_SET) < 0) {
    return local_error("cannot seek in " + name_ + ": " + error_text(errno), exit_status);
  }
  return true;
}

bool Input::rewind(int& exit_status) {
  if (::lseek(fd_, start_, SEEK_SET) < 0) {
    return local_error("cannot rewind " + name_ + ": " + error_text(errno), exit_status);
  }
  return true;
}

// --- Output ---

Output::~Output() {
  if (!done_) abandon();
}

bool Output::open(const std::string& path, bool resume, std::uint64_t& offset, int& exit_status) {
  offset = 0;
  path_ = path;
  if (path == "-") {
    stdout_ = true;
    fd_ = STDOUT_FILENO;
    return true;
  }
  if (is_directory(path)) return local_error(path + " is a directory", exit_status);
  partial_ = path + ".part";
  keep_partial_ = resume;
  rename_ = true;
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC;
  if (resume) {
    if (std::int64_t size = file_size(partial_); size >= 0) {
      offset = static_cast<std::uint64_t>(size);
    } else if (std::int64_t whole = file_size(path); whole >= 0) {
      // A partial file under the final name (another tool's, or a copy cut short).
      partial_ = path;
      rename_ = false;
      offset = static_cast<std::uint64_t>(whole);
    }
    flags |= O_APPEND;
  } else {
    flags |= O_TRUNC;
  }
  fd_ = ::open(partial_.c_str(), flags, 0666);
  if (fd_ < 0)
    return local_error("cannot create " + partial_ + ": " + error_text(errno), exit_status);
  if (!keep_partial_) arm_cleanup(partial_);
  return true;
}

bool Output::commit(int& exit_status) {
  done_ = true;
  disarm_cleanup();
  if (stdout_) return true;
  if (::fsync(fd_) != 0 && errno != EINVAL) {
    int err = errno;
    ::close(fd_);
    fd_ = -1;
    if (!keep_partial_) ::unlink(partial_.c_str());
    return local_error("cannot write " + partial_ + ": " + error_text(err), exit_status);
  }
  if (::close(fd_) != 0) {
    int err = errno;
    fd_ = -1;
    if (!keep_partial_) ::unlink(partial_.c_str());
    return local_error("cannot write " + partial_ + ": " + error_text(err), exit_status);
  }
  fd_ = -1;
  if (rename_ && ::rename(partial_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    if (!keep_partial_) ::unlink(partial_.c_str());
    return local_error("cannot rename " + partial_ + " to " + path_ + ": " + error_text(err),
                       exit_status);
  }
  return true;
}

void Output::keep_partial() {
  keep_partial_ = true;
  disarm_cleanup();
}

void Output::close_partial() {
  done_ = true;
  disarm_cleanup();
  if (fd_ >= 0 && !stdout_) ::close(fd_);
  fd_ = -1;
}

void Output::abandon() {
  done_ = true;
  disarm_cleanup();
  if (stdout_) return;
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!keep_partial_ && !partial_.empty()) ::unlink(partial_.c_str());
}

}  // namespace ops::opclient
