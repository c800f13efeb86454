// Resumable uploads (OPS/1 §11) and error details (§9) end to end: the real server with the
// real upload_resumable plugin. Offsets and conflicts with details, declared sizes, sha256
// rules, publish rules, binding to the user, status by path, expiry, the per-user cap, a
// client that vanishes mid-append, and a SIGKILL mid-append followed by a restart.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <functional>
#include <regex>
#include <string>
#include <thread>

#include "fault_util.hpp"
#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/proof.hpp"

#define ASSERT_OP_OK(outcome)                                                   \
  do {                                                                          \
    const auto& r_ = (outcome);                                                 \
    ASSERT_TRUE(r_.ok) << "expected ok, got " << r_.code << ": " << r_.message; \
  } while (0)

namespace ops::test {
namespace {

using namespace std::chrono_literals;

// ops.json with the resumable operations for everyone and `open_settings` for upload_open.
std::string resumable_ops_json(const std::string& open_settings = "{}") {
  return with_resumable_ops(default_ops_json(OPS_PLUGIN_DIR), R"(, "settings": )" + open_settings);
}

std::string str_member(const Outcome& o, const char* name) {
  rapidjson::Document d = o.result();
  if (!d.IsObject() || !d.HasMember(name) || !d[name].IsString()) return "";
  return d[name].GetString();
}
std::uint64_t uint_member(const Outcome& o, const char* name) {
  rapidjson::Document d = o.result();
  if (!d.IsObject() || !d.HasMember(name) || !d[name].IsUint64()) return ~std::uint64_t{0};
  return d[name].GetUint64();
}

class Resumable : public ::testing::Test {
 protected:
  void start(const std::string& open_settings = "{}",
             const std::string& server_settings = R"("payload_timeout_ms": 2000)") {
    server_ = std::make_unique<ServerProcess>(
        ServerOptions{resumable_ops_json(open_settings), server_settings});
    key_ = server_->add_user("rita");
    c_ = server_->connect("rita", key_);
    ASSERT_TRUE(c_);
  }
  void SetUp() override { start(); }
  void TearDown() override {
    if (server_) {
      EXPECT_TRUE(server_->running()) << server_->log();
    }
  }

  fs::path home() const { return server_->storage_dir() / "rita"; }
  fs::path partial(const std::string& id) const {
    return server_->storage_dir() / ".ops-tmp" / "uploads" / "rita" / (id + ".part");
  }
  std::int64_t partial_size(const std::string& id) const {
    struct stat st {};
    if (::stat(partial(id).c_str(), &st) != 0) return -1;
    return st.st_size;
  }

  std::string open(const std::string& path, const std::string& extra = "") {
    Outcome o = call_op(*c_, "upload_open", "{\"path\":" + jstr(path) + extra + "}");
    EXPECT_OP_OK(o);
    return str_member(o, "upload");
  }
  Outcome append(const std::string& id, std::uint64_t offset, std::string_view bytes,
                 client::Client* c = nullptr) {
    return call_op(c ? *c : *c_, "upload_append",
                   "{\"upload\":" + jstr(id) + ",\"offset\":" + std::to_string(offset) + "}",
                   bytes);
  }
  Outcome status(const std::string& id) {
    return call_op(*c_, "upload_status", "{\"upload\":" + jstr(id) + "}");
  }
  Outcome commit(const std::string& id, const std::string& extra = "") {
    return call_op(*c_, "upload_commit", "{\"upload\":" + jstr(id) + extra + "}");
  }

  std::unique_ptr<ServerProcess> server_;
  std::string key_;
  std::unique_ptr<client::Client> c_;
};

TEST_F(Resumable, OpenAppendStatusCommitRoundTrip) {
  const std::string body = pattern_bytes(3 * 1024 * 1024 + 5, 1);
  Outcome opened = call_op(*c_, "upload_open", R"({"path":"big/file.bin"})");
  ASSERT_OP_OK(opened);
  const std::string id = str_member(opened, "upload");
  EXPECT_TRUE(std::regex_match(id, std::regex("^[0-9a-f]{32,}$"))) << id;
  EXPECT_EQ(str_member(opened, "path"), "big/file.bin");
  EXPECT_EQ(uint_member(opened, "offset"), 0u);
  EXPECT_TRUE(std::regex_match(str_member(opened, "expires"),
                               std::regex(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$)")))
      << opened.result_json;

  Outcome a1 = append(id, 0, std::string_view(body).substr(0, 1 << 20));
  ASSERT_OP_OK(a1);
  EXPECT_EQ(uint_member(a1, "offset"), 1u << 20);
  EXPECT_EQ(str_member(a1, "upload"), id);
  Outcome a2 = append(id, 1 << 20, std::string_view(body).substr(1 << 20));
  ASSERT_OP_OK(a2);
  EXPECT_EQ(uint_member(a2, "offset"), body.size());

  Outcome st = status(id);
  ASSERT_OP_OK(st);
  EXPECT_EQ(uint_member(st, "offset"), body.size());
  EXPECT_EQ(str_member(st, "path"), "big/file.bin");
  EXPECT_EQ(uint_member(st, "size"), ~std::uint64_t{0}) << "no size was declared";

  // §11: nothing of the partial is visible before the commit.
  EXPECT_EQ(call_op(*c_, "list", R"({"recursive":true})").result_json.find("file.bin"),
            std::string::npos);
  EXPECT_OP_ERR(download(*c_, "big/file.bin"), "not_found");
  EXPECT_FALSE(fs::exists(home() / "big"));

  Outcome done = commit(id, ",\"sha256\":" + jstr(proof::sha256_hex(body)));
  ASSERT_OP_OK(done);
  EXPECT_EQ(str_member(done, "path"), "big/file.bin");
  EXPECT_EQ(uint_member(done, "size"), body.size());
  EXPECT_EQ(str_member(done, "sha256"), proof::sha256_hex(body));
  EXPECT_EQ(read_file(home() / "big" / "file.bin"), body);
  EXPECT_FALSE(fs::exists(partial(id)));
  // After a successful commit the id is gone.
  EXPECT_OP_ERR(status(id), "not_found");
  EXPECT_OP_ERR(commit(id), "not_found");
  EXPECT_OP_ERR(append(id, body.size(), "x"), "not_found");
}

TEST_F(Resumable, EmptyUploadCommits) {
  const std::string id = open("empty.txt", R"(,"size":0)");
  Outcome done = commit(id);
  ASSERT_OP_OK(done);
  EXPECT_EQ(str_member(done, "sha256"), proof::sha256_hex(""));
  EXPECT_TRUE(fs::exists(home() / "empty.txt"));
  EXPECT_EQ(fs::file_size(home() / "empty.txt"), 0u);
}

TEST_F(Resumable, AppendAtAnyOtherOffsetIsConflictWithTheServersEnd) {
  const std::string id = open("c.bin");
  ASSERT_OP_OK(append(id, 0, "hello"));
  for (std::uint64_t wrong : {0u, 4u, 6u, 1000u}) {
    Outcome a =
        call_op(*c_, "upload_append",
                "{\"upload\":" + jstr(id) + ",\"offset\":" + std::to_string(wrong) + "}", "world");
    EXPECT_FALSE(a.ok);
    EXPECT_EQ(a.code, "conflict");
    EXPECT_EQ(a.details, R"({"offset":5})") << "§9 details name the server's end";
  }
  // The connection stays usable and nothing was appended.
  ASSERT_OP_OK(append(id, 5, "world"));
  EXPECT_EQ(uint_member(status(id), "offset"), 10u);
}

TEST_F(Resumable, ConflictDetailsOnTheWire) {
  const std::string id = open("wire.bin");
  ASSERT_OP_OK(append(id, 0, "abc"));
  RawConnection raw(server_->port());
  ASSERT_TRUE(raw.authenticate("rita", key_));
  std::string reply = exchange_frame(
      raw, request_json(1, "upload_append", "{\"upload\":" + jstr(id) + ",\"offset\":0}", 2), "zz");
  rapidjson::Document d = parse(reply);
  ASSERT_TRUE(d.IsObject()) << reply;
  EXPECT_FALSE(d["ok"].GetBool());
  EXPECT_STREQ(d["error"]["code"].GetString(), "conflict");
  ASSERT_TRUE(d["error"].HasMember("details")) << reply;
  EXPECT_EQ(d["error"]["details"]["offset"].GetUint64(), 3u);
  EXPECT_TRUE(d["error"]["message"].IsString());
  // Errors without details carry no member.
  reply = exchange_frame(raw, request_json(2, "upload_status", R"({"upload":"00"})"));
  EXPECT_EQ(reply.find("details"), std::string::npos) << reply;
}

TEST_F(Resumable, DeclaredSizeLimitsAppendsAndCommits) {
  const std::string id = open("sized.bin", R"(,"size":10)");
  ASSERT_OP_OK(append(id, 0, "12345"));
  EXPECT_OP_ERR(append(id, 5, "123456"), "payload_too_large");
  Outcome short_commit = call_op(*c_, "upload_commit", "{\"upload\":" + jstr(id) + "}");
  EXPECT_EQ(short_commit.code, "conflict");
  EXPECT_EQ(short_commit.details, R"({"offset":5})");
  Outcome st = status(id);  // still open after both failures
  ASSERT_OP_OK(st);
  EXPECT_EQ(uint_member(st, "offset"), 5u);
  EXPECT_EQ(uint_member(st, "size"), 10u);
  ASSERT_OP_OK(append(id, 5, "67890"));
  EXPECT_OP_ERR(append(id, 10, "x"), "payload_too_large");
  ASSERT_OP_OK(commit(id));
  EXPECT_EQ(read_file(home() / "sized.bin"), "1234567890");
}

TEST_F(Resumable, Sha256RulesAndFailedCommitsLeaveTheUploadOpen) {
  const std::string good = proof::sha256_hex("payload");
  const std::string bad = proof::sha256_hex("other");
  // Given at open and at commit, different: invalid_args.
  std::string id = open("s1.bin", ",\"sha256\":" + jstr(good));
  ASSERT_OP_OK(append(id, 0, "payload"));
  EXPECT_OP_ERR(commit(id, ",\"sha256\":" + jstr(bad)), "invalid_args");
  // Equal at both (case-insensitive hex): fine.
  std::string upper = good;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  ASSERT_OP_OK(commit(id, ",\"sha256\":" + jstr(upper)));

  // Wrong at commit: checksum_mismatch, the upload stays open, a right commit works.
  id = open("s2.bin");
  ASSERT_OP_OK(append(id, 0, "payload"));
  EXPECT_OP_ERR(commit(id, ",\"sha256\":" + jstr(bad)), "checksum_mismatch");
  EXPECT_FALSE(fs::exists(home() / "s2.bin"));
  ASSERT_OP_OK(status(id));
  ASSERT_OP_OK(commit(id, ",\"sha256\":" + jstr(good)));
  EXPECT_EQ(read_file(home() / "s2.bin"), "payload");

  // Wrong at open: checksum_mismatch at commit; abort removes it.
  id = open("s3.bin", ",\"sha256\":" + jstr(bad));
  ASSERT_OP_OK(append(id, 0, "payload"));
  EXPECT_OP_ERR(commit(id), "checksum_mismatch");
  Outcome aborted = call_op(*c_, "upload_abort", "{\"upload\":" + jstr(id) + "}");
  ASSERT_OP_OK(aborted);
  EXPECT_EQ(str_member(aborted, "upload"), id);
  EXPECT_FALSE(fs::exists(partial(id)));
  EXPECT_OP_ERR(status(id), "not_found");
  EXPECT_OP_ERR(call_op(*c_, "upload_abort", "{\"upload\":" + jstr(id) + "}"), "not_found");
}

TEST_F(Resumable, PublishFollowsUpload) {
  ASSERT_OP_OK(upload(*c_, "taken.txt", "old"));
  // Without overwrite: already_exists, the upload stays open, the old file untouched.
  std::string id = open("taken.txt");
  ASSERT_OP_OK(append(id, 0, "new"));
  EXPECT_OP_ERR(commit(id), "already_exists");
  EXPECT_EQ(read_file(home() / "taken.txt"), "old");
  ASSERT_OP_OK(status(id));
  // The file goes away; the retried commit succeeds.
  fs::remove(home() / "taken.txt");
  ASSERT_OP_OK(commit(id));
  EXPECT_EQ(read_file(home() / "taken.txt"), "new");

  // With overwrite: replaced.
  id = open("taken.txt", R"(,"overwrite":true)");
  ASSERT_OP_OK(append(id, 0, "newer"));
  ASSERT_OP_OK(commit(id));
  EXPECT_EQ(read_file(home() / "taken.txt"), "newer");

  // A directory in the way: conflict, still open.
  fs::create_directories(home() / "dir");
  id = open("dir", R"(,"overwrite":true)");
  ASSERT_OP_OK(append(id, 0, "x"));
  EXPECT_OP_ERR(commit(id), "conflict");
  ASSERT_OP_OK(status(id));

  // Bad paths are refused at open.
  EXPECT_OP_ERR(call_op(*c_, "upload_open", R"({"path":"../escape"})"), "invalid_args");
  EXPECT_OP_ERR(call_op(*c_, "upload_open", R"({"path":"/abs"})"), "invalid_args");
}

TEST_F(Resumable, IdsAreBoundToTheirUserAndUnknownOnesAreNotFound) {
  const std::string id = open("mine.bin");
  ASSERT_OP_OK(append(id, 0, "secret"));
  const std::string other_key = server_->add_user("otto");
  auto other = server_->connect("otto", other_key);
  ASSERT_TRUE(other);
  const std::string arg = "{\"upload\":" + jstr(id) + "}";
  for (const char* op : {"upload_status", "upload_commit", "upload_abort"}) {
    Outcome o = call_op(*other, op, arg);
    EXPECT_OP_ERR(o, "not_found");
  }
  EXPECT_OP_ERR(append(id, 6, "more", other.get()), "not_found");
  EXPECT_OP_ERR(call_op(*other, "upload_status", R"({"path":"mine.bin"})"), "not_found");
  // Unknown and malformed ids: the same answer; nothing reaches a file name.
  const std::string unknown = proof::random_hex(16);
  Outcome u = call_op(*c_, "upload_status", "{\"upload\":" + jstr(unknown) + "}");
  EXPECT_OP_ERR(u, "not_found");
  for (const char* bad : {"", "../rita/x", "ABCDEF0123456789ABCDEF0123456789", "zz", "..",
                          "0123456789abcdef0123456789abcdef.meta"}) {
    SCOPED_TRACE(bad);
    EXPECT_OP_ERR(call_op(*c_, "upload_status", "{\"upload\":" + jstr(bad) + "}"), "not_found");
  }
  // Still intact for its owner.
  Outcome st = status(id);
  ASSERT_OP_OK(st);
  EXPECT_EQ(uint_member(st, "offset"), 6u);
}

TEST_F(Resumable, ANewStorageDirectoryOfTheSameUserDoesNotInheritUploads) {
  // What unregister followed by register under the same name does to the storage
  // directory: the old one goes, and a new one is made at the next request.
  const std::string id = open("old.bin");
  ASSERT_OP_OK(append(id, 0, "old user's bytes"));
  fs::rename(home(), server_->storage_dir() / "rita-removed");
  EXPECT_OP_ERR(status(id), "not_found");
  EXPECT_OP_ERR(call_op(*c_, "upload_status", R"({"path":"old.bin"})"), "not_found");
  EXPECT_OP_ERR(commit(id), "not_found");
  EXPECT_FALSE(fs::exists(home() / "old.bin"));
}

TEST_F(Resumable, StatusByPathFindsTheMostRecentOpenUpload) {
  const std::string first = open("p.bin");
  ASSERT_OP_OK(append(first, 0, "1"));
  const std::string second = open("p.bin");
  ASSERT_OP_OK(append(second, 0, "22"));
  open("other.bin");
  Outcome st = call_op(*c_, "upload_status", R"({"path":"p.bin"})");
  ASSERT_OP_OK(st);
  EXPECT_EQ(str_member(st, "upload"), second);
  EXPECT_EQ(uint_member(st, "offset"), 2u);
  ASSERT_OP_OK(call_op(*c_, "upload_abort", "{\"upload\":" + jstr(second) + "}"));
  st = call_op(*c_, "upload_status", R"({"path":"p.bin"})");
  ASSERT_OP_OK(st);
  EXPECT_EQ(str_member(st, "upload"), first);
  EXPECT_OP_ERR(call_op(*c_, "upload_status", R"({"path":"none.bin"})"), "not_found");
  EXPECT_OP_ERR(call_op(*c_, "upload_status", "{}"), "invalid_args");
}

TEST_F(Resumable, ConcurrentAppendGetsConflictWithTheDurableOffset) {
  const std::string id = open("race.bin");
  ASSERT_OP_OK(append(id, 0, "0123456789"));
  auto slow = server_->connect("rita", key_);
  ASSERT_TRUE(slow);
  const std::string body = pattern_bytes(1 << 20, 3);
  ASSERT_TRUE(slow->send_request("upload_append", "{\"upload\":" + jstr(id) + ",\"offset\":10}",
                                 body.size())
                  .ok());
  ASSERT_TRUE(slow->send_payload(body.data(), 1000).ok());
  ASSERT_TRUE(eventually([&] { return partial_size(id) == 1010; }));
  // While that append runs: a second one gets conflict naming the durable end, and
  // status reports the durable end too (not the bytes in flight).
  Outcome second =
      call_op(*c_, "upload_append", "{\"upload\":" + jstr(id) + ",\"offset\":10}", "abc");
  EXPECT_EQ(second.code, "conflict");
  EXPECT_EQ(second.details, R"({"offset":10})");
  EXPECT_EQ(uint_member(status(id), "offset"), 10u);
  EXPECT_OP_ERR(commit(id), "conflict");
  ASSERT_TRUE(slow->send_payload(body.data() + 1000, body.size() - 1000).ok());
  auto r = slow->read_response();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok) << r->error.message;
  EXPECT_EQ(uint_member(status(id), "offset"), 10u + body.size());
}

TEST_F(Resumable, ClientVanishingMidAppendKeepsTheDurableBytesReceived) {
  const std::string head = "acknowledged-";
  const std::string id = open("vanish.bin");
  ASSERT_OP_OK(append(id, 0, head));
  const std::string body = pattern_bytes(2 << 20, 5);
  {
    auto gone = server_->connect("rita", key_);
    ASSERT_TRUE(gone);
    ASSERT_TRUE(gone->send_request("upload_append",
                                   "{\"upload\":" + jstr(id) +
                                       ",\"offset\":" + std::to_string(head.size()) + "}",
                                   body.size())
                    .ok());
    ASSERT_TRUE(gone->send_payload(body.data(), 300000).ok());
    ASSERT_TRUE(eventually(
        [&] { return partial_size(id) == static_cast<std::int64_t>(head.size() + 300000); }));
  }  // closed mid-payload
  // The server keeps what arrived (or nothing), durably; status says which, and the
  // partial on disk holds exactly that.
  std::uint64_t kept = 0;
  ASSERT_TRUE(eventually([&] {
    kept = uint_member(status(id), "offset");
    return kept == head.size() + 300000;
  })) << kept;
  EXPECT_EQ(partial_size(id), static_cast<std::int64_t>(kept));
  ASSERT_OP_OK(append(id, kept, std::string_view(body).substr(kept - head.size())));
  ASSERT_OP_OK(commit(id, ",\"sha256\":" + jstr(proof::sha256_hex(head + body))));
  EXPECT_EQ(read_file(home() / "vanish.bin"), head + body);
}

TEST_F(Resumable, SigkillMidAppendThenRestart) {
  const std::string body = pattern_bytes(6 << 20, 7);
  const std::string id = open("crash.bin", ",\"sha256\":" + jstr(proof::sha256_hex(body)));
  const std::uint64_t acked = 2 << 20;
  Outcome a = append(id, 0, std::string_view(body).substr(0, acked));
  ASSERT_OP_OK(a);
  ASSERT_EQ(uint_member(a, "offset"), acked);
  auto inflight = server_->connect("rita", key_);
  ASSERT_TRUE(inflight);
  ASSERT_TRUE(
      inflight
          ->send_request("upload_append",
                         "{\"upload\":" + jstr(id) + ",\"offset\":" + std::to_string(acked) + "}",
                         2 << 20)
          .ok());
  ASSERT_TRUE(inflight->send_payload(body.data() + acked, 700000).ok());
  ASSERT_TRUE(
      eventually([&] { return partial_size(id) >= static_cast<std::int64_t>(acked + 700000); }));
  server_->kill();
  inflight.reset();
  const std::int64_t on_disk = partial_size(id);
  server_->restart();
  c_ = server_->connect("rita", key_);
  ASSERT_TRUE(c_);
  Outcome st = status(id);
  ASSERT_OP_OK(st);
  const std::uint64_t offset = uint_member(st, "offset");
  // Never less than acknowledged, never more than on disk.
  EXPECT_GE(offset, acked);
  EXPECT_LE(static_cast<std::int64_t>(offset), on_disk);
  EXPECT_EQ(partial_size(id), static_cast<std::int64_t>(offset));
  // Finish from the server's offset; the commit re-hashes the partial and checks the
  // sha256 given at open.
  ASSERT_OP_OK(append(id, offset, std::string_view(body).substr(offset)));
  Outcome done = commit(id);
  ASSERT_OP_OK(done);
  EXPECT_EQ(str_member(done, "sha256"), proof::sha256_hex(body));
  EXPECT_EQ(read_file(home() / "crash.bin"), body);
}

TEST_F(Resumable, PartialsSurviveARestartAndStartupCleanup) {
  const std::string id = open("keep.bin");
  ASSERT_OP_OK(append(id, 0, "kept across restarts"));
  ASSERT_EQ(server_->stop(), 0);
  server_->restart();
  c_ = server_->connect("rita", key_);
  ASSERT_TRUE(c_);
  Outcome st = status(id);
  ASSERT_OP_OK(st);
  EXPECT_EQ(uint_member(st, "offset"), 20u);
  // A wrong sha256 after the restart: the re-hash is of the real bytes.
  EXPECT_OP_ERR(commit(id, ",\"sha256\":" + jstr(proof::sha256_hex("nope"))), "checksum_mismatch");
  Outcome done = commit(id);
  ASSERT_OP_OK(done);
  EXPECT_EQ(str_member(done, "sha256"), proof::sha256_hex("kept across restarts"));
}

class ResumableCap : public Resumable {
 protected:
  void SetUp() override { start(R"({"max_open_uploads": 2})"); }
};

class ResumableExpiry : public Resumable {
 protected:
  void SetUp() override { start(R"({"upload_expiry": 1})"); }
};

TEST_F(ResumableCap, PerUserCapOfOpenUploads) {
  const std::string a = open("a");
  open("b");
  EXPECT_OP_ERR(call_op(*c_, "upload_open", R"({"path":"c"})"), "unavailable");
  // Another user has a cap of its own.
  auto other = server_->connect("otto", server_->add_user("otto"));
  ASSERT_TRUE(other);
  EXPECT_OP_OK(call_op(*other, "upload_open", R"({"path":"c"})"));
  // Committing or aborting frees a place.
  ASSERT_OP_OK(call_op(*c_, "upload_abort", "{\"upload\":" + jstr(a) + "}"));
  EXPECT_OP_OK(call_op(*c_, "upload_open", R"({"path":"c"})"));
}

TEST_F(ResumableExpiry, UntouchedUploadsExpireWithoutBeingNamed) {
  const std::string idle = open("idle.bin");
  ASSERT_OP_OK(append(idle, 0, "zzz"));
  const std::string busy = open("busy.bin");
  ASSERT_TRUE(fs::exists(partial(idle)));
  // Keep `busy` touched while `idle` ages past 1 s; the sweep runs on calls naming others.
  ASSERT_TRUE(eventually(
      [&] {
        EXPECT_OP_OK(status(busy));
        std::this_thread::sleep_for(200ms);
        return !fs::exists(partial(idle));
      },
      8s))
      << "an expired upload was not removed";
  EXPECT_FALSE(fs::exists(partial(idle).replace_extension(".meta")));
  EXPECT_OP_ERR(status(idle), "not_found");
  EXPECT_OP_OK(status(busy));
  // Expiry is reported from the last touch.
  Outcome st = status(busy);
  EXPECT_FALSE(str_member(st, "expires").empty());
}

}  // namespace
}  // namespace ops::test
