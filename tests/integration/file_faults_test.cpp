// Injected failures of the Nth rename(2)/renameat2 and of the Nth fsync during upload,
// move, remove and mkdir (OPS/1 §5, §10; reliability.md §3.6), through the LD_PRELOAD
// fault shim re-armed between requests. For every N that the operation reaches, the
// operation answers an error with a documented code, the user's tree is either as before
// or as after a complete success (never something in between), no temporary file is
// left, `usage` still equals what is on disk, and the same request sent again succeeds
// (or, where the first one had already taken full effect, reports that state).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "fault_util.hpp"
#include "file_ops_util.hpp"
#include "harness/server_process.hpp"
#include "ops_test_util.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;
using namespace fileops;

const std::string kBody = round_body(7, 70000);
const std::string kOld = round_body(8, 1234);

struct Scenario {
  const char* name;
  // Makes the state before the request, in the directory `d` (a path of the user's).
  std::function<void(client::Client&, const std::string& d)> setup;
  std::function<Outcome(client::Client&, const std::string& d)> request;
  // Codes a repeated request may answer when the first one had already taken full effect.
  std::vector<std::string> done_codes;
};

std::vector<Scenario> scenarios() {
  auto up = [](client::Client& c, const std::string& p, const std::string& body) {
    ASSERT_TRUE(upload(c, p, body, ",\"overwrite\":true").ok) << p;
  };
  auto mk = [](client::Client& c, const std::string& p) { ASSERT_TRUE(mkdir_op(c, p).ok) << p; };
  return {
      {"upload with new parents",
       [=](auto& c, auto& d) { mk(c, d); },
       [](auto& c, auto& d) { return upload(c, d + "/a/b/f", kBody, ",\"overwrite\":true"); },
       {}},
      {"upload replacing a file",
       [=](auto& c, auto& d) { up(c, d + "/f", kOld); },
       [](auto& c, auto& d) { return upload(c, d + "/f", kBody, ",\"overwrite\":true"); },
       {}},
      {"move with new parents",
       [=](auto& c, auto& d) { up(c, d + "/src", kBody); },
       [](auto& c, auto& d) { return move_op(c, d + "/src", d + "/x/y/dst"); },
       {"not_found"}},
      {"move replacing a file",
       [=](auto& c, auto& d) {
         up(c, d + "/src", kBody);
         up(c, d + "/dst", kOld);
       },
       [](auto& c, auto& d) { return move_op(c, d + "/src", d + "/dst", true); },
       {"not_found"}},
      {"move of a directory",
       [=](auto& c, auto& d) {
         up(c, d + "/dir/f", kBody);
         up(c, d + "/dir/g", kOld);
       },
       [](auto& c, auto& d) { return move_op(c, d + "/dir", d + "/dir2"); },
       {"not_found"}},
      {"remove of a file",
       [=](auto& c, auto& d) { up(c, d + "/f", kBody); },
       [](auto& c, auto& d) { return remove_op(c, d + "/f"); },
       {"not_found"}},
      {"recursive remove",
       [=](auto& c, auto& d) {
         up(c, d + "/t/a", kBody);
         up(c, d + "/t/b/c", kOld);
         mk(c, d + "/t/e");
       },
       [](auto& c, auto& d) { return remove_op(c, d + "/t", true); },
       {"not_found"}},
      {"mkdir with parents",
       [=](auto& c, auto& d) { mk(c, d); },
       [](auto& c, auto& d) { return mkdir_op(c, d + "/a/b/c"); },
       {}},
  };
}

class FileFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions o;
    o.ops_json = file_ops_json(OPS_PLUGIN_DIR);
    o.env = {{"LD_PRELOAD", OPS_FAULT_SHIM},
             {"OPS_FAULT_CONTROL", control().string()},
             {"OPS_FAULT_LOG", log().string()}};
    const char* asan = std::getenv("ASAN_OPTIONS");
    o.env.emplace_back("ASAN_OPTIONS", std::string(asan ? asan : "") + ":verify_asan_link_order=0");
    server_ = std::make_unique<ServerProcess>(o);
    key_ = server_->add_user("fay");
    c_ = server_->connect("fay", key_);
    ASSERT_TRUE(c_);
  }
  void TearDown() override {
    if (server_) {
      EXPECT_TRUE(server_->running()) << server_->log();
    }
  }
  fs::path control() const { return work_.path() / "control"; }
  fs::path log() const { return work_.path() / "log"; }
  fs::path home() const { return server_->storage_dir() / "fay"; }

  // Every N from 1 until the Nth call of `kind` is no longer reached.
  void run_all(const std::string& kind) {
    int fired_total = 0;
    int serial = 0;
    for (const Scenario& s : scenarios()) {
      SCOPED_TRACE(std::string(s.name) + ", failing " + kind);
      // The state a complete success leaves, from a run without faults.
      const std::string ref = "ref" + std::to_string(serial++);
      s.setup(*c_, ref);
      if (HasFatalFailure()) return;
      const Outcome clean = s.request(*c_, ref);
      ASSERT_TRUE(clean.ok) << clean.code << ": " << clean.message;
      const std::string done = tree_fingerprint(home() / ref);
      int fired = 0;
      for (int n = 1; n <= 30; ++n) {
        SCOPED_TRACE("call " + std::to_string(n));
        const std::string d = "run" + std::to_string(serial++);
        s.setup(*c_, d);
        if (HasFatalFailure()) return;
        const std::string before = tree_fingerprint(home() / d);
        fs::remove(log());
        write_file(control(), kind + ":" + std::to_string(n) + ":EIO");
        const Outcome failed = s.request(*c_, d);
        fs::remove(control());
        ASSERT_FALSE(failed.transport_failed) << failed.message;
        const bool hit = fs::exists(log());
        if (!hit) {
          // The operation makes fewer than n such calls: it must simply succeed.
          EXPECT_TRUE(failed.ok) << failed.code << ": " << failed.message;
          EXPECT_EQ(tree_fingerprint(home() / d), done);
          EXPECT_EQ(usage_reported(*c_), usage_on_disk(home()));
          break;
        }
        ++fired;
        EXPECT_FALSE(failed.ok) << "the " << n << "th " << kind << " failed, yet ok";
        EXPECT_TRUE(is_documented_code(failed.code)) << failed.code;
        EXPECT_EQ(failed.message.find(server_->storage_dir().string()), std::string::npos)
            << "a host path in: " << failed.message;
        const std::string after = tree_fingerprint(home() / d);
        const bool took_effect = after == done;
        EXPECT_TRUE(after == before || took_effect) << "half done; before:\n"
                                                    << before << "after:\n"
                                                    << after << "complete:\n"
                                                    << done;
        EXPECT_TRUE(eventually([&] { return scratch_empty(*server_); }, 2s));
        EXPECT_EQ(usage_reported(*c_), usage_on_disk(home()));
        // The same request again, without a fault.
        const Outcome again = s.request(*c_, d);
        if (!again.ok) {
          bool allowed = false;
          for (const auto& code : s.done_codes)
            allowed = allowed || (took_effect && again.code == code);
          EXPECT_TRUE(allowed) << "retry: " << again.code << ": " << again.message;
        }
        EXPECT_EQ(tree_fingerprint(home() / d), done);
        EXPECT_EQ(usage_reported(*c_), usage_on_disk(home()));
      }
      std::printf("[ figures  ] %s: %d %s calls failed in turn\n", s.name, fired, kind.c_str());
      fired_total += fired;
    }
    EXPECT_GT(fired_total, 0) << "no " << kind << " was ever reached";
  }

  TempDir work_;
  std::unique_ptr<ServerProcess> server_;
  std::string key_;
  std::unique_ptr<client::Client> c_;
};

TEST_F(FileFaults, EveryRenameFailingInTurnLeavesBeforeOrAfterAndExactUsage) {
  run_all("rename");
}

TEST_F(FileFaults, EveryFsyncFailingInTurnLeavesBeforeOrAfterAndExactUsage) {
  run_all("fsync");
}

}  // namespace
}  // namespace ops::test
