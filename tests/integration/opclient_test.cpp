// opclient end to end: the real binary against the real server (and, for what a correct
// server never does, a scripted fake one). Every verb, pipes in and out, the exit status
// of each error class, key sources, resume, and a 100 MiB round trip checked by SHA-256.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness/server_process.hpp"
#include "opserver/client.hpp"
#include "opserver/frame.hpp"
#include "opserver/proof.hpp"

extern char** environ;

namespace ops::test {
namespace {

// --- running opclient ---

struct CliRun {
  int status = -1;
  std::string out;
  std::string err;
};

struct RunSpec {
  std::vector<std::string> args;
  std::map<std::string, std::string> env;  // OPS_* from the test's environment are dropped
  std::string stdin_data;
  std::string stdin_file;  // when set, stdin is this file instead of a pipe
  fs::path cwd;
};

std::string drain(int fd) {
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  return text;
}

CliRun run_opclient(const RunSpec& spec) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "OPS_", 4) != 0) env_strings.emplace_back(*e);
  }
  for (const auto& [k, v] : spec.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings{OPS_CLIENT_BIN};
  argv_strings.insert(argv_strings.end(), spec.args.begin(), spec.args.end());
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  int out_pipe[2], err_pipe[2], in_pipe[2];
  EXPECT_EQ(::pipe2(out_pipe, O_CLOEXEC), 0);
  EXPECT_EQ(::pipe2(err_pipe, O_CLOEXEC), 0);
  EXPECT_EQ(::pipe2(in_pipe, O_CLOEXEC), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    if (!spec.stdin_file.empty()) {
      int fd = ::open(spec.stdin_file.c_str(), O_RDONLY);
      ::dup2(fd, 0);
    } else {
      ::dup2(in_pipe[0], 0);
    }
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    if (!spec.cwd.empty() && ::chdir(spec.cwd.c_str()) != 0) ::_exit(126);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ::close(in_pipe[0]);
  std::thread feeder([&] {
    std::size_t done = 0;
    while (done < spec.stdin_data.size()) {
      ssize_t n = ::write(in_pipe[1], spec.stdin_data.data() + done, spec.stdin_data.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::close(in_pipe[1]);
  });
  CliRun run;
  std::thread err_reader([&] { run.err = drain(err_pipe[0]); });
  run.out = drain(out_pipe[0]);
  err_reader.join();
  feeder.join();
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  run.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return run;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& path, const std::string& data, mode_t mode = 0644) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << data;
  }
  ::chmod(path.c_str(), mode);
}

std::string sha256_of_file(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  auto digest = client::sha256_fd(fd);
  ::close(fd);
  return digest ? *digest : std::string();
}

rapidjson::Document json(const std::string& text) {
  rapidjson::Document d;
  d.Parse(text.c_str());
  EXPECT_FALSE(d.HasParseError()) << text;
  return d;
}

std::string ops_json_with(const std::string& upload_extra, const std::string& list_extra = "") {
  return file_ops_json(OPS_PLUGIN_DIR, upload_extra, list_extra);
}

std::uint16_t closed_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(s);
  return ntohs(addr.sin_port);
}

// --- a scripted fake server, for what the real one never does ---

class FakeServer {
 public:
  explicit FakeServer(std::function<void(int)> script) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(listen_fd_, 4);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, script = std::move(script)] {
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      script(fd);
      ::close(fd);
    });
  }
  ~FakeServer() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

bool read_n(int fd, void* data, std::size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 10000) <= 0) return false;
    ssize_t r = ::recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

void send_all(int fd, const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t w = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (w <= 0) return;
    off += static_cast<std::size_t>(w);
  }
}

std::string fake_read_frame(int fd) {
  unsigned char len[4];
  if (!read_n(fd, len, 4)) return {};
  std::string body(frame::decode_length(len), '\0');
  if (!read_n(fd, body.data(), body.size())) return {};
  return body;
}

constexpr const char* kFakeKey = "fake-key-for-opclient-tests";

// §2 from the server's side; `server_key` may differ from the client's to fake a server
// that does not know the key.
bool fake_handshake(int fd, const std::string& server_key = kFakeKey) {
  proof::Nonce nonce = proof::random_nonce();
  send_all(fd, frame::encode(R"({"type":"challenge","protocol":"ops/1","nonce":")" +
                             proof::to_hex(nonce) + R"(","mechanisms":["hmac-sha256"]})"));
  auto auth = json(fake_read_frame(fd));
  if (!auth.IsObject() || !auth.HasMember("cnonce")) return false;
  auto cnonce = proof::from_hex<32>(auth["cnonce"].GetString());
  const std::string user = auth["user"].GetString();
  auto p = proof::server_proof(server_key, nonce, *cnonce, user);
  send_all(fd, frame::encode(R"({"type":"welcome","user":")" + user + R"(","proof":")" +
                             proof::to_hex(p) + R"(","server":"opserver/fake"})"));
  return true;
}

std::map<std::string, std::string> fake_env(const FakeServer& server) {
  return {{"OPS_SERVER", server.address()}, {"OPS_USER", "alice"}, {"OPS_KEY", kFakeKey}};
}

// --- the fixture: one real server for the suite ---

class OpclientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerOptions options;
    // Room for the 100 MiB round trip; payload_too_large gets its own server.
    options.ops_json = ops_json_with(R"(, "max_payload": 209715200)");
    server_ = new ServerProcess(options);
    keys_ = new TempDir();
    alice_key_ = new std::string(server_->add_user("alice"));
    write_file(keys_->path() / "alice.key", *alice_key_ + "\n", 0600);
    write_file(keys_->path() / "admin.key", server_->admin_key() + "\n", 0600);
  }
  static void TearDownTestSuite() {
    delete alice_key_;
    delete keys_;
    delete server_;
  }

  std::string server_address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  std::map<std::string, std::string> alice_env() const {
    return {{"OPS_SERVER", server_address()},
            {"OPS_USER", "alice"},
            {"OPS_KEY_FILE", (keys_->path() / "alice.key").string()}};
  }
  std::map<std::string, std::string> admin_env() const {
    return {{"OPS_SERVER", server_address()},
            {"OPS_USER", "admin"},
            {"OPS_KEY_FILE", (keys_->path() / "admin.key").string()}};
  }
  CliRun alice(std::vector<std::string> args, std::string stdin_data = {}) const {
    return run_opclient({std::move(args), alice_env(), std::move(stdin_data), {}, work_.path()});
  }
  CliRun admin(std::vector<std::string> args) const {
    return run_opclient({std::move(args), admin_env(), {}, {}, work_.path()});
  }
  fs::path local(const std::string& name) const { return work_.path() / name; }

  static ServerProcess* server_;
  static TempDir* keys_;
  static std::string* alice_key_;
  TempDir work_;  // the current directory of each opclient run
};

ServerProcess* OpclientTest::server_ = nullptr;
TempDir* OpclientTest::keys_ = nullptr;
std::string* OpclientTest::alice_key_ = nullptr;

#define EXPECT_EXIT_STATUS(run, expected) \
  EXPECT_EQ((run).status, (expected)) << "stdout: " << (run).out << "\nstderr: " << (run).err

// --- flags, help, usage ---

TEST_F(OpclientTest, VersionAndHelp) {
  CliRun v = alice({"--version"});
  EXPECT_EXIT_STATUS(v, 0);
  EXPECT_NE(v.out.find("opclient "), std::string::npos);

  CliRun h = alice({"--help"});
  EXPECT_EXIT_STATUS(h, 0);
  EXPECT_NE(h.out.find("Exit status"), std::string::npos);
  EXPECT_NE(h.out.find("OPS_KEY_FILE"), std::string::npos);
  for (const char* verb : {"call", "describe", "upload", "download", "ls", "register", "rm", "mv",
                           "mkdir", "stat", "usage", "set-quota", "unregister", "rekey"}) {
    SCOPED_TRACE(verb);
    CliRun sub = alice({verb, "--help"});
    EXPECT_EXIT_STATUS(sub, 0);
    EXPECT_NE(sub.out.find("Examples:"), std::string::npos);
  }
}

TEST_F(OpclientTest, UsageErrorsExitTwo) {
  EXPECT_EXIT_STATUS(alice({}), 2);
  EXPECT_EXIT_STATUS(alice({"frobnicate"}), 2);
  EXPECT_EXIT_STATUS(alice({"ls", "--no-such-flag"}), 2);
  EXPECT_EXIT_STATUS(alice({"upload"}), 2);
  EXPECT_EXIT_STATUS(alice({"upload", "-"}), 2);  // stdin needs a remote name
  EXPECT_EXIT_STATUS(alice({"call", "list", "-a", "novalue"}), 2);
  EXPECT_EXIT_STATUS(alice({"call", "list", "--args", "[1,2]"}), 2);
  EXPECT_EXIT_STATUS(alice({"call", "list", "--args", R"({"a":1,"a":2})"}), 2);
  EXPECT_EXIT_STATUS(alice({"ls", "--server", "host:notaport"}), 2);

  CliRun no_user = run_opclient({{"ls"}, {{"OPS_SERVER", server_address()}, {"OPS_KEY", "k"}}});
  EXPECT_EXIT_STATUS(no_user, 2);
  EXPECT_NE(no_user.err.find("no user: use --user or OPS_USER"), std::string::npos);

  CliRun no_key = run_opclient({{"ls"}, {{"OPS_SERVER", server_address()}, {"OPS_USER", "alice"}}});
  EXPECT_EXIT_STATUS(no_key, 2);
  EXPECT_NE(no_key.err.find("no key"), std::string::npos);

  CliRun missing_key_file =
      run_opclient({{"ls", "--key-file", "/nonexistent/key"}, {{"OPS_USER", "alice"}}});
  EXPECT_EXIT_STATUS(missing_key_file, 2);
}

TEST_F(OpclientTest, KeySourcesAndOptionPlacement) {
  // OPS_KEY in the environment.
  CliRun env_key = run_opclient(
      {{"ls"},
       {{"OPS_SERVER", server_address()}, {"OPS_USER", "alice"}, {"OPS_KEY", *alice_key_}}});
  EXPECT_EXIT_STATUS(env_key, 0);
  // --key-file wins over a wrong OPS_KEY; connection options after the verb.
  CliRun flag_key = run_opclient({{"ls", "--server", server_address(), "--user", "alice",
                                   "--key-file", (keys_->path() / "alice.key").string()},
                                  {{"OPS_KEY", "wrong"}}});
  EXPECT_EXIT_STATUS(flag_key, 0);
  // --user wins over OPS_USER.
  CliRun flag_user = run_opclient({{"-u", "alice", "ls"},
                                   {{"OPS_SERVER", server_address()},
                                    {"OPS_USER", "admin"},
                                    {"OPS_KEY_FILE", (keys_->path() / "alice.key").string()}}});
  EXPECT_EXIT_STATUS(flag_user, 0);
}

// --- connection failures ---

TEST_F(OpclientTest, UnreachableServerExitsThree) {
  CliRun r = run_opclient({{"ls"},
                           {{"OPS_SERVER", "127.0.0.1:" + std::to_string(closed_port())},
                            {"OPS_USER", "alice"},
                            {"OPS_KEY", "k"}}});
  EXPECT_EXIT_STATUS(r, 3);
  EXPECT_NE(r.err.find("opclient: connect_failed: cannot connect to 127.0.0.1:"), std::string::npos)
      << r.err;
  CliRun unknown = run_opclient(
      {{"ls", "--server", "no-such-host.invalid:9000"}, {{"OPS_USER", "alice"}, {"OPS_KEY", "k"}}});
  EXPECT_EXIT_STATUS(unknown, 3);
}

TEST_F(OpclientTest, WrongKeyExitsFour) {
  CliRun r = run_opclient(
      {{"ls"}, {{"OPS_SERVER", server_address()}, {"OPS_USER", "alice"}, {"OPS_KEY", "wrong"}}});
  EXPECT_EXIT_STATUS(r, 4);
  EXPECT_NE(r.err.find("opclient: auth_failed:"), std::string::npos) << r.err;
  CliRun nobody = run_opclient(
      {{"ls"}, {{"OPS_SERVER", server_address()}, {"OPS_USER", "nobody"}, {"OPS_KEY", "x"}}});
  EXPECT_EXIT_STATUS(nobody, 4);
}

TEST_F(OpclientTest, WrongServerProofIsRefused) {
  std::atomic<bool> sent_request{false};
  CliRun r;
  {
    FakeServer fake([&](int fd) {
      if (!fake_handshake(fd, "a key the server does not really know")) return;
      sent_request = !fake_read_frame(fd).empty();  // the client must hang up instead
    });
    r = run_opclient({{"ls"}, fake_env(fake)});
  }  // joins the fake server's thread
  EXPECT_EXIT_STATUS(r, 4);
  EXPECT_NE(r.err.find("opclient: server_proof_wrong:"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty());
  EXPECT_FALSE(sent_request);
}

TEST_F(OpclientTest, EveryServerErrorCodeHasItsExitStatus) {
  for (ErrorCode code : kAllErrorCodes) {
    const std::string name(wire_name(code));
    SCOPED_TRACE(name);
    FakeServer fake([&](int fd) {
      if (!fake_handshake(fd)) return;
      auto req = json(fake_read_frame(fd));
      send_all(fd, frame::encode(R"({"id":)" + std::to_string(req["id"].GetUint64()) +
                                 R"(,"ok":false,"error":{"code":")" + name +
                                 R"(","message":"it went wrong"}})"));
    });
    CliRun r = run_opclient({{"call", "anything"}, fake_env(fake)});
    const int expected = code == ErrorCode::auth_failed ? 4 : 10 + static_cast<int>(code);
    EXPECT_EXIT_STATUS(r, expected);
    EXPECT_EQ(r.err, "opclient: " + name + ": it went wrong\n");
  }
}

TEST_F(OpclientTest, BrokenDownloadExitsFiveAndKeepsPartial) {
  for (bool resume : {false, true}) {
    SCOPED_TRACE(resume ? "--continue" : "plain");
    FakeServer fake([](int fd) {
      if (!fake_handshake(fd)) return;
      auto req = json(fake_read_frame(fd));
      send_all(fd, frame::encode(R"({"id":)" + std::to_string(req["id"].GetUint64()) +
                                 R"(,"ok":true,"result":{"path":"f","size":1000000,"offset":0,)"
                                 R"("length":1000000},"payload":1000000})"));
      send_all(fd, std::string(300000, 'p'));  // then hang up mid-payload
    });
    std::vector<std::string> args{"download", "f", "f.bin"};
    if (resume) args.push_back("--continue");
    CliRun r = run_opclient({args, fake_env(fake), {}, {}, work_.path()});
    EXPECT_EXIT_STATUS(r, 5);
    EXPECT_NE(r.err.find("opclient: connection_lost:"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(local("f.bin")));
    EXPECT_EQ(fs::file_size(local("f.bin.part")), 300000u);
    EXPECT_NE(r.err.find("partial download kept"), std::string::npos);
    EXPECT_NE(r.err.find("opclient download --continue f f.bin"), std::string::npos) << r.err;
    fs::remove(local("f.bin.part"));
  }
}

TEST_F(OpclientTest, ProtocolViolationExitsFive) {
  FakeServer fake([](int fd) {
    if (!fake_handshake(fd)) return;
    fake_read_frame(fd);
    send_all(fd, frame::encode("not json at all"));
  });
  CliRun r = run_opclient({{"ls"}, fake_env(fake)});
  EXPECT_EXIT_STATUS(r, 5);
  EXPECT_NE(r.err.find("opclient: protocol_error:"), std::string::npos) << r.err;
}

// --- the verbs ---

TEST_F(OpclientTest, Describe) {
  CliRun table = alice({"describe"});
  EXPECT_EXIT_STATUS(table, 0);
  EXPECT_NE(table.out.find("OPERATION"), std::string::npos);
  for (const char* op : {"upload", "download", "list"}) {
    EXPECT_NE(table.out.find(op), std::string::npos) << op;
  }
  EXPECT_EQ(table.out.find("register"), std::string::npos);  // alice may not call it

  CliRun as_json = alice({"describe", "--json"});
  EXPECT_EXIT_STATUS(as_json, 0);
  auto doc = json(as_json.out);
  ASSERT_TRUE(doc.HasMember("operations"));
  EXPECT_GE(doc["operations"].Size(), 3u);
  EXPECT_EQ(std::count(as_json.out.begin(), as_json.out.end(), '\n'), 1);  // one line: no tty

  CliRun one = alice({"describe", "upload"});
  EXPECT_EXIT_STATUS(one, 0);
  EXPECT_NE(one.out.find("payload: in"), std::string::npos);
  EXPECT_NE(one.out.find("overwrite"), std::string::npos);

  EXPECT_EXIT_STATUS(alice({"describe", "register"}), 14);
  EXPECT_NE(admin({"describe"}).out.find("register"), std::string::npos);
}

TEST_F(OpclientTest, UploadLsDownload) {
  write_file(local("hello.txt"), "hello, world\n");
  CliRun up = alice({"upload", "hello.txt", "docs/"});
  EXPECT_EXIT_STATUS(up, 0);
  auto result = json(up.out);
  EXPECT_STREQ(result["path"].GetString(), "docs/hello.txt");
  EXPECT_EQ(result["size"].GetUint64(), 13u);
  EXPECT_EQ(std::string(result["sha256"].GetString()), proof::sha256_hex("hello, world\n"));

  CliRun again = alice({"upload", "hello.txt", "docs/hello.txt"});
  EXPECT_EXIT_STATUS(again, 18);
  EXPECT_NE(again.err.find("opclient: already_exists:"), std::string::npos);
  EXPECT_NE(again.err.find("--overwrite"), std::string::npos);
  EXPECT_EXIT_STATUS(alice({"upload", "hello.txt", "docs/hello.txt", "--overwrite"}), 0);

  CliRun ls = alice({"ls"});
  EXPECT_EXIT_STATUS(ls, 0);
  EXPECT_NE(ls.out.find("docs/"), std::string::npos);
  CliRun deep = alice({"ls", "docs", "-R"});
  EXPECT_EXIT_STATUS(deep, 0);
  EXPECT_NE(deep.out.find("13 "), std::string::npos);
  EXPECT_NE(deep.out.find("hello.txt"), std::string::npos);
  CliRun ls_json = alice({"ls", "-R", "--json"});
  EXPECT_EXIT_STATUS(ls_json, 0);
  EXPECT_TRUE(json(ls_json.out).HasMember("entries"));
  EXPECT_EXIT_STATUS(alice({"ls", "no/such/dir"}), 17);

  // hello.txt, the uploaded original, is here: replaced only with --force.
  EXPECT_EXIT_STATUS(alice({"download", "docs/hello.txt"}), 18);
  CliRun down = alice({"download", "docs/hello.txt", "--force"});
  EXPECT_EXIT_STATUS(down, 0);
  EXPECT_EQ(read_file(local("hello.txt")), "hello, world\n");
  fs::create_directory(local("into"));
  EXPECT_EXIT_STATUS(alice({"download", "docs/hello.txt", "into"}), 0);
  EXPECT_EQ(read_file(local("into/hello.txt")), "hello, world\n");
  EXPECT_FALSE(fs::exists(local("into/hello.txt.part")));

  CliRun to_stdout = alice({"download", "docs/hello.txt", "-"});
  EXPECT_EXIT_STATUS(to_stdout, 0);
  EXPECT_EQ(to_stdout.out, "hello, world\n");  // nothing but the bytes

  CliRun missing = alice({"download", "docs/nope.txt"});
  EXPECT_EXIT_STATUS(missing, 17);
  EXPECT_NE(missing.err.find("opclient: not_found:"), std::string::npos);
  EXPECT_FALSE(fs::exists(local("nope.txt")));
  EXPECT_FALSE(fs::exists(local("nope.txt.part")));

  EXPECT_EXIT_STATUS(alice({"upload", "does-not-exist.txt"}), 1);
  EXPECT_EXIT_STATUS(alice({"upload", "into"}), 1);  // a directory
}

TEST_F(OpclientTest, PipesInAndOut) {
  std::string data(3 * 1024 * 1024 + 17, '\0');
  std::mt19937 rng(7);
  for (auto& c : data) c = static_cast<char>(rng());
  CliRun up = alice({"upload", "-", "piped/data.bin"}, data);
  EXPECT_EXIT_STATUS(up, 0);
  EXPECT_EQ(std::string(json(up.out)["sha256"].GetString()), proof::sha256_hex(data));

  CliRun call_in = alice({"call", "upload", "-a", "path=piped/call.bin", "--in", "-"}, data);
  EXPECT_EXIT_STATUS(call_in, 0);
  EXPECT_EQ(json(call_in.out)["size"].GetUint64(), data.size());

  CliRun call_out = alice({"call", "download", "-a", "path=piped/call.bin", "--out", "-"});
  EXPECT_EXIT_STATUS(call_out, 0);
  EXPECT_TRUE(call_out.out == data) << "stdout carries exactly the payload";
  EXPECT_EQ(json(call_out.err)["length"].GetUint64(), data.size());  // result on stderr

  // stdin redirected from a regular file is sent without spooling.
  write_file(local("in.bin"), data);
  CliRun from_file = run_opclient({{"call", "upload", "-a", "path=piped/file.bin", "--in", "-"},
                                   alice_env(),
                                   {},
                                   local("in.bin").string(),
                                   work_.path()});
  EXPECT_EXIT_STATUS(from_file, 0);
  EXPECT_EQ(std::string(json(from_file.out)["sha256"].GetString()), proof::sha256_hex(data));

  // --out FILE, and a payload without --out is skipped with a note.
  EXPECT_EXIT_STATUS(alice({"call", "download", "-a", "path=piped/file.bin", "--out", "o.bin"}), 0);
  EXPECT_TRUE(read_file(local("o.bin")) == data);
  CliRun skipped = alice({"call", "download", "-a", "path=piped/file.bin"});
  EXPECT_EXIT_STATUS(skipped, 0);
  EXPECT_NE(skipped.err.find("discarded"), std::string::npos);
  EXPECT_TRUE(json(skipped.out).HasMember("length"));
}

TEST_F(OpclientTest, CallArguments) {
  ASSERT_EQ(alice({"upload", "-", "args/a.txt"}, "a").status, 0);
  // -a values: JSON when they parse, else strings.
  CliRun r = alice({"call", "list", "-a", "path=args", "-a", "recursive=true"});
  EXPECT_EXIT_STATUS(r, 0);
  auto doc = json(r.out);
  EXPECT_EQ(doc["entries"].Size(), 1u);
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1);  // one line on a pipe

  // -a overrides a member of --args.
  EXPECT_EXIT_STATUS(alice({"call", "list", "--args", R"({"path":"nowhere"})", "-a", "path=args"}),
                     0);
  // recursive=maybe stays a string: the schema says boolean.
  CliRun bad = alice({"call", "list", "-a", "recursive=maybe"});
  EXPECT_EXIT_STATUS(bad, 16);
  EXPECT_NE(bad.err.find("opclient: invalid_args:"), std::string::npos);
  // A quoted number is a string.
  EXPECT_EXIT_STATUS(alice({"call", "download", "-a", "path=args/a.txt", "-a", R"(offset="1")"}),
                     16);
  EXPECT_EXIT_STATUS(alice({"call", "download", "-a", "path=args/a.txt", "-a", "offset=1"}), 0);
}

TEST_F(OpclientTest, ExitStatusPerServerErrorClass) {
  ASSERT_EQ(alice({"upload", "-", "cls/file"}, "x").status, 0);
  write_file(local("x.txt"), "x");
  EXPECT_EXIT_STATUS(alice({"call", "no_such_operation"}), 14);
  EXPECT_EXIT_STATUS(alice({"register", "mallory"}), 15);
  EXPECT_EXIT_STATUS(alice({"download", "../outside"}), 16);
  EXPECT_EXIT_STATUS(alice({"download", "cls/missing"}), 17);
  EXPECT_EXIT_STATUS(alice({"upload", "x.txt", "cls/file"}), 18);
  EXPECT_EXIT_STATUS(alice({"upload", "x.txt", "cls/file/below"}), 19);
  CliRun sum = alice({"call", "upload", "-a", "path=cls/sum", "-a",
                      "sha256=" + std::string(64, '0'), "--in", "x.txt"});
  EXPECT_EXIT_STATUS(sum, 21);
  EXPECT_NE(sum.err.find("opclient: checksum_mismatch:"), std::string::npos);
}

TEST_F(OpclientTest, PayloadTooLargeExitsTwenty) {
  ServerOptions options;
  options.ops_json = ops_json_with(R"(, "max_payload": 1000)");
  ServerProcess small(options);
  write_file(local("big.bin"), std::string(5000, 'b'));
  write_file(local("huge.bin"), std::string(100u << 20, 'h'));  // past the discard limit
  write_file(local("k"), small.admin_key(), 0600);
  for (const char* file : {"big.bin", "huge.bin"}) {
    SCOPED_TRACE(file);
    CliRun r = run_opclient({{"upload", file, "--quiet"},
                             {{"OPS_SERVER", "127.0.0.1:" + std::to_string(small.port())},
                              {"OPS_USER", "admin"},
                              {"OPS_KEY_FILE", local("k").string()}},
                             {},
                             {},
                             work_.path()});
    EXPECT_EXIT_STATUS(r, 20);
    EXPECT_NE(r.err.find("opclient: payload_too_large:"), std::string::npos) << r.err;
  }
}

TEST_F(OpclientTest, RegisterPrintsTheKeyOnce) {
  CliRun r = admin({"register", "bob"});
  EXPECT_EXIT_STATUS(r, 0);
  std::string key = r.out;
  ASSERT_FALSE(key.empty());
  key.pop_back();
  EXPECT_TRUE(std::regex_match(key, std::regex("[0-9a-f]{64}"))) << r.out;
  EXPECT_NE(r.err.find("only time"), std::string::npos);

  CliRun as_bob = run_opclient(
      {{"ls"}, {{"OPS_SERVER", server_address()}, {"OPS_USER", "bob"}, {"OPS_KEY", key}}});
  EXPECT_EXIT_STATUS(as_bob, 0);

  EXPECT_EXIT_STATUS(admin({"register", "bob"}), 18);
  EXPECT_EXIT_STATUS(admin({"register", "Not A Name"}), 16);

  CliRun to_file = admin({"register", "carol", "--key-file-out", local("carol.key").string()});
  EXPECT_EXIT_STATUS(to_file, 0);
  EXPECT_TRUE(to_file.out.empty());
  struct stat st {};
  ASSERT_EQ(::stat(local("carol.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  CliRun as_carol = run_opclient({{"ls"},
                                  {{"OPS_SERVER", server_address()},
                                   {"OPS_USER", "carol"},
                                   {"OPS_KEY_FILE", local("carol.key").string()}}});
  EXPECT_EXIT_STATUS(as_carol, 0);
  // An existing key file is never overwritten, and nothing is registered then.
  EXPECT_EXIT_STATUS(admin({"register", "dave", "--key-file-out", local("carol.key").string()}), 1);
  EXPECT_EXIT_STATUS(admin({"register", "dave"}), 0);
}

TEST_F(OpclientTest, UsageSetQuotaRekeyUnregister) {
  std::string key = server_->add_user("erin");
  write_file(local("erin.key"), key + "\n", 0600);
  std::map<std::string, std::string> erin_env{{"OPS_SERVER", server_address()},
                                              {"OPS_USER", "erin"},
                                              {"OPS_KEY_FILE", local("erin.key").string()}};
  auto erin = [&](std::vector<std::string> args) {
    return run_opclient({std::move(args), erin_env, {}, {}, work_.path()});
  };
  CliRun set = admin({"set-quota", "erin", "--bytes", "2048", "--files", "none"});
  EXPECT_EXIT_STATUS(set, 0);
  EXPECT_EQ(set.out, "quota of erin: 2.0 KiB (2048 bytes), no limit\n");
  EXPECT_EXIT_STATUS(admin({"set-quota", "erin", "--bytes", "-1"}), 2);
  EXPECT_EXIT_STATUS(admin({"set-quota", "nobody", "--bytes", "1"}), 17);
  EXPECT_EXIT_STATUS(erin({"set-quota", "erin", "--bytes", "none"}), 15);
  // `quota` is the same command.
  CliRun again = admin({"quota", "erin", "--bytes", "2048"});
  EXPECT_EXIT_STATUS(again, 0);
  EXPECT_EQ(again.out, "quota of erin: 2.0 KiB (2048 bytes), no limit\n");
  CliRun json = erin({"usage", "--json"});
  EXPECT_EXIT_STATUS(json, 0);
  EXPECT_NE(json.out.find(R"("quota_bytes":2048)"), std::string::npos) << json.out;
  CliRun people = erin({"usage"});
  EXPECT_EXIT_STATUS(people, 0);
  EXPECT_NE(people.out.find("stored    0 B in 0 files"), std::string::npos) << people.out;

  // rekey to a file: the old key stops working, the new one works.
  CliRun rekeyed = erin({"rekey", "--key-file-out", local("erin2.key").string()});
  EXPECT_EXIT_STATUS(rekeyed, 0);
  EXPECT_TRUE(rekeyed.out.empty());
  EXPECT_EXIT_STATUS(erin({"usage"}), 4);
  erin_env["OPS_KEY_FILE"] = local("erin2.key").string();
  EXPECT_EXIT_STATUS(erin({"usage"}), 0);
  EXPECT_EXIT_STATUS(erin({"rekey", "admin"}), 15);
  CliRun by_admin = admin({"rekey", "erin"});
  EXPECT_EXIT_STATUS(by_admin, 0);
  EXPECT_EQ(by_admin.out.size(), 65u) << by_admin.out;

  EXPECT_EXIT_STATUS(admin({"unregister", "admin"}), 15);
  EXPECT_EXIT_STATUS(admin({"unregister", "erin"}), 0);
  EXPECT_EXIT_STATUS(admin({"unregister", "erin"}), 17);
}

TEST_F(OpclientTest, DownloadContinueResumes) {
  std::string data(2 * 1024 * 1024 + 5, '\0');
  std::mt19937 rng(11);
  for (auto& c : data) c = static_cast<char>(rng());
  ASSERT_EQ(alice({"upload", "-", "resume/file.bin"}, data).status, 0);

  // A partial LOCAL.part from an interrupted run.
  write_file(local("file.bin.part"), data.substr(0, 1000000));
  CliRun r = alice({"download", "resume/file.bin", "--continue"});
  EXPECT_EXIT_STATUS(r, 0);
  EXPECT_EQ(json(r.out)["offset"].GetUint64(), 1000000u);
  EXPECT_TRUE(read_file(local("file.bin")) == data);
  EXPECT_FALSE(fs::exists(local("file.bin.part")));

  // A partial file under the final name.
  write_file(local("other.bin"), data.substr(0, 12345));
  EXPECT_EXIT_STATUS(alice({"download", "resume/file.bin", "other.bin", "-c"}), 0);
  EXPECT_TRUE(read_file(local("other.bin")) == data);

  // Already complete: nothing more to fetch.
  EXPECT_EXIT_STATUS(alice({"download", "resume/file.bin", "other.bin", "-c"}), 0);
  EXPECT_TRUE(read_file(local("other.bin")) == data);

  // Without --continue a stale .part is replaced, not appended to.
  write_file(local("fresh.bin.part"), "stale");
  EXPECT_EXIT_STATUS(alice({"download", "resume/file.bin", "fresh.bin"}), 0);
  EXPECT_TRUE(read_file(local("fresh.bin")) == data);

  // A local partial longer than the remote file is invalid_args, with a hint.
  write_file(local("long.bin"), data + "extra");
  CliRun too_long = alice({"download", "resume/file.bin", "long.bin", "--continue"});
  EXPECT_EXIT_STATUS(too_long, 16);
  EXPECT_NE(too_long.err.find("--continue"), std::string::npos);
}

TEST_F(OpclientTest, HundredMebibyteRoundTripBySha256) {
  const std::uint64_t size = 100u << 20;
  {
    std::ofstream out(local("big.bin"), std::ios::binary);
    std::mt19937_64 rng(2024);
    std::vector<std::uint64_t> block(1 << 17);  // 1 MiB
    for (std::uint64_t done = 0; done < size; done += 1 << 20) {
      for (auto& w : block) w = rng();
      out.write(reinterpret_cast<const char*>(block.data()), 1 << 20);
    }
  }
  const std::string digest = sha256_of_file(local("big.bin"));
  CliRun up = alice({"upload", "big.bin", "large/big.bin"});
  EXPECT_EXIT_STATUS(up, 0);
  auto result = json(up.out);
  EXPECT_EQ(result["size"].GetUint64(), size);
  EXPECT_EQ(std::string(result["sha256"].GetString()), digest);

  CliRun down = alice({"download", "large/big.bin", "copy.bin"});
  EXPECT_EXIT_STATUS(down, 0);
  EXPECT_EQ(fs::file_size(local("copy.bin")), size);
  EXPECT_EQ(sha256_of_file(local("copy.bin")), digest);
  // The server's stored copy, seen from outside.
  EXPECT_EQ(sha256_of_file(server_->storage_dir() / "alice" / "large" / "big.bin"), digest);
}

// --- the file operations (§10) ---

TEST_F(OpclientTest, MkdirStatMvRm) {
  const fs::path home = server_->storage_dir() / "alice";
  CliRun made = alice({"mkdir", "fo/a/b"});
  EXPECT_EXIT_STATUS(made, 0);
  EXPECT_TRUE(json(made.out)["created"].GetBool());
  EXPECT_TRUE(fs::is_directory(home / "fo/a/b"));
  CliRun again = alice({"mkdir", "fo/a/b", "-p"});
  EXPECT_EXIT_STATUS(again, 0);
  EXPECT_FALSE(json(again.out)["created"].GetBool());
  EXPECT_EXIT_STATUS(alice({"mkdir", "fo/x/y", "--no-parents"}), 17);
  EXPECT_FALSE(fs::exists(home / "fo/x"));
  EXPECT_EXIT_STATUS(alice({"mkdir"}), 2);

  ASSERT_EQ(alice({"upload", "-", "fo/a/f.txt"}, "contents").status, 0);
  CliRun st = alice({"stat", "fo/a/f.txt", "--sha256"});
  EXPECT_EXIT_STATUS(st, 0);
  auto r = json(st.out);
  EXPECT_STREQ(r["type"].GetString(), "file");
  EXPECT_EQ(r["size"].GetUint64(), 8u);
  EXPECT_EQ(std::string(r["sha256"].GetString()), proof::sha256_hex("contents"));
  CliRun root = alice({"stat"});
  EXPECT_EXIT_STATUS(root, 0);
  EXPECT_STREQ(json(root.out)["type"].GetString(), "dir");
  EXPECT_EXIT_STATUS(alice({"stat", "fo/none"}), 17);

  CliRun mv = alice({"mv", "fo/a/f.txt", "fo/new/g.txt"});
  EXPECT_EXIT_STATUS(mv, 0);
  EXPECT_STREQ(json(mv.out)["to"].GetString(), "fo/new/g.txt");
  EXPECT_EQ(read_file(home / "fo/new/g.txt"), "contents");
  ASSERT_EQ(alice({"upload", "-", "fo/other"}, "other").status, 0);
  CliRun exists = alice({"mv", "fo/other", "fo/new/g.txt"});
  EXPECT_EXIT_STATUS(exists, 18);
  EXPECT_NE(exists.err.find("--overwrite"), std::string::npos);
  EXPECT_EXIT_STATUS(alice({"mv", "fo/other", "fo/new/g.txt", "--overwrite"}), 0);
  EXPECT_EQ(read_file(home / "fo/new/g.txt"), "other");
  EXPECT_EXIT_STATUS(alice({"mv", "fo/a", "fo/a/b/c"}), 16);
  EXPECT_EXIT_STATUS(alice({"mv", "fo/a"}), 2);

  CliRun not_empty = alice({"rm", "fo/new"});
  EXPECT_EXIT_STATUS(not_empty, 19);
  EXPECT_NE(not_empty.err.find("-r"), std::string::npos);
  CliRun rm = alice({"rm", "fo", "-r"});
  EXPECT_EXIT_STATUS(rm, 0);
  EXPECT_EQ(json(rm.out)["removed"].GetUint64(), 5u);  // fo, a, b, new, g.txt
  EXPECT_FALSE(fs::exists(home / "fo"));
  EXPECT_EXIT_STATUS(alice({"rm", "fo"}), 17);
  EXPECT_EXIT_STATUS(alice({"rm", ""}), 16);
}

TEST_F(OpclientTest, LsPagesThroughEveryEntry) {
  ServerOptions options;
  options.ops_json = ops_json_with("", R"(, "settings": {"max_list_entries": 4})");
  ServerProcess small(options);
  const std::string key = small.add_user("alice");
  std::map<std::string, std::string> env{
      {"OPS_SERVER", "127.0.0.1:" + std::to_string(small.port())},
      {"OPS_USER", "alice"},
      {"OPS_KEY", key}};
  auto run = [&](std::vector<std::string> args) {
    return run_opclient({std::move(args), env, {}, {}, work_.path()});
  };
  const fs::path home = small.storage_dir() / "alice";
  std::vector<std::string> names;
  for (int i = 0; i < 11; ++i) {
    std::string name = "e";
    name += static_cast<char>('a' + i);
    names.push_back(name);
    write_file(home / name, name);
  }
  CliRun all = run({"ls"});
  EXPECT_EXIT_STATUS(all, 0);
  std::istringstream lines(all.out);
  std::vector<std::string> seen;
  for (std::string line; std::getline(lines, line);)
    seen.push_back(line.substr(line.rfind(' ') + 1));
  EXPECT_EQ(seen, names);
  EXPECT_EQ(all.err, "");

  CliRun merged = run({"ls", "--json"});
  EXPECT_EXIT_STATUS(merged, 0);
  auto doc = json(merged.out);
  EXPECT_EQ(doc["entries"].Size(), 11u);
  EXPECT_FALSE(doc["truncated"].GetBool());

  CliRun page = run({"ls", "--limit", "3", "--after", "eb"});
  EXPECT_EXIT_STATUS(page, 0);
  EXPECT_NE(page.out.find("ec\n"), std::string::npos);
  EXPECT_NE(page.out.find("ee\n"), std::string::npos);
  EXPECT_EQ(page.out.find("ef\n"), std::string::npos);
  EXPECT_EQ(page.out.find("eb\n"), std::string::npos);
  EXPECT_NE(page.err.find("--after 'ee'"), std::string::npos) << page.err;
  CliRun page_json = run({"ls", "--limit", "2", "--json"});
  EXPECT_EXIT_STATUS(page_json, 0);
  EXPECT_STREQ(json(page_json.out)["next"].GetString(), "eb");
  EXPECT_EXIT_STATUS(run({"ls", "--limit", "0"}), 2);
}

TEST_F(OpclientTest, DownloadSha256ChecksTheWholeFile) {
  std::string data(300000, '\0');
  std::mt19937 rng(5);
  for (auto& c : data) c = static_cast<char>(rng());
  ASSERT_EQ(alice({"upload", "-", "sha/file.bin"}, data).status, 0);

  CliRun ok = alice({"download", "sha/file.bin", "--sha256"});
  EXPECT_EXIT_STATUS(ok, 0);
  EXPECT_EQ(std::string(json(ok.out)["sha256"].GetString()), proof::sha256_hex(data));
  EXPECT_TRUE(read_file(local("file.bin")) == data);

  // A resumed download whose first part is corrupt: caught, said so (status 6), and the
  // file left as resumed.bin.part, not renamed and not removed.
  std::string bad = data.substr(0, 1000);
  bad[10] ^= 1;
  write_file(local("resumed.bin.part"), bad);
  CliRun mismatch = alice({"download", "sha/file.bin", "resumed.bin", "-c", "--sha256"});
  EXPECT_EXIT_STATUS(mismatch, 6);
  EXPECT_NE(mismatch.err.find("checksum_mismatch"), std::string::npos);
  EXPECT_FALSE(fs::exists(local("resumed.bin")));
  EXPECT_EQ(fs::file_size(local("resumed.bin.part")), data.size());

  // A good partial resumes and checks out.
  write_file(local("good.bin.part"), data.substr(0, 1000));
  EXPECT_EXIT_STATUS(alice({"download", "sha/file.bin", "good.bin", "-c", "--sha256"}), 0);
  EXPECT_TRUE(read_file(local("good.bin")) == data);

  EXPECT_EXIT_STATUS(alice({"download", "sha/file.bin", "-", "--sha256"}), 2);
}

// --- the command line as people type it ---

TEST_F(OpclientTest, MistypedCommandSuggestsTheNearest) {
  CliRun r = alice({"describ"});
  EXPECT_EXIT_STATUS(r, 2);
  EXPECT_EQ(r.err, "opclient: unknown command 'describ'; did you mean 'describe'?\n");
  // Connection options and their values before the command are skipped.
  CliRun after_options = alice({"--timeout", "5", "-q", "dowload", "x"});
  EXPECT_EXIT_STATUS(after_options, 2);
  EXPECT_NE(after_options.err.find("did you mean 'download'?"), std::string::npos)
      << after_options.err;
  CliRun far = alice({"frobnicate"});
  EXPECT_EXIT_STATUS(far, 2);
  EXPECT_EQ(far.err, "opclient: unknown command 'frobnicate'; see opclient --help\n");
  // A known command is untouched.
  EXPECT_EXIT_STATUS(alice({"--timeout", "5", "ls"}), 0);
}

TEST_F(OpclientTest, TrailingSlashOnRemotePathsIsAccepted) {
  ASSERT_EQ(alice({"upload", "-", "slash/dir/f.txt"}, "slashed").status, 0);
  CliRun ls = alice({"ls", "slash/dir/"});
  EXPECT_EXIT_STATUS(ls, 0);
  EXPECT_NE(ls.out.find("f.txt"), std::string::npos) << ls.out;
  EXPECT_EXIT_STATUS(alice({"ls", "slash//"}), 0);
  CliRun root = alice({"ls", "/"});
  EXPECT_EXIT_STATUS(root, 0);
  EXPECT_NE(root.out.find("slash/"), std::string::npos) << root.out;
  EXPECT_EXIT_STATUS(alice({"stat", "slash/dir/"}), 0);
  EXPECT_EXIT_STATUS(alice({"mkdir", "slash/new/"}), 0);
  EXPECT_EXIT_STATUS(alice({"mv", "slash/new/", "slash/moved/"}), 0);
  EXPECT_EXIT_STATUS(alice({"stat", "slash/moved"}), 0);
  EXPECT_EXIT_STATUS(alice({"rm", "slash/moved/"}), 0);
  EXPECT_EXIT_STATUS(alice({"stat", "slash/moved"}), 17);
  EXPECT_EXIT_STATUS(alice({"download", "slash/dir/f.txt/", "f.txt"}), 0);
  EXPECT_EQ(read_file(local("f.txt")), "slashed");
}

TEST_F(OpclientTest, DownloadRefusesToReplaceALocalFileWithoutForce) {
  ASSERT_EQ(alice({"upload", "-", "force/f.txt"}, "new contents").status, 0);
  write_file(local("f.txt"), "precious");
  CliRun refused = alice({"download", "force/f.txt"});
  EXPECT_EXIT_STATUS(refused, 18);
  EXPECT_NE(refused.err.find("opclient: already_exists:"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("--force"), std::string::npos) << refused.err;
  EXPECT_EQ(read_file(local("f.txt")), "precious");
  EXPECT_FALSE(fs::exists(local("f.txt.part")));

  EXPECT_EXIT_STATUS(alice({"download", "force/f.txt", "--force"}), 0);
  EXPECT_EQ(read_file(local("f.txt")), "new contents");
  EXPECT_EXIT_STATUS(alice({"download", "force/f.txt", "-", "-f"}), 0);  // stdout: never refused
}

TEST_F(OpclientTest, InterruptedDownloadKeepsPartAndContinueVerifiesSha256) {
  std::string data(3 * 1024 * 1024, '\0');
  std::mt19937 rng(17);
  for (auto& c : data) c = static_cast<char>(rng());
  ASSERT_EQ(alice({"upload", "-", "cont/file.bin"}, data).status, 0);

  // A refused download leaves nothing behind.
  CliRun missing = alice({"download", "cont/none.bin"});
  EXPECT_EXIT_STATUS(missing, 17);
  EXPECT_FALSE(fs::exists(local("none.bin.part")));

  // What Ctrl-C leaves: the first bytes in LOCAL.part.
  write_file(local("file.bin.part"), data.substr(0, 1234567));
  CliRun resumed = alice({"download", "--continue", "cont/file.bin"});
  EXPECT_EXIT_STATUS(resumed, 0);
  EXPECT_EQ(json(resumed.out)["offset"].GetUint64(), 1234567u);
  EXPECT_NE(resumed.err.find("verified sha256 " + proof::sha256_hex(data)), std::string::npos)
      << resumed.err;
  EXPECT_TRUE(read_file(local("file.bin")) == data);
  EXPECT_FALSE(fs::exists(local("file.bin.part")));

  // A corrupt first part: said so, status 6, nothing removed nor renamed.
  std::string bad = data.substr(0, 5000);
  bad[100] ^= 1;
  write_file(local("bad.bin.part"), bad);
  CliRun mismatch = alice({"download", "cont/file.bin", "bad.bin", "--continue"});
  EXPECT_EXIT_STATUS(mismatch, 6);
  EXPECT_NE(mismatch.err.find("nothing was removed"), std::string::npos) << mismatch.err;
  EXPECT_EQ(fs::file_size(local("bad.bin.part")), data.size());
  EXPECT_FALSE(fs::exists(local("bad.bin")));
}

TEST_F(OpclientTest, CtrlCInADownloadKeepsThePartAndSaysHowToResume) {
  // A server that sends part of the payload and then stalls, so that opclient is
  // mid-download when SIGINT comes.
  FakeServer fake([](int fd) {
    if (!fake_handshake(fd)) return;
    auto req = json(fake_read_frame(fd));
    send_all(fd, frame::encode(R"({"id":)" + std::to_string(req["id"].GetUint64()) +
                               R"(,"ok":true,"result":{"path":"f","size":1000000,"offset":0,)"
                               R"("length":1000000},"payload":1000000})"));
    send_all(fd, std::string(200000, 'p'));
    char byte;
    pollfd pfd{fd, POLLIN, 0};
    ::poll(&pfd, 1, 20000);  // until the client goes away
    (void)::recv(fd, &byte, 1, 0);
  });
  int err_pipe[2];
  ASSERT_EQ(::pipe2(err_pipe, O_CLOEXEC), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::chdir(work_.path().c_str());
    ::dup2(err_pipe[1], STDERR_FILENO);
    int null_fd = ::open("/dev/null", O_RDWR);
    ::dup2(null_fd, STDOUT_FILENO);
    ::setenv("OPS_SERVER", fake.address().c_str(), 1);
    ::setenv("OPS_USER", "alice", 1);
    ::setenv("OPS_KEY", kFakeKey, 1);
    ::unsetenv("OPS_KEY_FILE");
    ::execl(OPS_CLIENT_BIN, OPS_CLIENT_BIN, "-q", "download", "f", "f.bin", nullptr);
    ::_exit(127);
  }
  ::close(err_pipe[1]);
  for (int i = 0; i < 200; ++i) {  // until the 200000 bytes are on disk
    std::error_code ec;
    if (fs::exists(local("f.bin.part"), ec) && fs::file_size(local("f.bin.part"), ec) == 200000)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(pid, SIGINT);
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  const std::string err = drain(err_pipe[0]);
  ::close(err_pipe[0]);
  EXPECT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGINT) << err;
  EXPECT_EQ(fs::file_size(local("f.bin.part")), 200000u);
  EXPECT_FALSE(fs::exists(local("f.bin")));
  EXPECT_NE(err.find("opclient download --continue f f.bin"), std::string::npos) << err;
}

TEST_F(OpclientTest, VerboseTracesFrameHeadersWithoutSecrets) {
  CliRun r = alice({"-v", "ls"});
  EXPECT_EXIT_STATUS(r, 0);
  EXPECT_NE(r.err.find("< {\"type\":\"challenge\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("> {\"type\":\"auth\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\"cnonce\":\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("< {\"type\":\"welcome\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("> {\"id\":1,\"operate\":\"list\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\"proof\":\"<redacted>\""), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(*alice_key_), std::string::npos);
  // Only redacted proofs: no 64-hex proof value anywhere after "proof".
  EXPECT_FALSE(std::regex_search(r.err, std::regex("\"proof\":\"[0-9a-f]{64}\""))) << r.err;

  // A key in a result (rekey) is redacted too; the new key still reaches stdout.
  EXPECT_EQ(admin({"register", "vera", "--key-file-out", local("vera.key").string()}).status, 0);
  CliRun rekey =
      run_opclient({{"-v", "--user", "admin", "rekey", "vera"}, admin_env(), {}, {}, work_.path()});
  EXPECT_EXIT_STATUS(rekey, 0);
  const std::string new_key = rekey.out.substr(0, rekey.out.find('\n'));
  ASSERT_FALSE(new_key.empty());
  EXPECT_EQ(rekey.err.find(new_key), std::string::npos) << rekey.err;
  EXPECT_NE(rekey.err.find("\"key\":\"<redacted>\""), std::string::npos) << rekey.err;
}

TEST_F(OpclientTest, LsHumanSizes) {
  ASSERT_EQ(alice({"upload", "-", "human/small.txt"}, std::string(500, 'a')).status, 0);
  ASSERT_EQ(alice({"upload", "-", "human/mid.bin"}, std::string(1536, 'b')).status, 0);
  ASSERT_EQ(alice({"upload", "-", "human/big.bin"}, std::string(5 * 1024 * 1024 / 2, 'c')).status,
            0);
  CliRun r = alice({"ls", "-h", "human"});
  EXPECT_EXIT_STATUS(r, 0);
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\b500 .*small\.txt)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(1\.5K .*mid\.bin)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(2\.5M .*big\.bin)"))) << r.out;
  CliRun plain = alice({"ls", "human"});
  EXPECT_NE(plain.out.find("2621440"), std::string::npos) << plain.out;
  CliRun help = alice({"ls", "--help"});
  EXPECT_EXIT_STATUS(help, 0);
  EXPECT_NE(help.out.find("--human-readable"), std::string::npos);
}

// A listener that accepts and then says nothing, or speaks another protocol.
TEST_F(OpclientTest, NotAnOpserverFailsFastAndSaysSo) {
  {
    FakeServer silent([](int fd) {
      pollfd pfd{fd, POLLIN, 0};
      ::poll(&pfd, 1, 15000);  // say nothing until the client gives up
    });
    const auto start = std::chrono::steady_clock::now();
    CliRun r = run_opclient({{"--timeout", "2", "ls"}, fake_env(silent)});
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EXIT_STATUS(r, 5);
    EXPECT_NE(r.err.find("no OPS/1 challenge: is this an opserver?"), std::string::npos) << r.err;
    EXPECT_LT(took, std::chrono::seconds(6));
  }
  {
    FakeServer ssh([](int fd) {
      send_all(fd, "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
      pollfd pfd{fd, POLLIN, 0};
      ::poll(&pfd, 1, 15000);
    });
    const auto start = std::chrono::steady_clock::now();
    CliRun r = run_opclient({{"ls"}, fake_env(ssh)});  // the default 60 s --timeout
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EXIT_STATUS(r, 5);
    EXPECT_NE(r.err.find("no OPS/1 challenge: is this an opserver?"), std::string::npos) << r.err;
    EXPECT_LT(took, std::chrono::seconds(3));
  }
  {
    // Silence with the default 60 s --timeout: given up after 10 s, not 60.
    FakeServer silent([](int fd) {
      pollfd pfd{fd, POLLIN, 0};
      ::poll(&pfd, 1, 20000);
    });
    const auto start = std::chrono::steady_clock::now();
    CliRun r = run_opclient({{"ls"}, fake_env(silent)});
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EXIT_STATUS(r, 5);
    EXPECT_NE(r.err.find("no OPS/1 challenge: is this an opserver?"), std::string::npos) << r.err;
    EXPECT_GE(took, std::chrono::seconds(9));
    EXPECT_LT(took, std::chrono::seconds(14));
  }
}

TEST_F(OpclientTest, RecursiveUploadAndDownloadOfATree) {
  fs::create_directories(local("tree/a/b"));
  fs::create_directories(local("tree/empty"));
  fs::create_directories(local("tree/a/empty2"));
  std::map<std::string, std::string> contents;
  std::mt19937 rng(23);
  for (int i = 0; i < 30; ++i) {  // more files than requests in flight
    const std::string name = (i % 3 == 0   ? "a/b/"
                              : i % 3 == 1 ? "a/"
                                           : "") +
                             std::string("f") + std::to_string(i) + ".bin";
    std::string data(static_cast<std::size_t>(rng() % 70000), '\0');
    for (auto& c : data) c = static_cast<char>(rng());
    write_file(local("tree/" + name), data);
    contents[name] = data;
  }
  std::uint64_t total = 0;
  for (const auto& [name, data] : contents) total += data.size();

  CliRun up = alice({"upload", "-r", "tree", "rtree/up"});
  EXPECT_EXIT_STATUS(up, 0);
  auto summary = json(up.out);
  EXPECT_EQ(summary["files"].GetUint64(), 30u);
  EXPECT_EQ(summary["bytes"].GetUint64(), total);
  const fs::path stored = server_->storage_dir() / "alice" / "rtree" / "up";
  for (const auto& [name, data] : contents) EXPECT_TRUE(read_file(stored / name) == data) << name;
  EXPECT_TRUE(fs::is_directory(stored / "empty"));
  EXPECT_TRUE(fs::is_directory(stored / "a" / "empty2"));

  // Again without --overwrite: the server refuses each file, and says which.
  CliRun again = alice({"upload", "-r", "tree", "rtree/up"});
  EXPECT_EXIT_STATUS(again, 18);
  EXPECT_NE(again.err.find("rtree/up/"), std::string::npos) << again.err;
  EXPECT_EXIT_STATUS(alice({"upload", "-r", "tree", "rtree/up", "--overwrite"}), 0);

  // Down again, into a new directory, through a listing paged by the server.
  CliRun down = alice({"download", "-r", "rtree/up/", "copy"});
  EXPECT_EXIT_STATUS(down, 0);
  EXPECT_EQ(json(down.out)["bytes"].GetUint64(), total);
  for (const auto& [name, data] : contents) {
    EXPECT_TRUE(read_file(local("copy/" + name)) == data) << name;
    EXPECT_FALSE(fs::exists(local("copy/" + name + ".part")));
  }
  EXPECT_TRUE(fs::is_directory(local("copy/empty")));
  EXPECT_TRUE(fs::is_directory(local("copy/a/empty2")));

  // An existing local file is not replaced without --force; nothing is written.
  write_file(local("copy/a/f1.bin"), "mine");
  CliRun refused = alice({"download", "-r", "rtree/up", "copy"});
  EXPECT_EXIT_STATUS(refused, 18);
  EXPECT_EQ(read_file(local("copy/a/f1.bin")), "mine");
  EXPECT_EXIT_STATUS(alice({"download", "-r", "rtree/up", "copy", "--force"}), 0);
  EXPECT_TRUE(read_file(local("copy/a/f1.bin")) == contents["a/f1.bin"]);

  EXPECT_EXIT_STATUS(alice({"upload", "-r", "tree/a/f1.bin", "x"}), 2);  // not a directory
}

TEST(OpclientPagedListing, DownloadRecursiveFollowsPages) {
  // A server whose list pages hold 2 entries: download -r must follow "next".
  ServerOptions options;
  options.ops_json = ops_json_with("", R"(, "settings": {"max_list_entries": 2})");
  ServerProcess server(options);
  TempDir keys, work;
  const std::string key = server.add_user("pat");
  write_file(keys.path() / "pat.key", key + "\n", 0600);
  std::map<std::string, std::string> env{
      {"OPS_SERVER", "127.0.0.1:" + std::to_string(server.port())},
      {"OPS_USER", "pat"},
      {"OPS_KEY_FILE", (keys.path() / "pat.key").string()}};
  auto numbered = [](const char* prefix, int n) {
    std::string text = prefix;
    text += std::to_string(n);
    return text;
  };
  for (int i = 0; i < 7; ++i) {
    const std::string remote = numbered("p/d", i % 2) + numbered("/f", i);
    ASSERT_EQ(
        run_opclient({{"upload", "-", remote}, env, numbered("data", i), {}, work.path()}).status,
        0);
  }
  CliRun down = run_opclient({{"download", "-r", "p", "out"}, env, {}, {}, work.path()});
  EXPECT_EXIT_STATUS(down, 0);
  EXPECT_EQ(json(down.out)["files"].GetUint64(), 7u);
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(read_file(work.path() / "out" / numbered("d", i % 2) / numbered("f", i)),
              numbered("data", i));
  }
}

}  // namespace
}  // namespace ops::test
