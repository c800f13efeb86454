// Shared by the soak, auth-timing and resource tools (tests/soak/, run by scripts/soak and
// scripts/resources, never by ctest): a server process started from a config in a work
// directory, with its port read from the log; raw OPS/1 connections; /proc figures; and
// small statistics. Header-only, no test framework.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "opserver/frame.hpp"
#include "opserver/proof.hpp"

namespace ops::tools {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

inline std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void spit(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

inline fs::path make_work_dir(const std::string& prefix) {
  std::string templ = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return templ;
}

// Raises this process's RLIMIT_NOFILE soft limit as far as the hard limit allows.
inline rlim_t raise_nofile(rlim_t want) {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = std::min<rlim_t>(want, r.rlim_max);
  ::setrlimit(RLIMIT_NOFILE, &r);
  return r.rlim_cur;
}

// One opserver process over a work directory that persists across restarts.
struct ServerRun {
  fs::path server_bin;
  fs::path dir;  // holds server.json, ops.json, storage/, state/, logs
  std::string extra_settings;
  rlim_t nofile = 0;
  pid_t pid = -1;
  std::uint16_t port = 0;
  int starts = 0;
  std::chrono::microseconds last_startup{0};

  fs::path storage() const { return dir / "storage"; }
  fs::path log_path() const { return dir / "server.log"; }

  void write_config(const fs::path& plugin_dir) {
    fs::create_directories(dir);
    spit(dir / "ops.json", R"({"plugin_dir": ")" + plugin_dir.string() + R"(",
  "operations": {"upload": {"allow": ["*"]}, "download": {"allow": ["*"]},
                 "list": {"allow": ["*"]}, "register": {"allow": ["admin"]}}})");
    std::string s = R"({"listen": "127.0.0.1:0", "storage_dir": ")" + storage().string() +
                    R"(", "state_dir": ")" + (dir / "state").string() + R"(", "ops_config": ")" +
                    (dir / "ops.json").string() + "\"";
    if (!extra_settings.empty()) s += ", " + extra_settings;
    spit(dir / "server.json", s + "}\n");
  }

  // Starts the server and waits until it listens; the log of each start is kept apart.
  void start() {
    ++starts;
    fs::path log = log_path();
    // The previous start's log must not be mistaken for this one's "listening" line.
    std::error_code ec;
    if (fs::exists(log, ec))
      fs::rename(log, dir / ("server.log." + std::to_string(starts - 1)), ec);
    const auto t0 = Clock::now();
    pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      int null = ::open("/dev/null", O_RDONLY);
      ::dup2(null, 0);
      if (nofile > 0) {
        rlimit r{nofile, nofile};
        ::setrlimit(RLIMIT_NOFILE, &r);
      }
      std::string config = (dir / "server.json").string();
      ::execl(server_bin.c_str(), server_bin.c_str(), "--config", config.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    static const std::regex kListening(R"(opserver listening on [^ ]+:(\d+))");
    while (Clock::now() - t0 < std::chrono::seconds(30)) {
      std::smatch m;
      std::string text = slurp(log);
      if (std::regex_search(text, m, kListening)) {
        port = static_cast<std::uint16_t>(std::stoi(m[1]));
        last_startup = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0);
        return;
      }
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        throw std::runtime_error("opserver exited before listening:\n" + text);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    throw std::runtime_error("opserver did not listen within 30 s:\n" + slurp(log));
  }

  void kill_now() {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
  }

  int stop() {
    if (pid <= 0) return -1;
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  std::string admin_key() const {
    std::string k = slurp(dir / "state" / "admin.key");
    while (!k.empty() && (k.back() == '\n' || k.back() == '\r')) k.pop_back();
    return k;
  }

  // VmRSS, VmHWM (peak) in bytes, and open descriptors, from /proc.
  std::uint64_t status_kib(const char* field) const {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    std::size_t n = std::strlen(field);
    while (std::getline(in, line)) {
      if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') {
        return std::stoull(line.substr(n + 1));
      }
    }
    return 0;
  }
  std::uint64_t rss() const { return status_kib("VmRSS") * 1024; }
  std::uint64_t peak_rss() const { return status_kib("VmHWM") * 1024; }
  std::size_t fds() const {
    std::size_t n = 0;
    std::error_code ec;
    for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
         !ec && it != fs::directory_iterator(); it.increment(ec)) {
      ++n;
    }
    return n;
  }
};

// --- raw connections ---------------------------------------------------------------

inline int tcp_connect(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

inline bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

inline bool read_exact(int fd, char* out, std::size_t n, int timeout_ms) {
  while (n > 0) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    ssize_t got = ::recv(fd, out, n, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    out += got;
    n -= static_cast<std::size_t>(got);
  }
  return true;
}

// One frame's header text, or nullopt.
inline std::optional<std::string> read_frame(int fd, int timeout_ms = 10000) {
  unsigned char len[4];
  if (!read_exact(fd, reinterpret_cast<char*>(len), 4, timeout_ms)) return std::nullopt;
  std::uint32_t n = frame::decode_length(len);
  if (n > (16u << 20)) return std::nullopt;
  std::string header(n, '\0');
  if (!read_exact(fd, header.data(), n, timeout_ms)) return std::nullopt;
  return header;
}

inline std::optional<proof::Nonce> nonce_of(const std::string& challenge) {
  auto at = challenge.find("\"nonce\":\"");
  if (at == std::string::npos) return std::nullopt;
  return proof::from_hex<32>(challenge.substr(at + 9, 64));
}

inline std::string auth_frame(const std::string& user, const std::string& key,
                              const proof::Nonce& nonce) {
  proof::Nonce cnonce = proof::random_nonce();
  auto p = proof::client_proof(key, nonce, cnonce, user);
  return frame::encode(R"({"type":"auth","mechanism":"hmac-sha256","user":")" + user +
                       R"(","cnonce":")" + proof::to_hex(cnonce) + R"(","proof":")" +
                       proof::to_hex(p) + "\"}");
}

// --- statistics ----------------------------------------------------------------------

inline double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  double pos = q * static_cast<double>(v.size() - 1);
  std::size_t i = static_cast<std::size_t>(pos);
  double frac = pos - static_cast<double>(i);
  return i + 1 < v.size() ? v[i] * (1 - frac) + v[i + 1] * frac : v[i];
}

// Two-sample Kolmogorov-Smirnov: the statistic D and its asymptotic p-value (Stephens'
// approximation of the Kolmogorov distribution, as in Numerical Recipes' kstwo/probks).
struct KsResult {
  double d = 0;
  double p = 1;
};
inline KsResult ks_two_sample(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  const double n1 = static_cast<double>(a.size()), n2 = static_cast<double>(b.size());
  std::size_t i = 0, j = 0;
  double d = 0;
  while (i < a.size() && j < b.size()) {
    double x = std::min(a[i], b[j]);
    while (i < a.size() && a[i] <= x) ++i;
    while (j < b.size() && b[j] <= x) ++j;
    d = std::max(d, std::fabs(static_cast<double>(i) / n1 - static_cast<double>(j) / n2));
  }
  const double ne = std::sqrt(n1 * n2 / (n1 + n2));
  const double lambda = (ne + 0.12 + 0.11 / ne) * d;
  double sum = 0, sign = 1;
  for (int k = 1; k <= 100; ++k) {
    double term = sign * std::exp(-2.0 * lambda * lambda * k * k);
    sum += term;
    if (std::fabs(term) < 1e-10) break;
    sign = -sign;
  }
  double p = std::clamp(2.0 * sum, 0.0, 1.0);
  if (lambda < 0.2) p = 1.0;  // the series does not converge there; the limit is 1
  return {d, p};
}

}  // namespace ops::tools
