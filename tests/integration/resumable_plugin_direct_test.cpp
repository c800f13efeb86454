// The upload_resumable plugin driven directly through fake hosts: with a host that predates
// ops_host_v1::fail_details (its struct_size ends before it) a conflict still arrives as
// `conflict` through fail(); with a current host it arrives through fail_details with the
// §9 details object.
#include <dlfcn.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <rapidjson/document.h>
#include <stdio.h>  // renameat2
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "opserver/plugin_abi.h"

namespace {

namespace fs = std::filesystem;

// What the fake host records; handed to the plugin as an opaque ops_call*.
struct FakeCall {
  std::string user = "alice";
  int user_dir = -1;
  int scratch = -1;
  std::string payload;
  std::size_t pos = 0;
  std::string result;
  int code = 0;
  std::string message;
  std::string details;
  bool used_fail_details = false;
};

FakeCall& fake(ops_call* c) {
  return *reinterpret_cast<FakeCall*>(c);
}

const char* h_user(ops_call* c) {
  return fake(c).user.c_str();
}
int h_user_dir(ops_call* c) {
  return fake(c).user_dir;
}
int h_scratch(ops_call* c) {
  return fake(c).scratch;
}
const char* h_settings(ops_call*) {
  return "{}";
}
uint64_t h_payload_size(ops_call* c) {
  return fake(c).payload.size();
}
int64_t h_read(ops_call* c, void* buf, size_t cap) {
  FakeCall& f = fake(c);
  std::size_t n = std::min(cap, f.payload.size() - f.pos);
  std::memcpy(buf, f.payload.data() + f.pos, n);
  f.pos += n;
  return static_cast<int64_t>(n);
}
int h_send_result(ops_call* c, const char* json, size_t len, uint64_t) {
  fake(c).result.assign(json, len);
  return 0;
}
int h_write(ops_call*, const void*, size_t) {
  return -1;
}
int h_send_file(ops_call*, int, uint64_t, uint64_t) {
  return -1;
}
void h_fail(ops_call* c, int code, const char* msg) {
  fake(c).code = code;
  fake(c).message = msg;
}
void h_log(ops_call*, int, const char*) {}
int h_create_user(ops_call*, const char*, const char*) {
  return OPS_INTERNAL;
}
void h_fail_details(ops_call* c, int code, const char* msg, const char* details) {
  h_fail(c, code, msg);
  fake(c).details = details;
  fake(c).used_fail_details = true;
}

ops_host_v1 make_host(bool with_details) {
  ops_host_v1 host = {sizeof(ops_host_v1),
                      h_user,
                      h_user_dir,
                      h_scratch,
                      h_settings,
                      h_payload_size,
                      h_read,
                      h_send_result,
                      h_write,
                      h_send_file,
                      h_fail,
                      h_log,
                      h_create_user,
                      h_fail_details};
  if (!with_details) {
    // A host built before fail_details: its struct ends before that member, and whatever
    // lies past the end must not be called.
    host.struct_size = static_cast<uint32_t>(offsetof(ops_host_v1, fail_details));
  }
  return host;
}

class ResumablePluginDirect : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ops-resumable-direct-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    fs::create_directories(base_ / "alice");
    fs::create_directories(base_ / ".ops-tmp");
    user_ = ::open((base_ / "alice").c_str(), O_RDONLY | O_DIRECTORY);
    scratch_ = ::open((base_ / ".ops-tmp").c_str(), O_RDONLY | O_DIRECTORY);
    std::string path = std::string(OPS_PLUGIN_DIR) + "/libupload_resumable.so";
    handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(handle_, nullptr) << dlerror();
    auto entry = reinterpret_cast<ops_plugin_entry_fn>(::dlsym(handle_, "ops_plugin_entry"));
    ASSERT_NE(entry, nullptr);
    plugin_ = entry();
  }
  void TearDown() override {
    ::close(user_);
    ::close(scratch_);
    fs::remove_all(base_);
  }
  const ops_op_v1* op(const std::string& name) const {
    for (std::size_t i = 0; i < plugin_->op_count; ++i) {
      if (name == plugin_->ops[i].name) return &plugin_->ops[i];
    }
    ADD_FAILURE() << "no operation " << name;
    return nullptr;
  }
  FakeCall run(const ops_host_v1& host, const std::string& name, const std::string& args,
               const std::string& payload = "") {
    FakeCall call;
    call.user_dir = user_;
    call.scratch = scratch_;
    call.payload = payload;
    const ops_op_v1* o = op(name);
    if (o == nullptr) return call;
    int rc = o->call(&host, reinterpret_cast<ops_call*>(&call), args.data(), args.size());
    EXPECT_EQ(rc, call.code);
    return call;
  }
  std::string open_upload(const ops_host_v1& host) {
    FakeCall opened = run(host, "upload_open", R"({"path":"a.bin"})");
    rapidjson::Document d;
    d.Parse(opened.result.c_str());
    EXPECT_TRUE(d.IsObject() && d.HasMember("upload")) << opened.result << opened.message;
    return d.IsObject() && d.HasMember("upload") ? d["upload"].GetString() : "";
  }

  fs::path base_;
  int user_ = -1;
  int scratch_ = -1;
  void* handle_ = nullptr;
  const ops_plugin_v1* plugin_ = nullptr;
};

TEST_F(ResumablePluginDirect, OldHostGetsTheCodeWithoutDetails) {
  const ops_host_v1 host = make_host(false);
  const std::string id = open_upload(host);
  FakeCall appended = run(host, "upload_append", R"({"upload":")" + id + R"(","offset":0})", "abc");
  EXPECT_EQ(appended.code, OPS_OK) << appended.message;
  FakeCall conflict = run(host, "upload_append", R"({"upload":")" + id + R"(","offset":0})", "x");
  EXPECT_EQ(conflict.code, OPS_CONFLICT);
  EXPECT_FALSE(conflict.used_fail_details);
  EXPECT_NE(conflict.message.find("offset 3"), std::string::npos) << conflict.message;
}

TEST_F(ResumablePluginDirect, CurrentHostGetsDetails) {
  const ops_host_v1 host = make_host(true);
  const std::string id = open_upload(host);
  run(host, "upload_append", R"({"upload":")" + id + R"(","offset":0})", "abcd");
  FakeCall conflict = run(host, "upload_append", R"({"upload":")" + id + R"(","offset":1})", "x");
  EXPECT_EQ(conflict.code, OPS_CONFLICT);
  EXPECT_TRUE(conflict.used_fail_details);
  EXPECT_EQ(conflict.details, R"({"offset":4})");
  // Errors without details still go through plain fail().
  FakeCall missing = run(host, "upload_status", R"({"upload":"nope"})");
  EXPECT_EQ(missing.code, OPS_NOT_FOUND);
  EXPECT_FALSE(missing.used_fail_details);
}

// Runs `body` in a child process where renameat2 with flags fails with EINVAL, as on a
// filesystem without RENAME_NOREPLACE; returns the child's exit status.
int run_without_rename_noreplace(const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_renameat2, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[4])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EINVAL & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(100);
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) ::_exit(101);
    if (::renameat2(AT_FDCWD, "/nonexistent-a", AT_FDCWD, "/nonexistent-b", RENAME_NOREPLACE) !=
            -1 ||
        errno != EINVAL) {
      ::_exit(102);
    }
    ::_exit(body());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 200;
}

// Without RENAME_NOREPLACE the commit publishes with link(2) and must then remove the
// partial's name itself; an existing file is still already_exists and leaves it open.
TEST_F(ResumablePluginDirect, CommitThroughTheLinkFallback) {
  const ops_host_v1 host = make_host(true);
  int rc = run_without_rename_noreplace([&] {
    const std::string id = open_upload(host);
    if (run(host, "upload_append", R"({"upload":")" + id + R"(","offset":0})", "data").code != 0)
      return 1;
    std::ofstream(base_ / "alice" / "a.bin") << "old";
    if (run(host, "upload_commit", R"({"upload":")" + id + R"("})").code != OPS_ALREADY_EXISTS)
      return 2;
    fs::remove(base_ / "alice" / "a.bin");
    if (run(host, "upload_commit", R"({"upload":")" + id + R"("})").code != OPS_OK) return 3;
    std::ifstream in(base_ / "alice" / "a.bin");
    std::stringstream ss;
    ss << in.rdbuf();
    if (ss.str() != "data") return 4;
    if (fs::hard_link_count(base_ / "alice" / "a.bin") != 1) return 5;  // partial unlinked
    if (!fs::is_empty(base_ / ".ops-tmp" / "uploads" / "alice")) return 6;
    if (run(host, "upload_status", R"({"upload":")" + id + R"("})").code != OPS_NOT_FOUND) return 7;
    return 0;
  });
  EXPECT_EQ(rc, 0);
}

}  // namespace
