// Quotas across the operations that add or take away bytes and files (OPS/1 §10, §11):
// remove and move give room back, and resumable uploads hold their declared size (an open
// upload counts as a file) until they are committed or aborted.
#include <gtest/gtest.h>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"

namespace ops::test {
namespace {

std::string all_ops_json() {
  return with_resumable_ops(file_ops_json(OPS_PLUGIN_DIR));
}

class QuotaEverywhere : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions o;
    o.ops_json = all_ops_json();
    server_ = std::make_unique<ServerProcess>(std::move(o));
    admin_ = server_->connect_admin();
    ASSERT_TRUE(admin_);
  }
  std::int64_t usage(const char* member) {
    auto u = call_op(*admin_, "usage", "{}");
    EXPECT_TRUE(u.ok) << u.code << " " << u.message;
    rapidjson::Document d = u.result();
    return d[member].IsNull() ? -1 : d[member].GetInt64();
  }
  void quota(const std::string& members) {
    auto q = call_op(*admin_, "set_quota", "{\"user\":\"admin\"" + members + "}");
    ASSERT_TRUE(q.ok) << q.code << " " << q.message;
  }
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::Client> admin_;
};

TEST_F(QuotaEverywhere, RemoveAndMoveOverwriteGiveRoomBack) {
  quota(R"(,"bytes":1500,"files":3)");
  ASSERT_TRUE(upload(*admin_, "a.bin", std::string(1000, 'a')).ok);
  EXPECT_EQ(upload(*admin_, "b.bin", std::string(1000, 'b')).code, "quota_exceeded");
  ASSERT_TRUE(call_op(*admin_, "remove", R"({"path":"a.bin"})").ok);
  EXPECT_EQ(usage("bytes"), 0);
  EXPECT_EQ(usage("files"), 0);
  ASSERT_TRUE(upload(*admin_, "d/b.bin", std::string(1000, 'b')).ok);
  ASSERT_TRUE(upload(*admin_, "d/c.bin", std::string(400, 'c')).ok);
  // A recursive remove gives back every file of the tree.
  ASSERT_TRUE(call_op(*admin_, "remove", R"({"path":"d","recursive":true})").ok);
  EXPECT_EQ(usage("bytes"), 0);
  EXPECT_EQ(usage("files"), 0);
  // A move that replaces a file drops the replaced one from the usage.
  ASSERT_TRUE(upload(*admin_, "x.bin", std::string(700, 'x')).ok);
  ASSERT_TRUE(upload(*admin_, "y.bin", std::string(300, 'y')).ok);
  ASSERT_TRUE(call_op(*admin_, "move", R"({"from":"y.bin","to":"x.bin","overwrite":true})").ok);
  EXPECT_EQ(usage("bytes"), 300);
  EXPECT_EQ(usage("files"), 1);
}

TEST_F(QuotaEverywhere, ResumableUploadsHoldTheirDeclaredSizeUntilCommitOrAbort) {
  quota(R"(,"bytes":1000,"files":5)");
  auto too_big = call_op(*admin_, "upload_open", R"({"path":"big.bin","size":2000})");
  EXPECT_EQ(too_big.code, "quota_exceeded");
  auto open = call_op(*admin_, "upload_open", R"({"path":"r.bin","size":800})");
  ASSERT_TRUE(open.ok) << open.code << " " << open.message;
  const std::string id = open.result()["upload"].GetString();
  EXPECT_EQ(usage("reserved_bytes"), 800);
  // The held room counts: a plain upload that would pass the quota with it is refused.
  EXPECT_EQ(upload(*admin_, "p.bin", std::string(300, 'p')).code, "quota_exceeded");
  ASSERT_TRUE(call_op(*admin_, "upload_abort", "{\"upload\":\"" + id + "\"}").ok);
  EXPECT_EQ(usage("reserved_bytes"), 0);
  ASSERT_TRUE(upload(*admin_, "p.bin", std::string(300, 'p')).ok);

  open = call_op(*admin_, "upload_open", R"({"path":"r.bin","size":500})");
  ASSERT_TRUE(open.ok) << open.code << " " << open.message;
  const std::string id2 = open.result()["upload"].GetString();
  auto appended = call_op(*admin_, "upload_append", "{\"upload\":\"" + id2 + "\",\"offset\":0}",
                          std::string(500, 'r'));
  ASSERT_TRUE(appended.ok) << appended.code << " " << appended.message;
  auto committed = call_op(*admin_, "upload_commit", "{\"upload\":\"" + id2 + "\"}");
  ASSERT_TRUE(committed.ok) << committed.code << " " << committed.message;
  EXPECT_EQ(usage("reserved_bytes"), 0);
  EXPECT_EQ(usage("bytes"), 800);
  EXPECT_EQ(usage("files"), 2);
}

TEST_F(QuotaEverywhere, AnUndeclaredResumableUploadReservesEachAppend) {
  quota(R"(,"bytes":1000)");
  auto open = call_op(*admin_, "upload_open", R"({"path":"u.bin"})");
  ASSERT_TRUE(open.ok) << open.code << " " << open.message;
  const std::string id = open.result()["upload"].GetString();
  auto first = call_op(*admin_, "upload_append", "{\"upload\":\"" + id + "\",\"offset\":0}",
                       std::string(600, 'u'));
  ASSERT_TRUE(first.ok) << first.code << " " << first.message;
  EXPECT_EQ(usage("reserved_bytes"), 600);
  auto second = call_op(*admin_, "upload_append", "{\"upload\":\"" + id + "\",\"offset\":600}",
                        std::string(600, 'u'));
  EXPECT_EQ(second.code, "quota_exceeded");
  auto committed = call_op(*admin_, "upload_commit", "{\"upload\":\"" + id + "\"}");
  ASSERT_TRUE(committed.ok) << committed.code << " " << committed.message;
  EXPECT_EQ(usage("bytes"), 600);
  EXPECT_EQ(usage("reserved_bytes"), 0);
}

}  // namespace
}  // namespace ops::test
