#include "net/pid_file.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace ops::core {
namespace fs = std::filesystem;

namespace {

Error pid_error(const fs::path& path, const std::string& reason) {
  std::error_code ec;
  fs::path shown = fs::absolute(path, ec);
  return Error{ErrorCode::internal, (ec ? path : shown).string() + ": " + reason};
}

std::optional<pid_t> read_pid(const fs::path& path, bool& exists) {
  std::ifstream in(path);
  exists = static_cast<bool>(in);
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value <= 1) return std::nullopt;
  return static_cast<pid_t>(value);
}

}  // namespace

Status write_pid_file(const fs::path& path) {
  const std::string text = std::to_string(::getpid()) + "\n";
  const fs::path tmp = path.string() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    return pid_error(tmp, std::string("cannot write the pid file: ") + std::strerror(errno));
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                       ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = written ? errno : err;
    ::unlink(tmp.c_str());
    return pid_error(path, std::string("cannot write the pid file: ") + std::strerror(e));
  }
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return ok_status();
}

void remove_pid_file(const fs::path& path) {
  bool exists = false;
  if (read_pid(path, exists) == ::getpid()) ::unlink(path.c_str());
}

Result<pid_t> running_server_pid(const fs::path& path) {
  bool exists = false;
  const auto pid = read_pid(path, exists);
  if (!exists) return pid_error(path, "no pid file: no opserver is running with this pid_file");
  if (!pid) return pid_error(path, "the pid file does not hold a process id");
  if (::kill(*pid, 0) != 0 && errno == ESRCH) {
    return pid_error(path, "stale pid file: process " + std::to_string(*pid) +
                               " is not running (the server stopped without removing it)");
  }
  // The pid may have been reused by another program since a crash.
  std::ifstream comm("/proc/" + std::to_string(*pid) + "/comm");
  std::string name;
  if (comm && std::getline(comm, name) && name != "opserver") {
    return pid_error(path, "stale pid file: process " + std::to_string(*pid) + " is \"" + name +
                               "\", not opserver");
  }
  return *pid;
}

}  // namespace ops::core
