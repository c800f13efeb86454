#include "harness/server_process.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "opserver/frame.hpp"
#include "opserver/proof.hpp"

namespace ops::test {

TempDir::TempDir() {
  std::string templ = (fs::temp_directory_path() / "opstest-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  // Tests may leave read-only directories behind; make them removable first.
  for (auto it = fs::recursive_directory_iterator(path_, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) {
      fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
    }
  }
  fs::remove_all(path_, ec);
}

std::string default_ops_json(const std::string& plugin_dir) {
  return R"({
  "plugin_dir": ")" +
         plugin_dir + R"(",
  "operations": {
    "upload": {"allow": ["*"]},
    "download": {"allow": ["*"]},
    "list": {"allow": ["*"]},
    "register": {"allow": ["admin"]}
  }
})";
}

std::string with_resumable_ops(std::string ops_json, const std::string& open_extra) {
  ops_json.insert(ops_json.rfind("\n  }"), R"(,
    "upload_open": {"allow": ["*"])" + open_extra +
                                               R"(},
    "upload_append": {"allow": ["*"]},
    "upload_status": {"allow": ["*"]},
    "upload_commit": {"allow": ["*"]},
    "upload_abort": {"allow": ["*"]})");
  return ops_json;
}

std::string file_ops_json(const std::string& plugin_dir, const std::string& upload_extra,
                          const std::string& list_extra) {
  return R"({
  "plugin_dir": ")" +
         plugin_dir + R"(",
  "operations": {
    "upload": {"allow": ["*"])" +
         upload_extra + R"(},
    "download": {"allow": ["*"]},
    "list": {"allow": ["*"])" +
         list_extra + R"(},
    "register": {"allow": ["admin"]},
    "remove": {"allow": ["*"]},
    "move": {"allow": ["*"]},
    "mkdir": {"allow": ["*"]},
    "stat": {"allow": ["*"]},
    "usage": {"allow": ["*"]},
    "rekey": {"allow": ["*"]},
    "set_quota": {"allow": ["admin"]},
    "unregister": {"allow": ["admin"]}
  }
})";
}

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

}  // namespace

ServerProcess::ServerProcess(ServerOptions options) : options_(std::move(options)) {
  fs::path ops = root() / "ops.json";
  write_file(ops,
             options_.ops_json.empty() ? default_ops_json(options_.plugin_dir) : options_.ops_json);
  std::string settings = "{\n  \"listen\": \"127.0.0.1:0\",\n  \"storage_dir\": \"" +
                         storage_dir().string() + "\",\n  \"state_dir\": \"" +
                         state_dir().string() + "\",\n  \"ops_config\": \"" + ops.string() +
                         "\",\n  \"io_threads\": 2";
  if (!options_.settings.empty()) settings += ",\n  " + options_.settings;
  settings += "\n}\n";
  write_file(config_path(), settings);
  if (options_.prepare) options_.prepare(root());
  launch();
}

void ServerProcess::launch() {
  fs::path log_path = root() / "server.log";
  if (launches_ > 0 && fs::exists(log_path)) {
    fs::rename(log_path, root() / ("server.log." + std::to_string(launches_)));
  }
  ++launches_;
  reaped_ = false;
  port_ = 0;
  const auto started = std::chrono::steady_clock::now();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    for (const auto& [name, value] : options_.env) ::setenv(name.c_str(), value.c_str(), 1);
    if (options_.nofile_limit > 0) {
      rlimit limit{options_.nofile_limit, options_.nofile_limit};
      if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(126);
    }
    if (options_.fsize_limit > 0) {
      rlimit limit{options_.fsize_limit, options_.fsize_limit};
      if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(126);
    }
    std::vector<std::string> args = {OPS_SERVER_BIN, "--config", config_path().string()};
    args.insert(args.end(), options_.args.begin(), options_.args.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(OPS_SERVER_BIN, argv.data());
    ::_exit(127);
  }
  // The whole line: the log may be read while the line is still being written, and a
  // port cut short ("...:40" of "...:40581") would be a wrong port.
  static const std::regex kListening(R"(opserver listening on [^ ]+:(\d+)\n)");
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < give_up) {
    std::smatch m;
    std::string text = read_file(log_path);
    if (std::regex_search(text, m, kListening)) {
      port_ = static_cast<std::uint16_t>(std::stoi(m[1]));
      startup_time_ = std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::steady_clock::now() - started);
      return;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      status_ = status;
      throw std::runtime_error("opserver exited before listening:\n" + text);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill();
  throw std::runtime_error("opserver did not start listening:\n" + read_file(log_path));
}

std::uint16_t ServerProcess::tls_port(std::chrono::milliseconds wait) const {
  static const std::regex kTlsListening(R"(opserver listening for TLS on [^ ]+:(\d+)[ \n])");
  auto give_up = std::chrono::steady_clock::now() + wait;
  for (;;) {
    std::smatch m;
    std::string text = read_file(root() / "server.log");
    if (std::regex_search(text, m, kTlsListening)) {
      return static_cast<std::uint16_t>(std::stoi(m[1]));
    }
    if (std::chrono::steady_clock::now() >= give_up) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void ServerProcess::restart() {
  if (!reaped_) throw std::runtime_error("restart: the server is still running");
  launch();
}

std::optional<int> ServerProcess::wait_exit(std::chrono::milliseconds limit) {
  auto give_up = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (!running()) return status_;
    if (std::chrono::steady_clock::now() >= give_up) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

ServerProcess::~ServerProcess() {
  if (!reaped_) stop(std::chrono::seconds(15));
}

std::string ServerProcess::admin_key() const {
  std::string key = read_file(state_dir() / "admin.key");
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) key.pop_back();
  return key;
}

client::Options ServerProcess::options(const std::string& user, const std::string& key) const {
  client::Options o;
  o.host = "127.0.0.1";
  o.port = port_;
  o.user = user;
  o.key = key;
  o.timeout = std::chrono::seconds(30);
  return o;
}

std::unique_ptr<client::Client> ServerProcess::connect(const std::string& user,
                                                       const std::string& key) const {
  auto c = client::Client::connect(options(user, key));
  if (!c) {
    ADD_FAILURE() << "connect as " << user << " failed: " << c.error().message;
    return nullptr;
  }
  return std::move(*c);
}

std::unique_ptr<client::Client> ServerProcess::connect_admin() const {
  return connect("admin", admin_key());
}

std::string ServerProcess::add_user(const std::string& name) const {
  auto admin = connect_admin();
  if (!admin) return {};
  auto r = admin->call("register", R"({"user":")" + name + "\"}");
  if (!r || !r->ok) {
    ADD_FAILURE() << "register " << name
                  << " failed: " << (r ? r->error.message : r.error().message);
    return {};
  }
  std::smatch m;
  static const std::regex kKey(R"re("key":"([0-9a-f]{64})")re");
  if (!std::regex_search(r->result_json, m, kKey)) {
    ADD_FAILURE() << "no key in " << r->result_json;
    return {};
  }
  return m[1];
}

std::string ServerProcess::log() const {
  return read_file(root() / "server.log");
}

bool ServerProcess::running() {
  if (reaped_) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    reaped_ = true;
    status_ = status;
    return false;
  }
  return true;
}

int ServerProcess::stop(std::chrono::milliseconds limit) {
  if (reaped_) return -1;
  ::kill(pid_, SIGTERM);
  auto give_up = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (std::chrono::steady_clock::now() < give_up) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      reaped_ = true;
      status_ = status;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill();
  return -1;
}

void ServerProcess::kill() {
  if (reaped_) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  reaped_ = true;
  status_ = status;
}

std::uint64_t ServerProcess::rss_bytes() const {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

std::size_t ServerProcess::open_fds() const {
  std::size_t n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid_) + "/fd", ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

std::uint64_t ServerProcess::cpu_ticks() const {
  std::string stat = read_file("/proc/" + std::to_string(pid_) + "/stat");
  // The command name may hold spaces; the fields after it are plain numbers.
  std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(stat.substr(close + 2));
  std::string field;
  std::uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return utime + stime;
}

RunResult run_program(const std::vector<std::string>& argv, const fs::path& cwd,
                      const std::string& stdin_data) {
  int out_pipe[2];
  int in_pipe[2];
  if (::pipe(out_pipe) != 0 || ::pipe(in_pipe) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out_pipe[1], 1);
    ::dup2(out_pipe[1], 2);
    ::dup2(in_pipe[0], 0);
    ::close(out_pipe[0]);
    ::close(in_pipe[1]);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(in_pipe[0]);
  std::thread feeder([&] {
    std::size_t done = 0;
    while (done < stdin_data.size()) {
      ssize_t n = ::write(in_pipe[1], stdin_data.data() + done, stdin_data.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::close(in_pipe[1]);
  });
  RunResult result;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(out_pipe[0], buf, sizeof buf);
    if (n <= 0) break;
    result.output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out_pipe[0]);
  feeder.join();
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

RawConnection::RawConnection(std::uint16_t port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("connect failed");
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

RawConnection::~RawConnection() {
  if (fd_ >= 0) ::close(fd_);
}

bool RawConnection::send(std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::optional<std::string> RawConnection::read_exact(std::size_t n,
                                                     std::chrono::milliseconds timeout) {
  std::string out(n, '\0');
  std::size_t got = 0;
  auto give_up = std::chrono::steady_clock::now() + timeout;
  while (got < n) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        give_up - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
    ssize_t r = ::recv(fd_, out.data() + got, n - got, 0);
    if (r <= 0) return std::nullopt;
    got += static_cast<std::size_t>(r);
  }
  return out;
}

std::optional<std::string> RawConnection::read_frame_bytes(std::chrono::milliseconds timeout) {
  auto len = read_exact(4, timeout);
  if (!len) return std::nullopt;
  std::uint32_t n = frame::decode_length(reinterpret_cast<const unsigned char*>(len->data()));
  auto body = read_exact(n, timeout);
  if (!body) return std::nullopt;
  return *len + *body;
}

std::optional<std::string> RawConnection::read_frame(std::chrono::milliseconds timeout) {
  auto bytes = read_frame_bytes(timeout);
  if (!bytes) return std::nullopt;
  return bytes->substr(4);
}

bool RawConnection::closed_within(std::chrono::milliseconds timeout) {
  auto give_up = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        give_up - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    ssize_t r = ::recv(fd_, buf, sizeof buf, 0);
    if (r <= 0) return true;
  }
}

std::string RawConnection::read_challenge() {
  auto challenge = read_frame();
  if (!challenge) return {};
  static const std::regex kNonce(R"re("nonce":"([0-9a-f]{64})")re");
  std::smatch m;
  if (!std::regex_search(*challenge, m, kNonce)) return {};
  return m[1];
}

bool RawConnection::authenticate(const std::string& user, const std::string& key) {
  std::string nonce_hex = read_challenge();
  auto nonce = proof::from_hex<32>(nonce_hex);
  if (!nonce) return false;
  proof::Nonce cnonce = proof::random_nonce();
  auto p = proof::client_proof(key, *nonce, cnonce, user);
  std::string auth = R"({"type":"auth","mechanism":"hmac-sha256","user":")" + user +
                     R"(","cnonce":")" + proof::to_hex(cnonce) + R"(","proof":")" +
                     proof::to_hex(p) + "\"}";
  if (!send(frame_of(auth))) return false;
  auto welcome = read_frame();
  return welcome && welcome->find("\"welcome\"") != std::string::npos;
}

std::string request_json(std::uint64_t id, const std::string& operate, const std::string& args_json,
                         std::uint64_t payload) {
  std::string s = "{\"id\":" + std::to_string(id) + ",\"operate\":\"" + operate + "\"";
  if (!args_json.empty()) s += ",\"args\":" + args_json;
  if (payload > 0) s += ",\"payload\":" + std::to_string(payload);
  return s + "}";
}

std::string frame_of(std::string_view header) {
  return frame::encode(header);
}

std::string exchange_frame(RawConnection& c, const std::string& header,
                           const std::string& payload) {
  c.send(frame_of(header) + payload);
  return c.read_frame().value_or("<closed>");
}

}  // namespace ops::test
