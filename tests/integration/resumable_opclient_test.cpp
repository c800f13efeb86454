// opclient upload over the resumable operations (OPS/1 §11): a file over the threshold goes
// resumable by itself, a Ctrl-C leaves the upload open and says how to resume, and
// `--resume` continues from the server's offset to the same file as a plain upload.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/proof.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;

std::string resumable_ops_json() {
  return with_resumable_ops(default_ops_json(OPS_PLUGIN_DIR));
}

class ResumableOpclient : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(ServerOptions{resumable_ops_json(), ""});
    key_file_ = dir_.path() / "vera.key";
    write_file(key_file_, server_->add_user("vera") + "\n");
  }

  std::vector<std::string> argv(std::vector<std::string> extra) const {
    std::vector<std::string> out{
        OPS_CLIENT_BIN,     "--server", "127.0.0.1:" + std::to_string(server_->port()),
        "--user",           "vera",     "--key-file",
        key_file_.string(), "--quiet"};
    out.insert(out.end(), extra.begin(), extra.end());
    return out;
  }
  fs::path uploads_dir() const { return server_->storage_dir() / ".ops-tmp" / "uploads" / "vera"; }
  // Bytes in the one open partial, -1 when there is none.
  std::int64_t partial_bytes() const {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(uploads_dir(), ec)) {
      if (e.path().extension() == ".part") {
        struct stat st {};
        if (::stat(e.path().c_str(), &st) == 0) return st.st_size;
      }
    }
    return -1;
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  fs::path key_file_;
};

TEST_F(ResumableOpclient, LargeFileGoesResumableAndArrivesWhole) {
  const std::string body = pattern_bytes(5 * 1024 * 1024 + 123, 1);
  write_file(dir_.path() / "in.bin", body);
  RunResult r = run_program(argv({"upload", (dir_.path() / "in.bin").string(), "big/in.bin",
                                  "--resumable-threshold", "1M", "--chunk", "512K"}));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_file(server_->storage_dir() / "vera" / "big" / "in.bin"), body);
  // It went through the resumable operations: their directory exists and is empty now.
  ASSERT_TRUE(fs::exists(uploads_dir())) << "not uploaded resumably";
  EXPECT_TRUE(fs::is_empty(uploads_dir()));
  // A small file still goes in one upload (no resumable state is created for it).
  fs::remove_all(server_->storage_dir() / ".ops-tmp" / "uploads");
  write_file(dir_.path() / "small.txt", "small");
  r = run_program(argv({"upload", (dir_.path() / "small.txt").string(), "small.txt"}));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(fs::exists(uploads_dir()));
  EXPECT_EQ(read_file(server_->storage_dir() / "vera" / "small.txt"), "small");
}

TEST_F(ResumableOpclient, InterruptedUploadResumesFromTheServersOffset) {
  const std::string body = pattern_bytes(24 * 1024 * 1024 + 7, 2);
  const fs::path local = dir_.path() / "disk.img";
  write_file(local, body);
  const fs::path err_path = dir_.path() / "stderr.txt";
  std::vector<std::string> args = argv({"upload", local.string(), "images/disk.img",
                                        "--resumable-threshold", "1M", "--chunk", "256K"});
  args.erase(std::find(args.begin(), args.end(), "--quiet"));
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 2);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    std::vector<char*> raw;
    for (auto& a : args) raw.push_back(a.data());
    raw.push_back(nullptr);
    ::execv(raw[0], raw.data());
    ::_exit(127);
  }
  ASSERT_GT(pid, 0);
  // Once some appends are durable, freeze the server so the client is surely mid-upload,
  // then Ctrl-C the client.
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (partial_bytes() < 512 * 1024 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_GE(partial_bytes(), 512 * 1024) << read_file(err_path);
  ::kill(server_->pid(), SIGSTOP);
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::kill(server_->pid(), SIGCONT);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT) << status;
  const std::string err = read_file(err_path);
  EXPECT_NE(err.find("opclient upload --resume"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(server_->storage_dir() / "vera" / "images" / "disk.img"));
  const std::int64_t kept = partial_bytes();
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, static_cast<std::int64_t>(body.size()));

  RunResult r =
      run_program(argv({"upload", "--resume", local.string(), "images/disk.img", "--chunk", "1M"}));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_file(server_->storage_dir() / "vera" / "images" / "disk.img"), body);
  EXPECT_EQ(partial_bytes(), -1);
  // Nothing left to resume: not_found, exit 17.
  r = run_program(argv({"upload", "--resume", local.string(), "images/disk.img"}));
  EXPECT_EQ(r.status, 17) << r.output;
}

TEST_F(ResumableOpclient, ResumeWithAnotherFileIsRefused) {
  const std::string body = pattern_bytes(2 * 1024 * 1024, 3);
  write_file(dir_.path() / "a.bin", body);
  auto c = server_->connect("vera", read_file(key_file_).substr(0, 64));
  ASSERT_TRUE(c);
  Outcome opened = call_op(*c, "upload_open",
                           "{\"path\":\"a.bin\",\"size\":" + std::to_string(body.size()) + "}");
  ASSERT_TRUE(opened.ok) << opened.message;
  // A file of another size: refused before anything is sent.
  write_file(dir_.path() / "b.bin", body.substr(1));
  RunResult r =
      run_program(argv({"upload", "--resume", (dir_.path() / "b.bin").string(), "a.bin"}));
  EXPECT_EQ(r.status, 2) << r.output;
  // The right one completes it.
  r = run_program(argv({"upload", "--resume", (dir_.path() / "a.bin").string(), "a.bin"}));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_file(server_->storage_dir() / "vera" / "a.bin"), body);
}

TEST_F(ResumableOpclient, ErrorDetailsArePrintedOnTheirOwnLine) {
  auto c = server_->connect("vera", read_file(key_file_).substr(0, 64));
  ASSERT_TRUE(c);
  Outcome opened = call_op(*c, "upload_open", R"({"path":"d.bin"})");
  ASSERT_TRUE(opened.ok) << opened.message;
  const std::string id = opened.result()["upload"].GetString();
  ASSERT_TRUE(call_op(*c, "upload_append", "{\"upload\":\"" + id + "\",\"offset\":0}", "abc").ok);
  // --args, not -a: an id of digits only would be taken for a number.
  RunResult r = run_program(
      argv({"call", "upload_append", "--args", "{\"upload\":\"" + id + "\",\"offset\":1}"}));
  EXPECT_EQ(r.status, 19) << r.output;  // 10 + conflict
  EXPECT_NE(r.output.find("opclient: conflict: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("opclient: details: {\"offset\":3}"), std::string::npos) << r.output;
}

TEST_F(ResumableOpclient, WithoutTheResumableOperationsItFallsBackToOneUpload) {
  ServerProcess plain(ServerOptions{});  // the four standard operations only
  const fs::path key = dir_.path() / "admin.key";
  write_file(key, plain.admin_key() + "\n");
  const std::string body = pattern_bytes(3 * 1024 * 1024, 4);
  write_file(dir_.path() / "f.bin", body);
  RunResult r =
      run_program({OPS_CLIENT_BIN, "--server", "127.0.0.1:" + std::to_string(plain.port()),
                   "--user", "admin", "--key-file", key.string(), "upload",
                   (dir_.path() / "f.bin").string(), "f.bin", "--resumable-threshold", "1M"});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("does not offer resumable uploads"), std::string::npos) << r.output;
  EXPECT_EQ(read_file(plain.storage_dir() / "admin" / "f.bin"), body);
}

}  // namespace
}  // namespace ops::test
