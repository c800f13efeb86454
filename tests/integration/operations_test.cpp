// The standard operations (OPS/1 §5, §7) against the real server and the real plugin .so
// files: every path rule at its boundary, file/directory conflicts both ways, overwrite
// and sha256 rules, empty files, download ranges, list, register and isolation between
// users whose names prefix each other.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <regex>
#include <string>
#include <vector>

#include "harness/server_process.hpp"
#include "ops_test_util.hpp"
#include "opserver/proof.hpp"
#include "scratch_util.hpp"

namespace ops::test {
namespace {

std::string repeat(const std::string& s, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += s;
  return out;
}

// A valid path of exactly `bytes` bytes: 200-byte components, then the rest.
std::string path_of_bytes(std::size_t bytes) {
  std::string out;
  while (bytes - out.size() > 255) out += std::string(200, 'p') + '/';
  out += std::string(bytes - out.size(), 'q');
  return out;
}

class Operations : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new ServerProcess(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  // Each test gets its own user, so storage checks see only that test's files.
  void SetUp() override {
    static std::atomic<int> counter{0};
    user_ = "op" + std::to_string(counter++);
    key_ = server_->add_user(user_);
    ASSERT_FALSE(key_.empty());
    client_ = server_->connect(user_, key_);
    ASSERT_TRUE(client_);
  }
  fs::path home() const { return server_->storage_dir() / user_; }
  client::Client& c() { return *client_; }

  static ServerProcess* server_;
  std::string user_, key_;
  std::unique_ptr<client::Client> client_;
};
ServerProcess* Operations::server_ = nullptr;

// ---------------------------------------------------------------------------------------
// §5/§7 path rules

TEST_F(Operations, ComponentOf255BytesIsAcceptedAnd256IsNot) {
  const std::string ok255(255, 'c');
  EXPECT_OP_OK(upload(c(), ok255, "x"));
  EXPECT_EQ(download(c(), ok255).payload, "x");
  EXPECT_OP_OK(upload(c(), "d/" + ok255, "y"));

  const std::string four = "\xF0\x9F\x98\x80";                        // 4 bytes
  EXPECT_OP_OK(upload(c(), repeat(four, 63) + "abc", "z"));           // 255 bytes
  EXPECT_OP_ERR(upload(c(), repeat(four, 64), "z"), "invalid_args");  // 256 bytes
  EXPECT_OP_ERR(upload(c(), std::string(256, 'c'), "x"), "invalid_args");
  EXPECT_OP_ERR(upload(c(), "d/" + std::string(256, 'c'), "x"), "invalid_args");
  EXPECT_OP_ERR(download(c(), std::string(256, 'c')), "invalid_args");
  EXPECT_OP_ERR(call_op(c(), "list", jobj({{"path", jstr(std::string(256, 'c'))}})),
                "invalid_args");
  EXPECT_EQ(tree(home()).size(), 4u);  // ok255, d, d/ok255, the 255-byte emoji name
}

TEST_F(Operations, PathOf4096BytesIsAcceptedAnd4097IsNot) {
  const std::string p4096 = path_of_bytes(4096);
  ASSERT_EQ(p4096.size(), 4096u);
  auto up = upload(c(), p4096, "deep");
  EXPECT_OP_OK(up);
  EXPECT_EQ(download(c(), p4096).payload, "deep");
  if (up.ok) {
    EXPECT_EQ(up.result()["path"].GetString(), p4096);
  }

  const std::string p4097 = path_of_bytes(4097);
  ASSERT_EQ(p4097.size(), 4097u);
  EXPECT_OP_ERR(upload(c(), p4097, "x"), "invalid_args");
  EXPECT_OP_ERR(download(c(), p4097), "invalid_args");
  // Its 4096-byte prefix exists as a file ("qq..."); nothing longer was made.
  EXPECT_OP_ERR(download(c(), p4097.substr(0, 4095)), "not_found");
}

TEST_F(Operations, MalformedPathsAreInvalidArgsEverywhere) {
  const std::vector<std::string> bad = {
      ".",     "..",    "a/.",         "./a",        "a/..",      "a/../b",
      "a//b",  "/abs",  "/etc/passwd", "a/",         "/",         std::string("a\0b", 3),
      "a\x01", "a\x1f", "a\x7f",       "line\nfeed", "tab\there", "\x1b[2J",
  };
  for (const std::string& p : bad) {
    SCOPED_TRACE(jstr(p));
    EXPECT_OP_ERR(upload(c(), p, "x"), "invalid_args");
    EXPECT_OP_ERR(upload(c(), p, "x", ",\"overwrite\":true"), "invalid_args");
    EXPECT_OP_ERR(download(c(), p), "invalid_args");
    EXPECT_OP_ERR(call_op(c(), "list", jobj({{"path", jstr(p)}})), "invalid_args");
  }
  // "" is the user's root for list only.
  EXPECT_OP_ERR(upload(c(), "", "x"), "invalid_args");
  EXPECT_OP_ERR(download(c(), ""), "invalid_args");
  EXPECT_OP_OK(call_op(c(), "list", R"({"path":""})"));
  EXPECT_TRUE(tree(home()).empty());
  EXPECT_FALSE(fs::exists(home() / "a"));
}

TEST_F(Operations, NamesAreStoredByteForByteAndCaseSensitive) {
  const std::string nfc = "caf\xC3\xA9";   // é as one code point
  const std::string nfd = "cafe\xCC\x81";  // e + combining acute
  EXPECT_OP_OK(upload(c(), nfc, "nfc"));
  EXPECT_OP_OK(upload(c(), nfd, "nfd"));
  EXPECT_OP_OK(upload(c(), "A.txt", "upper"));
  EXPECT_OP_OK(upload(c(), "a.txt", "lower"));
  EXPECT_OP_OK(upload(c(), "sp ace \\ \"q\" \xE2\x80\xAE", "odd"));
  EXPECT_EQ(download(c(), nfc).payload, "nfc");
  EXPECT_EQ(download(c(), nfd).payload, "nfd");
  EXPECT_EQ(download(c(), "A.txt").payload, "upper");
  EXPECT_EQ(download(c(), "a.txt").payload, "lower");
  auto listed = call_op(c(), "list", "{}");
  ASSERT_TRUE(listed.ok);
  std::vector<std::string> expected = {"A.txt", "a.txt", nfd, nfc, "sp ace \\ \"q\" \xE2\x80\xAE"};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(names_of(listed), expected);
  EXPECT_TRUE(fs::exists(home() / nfc));
  EXPECT_TRUE(fs::exists(home() / nfd));
}

// ---------------------------------------------------------------------------------------
// file versus directory

TEST_F(Operations, FileWhereADirectoryIsNeededAndTheReverseAreConflicts) {
  ASSERT_TRUE(upload(c(), "dir/file", "inside").ok);
  ASSERT_TRUE(upload(c(), "plain", "plain").ok);
  const auto before = tree(home());

  EXPECT_OP_ERR(upload(c(), "dir", "x"), "conflict");
  EXPECT_OP_ERR(upload(c(), "dir", "x", ",\"overwrite\":true"), "conflict");
  EXPECT_OP_ERR(upload(c(), "plain/sub", "x"), "conflict");
  EXPECT_OP_ERR(upload(c(), "plain/sub/deeper", "x"), "conflict");
  EXPECT_OP_ERR(upload(c(), "dir/file/x", "x", ",\"overwrite\":true"), "conflict");
  EXPECT_OP_ERR(download(c(), "dir"), "conflict");
  EXPECT_OP_ERR(download(c(), "plain/sub"), "conflict");
  EXPECT_OP_ERR(call_op(c(), "list", R"({"path":"plain"})"), "conflict");
  EXPECT_OP_ERR(call_op(c(), "list", R"({"path":"plain/x"})"), "conflict");

  EXPECT_EQ(tree(home()), before);
  EXPECT_EQ(read_file(home() / "plain"), "plain");
  EXPECT_EQ(read_file(home() / "dir/file"), "inside");
}

TEST_F(Operations, UploadCreatesMissingParents) {
  auto up = upload(c(), "a/b/c/d.txt", "deep");
  EXPECT_OP_OK(up);
  EXPECT_EQ(read_file(home() / "a/b/c/d.txt"), "deep");
  EXPECT_TRUE(fs::is_directory(home() / "a/b/c"));
  EXPECT_OP_ERR(download(c(), "a/b/missing"), "not_found");
  EXPECT_OP_ERR(download(c(), "nope/missing"), "not_found");
  EXPECT_OP_ERR(call_op(c(), "list", R"({"path":"nope"})"), "not_found");
}

// ---------------------------------------------------------------------------------------
// overwrite and sha256

TEST_F(Operations, OverwriteRules) {
  auto first = upload(c(), "f.txt", "one");
  ASSERT_TRUE(first.ok) << first.message;
  auto r = first.result();
  EXPECT_STREQ(r["path"].GetString(), "f.txt");
  EXPECT_EQ(r["size"].GetUint64(), 3u);
  EXPECT_EQ(r["sha256"].GetString(), proof::sha256_hex("one"));

  EXPECT_OP_ERR(upload(c(), "f.txt", "two"), "already_exists");
  EXPECT_OP_ERR(upload(c(), "f.txt", "two", ",\"overwrite\":false"), "already_exists");
  EXPECT_EQ(read_file(home() / "f.txt"), "one");
  EXPECT_OP_ERR(upload(c(), "f.txt", "two", ",\"overwrite\":\"true\""), "invalid_args");
  EXPECT_OP_ERR(upload(c(), "f.txt", "two", ",\"overwrite\":1"), "invalid_args");
  EXPECT_EQ(read_file(home() / "f.txt"), "one");

  EXPECT_OP_OK(upload(c(), "f.txt", "two!", ",\"overwrite\":true"));
  EXPECT_EQ(read_file(home() / "f.txt"), "two!");
  // overwrite:true on a new path just creates it.
  EXPECT_OP_OK(upload(c(), "new.txt", "n", ",\"overwrite\":true"));
  EXPECT_OP_ERR(upload(c(), "f.txt", "x", ",\"unknown\":1"), "invalid_args");
  EXPECT_TRUE(scratch_clean(server_->storage_dir()));
}

TEST_F(Operations, Sha256IsCheckedAndMalformedOnesRefused) {
  const std::string body = "checked body";
  const std::string good = proof::sha256_hex(body);
  std::string upper = good;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));

  auto ok = upload(c(), "ok", body, ",\"sha256\":" + jstr(good));
  EXPECT_OP_OK(ok);
  if (ok.ok) {
    EXPECT_EQ(ok.result()["sha256"].GetString(), good);
  }
  // Upper-case hex is accepted (the schema allows it); the result is always lower case.
  auto up = upload(c(), "upper", body, ",\"sha256\":" + jstr(upper));
  EXPECT_OP_OK(up);
  if (up.ok) {
    EXPECT_EQ(up.result()["sha256"].GetString(), good);
  }

  const std::string wrong = proof::sha256_hex("something else");
  EXPECT_OP_ERR(upload(c(), "bad", body, ",\"sha256\":" + jstr(wrong)), "checksum_mismatch");
  EXPECT_FALSE(fs::exists(home() / "bad"));
  // A mismatch on overwrite leaves the old file as it was.
  EXPECT_OP_ERR(upload(c(), "ok", "replacement", ",\"overwrite\":true,\"sha256\":" + jstr(wrong)),
                "checksum_mismatch");
  EXPECT_EQ(read_file(home() / "ok"), body);
  // ... and a mismatch in a new directory leaves no directory either.
  EXPECT_OP_ERR(upload(c(), "newdir/bad", body, ",\"sha256\":" + jstr(wrong)), "checksum_mismatch");
  EXPECT_FALSE(fs::exists(home() / "newdir"));

  for (const std::string& malformed :
       {good.substr(0, 63), good + "0", std::string(64, 'g'), std::string(), "0x" + good.substr(2),
        std::string(" ") + good.substr(1)}) {
    EXPECT_OP_ERR(upload(c(), "malformed", body, ",\"sha256\":" + jstr(malformed)), "invalid_args");
  }
  EXPECT_OP_ERR(upload(c(), "malformed", body, ",\"sha256\":12"), "invalid_args");
  EXPECT_FALSE(fs::exists(home() / "malformed"));
  EXPECT_TRUE(scratch_clean(server_->storage_dir()));
}

TEST_F(Operations, EmptyFiles) {
  auto up = upload(c(), "empty", "");
  ASSERT_TRUE(up.ok) << up.message;
  EXPECT_EQ(up.result()["size"].GetUint64(), 0u);
  EXPECT_EQ(up.result()["sha256"].GetString(), proof::sha256_hex(""));
  EXPECT_TRUE(fs::is_regular_file(home() / "empty"));
  EXPECT_EQ(fs::file_size(home() / "empty"), 0u);

  auto down = download(c(), "empty");
  ASSERT_TRUE(down.ok);
  EXPECT_EQ(down.payload, "");
  EXPECT_EQ(down.result()["length"].GetUint64(), 0u);
  EXPECT_EQ(down.result()["size"].GetUint64(), 0u);
  EXPECT_OP_ERR(download(c(), "empty", ",\"offset\":1"), "invalid_args");

  // Overwriting with empty content works too.
  ASSERT_TRUE(upload(c(), "full", "content").ok);
  EXPECT_OP_OK(upload(c(), "full", "", ",\"overwrite\":true"));
  EXPECT_EQ(fs::file_size(home() / "full"), 0u);
}

// ---------------------------------------------------------------------------------------
// download ranges (§7)

TEST_F(Operations, DownloadRanges) {
  ASSERT_TRUE(upload(c(), "digits", "0123456789").ok);
  struct Case {
    std::string extra;
    std::string payload;
    std::uint64_t offset;
  };
  const Case cases[] = {
      {"", "0123456789", 0},
      {",\"offset\":0", "0123456789", 0},
      {",\"offset\":3,\"length\":4", "3456", 3},
      {",\"offset\":9", "9", 9},
      {",\"offset\":10", "", 10},                 // at the end: empty
      {",\"offset\":8,\"length\":100", "89", 8},  // clipped
      {",\"length\":0", "", 0},
      {",\"length\":10", "0123456789", 0},
      {",\"length\":9007199254740991", "0123456789", 0},
      {",\"offset\":10,\"length\":5", "", 10},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.extra);
    auto d = download(c(), "digits", k.extra);
    ASSERT_TRUE(d.ok) << d.code << ": " << d.message;
    EXPECT_EQ(d.payload, k.payload);
    auto r = d.result();
    EXPECT_STREQ(r["path"].GetString(), "digits");
    EXPECT_EQ(r["size"].GetUint64(), 10u);
    EXPECT_EQ(r["offset"].GetUint64(), k.offset);
    EXPECT_EQ(r["length"].GetUint64(), k.payload.size());  // always the payload's size
  }
  for (const std::string& extra :
       {std::string(",\"offset\":11"), std::string(",\"offset\":9007199254740991"),
        std::string(",\"offset\":9007199254740992"), std::string(",\"offset\":-1"),
        std::string(",\"length\":-1"), std::string(",\"offset\":1.5"),
        std::string(",\"offset\":\"1\""), std::string(",\"length\":null"),
        std::string(",\"whence\":0")}) {
    SCOPED_TRACE(extra);
    EXPECT_OP_ERR(download(c(), "digits", extra), "invalid_args");
  }
  // The connection stays usable after all of those.
  EXPECT_EQ(download(c(), "digits", ",\"offset\":5,\"length\":1").payload, "5");
}

// A file that shrinks while it is being sent: the server closes the connection rather
// than send filler or a wrong count (§3), and the next connection works.
TEST_F(Operations, FileThatShrinksMidDownloadClosesTheConnection) {
  const std::size_t size = 64u << 20;
  ASSERT_TRUE(upload(c(), "shrink.bin", std::string(size, 's')).ok);
  auto r = c().call("download", R"({"path":"shrink.bin"})");
  ASSERT_TRUE(r.ok() && r->ok);
  ASSERT_EQ(r->payload_size, size);
  std::string chunk(1 << 20, '\0');
  ASSERT_TRUE(c().read_payload(chunk.data(), chunk.size()).ok());
  fs::resize_file(home() / "shrink.bin", 2u << 20);
  std::uint64_t got = chunk.size();
  bool failed = false;
  while (got < size) {
    if (!c().read_payload(chunk.data(), chunk.size()).ok()) {
      failed = true;
      break;
    }
    EXPECT_EQ(chunk.find_first_not_of('s'), std::string::npos) << "filler sent at " << got;
    got += chunk.size();
  }
  EXPECT_TRUE(failed) << "all " << size << " bytes arrived from a 2 MiB file";
  EXPECT_TRUE(c().broken());
  auto again = server_->connect(user_, key_);
  ASSERT_TRUE(again);
  EXPECT_EQ(download(*again, "shrink.bin", ",\"length\":3").payload, "sss");
}

// ---------------------------------------------------------------------------------------
// list

TEST_F(Operations, ListShowsFilesAndDirectoriesSortedByName) {
  const auto before = std::chrono::system_clock::now();
  ASSERT_TRUE(upload(c(), "b.txt", "bb").ok);
  ASSERT_TRUE(upload(c(), "a.txt", "a").ok);
  ASSERT_TRUE(upload(c(), "sub/inner.bin", "12345").ok);
  ASSERT_TRUE(upload(c(), "sub/deeper/x", "").ok);

  for (const std::string& args :
       {std::string("{}"), std::string(R"({"path":""})"), std::string(R"({"recursive":false})")}) {
    auto listed = call_op(c(), "list", args);
    ASSERT_TRUE(listed.ok) << listed.message;
    auto r = listed.result();
    EXPECT_STREQ(r["path"].GetString(), "");
    EXPECT_TRUE(r["truncated"].IsBool());
    EXPECT_FALSE(r["truncated"].GetBool());
    ASSERT_EQ(r["entries"].Size(), 3u);
    EXPECT_EQ(names_of(listed), (std::vector<std::string>{"a.txt", "b.txt", "sub"}));
    const auto& b = r["entries"][1];
    EXPECT_STREQ(b["type"].GetString(), "file");
    EXPECT_EQ(b["size"].GetUint64(), 2u);
    const auto& sub = r["entries"][2];
    EXPECT_STREQ(sub["type"].GetString(), "dir");
    EXPECT_EQ(sub["size"].GetUint64(), 0u);
    ASSERT_TRUE(b["mtime"].IsInt64());
    const auto mtime =
        std::chrono::system_clock::time_point(std::chrono::seconds(b["mtime"].GetInt64()));
    EXPECT_GE(mtime, std::chrono::floor<std::chrono::seconds>(before) - std::chrono::seconds(1));
    EXPECT_LE(mtime, std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  auto rec = call_op(c(), "list", R"({"recursive":true})");
  ASSERT_TRUE(rec.ok);
  EXPECT_EQ(names_of(rec), (std::vector<std::string>{"a.txt", "b.txt", "sub", "sub/deeper",
                                                     "sub/deeper/x", "sub/inner.bin"}));
  auto sub = call_op(c(), "list", R"({"path":"sub","recursive":true})");
  ASSERT_TRUE(sub.ok);
  EXPECT_STREQ(sub.result()["path"].GetString(), "sub");
  EXPECT_EQ(names_of(sub), (std::vector<std::string>{"deeper", "deeper/x", "inner.bin"}));

  auto empty = call_op(c(), "list", R"({"path":"sub/deeper/x"})");
  EXPECT_OP_ERR(empty, "conflict");
  EXPECT_OP_ERR(call_op(c(), "list", R"({"recursive":"yes"})"), "invalid_args");
  EXPECT_OP_ERR(call_op(c(), "list", R"({"depth":1})"), "invalid_args");
}

TEST_F(Operations, ListHidesSpecialFilesAndUnaddressableNames) {
  ASSERT_TRUE(upload(c(), "visible", "v").ok);
  ASSERT_EQ(::mkfifo((home() / "fifo").c_str(), 0600), 0);
  write_file(home() / "bad\xFFname", "x");  // not UTF-8: no §5 path can name it
  write_file(home() / "ctl\x01name", "x");  // a control character: likewise
  auto listed = call_op(c(), "list", R"({"recursive":true})");
  ASSERT_TRUE(listed.ok) << listed.message;
  EXPECT_EQ(names_of(listed), std::vector<std::string>{"visible"});
  EXPECT_OP_ERR(download(c(), "fifo"), "forbidden");
  EXPECT_OP_ERR(upload(c(), "fifo", "x", ",\"overwrite\":true"), "conflict");
}

TEST(ListCap, TruncatesAtMaxListEntries) {
  ServerOptions options;
  options.ops_json = R"({
  "plugin_dir": ")" + std::string(OPS_PLUGIN_DIR) +
                     R"(",
  "operations": {
    "upload": {"allow": ["*"]},
    "list": {"allow": ["*"], "settings": {"max_list_entries": 5}},
    "register": {"allow": ["admin"]}
  }
})";
  ServerProcess server(options);
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  for (int i = 0; i < 5; ++i) {
    std::string name = "f";  // not "f" + to_string(i): GCC 12's -Wrestrict false positive
    name += std::to_string(i);
    ASSERT_TRUE(upload(*c, name, "x").ok);
  }
  auto exact = call_op(*c, "list", "{}");
  ASSERT_TRUE(exact.ok);
  EXPECT_EQ(names_of(exact).size(), 5u);
  EXPECT_FALSE(exact.result()["truncated"].GetBool());

  ASSERT_TRUE(upload(*c, "d/inner", "x").ok);  // a sixth entry ("d"), seventh recursively
  auto over = call_op(*c, "list", "{}");
  ASSERT_TRUE(over.ok);
  EXPECT_EQ(names_of(over), (std::vector<std::string>{"d", "f0", "f1", "f2", "f3"}));
  EXPECT_TRUE(over.result()["truncated"].GetBool());
  auto rec = call_op(*c, "list", R"({"recursive":true})");
  ASSERT_TRUE(rec.ok);
  EXPECT_EQ(names_of(rec), (std::vector<std::string>{"d", "d/inner", "f0", "f1", "f2"}));
  EXPECT_TRUE(rec.result()["truncated"].GetBool());
}

TEST(ListCap, ManyLongNamesStayUnderTheFrameLimit) {
  ServerProcess server;
  auto c = server.connect_admin();
  ASSERT_TRUE(c);
  // Planted directly: 10,000 names of 200 bytes would be ~2.5 MB of JSON, over the 1 MiB
  // default max_frame; the listing must stop under it and say so.
  fs::path home = server.storage_dir() / "admin";
  fs::create_directories(home / "many");
  for (int i = 0; i < 6000; ++i) {
    char prefix[16];
    std::snprintf(prefix, sizeof prefix, "%05d", i);
    write_file(home / "many" / (prefix + std::string(195, 'n')), "");
  }
  auto listed = call_op(*c, "list", R"({"path":"many"})");
  ASSERT_TRUE(listed.ok) << listed.code << ": " << listed.message;
  EXPECT_LT(listed.result_json.size(), 1u << 20);
  EXPECT_TRUE(listed.result()["truncated"].GetBool());
  auto names = names_of(listed);
  ASSERT_GT(names.size(), 1000u);
  EXPECT_EQ(names.front().substr(0, 5), "00000");
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
}

// ---------------------------------------------------------------------------------------
// register

TEST_F(Operations, RegisterNamesKeysAndLogin) {
  auto admin = server_->connect_admin();
  ASSERT_TRUE(admin);
  for (const std::string& bad :
       {std::string("Bob"), std::string("1a"), std::string(33, 'a'), std::string("a/b"),
        std::string(".."), std::string(""), std::string(".hidden"), std::string("-x"),
        std::string("a b"), std::string("caf\xC3\xA9")}) {
    SCOPED_TRACE(bad);
    EXPECT_OP_ERR(call_op(*admin, "register", jobj({{"user", jstr(bad)}})), "invalid_args");
    if (!bad.empty() && bad != "..") {
      EXPECT_FALSE(fs::exists(server_->storage_dir() / bad));
    }
  }
  EXPECT_OP_ERR(call_op(*admin, "register", "{}"), "invalid_args");
  EXPECT_OP_ERR(call_op(*admin, "register", R"({"user":"x1","extra":true})"), "invalid_args");

  // Generated key: 64 lowercase hex; storage directory exists; login works at once.
  const std::string name = "reg_" + user_;
  auto made = call_op(*admin, "register", jobj({{"user", jstr(name)}}));
  ASSERT_TRUE(made.ok) << made.message;
  auto r = made.result();
  EXPECT_EQ(r["user"].GetString(), name);
  const std::string key = r["key"].GetString();
  EXPECT_TRUE(std::regex_match(key, std::regex("[0-9a-f]{64}"))) << key;
  EXPECT_TRUE(fs::is_directory(server_->storage_dir() / name));
  auto as_new = server_->connect(name, key);
  ASSERT_TRUE(as_new);
  EXPECT_OP_OK(upload(*as_new, "hello", "world"));

  EXPECT_OP_ERR(call_op(*admin, "register", jobj({{"user", jstr(name)}})), "already_exists");
  EXPECT_OP_ERR(call_op(*admin, "register", R"({"user":"admin"})"), "already_exists");

  // A chosen key is used exactly as given.
  const std::string chosen = "correct horse battery staple \xC3\xA9";
  const std::string name2 = "r2_" + user_;
  auto given = call_op(*admin, "register", jobj({{"user", jstr(name2)}, {"key", jstr(chosen)}}));
  ASSERT_TRUE(given.ok) << given.message;
  EXPECT_EQ(given.result()["key"].GetString(), chosen);
  EXPECT_TRUE(server_->connect(name2, chosen));

  const std::string name3 = "r3_" + user_;
  for (const std::string& bad_key :
       {std::string(), std::string("tab\tkey"), std::string("nl\n"), std::string("del\x7f"),
        std::string(1025, 'k'), repeat("\xC3\xA9", 513)}) {
    EXPECT_OP_ERR(
        call_op(*admin, "register", jobj({{"user", jstr(name3)}, {"key", jstr(bad_key)}})),
        "invalid_args");
  }
  EXPECT_FALSE(fs::exists(server_->storage_dir() / name3));
  EXPECT_OP_OK(call_op(*admin, "register",
                       jobj({{"user", jstr(name3)}, {"key", jstr(std::string(1024, 'k'))}})));
  EXPECT_OP_ERR(call_op(*admin, "register", R"({"user":"r4","key":5})"), "invalid_args");

  // The longest legal name.
  const std::string longest = "z" + std::string(31, '9');
  EXPECT_OP_OK(call_op(*admin, "register", jobj({{"user", jstr(longest)}})));

  // Only admin may register (the shipped ops.json).
  EXPECT_OP_ERR(call_op(c(), "register", R"({"user":"sneaky"})"), "forbidden");
  EXPECT_FALSE(fs::exists(server_->storage_dir() / "sneaky"));
}

// ---------------------------------------------------------------------------------------
// isolation

TEST(Isolation, UsersWhoseNamesPrefixEachOtherNeverMeet) {
  ServerProcess server;
  const std::vector<std::string> names = {"a", "a.b", "ab", "a-"};
  std::vector<std::unique_ptr<client::Client>> clients;
  for (const auto& n : names) {
    std::string key = server.add_user(n);
    ASSERT_FALSE(key.empty());
    clients.push_back(server.connect(n, key));
    ASSERT_TRUE(clients.back());
  }
  for (std::size_t i = 0; i < names.size(); ++i) {
    ASSERT_TRUE(upload(*clients[i], "f", "owned by " + names[i]).ok);
    ASSERT_TRUE(upload(*clients[i], "only_" + std::to_string(i), "x").ok);
  }
  for (std::size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE(names[i]);
    client::Client& c = *clients[i];
    EXPECT_EQ(download(c, "f").payload, "owned by " + names[i]);
    auto listed = call_op(c, "list", R"({"recursive":true})");
    EXPECT_EQ(names_of(listed), (std::vector<std::string>{"f", "only_" + std::to_string(i)}));
    for (std::size_t j = 0; j < names.size(); ++j) {
      if (j == i) continue;
      EXPECT_OP_ERR(download(c, "only_" + std::to_string(j)), "not_found");
      EXPECT_OP_ERR(download(c, "../" + names[j] + "/f"), "invalid_args");
      EXPECT_OP_ERR(download(c, names[j] + "/f"), "not_found");
      EXPECT_OP_ERR(upload(c, "../" + names[j] + "/g", "x"), "invalid_args");
    }
    EXPECT_EQ(read_file(server.storage_dir() / names[i] / "f"), "owned by " + names[i]);
  }
}

}  // namespace
}  // namespace ops::test
