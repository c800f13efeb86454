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
#include "opserver/testing/fake_host.hpp"
#include "syscall_failure.hpp"

namespace {

namespace fs = std::filesystem;

// The SDK's fake host; without details, one that predates fail_details (its struct ends
// before that member, and whatever lies past the end must not be called).
ops_host_v1 make_host(bool with_details) {
  ops_host_v1 host = *ops::testing::fake_host();
  if (!with_details) host.struct_size = static_cast<uint32_t>(offsetof(ops_host_v1, fail_details));
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
  ops_call run(const ops_host_v1& host, const std::string& name, const std::string& args,
               const std::string& payload = "") {
    ops_call call;
    call.user_dir = user_;
    call.scratch = scratch_;
    call.payload = payload;
    const ops_op_v1* o = op(name);
    if (o == nullptr) return call;
    int rc = ops::testing::invoke(*o, call, args, &host);
    EXPECT_EQ(rc, call.code);
    return call;
  }
  std::string open_upload(const ops_host_v1& host) {
    ops_call opened = run(host, "upload_open", R"({"path":"a.bin"})");
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
  ops_call appended = run(host, "upload_append", R"({"upload":")" + id + R"(","offset":0})", "abc");
  EXPECT_EQ(appended.code, OPS_OK) << appended.message;
  ops_call conflict = run(host, "upload_append", R"({"upload":")" + id + R"(","offset":0})", "x");
  EXPECT_EQ(conflict.code, OPS_CONFLICT);
  EXPECT_TRUE(conflict.details.empty());
  EXPECT_NE(conflict.message.find("offset 3"), std::string::npos) << conflict.message;
}

TEST_F(ResumablePluginDirect, CurrentHostGetsDetails) {
  const ops_host_v1 host = make_host(true);
  const std::string id = open_upload(host);
  run(host, "upload_append", R"({"upload":")" + id + R"(","offset":0})", "abcd");
  ops_call conflict = run(host, "upload_append", R"({"upload":")" + id + R"(","offset":1})", "x");
  EXPECT_EQ(conflict.code, OPS_CONFLICT);
  EXPECT_FALSE(conflict.details.empty());
  EXPECT_EQ(conflict.details, R"({"offset":4})");
  // Errors without details still go through plain fail().
  ops_call missing = run(host, "upload_status", R"({"upload":"nope"})");
  EXPECT_EQ(missing.code, OPS_NOT_FOUND);
  EXPECT_TRUE(missing.details.empty());
}

using ops::test::run_without_rename_noreplace;

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
