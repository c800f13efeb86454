// Two real servers on one storage directory and one users file: what a cluster is
// (docs/SCALING.md). Each has its own node_id, so its own part of the scratch area.
//  - A resumable upload continues on either server, going back and forth, including back to
//    a server whose memory of the upload is stale; commit on either checks the SHA-256 of
//    the whole file; upload_status on one server while the other runs an append reports the
//    acknowledged end (the mark), never the stale end the first server remembers.
//  - A server that starts while the other has an upload in flight does not delete that
//    upload's temporary file (it used to empty the whole shared .ops-tmp): the upload
//    succeeds.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include "fault_util.hpp"
#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/proof.hpp"
#include "scratch_util.hpp"

namespace ops::test {
namespace {

using namespace std::chrono_literals;

std::string ops_json() {
  return with_resumable_ops(default_ops_json(OPS_PLUGIN_DIR));
}

// Server B: A's storage and state directories (so A's users file) through symlinks, its
// own node_id.
ServerOptions second_server_of(const ServerProcess& a) {
  ServerOptions o{ops_json(), R"("node_id": "b", "payload_timeout_ms": 10000)"};
  const fs::path storage = a.storage_dir();
  const fs::path state = a.state_dir();
  o.prepare = [storage, state](const fs::path& root) {
    fs::remove_all(root / "storage");
    fs::remove_all(root / "state");
    fs::create_directory_symlink(storage, root / "storage");
    fs::create_directory_symlink(state, root / "state");
  };
  return o;
}

std::uint64_t offset_of(const Outcome& a) {
  const rapidjson::Document result = a.result();
  if (!a.ok || !result.IsObject() || !result.HasMember("offset")) return ~std::uint64_t{0};
  return result["offset"].GetUint64();
}

class SharedStorage : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = std::make_unique<ServerProcess>(
        ServerOptions{ops_json(), R"("node_id": "a", "payload_timeout_ms": 10000)"});
    key_ = a_->add_user("rita");  // before B starts: B reads the users file at start
  }
  void start_b() { b_ = std::make_unique<ServerProcess>(second_server_of(*a_)); }
  void TearDown() override {
    if (a_) {
      EXPECT_TRUE(a_->running()) << a_->log();
    }
    if (b_) {
      EXPECT_TRUE(b_->running()) << b_->log();
    }
  }
  fs::path uploads() const { return a_->storage_dir() / ".ops-tmp" / "uploads" / "rita"; }

  std::unique_ptr<ServerProcess> a_, b_;
  std::string key_;
};

TEST_F(SharedStorage, EachServerHasItsOwnScratchDirectory) {
  start_b();
  std::vector<std::string> names;
  for (const auto& d : node_scratch_dirs(a_->storage_dir())) {
    names.push_back(d.filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"node-a", "node-b"}));
  EXPECT_TRUE(scratch_clean(a_->storage_dir()));
}

TEST_F(SharedStorage, ResumableUploadAlternatesBetweenServers) {
  start_b();
  auto on_a = a_->connect("rita", key_);
  auto on_b = b_->connect("rita", key_);
  ASSERT_TRUE(on_a && on_b);
  const std::string body = pattern_bytes(5 * 70000 + 123, 7);
  const std::size_t cut[] = {0, 70000, 140000, 210000, 280000, body.size()};
  auto piece = [&](int i) { return std::string_view(body).substr(cut[i], cut[i + 1] - cut[i]); };
  auto append_args = [](const std::string& id, std::uint64_t offset) {
    return "{\"upload\":" + jstr(id) + ",\"offset\":" + std::to_string(offset) + "}";
  };

  Outcome opened = call_op(*on_a, "upload_open", R"({"path":"shared/big.bin"})");
  ASSERT_TRUE(opened.ok) << opened.code;
  const std::string id = opened.result()["upload"].GetString();
  // A, B, A (A's memory says 70000 and a hash of 70000 bytes: stale), B, A.
  client::Client* order[] = {on_a.get(), on_b.get(), on_a.get(), on_b.get(), on_a.get()};
  for (int i = 0; i < 5; ++i) {
    SCOPED_TRACE("piece " + std::to_string(i));
    Outcome appended = call_op(*order[i], "upload_append", append_args(id, cut[i]), piece(i));
    ASSERT_TRUE(appended.ok) << appended.code << " " << appended.details;
    EXPECT_EQ(offset_of(appended), cut[i + 1]);
    // Both servers report the acknowledged end, whichever appended.
    for (client::Client* c : {on_a.get(), on_b.get()}) {
      EXPECT_EQ(offset_of(call_op(*c, "upload_status", "{\"upload\":" + jstr(id) + "}")),
                cut[i + 1]);
    }
  }
  // An append at an end B remembers from before A's last append: refused, the true end given.
  Outcome stale = call_op(*on_b, "upload_append", append_args(id, cut[4]), "zz");
  EXPECT_EQ(stale.code, "conflict");
  EXPECT_NE(stale.details.find(std::to_string(body.size())), std::string::npos) << stale.details;

  // Commit on B (which appended last two steps ago): the whole file's sha256.
  Outcome wrong =
      call_op(*on_b, "upload_commit",
              "{\"upload\":" + jstr(id) + ",\"sha256\":" + jstr(std::string(64, '0')) + "}");
  EXPECT_EQ(wrong.code, "checksum_mismatch");
  Outcome committed =
      call_op(*on_b, "upload_commit",
              "{\"upload\":" + jstr(id) + ",\"sha256\":" + jstr(proof::sha256_hex(body)) + "}");
  ASSERT_TRUE(committed.ok) << committed.code;
  EXPECT_EQ(committed.result()["sha256"].GetString(), proof::sha256_hex(body));
  EXPECT_EQ(committed.result()["size"].GetUint64(), body.size());
  EXPECT_EQ(read_file(a_->storage_dir() / "rita" / "shared" / "big.bin"), body);
  Outcome fetched = download(*on_a, "shared/big.bin");
  EXPECT_OP_OK(fetched);
  EXPECT_EQ(fetched.payload, body);
  // The upload is gone on both.
  EXPECT_EQ(call_op(*on_a, "upload_status", "{\"upload\":" + jstr(id) + "}").code, "not_found");

  // A second upload committed on A, which appended first and then saw B append: A's running
  // hash covers only its own piece and must not be used.
  const std::string second = pattern_bytes(2 * 50000, 9);
  Outcome opened2 = call_op(*on_b, "upload_open", R"({"path":"shared/second.bin"})");
  ASSERT_TRUE(opened2.ok);
  const std::string id2 = opened2.result()["upload"].GetString();
  ASSERT_TRUE(call_op(*on_a, "upload_append", append_args(id2, 0), second.substr(0, 50000)).ok);
  ASSERT_TRUE(call_op(*on_b, "upload_append", append_args(id2, 50000), second.substr(50000)).ok);
  Outcome committed2 = call_op(*on_a, "upload_commit", "{\"upload\":" + jstr(id2) + "}");
  ASSERT_TRUE(committed2.ok) << committed2.code;
  EXPECT_EQ(committed2.result()["sha256"].GetString(), proof::sha256_hex(second));
  EXPECT_EQ(read_file(a_->storage_dir() / "rita" / "shared" / "second.bin"), second);
  // Nothing left: no temporaries, and no partial, metadata or mark of either upload.
  EXPECT_TRUE(scratch_temporaries(a_->storage_dir(), false).empty());
  EXPECT_TRUE(fs::is_empty(uploads()));
}

// upload_status on A while B runs an append: A's own memory says 70000 (it appended that
// much, then B appended more), but it must answer at least what B acknowledged.
TEST_F(SharedStorage, StatusDuringAnAppendOnTheOtherServerIsTheAcknowledgedEnd) {
  start_b();
  auto on_a = a_->connect("rita", key_);
  auto on_b = b_->connect("rita", key_);
  ASSERT_TRUE(on_a && on_b);
  Outcome opened = call_op(*on_a, "upload_open", R"({"path":"s.bin"})");
  ASSERT_TRUE(opened.ok);
  const std::string id = opened.result()["upload"].GetString();
  const std::string status_args = "{\"upload\":" + jstr(id) + "}";
  ASSERT_TRUE(call_op(*on_a, "upload_append", R"({"upload":")" + id + R"(","offset":0})",
                      std::string(70000, 'a'))
                  .ok);
  ASSERT_TRUE(call_op(*on_b, "upload_append", R"({"upload":")" + id + R"(","offset":70000})",
                      std::string(30000, 'b'))
                  .ok);
  // A slow append on B: half of its payload, then nothing for a while.
  RawConnection raw(b_->port());
  ASSERT_TRUE(raw.authenticate("rita", key_));
  const std::string tail(40000, 'c');
  ASSERT_TRUE(raw.send(frame_of(request_json(
      9, "upload_append", R"({"upload":")" + id + R"(","offset":100000})", tail.size()))));
  ASSERT_TRUE(raw.send(std::string_view(tail).substr(0, 20000)));
  ASSERT_TRUE(eventually([&] {
    std::error_code ec;
    return fs::file_size(uploads() / (id + ".part"), ec) == 120000;
  }));
  Outcome during = call_op(*on_a, "upload_status", status_args);
  ASSERT_TRUE(during.ok) << during.code;
  EXPECT_EQ(offset_of(during), 100000u);  // not A's stale 70000, not the undurable 120000
  Outcome racing =
      call_op(*on_a, "upload_append", R"({"upload":")" + id + R"(","offset":70000})", "x");
  EXPECT_EQ(racing.code, "conflict");
  EXPECT_NE(racing.details.find("100000"), std::string::npos) << racing.details;
  // B finishes; A then reports B's end, and commits the right bytes.
  ASSERT_TRUE(raw.send(std::string_view(tail).substr(20000)));
  auto reply = raw.read_frame(10s);
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->find("\"offset\":140000"), std::string::npos) << *reply;
  EXPECT_EQ(offset_of(call_op(*on_a, "upload_status", status_args)), 140000u);
  const std::string body = std::string(70000, 'a') + std::string(30000, 'b') + tail;
  Outcome committed =
      call_op(*on_a, "upload_commit",
              "{\"upload\":" + jstr(id) + ",\"sha256\":" + jstr(proof::sha256_hex(body)) + "}");
  ASSERT_TRUE(committed.ok) << committed.code;
  EXPECT_EQ(read_file(a_->storage_dir() / "rita" / "s.bin"), body);
}

// B starts while A has an upload in flight: A's temporary file survives B's start (B
// empties only its own node-b/), and the upload succeeds.
TEST_F(SharedStorage, AStartingServerLeavesAnotherServersUploadAlone) {
  const std::string body = pattern_bytes(300000, 3);
  RawConnection raw(a_->port());
  ASSERT_TRUE(raw.authenticate("rita", key_));
  ASSERT_TRUE(raw.send(frame_of(request_json(1, "upload", R"({"path":"slow.bin"})", body.size()))));
  ASSERT_TRUE(raw.send(std::string_view(body).substr(0, 100000)));
  fs::path temporary;
  ASSERT_TRUE(eventually([&] {
    for (const std::string& name : scratch_temporaries(a_->storage_dir())) {
      std::error_code ec;
      if (fs::file_size(a_->storage_dir() / ".ops-tmp" / name, ec) == 100000) {
        temporary = a_->storage_dir() / ".ops-tmp" / name;
        return true;
      }
    }
    return false;
  })) << "no temporary file of 100000 bytes";
  EXPECT_EQ(temporary.parent_path().filename(), "node-a");

  start_b();  // listening: its start-up clean-up is done
  EXPECT_TRUE(fs::exists(temporary)) << "B's start deleted A's upload in flight";
  ASSERT_TRUE(raw.send(std::string_view(body).substr(100000)));
  auto reply = raw.read_frame(10s);
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->find("\"ok\":true"), std::string::npos) << *reply;
  EXPECT_EQ(read_file(a_->storage_dir() / "rita" / "slow.bin"), body);
  // B serves the file A stored.
  auto on_b = b_->connect("rita", key_);
  ASSERT_TRUE(on_b);
  Outcome fetched = download(*on_b, "slow.bin");
  EXPECT_OP_OK(fetched);
  EXPECT_EQ(fetched.payload, body);
  EXPECT_TRUE(eventually([&] { return scratch_clean(a_->storage_dir()); }));
}

// A server restarted after a kill removes its own crash leftovers, and only those.
TEST_F(SharedStorage, ARestartRemovesOnlyItsOwnLeftovers) {
  start_b();
  write_file(a_->storage_dir() / ".ops-tmp" / "node-a" / "upload-leftover", "cut short");
  write_file(a_->storage_dir() / ".ops-tmp" / "node-b" / "upload-inflight", "b's");
  a_->kill();
  a_->restart();
  EXPECT_FALSE(fs::exists(a_->storage_dir() / ".ops-tmp" / "node-a" / "upload-leftover"));
  EXPECT_TRUE(fs::exists(a_->storage_dir() / ".ops-tmp" / "node-b" / "upload-inflight"));
  fs::remove(a_->storage_dir() / ".ops-tmp" / "node-b" / "upload-inflight");
}

}  // namespace
}  // namespace ops::test
